"""Topic name and topic filter rules (MQTT 5 section 4.7 and 4.8.2), shared by the codec and the broker.

Validators raise ProtocolError carrying the reason code to answer with: 0x90 (Topic Name invalid) for
names, 0x8F (Topic Filter invalid) for filters. They check structure only; whether a valid filter is
*authorised* or *supported* (wildcards, shared subscriptions) is the broker's decision.
"""

from __future__ import annotations

from broker.errors import ProtocolError

from .reason_codes import ReasonCode

__all__ = ["SHARE_PREFIX", "parse_shared", "validate_topic_filter", "validate_topic_name"]

SHARE_PREFIX = "$share/"

_NAME_INVALID = ReasonCode.TOPIC_NAME_INVALID
_FILTER_INVALID = ReasonCode.TOPIC_FILTER_INVALID


def validate_topic_name(topic: str) -> None:
    """A topic name a message is published to: non-empty, no wildcard characters."""
    if not topic:
        raise ProtocolError("topic name must be at least one character long [MQTT-4.7.3-1]", _NAME_INVALID)
    if "+" in topic or "#" in topic:
        raise ProtocolError("topic name must not contain wildcard characters [MQTT-4.7.1-1]", _NAME_INVALID)


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split `$share/{ShareName}/{filter}` into (ShareName, filter); (None, topic_filter) otherwise.

    It does not validate: "$share/g" gives ("g", ""), which `validate_topic_filter` rejects.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    group, _, plain = topic_filter[len(SHARE_PREFIX) :].partition("/")
    return group, plain


def validate_topic_filter(topic_filter: str) -> None:
    """A topic filter in SUBSCRIBE / UNSUBSCRIBE, possibly a shared subscription."""
    if not topic_filter:
        raise ProtocolError("topic filter must be at least one character long [MQTT-4.7.3-1]", _FILTER_INVALID)
    group, plain = parse_shared(topic_filter)
    if group is not None:
        if not group or "+" in group or "#" in group:
            raise ProtocolError(
                "ShareName must be at least one character and contain no wildcard [MQTT-4.8.2-1][MQTT-4.8.2-2]",
                _FILTER_INVALID,
            )
        if not plain:
            raise ProtocolError("a shared subscription needs a topic filter after the ShareName "
                                "[MQTT-4.8.2-2]", _FILTER_INVALID)
    if "+" not in plain and "#" not in plain:
        return  # the common case: no wildcard at all
    levels = plain.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            raise ProtocolError(
                "'#' must be alone in the last level of a topic filter [MQTT-4.7.1-2]", _FILTER_INVALID
            )
        if "+" in level and level != "+":
            raise ProtocolError("'+' must occupy a whole level of a topic filter [MQTT-4.7.1-3]", _FILTER_INVALID)
