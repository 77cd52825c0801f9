"""The shared packet corpus: raw bytes written by hand from the MQTT specs, with the packet they decode to
or the error (class and reason code) a receiver must raise. Like mochi-mqtt's `tpackets.go`, it can drive
codec tests and broker tests alike.

`version` is the reader's protocol version: None for a server awaiting CONNECT. `canonical` says whether
encoding the expected packet gives back exactly `raw` (the spec allows some longer forms on input).
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.codec import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
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
from broker.errors import MalformedPacket, PacketTooLarge, ProtocolError, UnsupportedProtocolVersion


@dataclass(frozen=True)
class Error:
    cls: type[ProtocolError]
    reason_code: int


@dataclass(frozen=True)
class Case:
    name: str
    version: int | None
    raw: bytes
    expected: Packet | Error
    canonical: bool = True


def s(text: str) -> bytes:
    """A UTF-8 Encoded String: two byte length, then the bytes (section 1.5.4)."""
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def b(data: bytes) -> bytes:
    """Binary Data (section 1.5.6)."""
    return len(data).to_bytes(2, "big") + data


def frame(first: int, body: bytes) -> bytes:
    """A fixed header with a one or two byte remaining length, then the body."""
    n = len(body)
    assert n < 16384
    length = bytes((n,)) if n < 128 else bytes(((n & 0x7F) | 0x80, n >> 7))
    return bytes((first,)) + length + body


MALFORMED = Error(MalformedPacket, 0x81)
PROTOCOL = Error(ProtocolError, 0x82)
UNSUPPORTED = Error(UnsupportedProtocolVersion, 0x84)
TOPIC_NAME_INVALID = Error(ProtocolError, 0x90)
TOPIC_FILTER_INVALID = Error(ProtocolError, 0x8F)

# --- the specs' own examples ------------------------------------------------------------------------
# MQTT 3.1.1 section 3.1.2.10, "Variable header non normative example": protocol name "MQTT", level 4,
# connect flags 0xCE (user name, password, will QoS 1, will flag, clean session), keep alive 10.
V311_CONNECT_VARIABLE_HEADER = bytes.fromhex("00 04 4d 51 54 54 04 ce 00 0a")
# MQTT 5 section 3.1.2.11, "Variable Header example": the same, level 5, and a property length of 5 holding
# the Session Expiry Interval (identifier 17) of 10 seconds.
V5_CONNECT_VARIABLE_HEADER = bytes.fromhex("00 04 4d 51 54 54 05 ce 00 0a 05 11 00 00 00 0a")
# MQTT 3.1.1 section 3.3.2.3, "Publish Packet variable header non normative example": topic "a/b", id 10.
V311_PUBLISH_VARIABLE_HEADER = bytes.fromhex("00 03 61 2f 62 00 0a")
# MQTT 3.1.1 section 1.5.3.1 / MQTT 5 section 1.5.4.1: the string "A\U0002A6D4" is 00 05 41 F0 AA 9B 94.
UTF8_EXAMPLE = bytes.fromhex("00 05 41 f0 aa 9b 94")

_CONNECT_PAYLOAD = s("cid") + s("w/t") + b(b"bye") + s("user") + b(b"pw")
_WILL = Will("w/t", b"bye", qos=1)

VALID: list[Case] = [
    Case(
        "spec 3.1.1 3.1.2.10 CONNECT example",
        None,
        frame(0x10, V311_CONNECT_VARIABLE_HEADER + _CONNECT_PAYLOAD),
        Connect("cid", 4, True, 10, "user", b"pw", _WILL),
    ),
    Case(
        "spec 5 3.1.2.11 CONNECT example",
        None,
        frame(0x10, V5_CONNECT_VARIABLE_HEADER + s("cid") + b"\x00" + s("w/t") + b(b"bye") + s("user") + b(b"pw")),
        Connect("cid", 5, True, 10, "user", b"pw", _WILL, Properties(session_expiry_interval=10)),
    ),
    Case(
        "MQTT 3.1 CONNECT (MQIsdp, level 3)",
        None,
        frame(0x10, s("MQIsdp") + b"\x03\x02\x00\x3c" + s("old")),
        Connect("old", 3, True, 60, protocol_name="MQIsdp"),
    ),
    Case(
        "CONNECT 5 with will properties and empty client id",
        None,
        frame(0x10, s("MQTT") + b"\x05\x24\x00\x00\x00" + s("") + b"\x05\x18\x00\x00\x00\x1e" + s("t") + b(b"")),
        Connect("", 5, False, 0, will=Will("t", b"", 0, True, Properties(will_delay_interval=30))),
    ),
    Case(
        "CONNECT 5 password without user name is allowed [MQTT-3.1.2-19 v5]",
        None,
        frame(0x10, s("MQTT") + b"\x05\x42\x00\x0a\x00" + s("c") + b(b"secret")),
        Connect("c", 5, True, 10, password=b"secret"),
    ),
    Case("CONNACK 3.1.1 accepted, session present", 4, bytes.fromhex("20 02 01 00"), Connack(True, 0)),
    Case("CONNACK 3.1.1 refused: not authorized", 4, bytes.fromhex("20 02 00 05"), Connack(False, 5)),
    Case(
        "CONNACK 5 with properties",
        5,
        frame(0x20, b"\x00\x00\x07\x21\x00\x0a\x24\x01\x25\x00"),
        Connack(False, 0, Properties(receive_maximum=10, maximum_qos=1, retain_available=0)),
    ),
    Case(
        "spec 3.1.1 3.3.2.3 PUBLISH example (topic a/b, packet id 10)",
        4,
        frame(0x32, V311_PUBLISH_VARIABLE_HEADER),
        Publish("a/b", b"", 1, packet_id=10),
    ),
    Case(
        "spec 1.5.3.1 UTF-8 example as a topic name",
        4,
        frame(0x30, UTF8_EXAMPLE + b"hi"),
        Publish("A\U0002A6D4", b"hi"),
    ),
    Case("PUBLISH QoS 0 retained", 4, frame(0x31, s("a") + b"x"), Publish("a", b"x", retain=True)),
    Case("PUBLISH QoS 2 dup", 4, frame(0x3C, s("a") + b"\x01\x00p"), Publish("a", b"p", 2, dup=True, packet_id=256)),
    Case("PUBLISH topic keeps a BOM [MQTT-1.5.4-3]", 4, frame(0x30, s("\ufeffa")), Publish("\ufeffa")),
    Case(
        "PUBLISH 5 empty topic with topic alias [MQTT-3.3.2-1 v5 3.3.2.3.4]",
        5,
        frame(0x30, s("") + b"\x03\x23\x00\x05" + b"data"),
        Publish("", b"data", properties=Properties(topic_alias=5)),
    ),
    Case(
        "PUBLISH 5 with two subscription identifiers and user properties",
        5,
        frame(0x30, s("t") + b"\x0e\x0b\x01\x0b\x80\x01\x26" + s("k") + s("v") + b"\x01\x01" + b"{}"),
        Publish("t", b"{}", properties=Properties(
            subscription_identifiers=(1, 128), user_properties=(("k", "v"),), payload_format_indicator=1)),
        canonical=False,  # the encoder writes properties in identifier order
    ),
    Case("PUBACK 3.1.1", 4, bytes.fromhex("40 02 00 07"), Puback(7)),
    Case("PUBACK 5 short form: reason 0, no properties [MQTT-3.4.2-1]", 5, bytes.fromhex("40 02 00 07"), Puback(7)),
    Case("PUBACK 5 reason only (remaining length 3)", 5, bytes.fromhex("40 03 00 07 10"), Puback(7, 0x10)),
    Case("PUBACK 5 reason 0 and empty properties", 5, bytes.fromhex("40 04 00 07 00 00"), Puback(7), canonical=False),
    Case(
        "PUBREC 5 with reason string",
        5,
        frame(0x50, b"\x00\x07\x80\x04\x1f" + s("x")),
        Pubrec(7, 0x80, Properties(reason_string="x")),
    ),
    Case("PUBREL 3.1.1", 4, bytes.fromhex("62 02 00 07"), Pubrel(7)),
    Case("PUBREL 3.1 tolerates DUP", 3, bytes.fromhex("6a 02 00 07"), Pubrel(7), canonical=False),
    Case("PUBREL 5 packet id not found", 5, bytes.fromhex("62 03 00 07 92"), Pubrel(7, 0x92)),
    Case("PUBCOMP 3.1.1", 4, bytes.fromhex("70 02 00 07"), Pubcomp(7)),
    Case(
        "SUBSCRIBE 3.1.1 two filters",
        4,
        frame(0x82, b"\x00\x0a" + s("a/+") + b"\x01" + s("b/#") + b"\x02"),
        Subscribe(10, (Subscription("a/+", 1), Subscription("b/#", 2))),
    ),
    Case(
        "SUBSCRIBE 5 with options and subscription identifier",
        5,
        frame(0x82, b"\x00\x0a\x02\x0b\x05" + s("a") + b"\x2e" + s("$share/g/b") + b"\x00"),
        Subscribe(
            10,
            (Subscription("a", 2, True, True, 2), Subscription("$share/g/b")),
            Properties(subscription_identifiers=(5,)),
        ),
    ),
    Case(
        "SUBSCRIBE keeps an invalid filter: answered per filter in SUBACK",
        4,
        frame(0x82, b"\x00\x01" + s("a/#/b") + b"\x00"),
        Subscribe(1, (Subscription("a/#/b"),)),
    ),
    Case("SUBACK 3.1.1", 4, bytes.fromhex("90 05 00 0a 00 01 80"), Suback(10, (0, 1, 0x80))),
    Case("SUBACK 5", 5, bytes.fromhex("90 05 00 0a 00 02 a2"), Suback(10, (2, 0xA2))),
    Case(
        "UNSUBSCRIBE 3.1.1",
        4,
        frame(0xA2, b"\x00\x0b" + s("a") + s("b/+")),
        Unsubscribe(11, ("a", "b/+")),
    ),
    Case(
        "UNSUBSCRIBE 5 with user property",
        5,
        frame(0xA2, b"\x00\x0b\x07\x26" + s("k") + s("v") + s("a")),
        Unsubscribe(11, ("a",), Properties(user_properties=(("k", "v"),))),
    ),
    Case("UNSUBACK 3.1.1 has no reason codes", 4, bytes.fromhex("b0 02 00 0b"), Unsuback(11)),
    Case("UNSUBACK 5", 5, bytes.fromhex("b0 05 00 0b 00 00 11"), Unsuback(11, (0, 0x11))),
    Case("PINGREQ", 4, bytes.fromhex("c0 00"), Pingreq()),
    Case("PINGRESP", 5, bytes.fromhex("d0 00"), Pingresp()),
    Case("DISCONNECT 3.1.1", 4, bytes.fromhex("e0 00"), Disconnect()),
    Case("DISCONNECT 5 empty body means reason 0 [MQTT-3.14.2-1]", 5, bytes.fromhex("e0 00"), Disconnect()),
    Case("DISCONNECT 5 with will message", 5, bytes.fromhex("e0 01 04"), Disconnect(4)),
    Case(
        "DISCONNECT 5 with session expiry",
        5,
        bytes.fromhex("e0 07 00 05 11 00 00 00 00"),
        Disconnect(0, Properties(session_expiry_interval=0)),
    ),
    Case("AUTH 5 empty body", 5, bytes.fromhex("f0 00"), Auth()),
    Case(
        "AUTH 5 continue authentication",
        5,
        frame(0xF0, b"\x18\x0b\x15" + s("SCRAM") + b"\x16" + b(b"")),
        Auth(0x18, Properties(authentication_method="SCRAM", authentication_data=b"")),
    ),
]

_CONNECT4 = s("MQTT") + b"\x04"
_CONNECT5 = s("MQTT") + b"\x05"

INVALID: list[Case] = [
    # fixed header
    Case("packet type 0 is reserved", 4, bytes.fromhex("00 00"), MALFORMED),
    Case("AUTH (type 15) before MQTT 5", 4, bytes.fromhex("f0 00"), MALFORMED),
    Case("PUBREL flags must be 0010 [MQTT-3.6.1-1]", 4, bytes.fromhex("60 02 00 01"), MALFORMED),
    Case("SUBSCRIBE flags must be 0010 [MQTT-3.8.1-1]", 4, frame(0x80, b"\x00\x01" + s("a") + b"\x00"), MALFORMED),
    Case("UNSUBSCRIBE flags must be 0010 [MQTT-3.10.1-1]", 5, frame(0xA0, b"\x00\x01\x00" + s("a")), MALFORMED),
    Case("PINGREQ reserved flags [MQTT-2.1.3-1]", 4, bytes.fromhex("c1 00"), MALFORMED),
    Case("PUBACK reserved flags [MQTT-2.1.3-1]", 5, bytes.fromhex("42 02 00 01"), MALFORMED),
    Case("remaining length of 5 bytes [MQTT-1.5.5-1]", 4, bytes.fromhex("30 ff ff ff ff 01"), MALFORMED),
    Case("remaining length not minimal [MQTT-1.5.5-1]", 4, bytes.fromhex("c0 80 00"), MALFORMED),
    Case("first packet not CONNECT [MQTT-3.1.0-1]", None, bytes.fromhex("c0 00"), PROTOCOL),
    # PUBLISH
    Case("PUBLISH QoS 3 [MQTT-3.3.1-4]", 4, frame(0x36, s("a") + b"\x00\x01"), MALFORMED),
    Case("PUBLISH DUP with QoS 0 [MQTT-3.3.1-2]", 4, frame(0x38, s("a")), MALFORMED),
    Case("PUBLISH topic not UTF-8 [MQTT-1.5.4-1]", 4, frame(0x30, b"\x00\x02\xff\xfe"), MALFORMED),
    Case("PUBLISH topic with a surrogate [MQTT-1.5.4-1]", 4, frame(0x30, b"\x00\x03\xed\xa0\x80"), MALFORMED),
    Case("PUBLISH topic with U+0000 [MQTT-1.5.4-2]", 4, frame(0x30, b"\x00\x03a\x00b"), MALFORMED),
    Case("PUBLISH topic length past the packet", 4, frame(0x30, b"\x00\x09ab"), MALFORMED),
    Case("PUBLISH truncated packet id", 4, frame(0x32, s("a") + b"\x01"), MALFORMED),
    Case("PUBLISH topic with + [MQTT-3.3.2-2]", 4, frame(0x30, s("a/+")), TOPIC_NAME_INVALID),
    Case("PUBLISH topic with # [MQTT-3.3.2-2]", 5, frame(0x30, s("#") + b"\x00"), TOPIC_NAME_INVALID),
    Case("PUBLISH 3.1.1 empty topic [MQTT-4.7.3-1]", 4, frame(0x30, s("")), PROTOCOL),
    Case("PUBLISH 5 empty topic without alias [MQTT-3.3.2-1]", 5, frame(0x30, s("") + b"\x00"), PROTOCOL),
    Case("PUBLISH QoS 1 packet id 0 [MQTT-2.3.1-1]", 4, frame(0x32, s("a") + b"\x00\x00"), PROTOCOL),
    Case("PUBLISH 5 topic alias 0 [MQTT-3.3.2-8]", 5, frame(0x30, s("a") + b"\x03\x23\x00\x00"),
         Error(ProtocolError, 0x94)),
    # properties
    Case("unknown property identifier", 5, frame(0x30, s("a") + b"\x02\x7f\x00"), MALFORMED),
    Case("property not valid for PUBLISH (session expiry) (section 2.2.2.2)", 5,
         frame(0x30, s("a") + b"\x05\x11\x00\x00\x00\x01"), MALFORMED),
    Case("payload format indicator twice", 5, frame(0x30, s("a") + b"\x04\x01\x00\x01\x01"), PROTOCOL),
    Case("payload format indicator 2", 5, frame(0x30, s("a") + b"\x02\x01\x02"), PROTOCOL),
    Case("subscription identifier 0", 5, frame(0x30, s("a") + b"\x02\x0b\x00"), PROTOCOL),
    Case("property length past the packet", 5, frame(0x30, s("a") + b"\x09\x01\x01"), MALFORMED),
    Case("property value past the property length", 5, frame(0x30, s("a") + b"\x02\x02\x00\x00\x00\x00"),
         MALFORMED),
    Case("user property value not UTF-8", 5, frame(0x30, s("a") + b"\x07\x26" + s("k") + b"\x00\x01\xc0"),
         MALFORMED),
    # CONNECT
    Case("CONNECT unknown protocol name [MQTT-3.1.2-1]", None, frame(0x10, s("MQTX") + b"\x04\x02\x00\x00" + s("c")),
         UNSUPPORTED),
    Case("CONNECT unknown level 6 [MQTT-3.1.2-2]", None, frame(0x10, s("MQTT") + b"\x06\x02\x00\x00" + s("c")),
         UNSUPPORTED),
    Case("CONNECT MQIsdp with level 4", None, frame(0x10, s("MQIsdp") + b"\x04\x02\x00\x00" + s("c")), UNSUPPORTED),
    Case("CONNECT reserved flag [MQTT-3.1.2-3]", None, frame(0x10, _CONNECT4 + b"\x03\x00\x00" + s("c")), MALFORMED),
    Case("CONNECT will QoS without will flag [MQTT-3.1.2-13]", None,
         frame(0x10, _CONNECT4 + b"\x0a\x00\x00" + s("c")), MALFORMED),
    Case("CONNECT will retain without will flag [MQTT-3.1.2-15]", None,
         frame(0x10, _CONNECT4 + b"\x22\x00\x00" + s("c")), MALFORMED),
    Case("CONNECT will QoS 3 [MQTT-3.1.2-14]", None,
         frame(0x10, _CONNECT4 + b"\x1e\x00\x00" + s("c") + s("t") + b(b"")), MALFORMED),
    Case("CONNECT 3.1.1 password without user name [MQTT-3.1.2-22]", None,
         frame(0x10, _CONNECT4 + b"\x42\x00\x00" + s("c") + b(b"pw")), MALFORMED),
    Case("CONNECT trailing bytes", None, frame(0x10, _CONNECT4 + b"\x02\x00\x00" + s("c") + b"\x00"), MALFORMED),
    Case("CONNECT missing will fields [MQTT-3.1.2-9]", None, frame(0x10, _CONNECT4 + b"\x06\x00\x00" + s("c")),
         MALFORMED),
    Case("CONNECT will topic with wildcard", None,
         frame(0x10, _CONNECT4 + b"\x06\x00\x00" + s("c") + s("a/#") + b(b"")), TOPIC_NAME_INVALID),
    Case("CONNECT 5 receive maximum 0", None, frame(0x10, _CONNECT5 + b"\x02\x00\x00\x03\x21\x00\x00" + s("c")),
         PROTOCOL),
    Case("CONNECT 5 maximum packet size 0", None,
         frame(0x10, _CONNECT5 + b"\x02\x00\x00\x05\x27\x00\x00\x00\x00" + s("c")), PROTOCOL),
    Case("CONNECT 5 request problem information 2", None,
         frame(0x10, _CONNECT5 + b"\x02\x00\x00\x02\x17\x02" + s("c")), PROTOCOL),
    Case("CONNECT 5 will delay interval outside the will properties", None,
         frame(0x10, _CONNECT5 + b"\x02\x00\x00\x05\x18\x00\x00\x00\x01" + s("c")), MALFORMED),
    Case("CONNECT 5 topic alias in the will properties", None,
         frame(0x10, _CONNECT5 + b"\x06\x00\x00\x00" + s("c") + b"\x03\x23\x00\x01" + s("t") + b(b"")), MALFORMED),
    Case("CONNECT 5 authentication data without method", None,
         frame(0x10, _CONNECT5 + b"\x02\x00\x00\x03\x16\x00\x00" + s("c")), PROTOCOL),
    # SUBSCRIBE / UNSUBSCRIBE
    Case("SUBSCRIBE without subscriptions [MQTT-3.8.3-3]", 4, frame(0x82, b"\x00\x01"), PROTOCOL),
    Case("SUBSCRIBE packet id 0 [MQTT-2.3.1-1]", 4, frame(0x82, b"\x00\x00" + s("a") + b"\x00"), PROTOCOL),
    Case("SUBSCRIBE 3.1.1 QoS 3 [MQTT-3-8.3-4]", 4, frame(0x82, b"\x00\x01" + s("a") + b"\x03"), MALFORMED),
    Case("SUBSCRIBE 3.1.1 reserved bit 2 [MQTT-3-8.3-4]", 4, frame(0x82, b"\x00\x01" + s("a") + b"\x04"), MALFORMED),
    Case("SUBSCRIBE 5 reserved bits 6-7 [MQTT-3.8.3-5]", 5, frame(0x82, b"\x00\x01\x00" + s("a") + b"\x40"),
         MALFORMED),
    Case("SUBSCRIBE 5 QoS 3 (section 3.8.3.1)", 5, frame(0x82, b"\x00\x01\x00" + s("a") + b"\x03"), PROTOCOL),
    Case("SUBSCRIBE 5 retain handling 3", 5, frame(0x82, b"\x00\x01\x00" + s("a") + b"\x30"), PROTOCOL),
    Case("SUBSCRIBE 5 no local on a shared subscription [MQTT-3.8.3-4]", 5,
         frame(0x82, b"\x00\x01\x00" + s("$share/g/a") + b"\x04"), PROTOCOL),
    Case("SUBSCRIBE 5 subscription identifier twice", 5,
         frame(0x82, b"\x00\x01\x04\x0b\x01\x0b\x02" + s("a") + b"\x00"), PROTOCOL),
    Case("SUBSCRIBE empty topic filter [MQTT-4.7.3-1]", 4, frame(0x82, b"\x00\x01" + s("") + b"\x00"),
         TOPIC_FILTER_INVALID),
    Case("SUBSCRIBE filter truncated", 4, frame(0x82, b"\x00\x01" + s("abc")), MALFORMED),
    Case("UNSUBSCRIBE without filters [MQTT-3.10.3-2]", 4, frame(0xA2, b"\x00\x01"), PROTOCOL),
    # acknowledgements and the rest
    Case("PUBACK 3.1.1 with 3 bytes", 4, bytes.fromhex("40 03 00 01 00"), MALFORMED),
    Case("PUBACK 5 bytes after the properties", 5, bytes.fromhex("40 05 00 01 00 00 00"), MALFORMED),
    Case("PUBACK 5 reason code not valid for PUBACK", 5, bytes.fromhex("40 03 00 01 05"), PROTOCOL),
    Case("PUBACK packet id 0", 4, bytes.fromhex("40 02 00 00"), PROTOCOL),
    Case("PUBCOMP truncated", 4, bytes.fromhex("70 01 00"), MALFORMED),
    Case("PINGREQ with a body", 4, bytes.fromhex("c0 01 00"), MALFORMED),
    Case("DISCONNECT 3.1.1 with a body", 4, bytes.fromhex("e0 01 00"), MALFORMED),
    Case("DISCONNECT 5 reason code 0x84 is CONNACK-only", 5, bytes.fromhex("e0 01 84"), PROTOCOL),
    Case("CONNACK reserved acknowledge flags [MQTT-3.2.2-1]", 4, bytes.fromhex("20 02 02 00"), MALFORMED),
    Case("CONNACK session present with an error [MQTT-3.2.2-4]", 4, bytes.fromhex("20 02 01 05"), PROTOCOL),
    Case("SUBACK 3.1.1 return code 3", 4, bytes.fromhex("90 03 00 01 03"), PROTOCOL),
]

TOO_LARGE = Error(PacketTooLarge, 0x95)
