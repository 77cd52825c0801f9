"""Records to the JSON shapes the API documents show."""

from __future__ import annotations

from typing import Any

from control.services.devices import DeviceView
from control.services.instances import InstanceView
from storage.records import ApiKey, Project, StoredMessage, Topic, User

__all__ = ["api_key", "device", "instance", "message", "project", "topic", "user"]


def instance(view: InstanceView) -> dict[str, Any]:
    """mqtt-instances-api.md's instance object (`port` is a string there)."""
    record = view.instance
    return {
        "_id": record.public_id,
        "server": view.server,
        "user": record.username,
        "password": view.password,
        "port": view.port,
        "owner": record.owner,
        "created_at": record.created_at,
        "__v": record.version,
    }


def project(record: Project) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "description": record.description,
        "user_id": record.user_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def device(view: DeviceView) -> dict[str, Any]:
    record = view.device
    body: dict[str, Any] = {
        "id": record.id,
        "project_id": record.project_id,
        "name": record.name,
        "device_id": record.device_id,
        "status": view.status,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    if view.secret is not None:
        # Shown once: at creation and at each rotation.
        body["mqtt_credentials"] = {
            "client_id": record.device_id,
            "username": record.device_id,
            "password": view.secret,
        }
    return body


def topic(record: Topic) -> dict[str, Any]:
    return {
        "id": record.id,
        "project_id": record.project_id,
        "name": record.name,
        "description": record.description,
        "can_publish": record.can_publish,
        "can_subscribe": record.can_subscribe,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def message(record: StoredMessage) -> dict[str, Any]:
    try:
        payload: str = record.payload.decode("utf-8")
    except UnicodeDecodeError:
        payload = record.payload.decode("latin-1")
    return {
        "id": record.id,
        "project_id": record.project_id,
        "topic_id": record.topic_id,
        "topic": record.topic,
        "payload": payload,
        "qos": record.qos,
        "retained": record.retained,
        "expires_at": record.expires_at,
        "created_at": record.created_at,
    }


def api_key(record: ApiKey) -> dict[str, Any]:
    """Listed keys show only their prefix: the full key was shown once, at creation."""
    return {
        "id": record.id,
        "name": record.name,
        "key": record.prefix + "...",
        "is_active": record.is_active,
        "last_used_at": record.last_used_at,
        "expires_at": record.expires_at,
        "created_at": record.created_at,
    }


def user(record: User) -> dict[str, Any]:
    return {
        "id": record.id,
        "public_id": record.public_id,
        "name": record.name,
        "plan": record.plan,
        "is_admin": record.is_admin,
        "is_active": record.is_active,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
