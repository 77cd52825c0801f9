"""Topic names and filters (MQTT 5 sections 4.7 and 4.8.2)."""

from __future__ import annotations

import pytest

from broker.codec import parse_shared, validate_topic_filter, validate_topic_name
from broker.errors import ProtocolError


@pytest.mark.parametrize("topic", ["a", "/", "a/b/c", "$SYS/x", "sport/tennis/player1", " ", "a//b", "$share/x"])
def test_valid_topic_names(topic: str) -> None:
    validate_topic_name(topic)


@pytest.mark.parametrize(
    "topic,rule",
    [("", "MQTT-4.7.3-1"), ("a/+", "MQTT-4.7.1-1"), ("#", "MQTT-4.7.1-1"), ("a+b", "MQTT-4.7.1-1")],
)
def test_invalid_topic_names_are_0x90(topic: str, rule: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_topic_name(topic)
    assert info.value.reason_code == 0x90
    assert rule in str(info.value)


@pytest.mark.parametrize(
    "topic_filter",
    ["#", "+", "a/#", "a/+/b", "+/+", "/+", "sport/tennis/#", "$share/g/a/#", "$share/group/+", "a//b", "$SYS/#"],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter,rule",
    [
        ("", "MQTT-4.7.3-1"),
        ("a/#/b", "MQTT-4.7.1-2"),
        ("a#", "MQTT-4.7.1-2"),
        ("a/b#", "MQTT-4.7.1-2"),
        ("a+", "MQTT-4.7.1-3"),
        ("a/+b/c", "MQTT-4.7.1-3"),
        ("$share//a", "MQTT-4.8.2-1"),
        ("$share/g+/a", "MQTT-4.8.2-2"),
        ("$share/#/a", "MQTT-4.8.2-2"),
        ("$share/g", "MQTT-4.8.2-2"),
        ("$share/g/", "MQTT-4.8.2-2"),
        ("$share/g/a/#/b", "MQTT-4.7.1-2"),
    ],
)
def test_invalid_topic_filters_are_0x8f(topic_filter: str, rule: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_topic_filter(topic_filter)
    assert info.value.reason_code == 0x8F
    assert rule in str(info.value)


@pytest.mark.parametrize(
    "topic_filter,expected",
    [
        ("a/b", (None, "a/b")),
        ("$share/g/a/b", ("g", "a/b")),
        ("$share/g/#", ("g", "#")),
        ("$share", (None, "$share")),
        ("$share/g", ("g", "")),
        ("$SHARE/g/a", (None, "$SHARE/g/a")),
    ],
)
def test_parse_shared(topic_filter: str, expected: tuple[str | None, str]) -> None:
    assert parse_shared(topic_filter) == expected
