"""MQTT 5 message properties <-> NATS message headers, for the NATS link (sans-IO: dictionaries in and out).

NATS headers are HTTP-like (`Name: value` lines, `Nats-` names reserved for the server), so what maps
is carried and the rest is said here:

    MQTT (forwarded up / brought down)          NATS header
    Content Type [MQTT-3.3.2.3.9]                Content-Type
    User Property name=value                    name: value  (the same name)
    Payload Format Indicator                    Roost-Payload-Format: 0 or 1
    Response Topic                              Roost-Response-Topic: the MQTT topic, as it is
    Correlation Data (binary)                   Roost-Correlation-Data: base64
    Message Expiry Interval (seconds left)      Roost-Message-Expiry: seconds (informational: JetStream keeps
                                                the message per the stream's limits, not per message)
    RETAIN flag                                 Roost-Retain: 1
    (the gateway that forwarded it)             Roost-Origin: client_id  (a message that comes back down
                                                with our own origin is not published again: no loop)
    (the outbox entry)                          Nats-Msg-Id: client_id:seq:enqueued-microseconds

Not carried: Topic Alias and Subscription Identifier (per connection), and user properties whose name is
not a header token (empty, a ':' or whitespace or a control character in it), starts with `Nats-`,
`Nmqtt-` (nats-server's own MQTT headers) or `Roost-`, or whose value holds CR or LF (it would break the
header block). A name used twice keeps its last value (nats-py's headers are a dictionary). On the way
down every other header becomes a user property, in the order NATS gave them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from broker.codec import EMPTY_PROPERTIES, Properties

__all__ = [
    "MSG_ID",
    "ORIGIN",
    "headers_to_properties",
    "properties_to_headers",
]

MSG_ID = "Nats-Msg-Id"
ORIGIN = "Roost-Origin"
CONTENT_TYPE = "Content-Type"
RETAIN = "Roost-Retain"
PAYLOAD_FORMAT = "Roost-Payload-Format"
RESPONSE_TOPIC = "Roost-Response-Topic"
CORRELATION_DATA = "Roost-Correlation-Data"
MESSAGE_EXPIRY = "Roost-Message-Expiry"
_RESERVED_PREFIXES = ("nats-", "nmqtt-", "roost-")
_MAPPED = frozenset(name.lower() for name in (CONTENT_TYPE,))


def _is_token(name: str) -> bool:
    return bool(name) and all(33 <= ord(char) <= 126 and char != ":" for char in name)


def _is_value(value: str) -> bool:
    return "\r" not in value and "\n" not in value


def _carried(name: str) -> bool:
    lower = name.lower()
    return _is_token(name) and lower not in _MAPPED and not lower.startswith(_RESERVED_PREFIXES)


def properties_to_headers(properties: Properties, retain: bool) -> dict[str, str]:
    """The headers for a message forwarded up (Nats-Msg-Id and Roost-Origin are the link's to add)."""
    headers: dict[str, str] = {}
    if properties is EMPTY_PROPERTIES and not retain:
        return headers
    for name, value in properties.user_properties:
        if _carried(name) and _is_value(value):
            headers[name] = value
    if properties.content_type is not None and _is_value(properties.content_type):
        headers[CONTENT_TYPE] = properties.content_type
    if properties.payload_format_indicator is not None:
        headers[PAYLOAD_FORMAT] = str(properties.payload_format_indicator)
    if properties.response_topic is not None and _is_value(properties.response_topic):
        headers[RESPONSE_TOPIC] = properties.response_topic
    if properties.correlation_data is not None:
        headers[CORRELATION_DATA] = base64.b64encode(properties.correlation_data).decode("ascii")
    if properties.message_expiry_interval is not None:
        headers[MESSAGE_EXPIRY] = str(properties.message_expiry_interval)
    if retain:
        headers[RETAIN] = "1"
    return headers


def headers_to_properties(headers: Mapping[str, str] | None) -> tuple[Properties, bool]:
    """The properties and the RETAIN flag of a message brought down. A mapped header with a value that
    does not parse (a payload format that is not 0 or 1, bad base64) is left out rather than refused."""
    if not headers:
        return EMPTY_PROPERTIES, False
    values: dict[str, object] = {}
    user: list[tuple[str, str]] = []
    retain = False
    for name, value in headers.items():
        lower = name.lower()
        if lower == CONTENT_TYPE.lower():
            values["content_type"] = value
        elif lower == RETAIN.lower():
            retain = value.strip() in ("1", "true")
        elif lower == PAYLOAD_FORMAT.lower():
            if value.strip() in ("0", "1"):
                values["payload_format_indicator"] = int(value)
        elif lower == RESPONSE_TOPIC.lower():
            if value and "+" not in value and "#" not in value:  # a Response Topic is a topic name [MQTT-3.3.2-14]
                values["response_topic"] = value
        elif lower == CORRELATION_DATA.lower():
            try:
                values["correlation_data"] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                pass
        elif lower == MESSAGE_EXPIRY.lower():
            if value.strip().isdigit() and int(value) <= 0xFFFFFFFF:
                values["message_expiry_interval"] = int(value)
        elif _carried(name):
            user.append((name, value))
    if user:
        values["user_properties"] = tuple(user)
    if not values:
        return EMPTY_PROPERTIES, retain
    return Properties(**values), retain  # type: ignore[arg-type]
