"""What a client's PUBLISH must pass before it is routed, the same for every PUBLISH path.

`Admission.admit` answers the topic inside the broker (the tenant's mount point in front) or the reason
code refusing the message: the topic limits (`broker/limits.py`; over them, a ProtocolError 0x90) and the
publish ACL, both asked on a cache miss only, the answer cached per topic until the hooks say access
changed (`HookChain.generation`); the payload format of a v5 message that promises UTF-8; a message that has
already passed through this Roost (below); then the on_publish hooks (the hourly quota, 0x97).
`resolve_alias` maps v5 topic aliases [MQTT-3.3.2-8..10].

Loops between bridges: a bridge that forwards a message upstream over MQTT 5 adds the user property
`roost-via: ID` (`VIA`; ID is this Roost's `Broker.via`, set when bridges start: bridge/manager.py), and
user properties travel unchanged from broker to broker [MQTT-3.3.2-18]. A PUBLISH that comes back carrying
our own ID is acknowledged as a success (0x10 No matching subscribers: v5 only, as 3.1.1 carries no
properties) and not routed: so two bridges in opposite directions over the same topics deliver each
message once on each side. Counted in `Stats.dropped_loop`. A Roost with no bridges has no ID and checks
nothing. docs/operations.md, "Bridges", says what it cannot see.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

from broker.codec import EMPTY_PROPERTIES, Properties, Publish, ReasonCode
from broker.core import Broker
from broker.errors import ProtocolError
from broker.hooks import ClientInfo
from broker.limits import check_topic
from broker.receivers import PlainForm
from broker.session import Message

__all__ = ["VIA", "Admission", "publish_message"]

log = logging.getLogger("roost.connection")

# Topics whose ACL answer one connection remembers.
ACL_CACHE_LIMIT = 1024
# The user property that names each Roost a bridged message passed through (see the module docstring).
VIA = "roost-via"
# What an `Admission` holds before its first PUBLISH, and a v5 client before its first topic alias: one
# read-only empty mapping shared by all (an idle connection keeps no empty dicts of its own).
_NOTHING: Mapping[object, str] = MappingProxyType({})


class Admission:
    """The admission of one client's PUBLISH packets."""

    __slots__ = ("_acl", "_aliases", "_broker", "_client", "_generation", "_hook", "_mount", "_via")

    def __init__(self, broker: Broker, client: ClientInfo) -> None:
        self._broker = broker
        self._client = client
        self._mount = client.mount
        self._hook = broker.hooks.publish_hook
        # The publish ACL's answers by topic: the topic inside the broker, or "" (refused).
        self._acl: Mapping[str, str] = _NOTHING  # a dict of its own from the first PUBLISH on (`_route`)
        self._generation = -1
        self._aliases: Mapping[int, str] = _NOTHING
        self._via = (VIA, broker.via) if broker.via is not None else None

    def admit(self, topic: str, payload: bytes, qos: int, retain: bool, props: Properties) -> str | int:
        """The topic inside the broker if this PUBLISH may be routed, else the reason code refusing it
        (0x10 for a message that looped back here: acknowledged as a success, not routed)."""
        broker = self._broker
        routed = self._acl.get(topic) if self._generation == broker.hooks.generation else None
        if routed is None:
            routed = self._route(topic)
        if not routed:
            broker.stats.dropped_acl += 1
            log.debug("publish by %s to %r not authorized", self._client.client_id, topic)
            return ReasonCode.NOT_AUTHORIZED
        if props is not EMPTY_PROPERTIES:
            if props.payload_format_indicator == 1 and not _is_utf8(payload):
                return ReasonCode.PAYLOAD_FORMAT_INVALID  # [MQTT-3.3.2-4 context]
            if self._via is not None and self._via in props.user_properties:
                broker.stats.dropped_loop += 1
                return ReasonCode.NO_MATCHING_SUBSCRIBERS
        hook = self._hook
        if hook is not None:
            code = hook(self._client, topic, payload, qos, retain)
            if code:
                broker.stats.dropped_quota += 1
                return code
        return routed

    def _route(self, topic: str) -> str:
        """Where this client's PUBLISH to `topic` goes inside the broker, or "" when it may not publish
        there. Topics starting with `$` belong to the broker ($SYS, and the tenants' namespaces): no client
        publishes to them [MQTT-4.7.2-1 context]. A topic over the topic limits is a protocol error, never
        cached, so every such PUBLISH ends here: DISCONNECT 0x90 (3.1.1: the connection is closed)."""
        broker = self._broker
        hooks = broker.hooks
        cache = self._acl
        if self._generation != hooks.generation:  # also at the first PUBLISH: generation starts at -1
            cache = self._acl = {}
            self._generation = hooks.generation
        routed = cache.get(topic)
        if routed is None:
            limit = check_topic(topic, broker.settings, broker.stats, "publish")
            if limit is not None:
                raise ProtocolError(f"topic name over {limit}", ReasonCode.TOPIC_NAME_INVALID)
            allowed = not topic.startswith("$") and hooks.authorize_publish(self._client, topic)
            routed = self._mount + topic if allowed else ""
            if len(cache) < ACL_CACHE_LIMIT:
                cache[topic] = routed  # type: ignore[index]  # a dict since the generation check
        return routed

    def resolve_alias(self, alias: int, topic: str) -> str:
        """Map a v5 topic alias to its topic [MQTT-3.3.2-8][MQTT-3.3.2-9][MQTT-3.3.2-10]."""
        if alias == 0 or alias > self._broker.settings.topic_alias_maximum:
            raise ProtocolError("topic alias out of range [MQTT-3.3.2-8]", ReasonCode.TOPIC_ALIAS_INVALID)
        if topic:
            if self._aliases is _NOTHING:
                self._aliases = {}
            self._aliases[alias] = topic  # type: ignore[index]  # a dict now
            return topic
        known = self._aliases.get(alias)
        if known is None:
            raise ProtocolError("unknown topic alias [MQTT-3.3.2-?]", ReasonCode.PROTOCOL_ERROR)
        return known


def publish_message(
    routed: str, packet: Publish, sender: str, origin: str | None, now: float,
    wire: tuple[PlainForm, bytes] | None,
) -> Message:
    """The Message an admitted PUBLISH becomes: its topic inside the broker, the expiry as a wall-clock
    deadline, and without its topic alias (which belongs to one hop) [MQTT-3.3.2-12 context]."""
    props = packet.properties
    expires_at = None
    if props is not EMPTY_PROPERTIES:
        if props.message_expiry_interval is not None:
            expires_at = now + props.message_expiry_interval
        if props.topic_alias is not None:
            props = replace(props, topic_alias=None)
            if props == EMPTY_PROPERTIES:
                props = EMPTY_PROPERTIES
    return Message(routed, packet.payload, packet.qos, packet.retain, props, expires_at, sender, origin, wire)


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
