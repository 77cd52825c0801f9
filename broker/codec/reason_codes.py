"""Numeric vocabularies of MQTT: protocol versions, packet types, and reason / return codes.

MQTT 5 answers with a one-byte reason code (section 2.4); MQTT 3.1 and 3.1.1 only have the six CONNACK
return codes (3.1.1 section 3.2.2.3) and the SUBACK return codes 0, 1, 2 and 0x80.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ConnackReturnCode", "PacketType", "ProtocolVersion", "ReasonCode", "v3_connack_code"]


class ProtocolVersion(IntEnum):
    """The protocol level byte of CONNECT."""

    MQTT_3_1 = 3  # protocol name "MQIsdp"
    MQTT_3_1_1 = 4
    MQTT_5 = 5


class PacketType(IntEnum):
    """The four high bits of the first byte of every packet (MQTT 5 section 2.1.2)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15  # MQTT 5 only


class ReasonCode(IntEnum):
    """Every MQTT 5 reason code (section 2.4). Values below 0x80 mean success."""

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ConnackReturnCode(IntEnum):
    """CONNACK return codes of MQTT 3.1 and 3.1.1 (3.1.1 section 3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


_V3_CONNACK = {
    0x00: ConnackReturnCode.ACCEPTED,
    0x84: ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
    0x85: ConnackReturnCode.IDENTIFIER_REJECTED,
    0x88: ConnackReturnCode.SERVER_UNAVAILABLE,
    0x89: ConnackReturnCode.SERVER_UNAVAILABLE,
    0x8B: ConnackReturnCode.SERVER_UNAVAILABLE,
    # A limit (the tenant's connections): 3.1.1 has no quota code; "server unavailable" tells the client
    # to try again later, which is what the limit means, where "not authorized" would say its credentials
    # are wrong.
    0x97: ConnackReturnCode.SERVER_UNAVAILABLE,
    0x86: ConnackReturnCode.BAD_USERNAME_OR_PASSWORD,
}


def v3_connack_code(reason: int) -> int:
    """Map a v5 CONNACK reason code to the nearest MQTT 3.1.1 CONNACK return code.

    Every error without a closer match (0x87 not authorized, 0x8A banned, 0x8C bad authentication method,
    and the rest) becomes 5, "not authorized".
    """
    return _V3_CONNACK.get(reason, ConnackReturnCode.NOT_AUTHORIZED)


# Reason codes each MQTT 5 packet may carry (the "Reason Code values" tables of chapter 3). The decoder
# rejects anything else as a Protocol Error.
CONNACK_CODES = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99,
     0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)
PUBACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})  # PUBACK and PUBREC
PUBREL_CODES = frozenset({0x00, 0x92})  # PUBREL and PUBCOMP
SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
UNSUBACK_CODES = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
DISCONNECT_CODES = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96,
     0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2}
)
AUTH_CODES = frozenset({0x00, 0x18, 0x19})
V3_CONNACK_CODES = frozenset(range(6))
V3_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80})
