"""The rows of `broker-state.db` and the broker's records, both ways (used by storage/broker_state.py).

Reading back checks each row as the broker would have made it (types, ranges, valid topics and filters,
decodable properties): a row that fails raises `BadRow`, and the loader moves that record aside
(storage/state_quarantine.py) instead of refusing to start, so that one bad record never keeps the rest
from being restored, nor trips the broker later (a timer, a publish) with a value it could not have made.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from broker.codec import EMPTY_PROPERTIES, Properties, Will
from broker.codec.properties import WILL_PROPERTIES, decode_properties, encode_properties
from broker.codec.reason_codes import PacketType
from broker.codec.topics import parse_shared, validate_topic_filter, validate_topic_name
from broker.hooks import ClientInfo
from broker.session import Delivery, Message, Session, SubscriptionRecord
from storage.errors import StorageError

__all__ = [
    "BadRow", "delivery_from_row", "fetch_all", "message_from_row", "message_row", "properties_blob",
    "retained_from_row", "session_from_row", "session_row", "subscription_from_row",
]


class BadRow(StorageError):
    """A stored row that is not what Roost writes; the loader moves its record aside."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise BadRow(what)


def _int(value: Any, low: int, high: int, what: str) -> int:
    _check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
           f"{what} {value!r} is not an integer in [{low}, {high}]")
    return int(value)


async def fetch_all(connection: Any, sql: str) -> list[sqlite3.Row]:
    async with connection.execute(sql) as cursor:
        return list(await cursor.fetchall())


def properties_blob(properties: Properties) -> bytes | None:
    return None if properties is EMPTY_PROPERTIES else encode_properties(properties)


def _properties(blob: bytes | None, context: int) -> Properties:
    if not blob:
        return EMPTY_PROPERTIES
    _check(isinstance(blob, bytes), "properties are not a blob")
    return decode_properties(blob, 0, len(blob), context)[0]


def session_row(session: Session) -> tuple[Any, ...]:
    client = session.client or ClientInfo(session.key, None, 4)
    will = session.armed_will if session.disconnected_at is None else session.pending_will
    try:
        attributes = json.dumps(client.attributes)
    except (TypeError, ValueError):
        attributes = json.dumps({k: v for k, v in client.attributes.items() if isinstance(v, (str, int, float, bool, type(None)))})
    return (
        session.key, client.client_id, client.username, client.protocol_version, client.is_admin, client.anonymous,
        client.mount, attributes, session.expiry_interval, session.disconnected_at,
        None if will is None else will.topic,
        None if will is None else will.payload,
        None if will is None else will.qos,
        None if will is None else will.retain,
        None if will is None else properties_blob(will.properties),
    )


def session_from_row(row: sqlite3.Row, now: float) -> Session:
    _check(isinstance(row["client_id"], str) and isinstance(row["mount"], str), "client id or mount is not text")
    _check(row["username"] is None or isinstance(row["username"], str), "user name is not text")
    attributes = json.loads(row["attributes"])
    _check(isinstance(attributes, dict), "attributes are not a JSON object")
    client = ClientInfo(
        client_id=row["client_id"],
        username=row["username"],
        protocol_version=_int(row["protocol_version"], 3, 5, "protocol version"),
        is_admin=bool(row["is_admin"]),
        anonymous=bool(row["anonymous"]),
        mount=row["mount"],
        attributes=attributes,
    )
    _check(client.session_key == row["key"], "the key is not the client's session key")
    will = None
    if row["will_topic"] is not None:
        validate_topic_name(row["will_topic"])
        _check(isinstance(row["will_payload"], bytes), "will payload is not a blob")
        will = Will(
            row["will_topic"], row["will_payload"], _int(row["will_qos"], 0, 2, "will QoS"), bool(row["will_retain"]),
            _properties(row["will_properties"], WILL_PROPERTIES),
        )
    disconnected_at = row["disconnected_at"]
    _check(disconnected_at is None or isinstance(disconnected_at, (int, float)), "disconnected_at is not a time")
    return Session(
        row["key"],
        expiry_interval=_int(row["expiry_interval"], 0, 0xFFFFFFFF, "session expiry"),
        client=client,
        # Connected when the process stopped: that connection ended now, without DISCONNECT.
        disconnected_at=now if disconnected_at is None else disconnected_at,
        pending_will=will,
        durable=True,
    )


def subscription_from_row(row: sqlite3.Row) -> SubscriptionRecord:
    topic_filter = row["topic_filter"]
    _check(isinstance(topic_filter, str), "topic filter is not text")
    validate_topic_filter(topic_filter)
    parse_shared(topic_filter)
    subscription_id = row["subscription_id"]
    if subscription_id is not None:
        _int(subscription_id, 1, 268_435_455, "subscription identifier")
    return SubscriptionRecord(
        topic_filter, _int(row["qos"], 0, 2, "QoS"), bool(row["no_local"]), bool(row["retain_as_published"]),
        _int(row["retain_handling"], 0, 2, "retain handling"), subscription_id,
    )


def message_row(message_id: int, message: Message) -> tuple[Any, ...]:
    return (
        message_id, message.topic, message.payload, message.qos, message.retain,
        properties_blob(message.properties), message.expires_at, message.sender, message.origin,
    )


def message_from_row(row: sqlite3.Row) -> Message:
    validate_topic_name(row["topic"])
    _check(isinstance(row["payload"], bytes), "payload is not a blob")
    message = Message(
        row["topic"], row["payload"], _int(row["qos"], 0, 2, "QoS"), bool(row["retain"]),
        _properties(row["properties"], PacketType.PUBLISH), row["expires_at"], row["sender"], row["origin"],
    )
    message.store_id = row["id"]
    return message


def delivery_from_row(row: sqlite3.Row, message: Message) -> Delivery:
    ids = tuple(_int(int(part), 1, 268_435_455, "subscription identifier")
                for part in str(row["subscription_ids"]).split(",") if part)
    packet_id = row["packet_id"]
    if packet_id is not None:
        _int(packet_id, 1, 65_535, "packet identifier")
    delivery = Delivery(message, _int(row["qos"], 1, 2, "QoS"), bool(row["retain"]), ids, packet_id,
                        bool(row["released"]))
    delivery.store_id = row["id"]
    return delivery


def retained_from_row(row: sqlite3.Row) -> Message:
    validate_topic_name(row["topic"])
    _check(isinstance(row["payload"], bytes) and len(row["payload"]) > 0, "payload is not a non-empty blob")
    return Message(
        row["topic"], row["payload"], _int(row["qos"], 0, 2, "QoS"), True,
        _properties(row["properties"], PacketType.PUBLISH), row["expires_at"], None, row["origin"],
    )
