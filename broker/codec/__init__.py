"""Roost's sans-IO MQTT codec (MQTT 3.1, 3.1.1 and 5): bytes in, packets out, and back.

No sockets, no asyncio, nothing else of Roost's: packets are frozen dataclasses (`packets`), `encode`
and `decode_packet` are pure functions, `PacketReader` frames a byte stream, and `topics` holds the topic
name / filter rules. Errors are the ProtocolError tree of `broker.errors`, each carrying its reason code.
"""

from broker.errors import MalformedPacket, PacketTooLarge, ProtocolError, UnsupportedProtocolVersion

from .decode import decode_packet
from .encode import encode, encode_publish
from .packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from .properties import EMPTY_PROPERTIES, Properties
from .reader import MAX_PACKET_SIZE, NEED_DATA, NeedData, PacketReader
from .reason_codes import ConnackReturnCode, PacketType, ProtocolVersion, ReasonCode, v3_connack_code
from .topics import parse_shared, validate_topic_filter, validate_topic_name

__all__ = [
    "EMPTY_PROPERTIES", "MAX_PACKET_SIZE", "NEED_DATA", "Auth", "Connack", "ConnackReturnCode", "Connect",
    "Disconnect", "MalformedPacket", "NeedData", "Packet", "PacketReader", "PacketTooLarge", "PacketType",
    "Pingreq", "Pingresp", "Properties", "ProtocolError", "ProtocolVersion", "Puback", "Pubcomp", "Publish",
    "Pubrec", "Pubrel", "ReasonCode", "Suback", "Subscribe", "Subscription", "Unsuback", "Unsubscribe",
    "UnsupportedProtocolVersion", "Will", "decode_packet", "encode", "encode_publish", "parse_shared",
    "v3_connack_code", "validate_topic_filter", "validate_topic_name",
]
