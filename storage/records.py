"""What the repositories return: frozen, slotted snapshots of rows, never live objects.

A record is a copy taken at read time; changing the database does not change it, and it cannot be used to
write back. Timestamps are the stored ISO-8601 UTC strings (see `storage.clock`), which is what the REST
APIs print. Secret material is kept out of records: hashes stay in the database (the broker's auth sees
them through `storage.auth_snapshot`), and a plaintext secret exists only in the one `Created*` record
handed back when it is generated, with `repr=False` so it does not end up in a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = [
    "ApiKey",
    "CreatedApiKey",
    "CreatedDevice",
    "CreatedInstance",
    "Device",
    "MqttInstance",
    "NewMessage",
    "Page",
    "Project",
    "StoredMessage",
    "Topic",
    "User",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One window of a list: `items`, how many rows the owner has in all (`total`), and how many of those
    match the filter (`filtered`; equal to `total` when there is no filter), as /v1/mqtt's
    recordsTotal / recordsFiltered and /api/v1's pagination.total need."""

    items: tuple[T, ...]
    total: int
    filtered: int


@dataclass(frozen=True, slots=True)
class User:
    id: int
    public_id: str  # 24 hex characters; the `owner` of /v1/mqtt instances
    name: str
    plan: str
    is_admin: bool
    is_active: bool
    has_password: bool  # whether a dashboard login is possible
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class MqttInstance:
    """A /v1/mqtt instance: one generated MQTT login belonging to a user.

    The password is only here encrypted; `InstanceRepository.reveal_password` decrypts it for the API.
    """

    id: int
    public_id: str  # the API's `_id`
    user_id: int
    owner: str  # the owning user's public_id
    username: str
    created_at: str
    version: int  # the API's `__v`
    password_encrypted: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CreatedInstance:
    instance: MqttInstance
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    user_id: int
    name: str
    description: str
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Device:
    """A device of a project. `device_id` is both its MQTT client id and its MQTT username.

    `is_active` False is the API's `inactive` status; online/offline is live state the broker knows.
    """

    id: int
    project_id: int
    name: str
    device_id: str
    is_active: bool
    cert_serial: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class CreatedDevice:
    device: Device
    secret: str = field(repr=False)  # the device's MQTT password; shown once


@dataclass(frozen=True, slots=True)
class Topic:
    """A topic name or filter a project's devices may publish and/or subscribe to."""

    id: int
    project_id: int
    name: str
    description: str
    can_publish: bool
    can_subscribe: bool
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    user_id: int
    name: str
    prefix: str  # the key's first characters, for lists ("sk_ab12cd")
    is_active: bool
    last_used_at: str | None
    expires_at: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    api_key: ApiKey
    key: str = field(repr=False)
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store, as the broker or the REST publish hands it over."""

    project_id: int
    topic: str
    payload: bytes
    qos: int = 0
    retained: bool = False
    topic_id: int | None = None
    expires_at: str | None = None

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {self.qos!r}")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    project_id: int
    topic_id: int | None  # None once the topic row is deleted; `topic` still says where it went
    topic: str
    payload: bytes
    qos: int
    retained: bool
    expires_at: str | None
    created_at: str
