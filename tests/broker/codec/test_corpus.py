"""The shared corpus (corpus.py) through PacketReader, decode_packet and encode."""

from __future__ import annotations

import pytest

from broker.codec import NEED_DATA, PacketReader, decode_packet, encode
from broker.errors import ProtocolError

from .corpus import INVALID, VALID, Case, Error


def _decode_all(case: Case) -> object:
    reader = PacketReader(case.version)
    reader.receive_data(case.raw)
    packet = reader.next_packet()
    assert reader.next_packet() is NEED_DATA, "the case must hold exactly one packet"
    return packet


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 30
    assert len({case.name for case in VALID + INVALID}) == len(VALID) + len(INVALID)


@pytest.mark.parametrize("case", VALID, ids=lambda case: case.name)
def test_valid_packet_decodes(case: Case) -> None:
    assert _decode_all(case) == case.expected


@pytest.mark.parametrize("case", [c for c in VALID if c.canonical], ids=lambda case: case.name)
def test_valid_packet_encodes_to_the_same_bytes(case: Case) -> None:
    version = case.version if case.version is not None else case.expected.protocol_version  # type: ignore[union-attr]
    assert encode(case.expected, version) == case.raw  # type: ignore[arg-type]


@pytest.mark.parametrize("case", INVALID, ids=lambda case: case.name)
def test_invalid_packet_raises_its_reason_code(case: Case) -> None:
    assert isinstance(case.expected, Error)
    with pytest.raises(ProtocolError) as info:
        _decode_all(case)
    assert type(info.value) is case.expected.cls
    assert info.value.reason_code == case.expected.reason_code


@pytest.mark.parametrize(
    "case", [c for c in VALID + INVALID if c.raw[1] < 0x80 and len(c.raw) == c.raw[1] + 2], ids=lambda c: c.name
)
def test_decode_packet_agrees_with_the_reader(case: Case) -> None:
    """decode_packet on the body alone (also as a memoryview) behaves like the reader."""
    body = case.raw[2:]
    if isinstance(case.expected, Error):
        with pytest.raises(case.expected.cls) as info:
            decode_packet(case.raw[0], memoryview(body), case.version)
        assert info.value.reason_code == case.expected.reason_code
    else:
        assert decode_packet(case.raw[0], body, case.version) == case.expected
        assert decode_packet(case.raw[0], memoryview(body), case.version) == case.expected


def test_unsupported_version_carries_the_level_read() -> None:
    """The broker answers 0x84 (v5) or return code 1 (3.1.1) in the client's dialect [MQTT-3.1.2-2]."""
    from .corpus import frame, s

    for level in (6, 5, 0):
        name = "MQTT" if level != 5 else "MQTZ"
        reader = PacketReader()
        reader.receive_data(frame(0x10, s(name) + bytes((level,)) + b"\x02\x00\x00" + s("c")))
        with pytest.raises(ProtocolError) as info:
            reader.next_packet()
        assert info.value.reason_code == 0x84
        assert info.value.protocol_version == level  # type: ignore[attr-defined]


def test_malformed_connect_carries_the_level_read() -> None:
    from .corpus import frame, s

    reader = PacketReader()
    reader.receive_data(frame(0x10, s("MQTT") + b"\x05\x03\x00\x00\x00" + s("c")))
    with pytest.raises(ProtocolError) as info:
        reader.next_packet()
    assert info.value.reason_code == 0x81
    assert info.value.protocol_version == 5  # type: ignore[attr-defined]
