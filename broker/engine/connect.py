"""CONNECT negotiation as pure functions: what a CONNECT asks for, against the broker's settings.

`negotiate` answers either the terms of the connection (`Terms`) or the reason code to refuse it with;
`connack_properties` is what a v5 CONNACK tells the client about those terms, and `accepting_connack` the
CONNACK's bytes; `connect_error_answer` is how a CONNECT that could not be read is answered. None touches
a session, a hook or a socket: the engine asks the hooks (a hook that fails refuses with 0x88 Server
unavailable) and attaches the session afterwards.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from broker.codec import EMPTY_PROPERTIES, Connack, Connect, Properties, ProtocolVersion, ReasonCode, encode
from broker.codec.topics import validate_topic_name
from broker.errors import ProtocolError, UnsupportedProtocolVersion
from broker.limits import check_topic
from broker.session import NEVER_EXPIRES
from broker.settings import BrokerSettings
from broker.stats import Stats

__all__ = ["Terms", "accepting_connack", "connack_properties", "connect_error_answer", "negotiate"]

_V5 = ProtocolVersion.MQTT_5


class Terms(NamedTuple):
    """What was agreed for one connection (a NamedTuple: made once per CONNECT, it is the cheapest
    immutable record; a frozen dataclass sets each field through object.__setattr__)."""

    client_id: str
    assigned_client_id: bool  # the client sent an empty id and got one [MQTT-3.2.2-16]
    keep_alive: int  # seconds; 0 = no keep alive
    server_keep_alive: int | None  # told to a v5 client when it differs from what it asked [MQTT-3.2.2-21]
    requested_expiry: int
    granted_expiry: int
    inflight_limit: int  # outbound QoS 1/2 window: ours, lowered by the client's Receive Maximum
    max_outgoing_size: int  # the client's Maximum Packet Size [MQTT-3.1.2-24]
    alias_out_max: int  # topic aliases the client accepts from us


def negotiate(packet: Connect, settings: BrokerSettings, stats: Stats) -> Terms | int:
    """The terms of the connection `packet` asks for, or the CONNACK reason code refusing it (a will over
    the topic limits is counted in `stats.topic_limit_refused["will"]`)."""
    version = packet.protocol_version
    props = packet.properties
    if props.authentication_method is not None:
        return ReasonCode.BAD_AUTHENTICATION_METHOD  # No enhanced authentication is offered [MQTT-4.12.0-1].
    client_id = packet.client_id
    assigned = False
    if not client_id:
        if version == _V5 or (version == 4 and packet.clean_start):
            client_id = "auto-" + os.urandom(16).hex()  # [MQTT-3.1.3-6][MQTT-3.2.2-16]
            assigned = True
        else:
            # 3.1.1 with clean session 0, or 3.1: an empty client id is refused [MQTT-3.1.3-8].
            return ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    keep_alive = packet.keep_alive
    server_keep_alive: int | None = None
    if settings.max_keepalive < 65_535 and (keep_alive == 0 or keep_alive > settings.max_keepalive):
        if version != _V5:
            # 3.1.1 has no way to tell the client another value: refuse it, as Mosquitto does.
            return ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
        keep_alive = server_keep_alive = settings.max_keepalive  # [MQTT-3.2.2-21]
    will = packet.will
    if will is not None:
        try:
            validate_topic_name(will.topic)
        except ProtocolError:
            return ReasonCode.TOPIC_NAME_INVALID
        # What no client may ever publish to is refused here, where the client can hear why (0x90): a `$`
        # topic (as a PUBLISH to one is refused [MQTT-4.7.2-1 context]) or one over the topic limits. The
        # ACL and the quota are asked when the will is published (`Broker.publish_will`).
        if will.topic.startswith("$") or check_topic(will.topic, settings, stats, "will"):
            return ReasonCode.TOPIC_NAME_INVALID
        if will.retain and not settings.retain_available:
            return ReasonCode.RETAIN_NOT_SUPPORTED  # [MQTT-3.2.2-13]
    inflight_limit = settings.max_inflight
    max_outgoing = 268_435_460
    alias_out_max = 0
    if version == _V5:
        expiry = props.session_expiry_interval or 0
        if props.receive_maximum is not None:
            inflight_limit = min(inflight_limit, props.receive_maximum)
        if props.maximum_packet_size is not None:
            max_outgoing = props.maximum_packet_size
        alias_out_max = props.topic_alias_maximum or 0
    else:
        expiry = 0 if packet.clean_start else NEVER_EXPIRES
    return Terms(
        client_id, assigned, keep_alive, server_keep_alive, expiry, min(expiry, settings.max_session_expiry),
        inflight_limit, max_outgoing, alias_out_max,
    )


def connack_properties(terms: Terms, settings: BrokerSettings, version: int) -> Properties:
    """The v5 CONNACK properties for `terms` (none in 3.1.1)."""
    if version != _V5:
        return EMPTY_PROPERTIES
    return Properties(
        session_expiry_interval=terms.granted_expiry if terms.granted_expiry != terms.requested_expiry else None,
        receive_maximum=settings.receive_maximum if settings.receive_maximum != 65_535 else None,
        retain_available=None if settings.retain_available else 0,
        maximum_packet_size=settings.max_packet_size,
        assigned_client_identifier=terms.client_id if terms.assigned_client_id else None,
        topic_alias_maximum=settings.topic_alias_maximum or None,
        server_keep_alive=terms.server_keep_alive,
    )


# A 3.1 / 3.1.1 CONNACK that accepts is one of two byte strings (Session Present 0 or 1, return code 0):
# made once, not encoded per connection.
_V3_ACCEPTED = (encode(Connack(False, 0), 4), encode(Connack(True, 0), 4))


def accepting_connack(terms: Terms, settings: BrokerSettings, version: int, present: bool) -> bytes:
    """The CONNACK that lets the client in, with Session Present `present` [MQTT-3.2.2-2]."""
    if version != _V5:
        return _V3_ACCEPTED[present]
    return encode(Connack(present, 0, connack_properties(terms, settings, version)), version)


def connect_error_answer(exc: ProtocolError, reader_version: int | None) -> tuple[int, int] | None:
    """How a CONNECT that could not be read is answered: (the version to answer in, the CONNACK reason
    code), or None to close without a CONNACK [MQTT-3.1.4-1]."""
    version = getattr(exc, "protocol_version", None) or reader_version
    if isinstance(exc, UnsupportedProtocolVersion):
        # Answer in a dialect the client understands: 3.1.1 return code 1 or v5 0x84 [MQTT-3.1.2-2].
        return (version if version in (3, 4, 5) else 4), ReasonCode.UNSUPPORTED_PROTOCOL_VERSION
    if version == _V5:
        # A v5 CONNECT read far enough to know its version: CONNACK with the reason [MQTT-4.13.1-1].
        return _V5, exc.reason_code
    return None

