"""MQTT 5 properties <-> NATS headers (bridge/nats_headers.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.nats_headers import headers_to_properties, properties_to_headers
from broker.codec import EMPTY_PROPERTIES, Properties


def test_what_maps_goes_both_ways() -> None:
    properties = Properties(
        content_type="application/json", payload_format_indicator=1, response_topic="reply/here",
        correlation_data=b"\x00\x01id", message_expiry_interval=60,
        user_properties=(("unit", "C"), ("room", "kitchen")),
    )
    headers = properties_to_headers(properties, retain=True)
    assert headers == {
        "unit": "C", "room": "kitchen", "Content-Type": "application/json", "Roost-Payload-Format": "1",
        "Roost-Response-Topic": "reply/here", "Roost-Correlation-Data": "AAFpZA==", "Roost-Message-Expiry": "60",
        "Roost-Retain": "1",
    }
    assert headers_to_properties(headers) == (properties, True)


def test_nothing_to_carry_is_no_headers() -> None:
    assert properties_to_headers(EMPTY_PROPERTIES, retain=False) == {}
    assert headers_to_properties(None) == (EMPTY_PROPERTIES, False)
    assert headers_to_properties({}) == (EMPTY_PROPERTIES, False)


def test_user_properties_that_are_not_header_names_or_are_reserved_stay_behind() -> None:
    properties = Properties(user_properties=(
        ("has space", "x"), ("colon:name", "x"), ("", "x"), ("Nats-Msg-Id", "forged"), ("Roost-Origin", "forged"),
        ("Nmqtt-Pub", "x"), ("multi", "line\nvalue"), ("ok", "kept"),
    ))
    assert properties_to_headers(properties, retain=False) == {"ok": "kept"}


def test_server_and_nats_mqtt_headers_are_not_user_properties_on_the_way_down() -> None:
    properties, retain = headers_to_properties({
        "Nats-Msg-Id": "1", "Nats-Stream": "S", "Nmqtt-Pub": "1", "Roost-Origin": "gw-2", "who": "cloud",
    })
    assert properties.user_properties == (("who", "cloud"),) and retain is False


def test_bad_mapped_values_are_left_out() -> None:
    properties, _ = headers_to_properties({
        "Roost-Payload-Format": "7", "Roost-Correlation-Data": "not base64!", "Roost-Message-Expiry": "-1",
        "Roost-Response-Topic": "a/#",
    })
    assert properties == EMPTY_PROPERTIES


_name = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=":"), min_size=1, max_size=8)


@given(st.lists(st.tuples(_name, st.text(st.characters(blacklist_characters="\r\n"), max_size=8)), max_size=5))
def test_carried_user_properties_round_trip(pairs: list[tuple[str, str]]) -> None:
    properties = Properties(user_properties=tuple(pairs))
    headers = properties_to_headers(properties, retain=False)
    back, _ = headers_to_properties(headers)
    assert dict(back.user_properties) == headers
