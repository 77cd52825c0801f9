"""PUBLISH packets towards one client: encoded once per distinct form, within its maximum packet size.

A QoS 0 PUBLISH is the same bytes for every client that gets the same form of it (version, tenant, retain
flag, and for v5 no per-client properties), so the last encoding is kept on the message (`Message.wire`):
a fan-out encodes once per distinct form, not once per subscriber. Everything else is encoded for its
client: packet identifier, DUP, v5 message expiry left [MQTT-3.3.2-6], subscription identifiers
[MQTT-3.3.4-3] and outgoing topic aliases [MQTT-3.3.2-12].

A packet larger than the client's Maximum Packet Size is not sent [MQTT-3.1.2-24]; `encode` then answers
None, and a topic alias it would have introduced is not kept (the client never heard of it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from broker.codec import EMPTY_PROPERTIES, ProtocolVersion, encode_publish
from broker.receivers import PlainForm
from broker.session import Message

__all__ = ["PublishEncoder"]

_V5 = ProtocolVersion.MQTT_5
# The topic aliases of a client that takes none (every 3.1.1 client): one read-only empty mapping for all.
_NO_ALIASES: Mapping[str, int] = MappingProxyType({})


@lru_cache(maxsize=4096)
def _plain_forms(version: int, mount: str) -> tuple[PlainForm, PlainForm]:
    """The two forms for a version and tenant, shared by all its clients instead of built for each."""
    return (version, mount, False), (version, mount, True)
# The largest packet MQTT can express: no limit asked.
UNLIMITED = 268_435_460


class PublishEncoder:
    """Encodes PUBLISH packets for one client; `plain_form` says when it takes another client's bytes."""

    __slots__ = ("_aliases", "_forms", "_wall", "alias_max", "max_size", "mount", "plain_form", "version")

    def __init__(
        self,
        version: int = 4,
        mount: str = "",
        alias_max: int = 0,
        max_size: int = UNLIMITED,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._wall = wall  # the wall clock, for the message expiry left [MQTT-3.3.2-6]
        self.version = version
        self.mount = mount
        self.alias_max = alias_max
        self.max_size = max_size
        # Written only when the client takes aliases (alias_max, fixed from CONNECT).
        self._aliases: dict[str, int] = {} if alias_max else _NO_ALIASES  # type: ignore[assignment]
        # The cache keys of this client's QoS 0 PUBLISH forms, by retain flag.
        self._forms = _plain_forms(version, mount)
        # The form in which this client takes a plain QoS 0 PUBLISH as another client sent it (see
        # Routing.publish_plain); None when it needs its own encoding (v5 with outgoing topic aliases).
        self.plain_form: PlainForm | None = None if version == _V5 and alias_max else self._forms[False]

    @property
    def own_form(self) -> PlainForm:
        """The form of the plain PUBLISH bytes this client sends (a publisher's, see Message.wire)."""
        return self._forms[False]

    def client_topic(self, topic: str) -> str:
        """A topic inside the broker as this client names it: without its tenant's namespace."""
        mount = self.mount
        return topic[len(mount):] if mount and topic.startswith(mount) else topic

    def encode(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool,
    ) -> bytes | None:
        """The PUBLISH bytes of `message` for this client, or None if too large for it [MQTT-3.1.2-25]."""
        version = self.version
        v5 = version == _V5
        if qos == 0 and (not v5 or not (sub_ids or message.expires_at is not None or self.alias_max)):
            form = self._forms[retain]
            wire = message.wire
            if wire is not None and wire[0] == form:
                data = wire[1]
            else:
                props = message.properties if v5 else EMPTY_PROPERTIES
                data = encode_publish(self.client_topic(message.topic), message.payload, 0, retain, False, None,
                                      props, version)
                message.wire = (form, data)
            return data if len(data) <= self.max_size else None
        topic = self.client_topic(message.topic)
        if not v5:
            data = encode_publish(topic, message.payload, qos, retain, dup, packet_id, EMPTY_PROPERTIES, version)
            return data if len(data) <= self.max_size else None
        props = message.properties
        introduced: str | None = None
        if message.expires_at is not None or sub_ids or self.alias_max:
            changes: dict[str, Any] = {}
            if message.expires_at is not None:
                changes["message_expiry_interval"] = message.remaining_expiry(self._wall())
            if sub_ids:
                changes["subscription_identifiers"] = sub_ids
            if self.alias_max:
                alias = self._aliases.get(topic)
                if alias is not None:
                    changes["topic_alias"] = alias
                    topic = ""
                elif len(self._aliases) < self.alias_max:
                    alias = self._aliases[topic] = len(self._aliases) + 1
                    changes["topic_alias"] = alias
                    introduced = topic
            props = replace(props, **changes)
        data = encode_publish(topic, message.payload, qos, retain, dup, packet_id, props, version)
        if len(data) > self.max_size:
            if introduced is not None:
                del self._aliases[introduced]  # never sent: the client does not know this alias
            return None
        return data
