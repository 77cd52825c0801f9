"""`/api/v1`: projects, devices, topics, messages, API keys and users, as icmqtt-rest-api-v1.md describes
them (topics and users are Roost's additions in the same style; see docs/api.md)."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control.api import serialize
from control.api.common import authenticated, json_body, ok, query_int, services
from control.errors import NotFound
from control.services.devices import PER_PAGE as DEVICES_PER_PAGE
from control.services.messages import DEFAULT_LIMIT, MAX_LIMIT
from control.services.projects import PER_PAGE as PROJECTS_PER_PAGE
from control.services.topics import PER_PAGE as TOPICS_PER_PAGE
from storage.clock import format_timestamp

__all__ = ["routes"]


def _page(request: Request) -> int:
    return query_int(request, "page", default=1) or 1


def _id(request: Request, name: str) -> int:
    """A path id; one beyond SQLite's integer range cannot exist (404, not an overflow)."""
    value = int(request.path_params[name])
    if value > 2**63 - 1:
        raise NotFound("Resource not found")
    return value


# -- projects --------------------------------------------------------------------------------------------


async def list_projects(request: Request) -> JSONResponse:
    user = await authenticated(request)
    page = _page(request)
    result, max_projects = await services(request).projects.list(user, page=page)
    return ok(
        {
            "data": [serialize.project(p) for p in result.items],
            "pagination": {
                "total": result.total,
                "per_page": PROJECTS_PER_PAGE,
                "current_page": page,
                "last_page": max(1, math.ceil(result.total / PROJECTS_PER_PAGE)),
            },
            "limits": {"max_projects": max_projects or None, "current_projects": result.total},
        }
    )


async def get_project(request: Request) -> JSONResponse:
    user = await authenticated(request)
    details = await services(request).projects.get(user, _id(request, "project_id"))
    return ok(
        {
            "data": serialize.project(details.project),
            "devices_count": details.devices_count,
            "topics_count": details.topics_count,
        }
    )


async def create_project(request: Request) -> JSONResponse:
    user = await authenticated(request)
    body = await json_body(request, ("name", "description"))
    project = await services(request).projects.create(user, body.get("name"), body.get("description"))
    return ok({"data": serialize.project(project)}, 201)


async def update_project(request: Request) -> JSONResponse:
    user = await authenticated(request)
    body = await json_body(request, ("name", "description"))
    project = await services(request).projects.update(
        user, _id(request, "project_id"), body.get("name"), body.get("description")
    )
    return ok({"data": serialize.project(project)})


async def delete_project(request: Request) -> JSONResponse:
    user = await authenticated(request)
    await services(request).projects.delete(user, _id(request, "project_id"))
    return ok({"message": "Project deleted"})


# -- devices ---------------------------------------------------------------------------------------------


async def list_devices(request: Request) -> JSONResponse:
    user = await authenticated(request)
    project_id = query_int(request, "project_id", required=True)
    assert project_id is not None
    page = _page(request)
    views, result = await services(request).devices.list(user, project_id, page=page)
    return ok(
        {
            "data": [serialize.device(v) for v in views],
            "pagination": {"total": result.total, "per_page": DEVICES_PER_PAGE, "current_page": page},
        }
    )


async def get_device(request: Request) -> JSONResponse:
    user = await authenticated(request)
    view = await services(request).devices.get(user, _id(request, "device_id"))
    return ok({"data": serialize.device(view)})


async def create_device(request: Request) -> JSONResponse:
    user = await authenticated(request)
    body = await json_body(request, ("project_id", "name", "device_id", "status"))
    view = await services(request).devices.create(
        user, body.get("project_id"), body.get("name"), body.get("device_id"), body.get("status")
    )
    return ok(
        {
            "data": serialize.device(view),
            "message": "Save the device's MQTT password now: it will not be shown again.",
        },
        201,
    )


async def update_device(request: Request) -> JSONResponse:
    user = await authenticated(request)
    body = await json_body(request, ("name", "status"))
    view = await services(request).devices.update(user, _id(request, "device_id"), body.get("name"), body.get("status"))
    return ok({"data": serialize.device(view)})


async def rotate_device_credentials(request: Request) -> JSONResponse:
    user = await authenticated(request)
    view = await services(request).devices.rotate_credentials(user, _id(request, "device_id"))
    return ok(
        {
            "data": serialize.device(view),
            "message": "Save the device's new MQTT password now: it will not be shown again.",
        }
    )


async def delete_device(request: Request) -> JSONResponse:
    user = await authenticated(request)
    await services(request).devices.delete(user, _id(request, "device_id"))
    return ok({"message": "Device deleted"})


# -- topics ----------------------------------------------------------------------------------------------

_TOPIC_FIELDS = ("name", "description", "can_publish", "can_subscribe")


async def list_topics(request: Request) -> JSONResponse:
    user = await authenticated(request)
    project_id = query_int(request, "project_id", required=True)
    assert project_id is not None
    page = _page(request)
    result = await services(request).topics.list(user, project_id, page=page)
    return ok(
        {
            "data": [serialize.topic(t) for t in result.items],
            "pagination": {"total": result.total, "per_page": TOPICS_PER_PAGE, "current_page": page},
        }
    )


async def get_topic(request: Request) -> JSONResponse:
    user = await authenticated(request)
    topic = await services(request).topics.get(user, _id(request, "topic_id"))
    return ok({"data": serialize.topic(topic)})


async def create_topic(request: Request) -> JSONResponse:
    user = await authenticated(request)
    body = await json_body(request, ("project_id", *_TOPIC_FIELDS))
    topic = await services(request).topics.create(
        user,
        body.get("project_id"),
        body.get("name"),
        body.get("description"),
        body.get("can_publish"),
        body.get("can_subscribe"),
    )
    return ok({"data": serialize.topic(topic)}, 201)


async def update_topic(request: Request) -> JSONResponse:
    user = await authenticated(request)
    body = await json_body(request, _TOPIC_FIELDS)
    topic = await services(request).topics.update(
        user,
        _id(request, "topic_id"),
        body.get("name"),
        body.get("description"),
        body.get("can_publish"),
        body.get("can_subscribe"),
    )
    return ok({"data": serialize.topic(topic)})


async def delete_topic(request: Request) -> JSONResponse:
    user = await authenticated(request)
    await services(request).topics.delete(user, _id(request, "topic_id"))
    return ok({"message": "Topic deleted"})


# -- messages --------------------------------------------------------------------------------------------


async def list_messages(request: Request) -> JSONResponse:
    user = await authenticated(request)
    project_id = query_int(request, "project_id", required=True)
    topic_id = query_int(request, "topic_id")
    limit = query_int(request, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    assert project_id is not None and limit is not None
    records = await services(request).messages.list(user, project_id, topic_id=topic_id, limit=limit)
    return ok({"data": [serialize.message(m) for m in records]})


async def get_message(request: Request) -> JSONResponse:
    user = await authenticated(request)
    record = await services(request).messages.get(user, _id(request, "message_id"))
    return ok({"data": serialize.message(record)})


async def publish_message(request: Request) -> JSONResponse:
    user = await authenticated(request)
    body = await json_body(request, ("project_id", "topic_id", "payload", "qos", "retained"))
    record = await services(request).messages.publish(
        user, body.get("project_id"), body.get("topic_id"), body.get("payload"), body.get("qos"), body.get("retained")
    )
    return ok({"data": serialize.message(record)}, 201)


async def delete_message(request: Request) -> JSONResponse:
    user = await authenticated(request)
    await services(request).messages.delete(user, _id(request, "message_id"))
    return ok({"message": "Message deleted"})


# -- API keys --------------------------------------------------------------------------------------------


async def list_api_keys(request: Request) -> JSONResponse:
    user = await authenticated(request)
    result = await services(request).api_keys.list(user, page=_page(request))
    return ok(
        {
            "data": [serialize.api_key(k) for k in result.items],
            "pagination": {"total": result.total, "per_page": 10},
        }
    )


async def create_api_key(request: Request) -> JSONResponse:
    user = await authenticated(request)
    body = await json_body(request, ("name", "expires_at"))
    created = await services(request).api_keys.create(user, body.get("name"), body.get("expires_at"))
    return ok(
        {
            "data": {
                "id": created.api_key.id,
                "name": created.api_key.name,
                "key": created.key,
                "secret": created.secret,
                "expires_at": created.api_key.expires_at,
                "message": "Save your API key and secret. You will not be able to see them again.",
            }
        },
        201,
    )


async def deactivate_api_key(request: Request) -> JSONResponse:
    user = await authenticated(request)
    record = await services(request).api_keys.deactivate(user, _id(request, "key_id"))
    return ok({"data": serialize.api_key(record)})


async def delete_api_key(request: Request) -> JSONResponse:
    user = await authenticated(request)
    await services(request).api_keys.delete(user, _id(request, "key_id"))
    return ok({"message": "API key deleted"})


# -- users (administrators; anyone may read their own account at /users/me) -------------------------------

_USER_FIELDS = ("plan", "is_admin", "is_active", "password")


async def me(request: Request) -> JSONResponse:
    user = await authenticated(request)
    context = services(request).context
    plan = context.plan_of(user)
    usage = context.usage
    used = usage.used(user.id) if usage is not None else 0
    return ok(
        {
            "data": serialize.user(user),
            "limits": {
                "messages_per_hour": plan.messages_per_hour or None,
                "messages_this_hour": used,
                "messages_refused_this_hour": usage.refused(user.id) if usage is not None else 0,
                "quota_resets_at": format_timestamp(datetime.fromtimestamp(usage.resets_at(), timezone.utc)) if usage is not None else None,
                "max_projects": plan.max_projects or None,
                "max_devices": plan.max_devices or None,
                "max_topics": plan.max_topics or None,
                "max_instances": plan.max_instances or None,
                "retention_days": plan.retention_days,
            },
        }
    )


async def list_users(request: Request) -> JSONResponse:
    user = await authenticated(request)
    page = _page(request)
    result = await services(request).users.list(user, offset=(page - 1) * 100, limit=100)
    return ok(
        {
            "data": [serialize.user(u) for u in result.items],
            "pagination": {"total": result.total, "per_page": 100, "current_page": page},
        }
    )


async def create_user(request: Request) -> JSONResponse:
    actor = await authenticated(request)
    body = await json_body(request, ("name", *_USER_FIELDS))
    created = await services(request).users.create(
        actor,
        body.get("name"),
        plan=body.get("plan"),
        is_admin=body.get("is_admin", False),
        is_active=body.get("is_active", True),
        password=body.get("password"),
    )
    data = serialize.user(created.user)
    data["api_key"] = created.api_key.key
    data["secret"] = created.api_key.secret
    data["message"] = "Save the API key and secret. You will not be able to see them again."
    return ok({"data": data}, 201)


async def get_user(request: Request) -> JSONResponse:
    actor = await authenticated(request)
    record = await services(request).users.get(actor, _id(request, "user_id"))
    return ok({"data": serialize.user(record)})


async def update_user(request: Request) -> JSONResponse:
    actor = await authenticated(request)
    body = await json_body(request, _USER_FIELDS)
    record = await services(request).users.update(actor, _id(request, "user_id"), **body)
    return ok({"data": serialize.user(record)})


async def delete_user(request: Request) -> JSONResponse:
    actor = await authenticated(request)
    await services(request).users.delete(actor, _id(request, "user_id"))
    return ok({"message": "User deleted"})



_P = "/api/v1"
routes = [
    Route(f"{_P}/projects", list_projects, methods=["GET"]),
    Route(f"{_P}/projects", create_project, methods=["POST"]),
    Route(f"{_P}/projects/{{project_id:id}}", get_project, methods=["GET"]),
    Route(f"{_P}/projects/{{project_id:id}}", update_project, methods=["PUT"]),
    Route(f"{_P}/projects/{{project_id:id}}", delete_project, methods=["DELETE"]),
    Route(f"{_P}/devices", list_devices, methods=["GET"]),
    Route(f"{_P}/devices", create_device, methods=["POST"]),
    Route(f"{_P}/devices/{{device_id:id}}", get_device, methods=["GET"]),
    Route(f"{_P}/devices/{{device_id:id}}", update_device, methods=["PUT"]),
    Route(f"{_P}/devices/{{device_id:id}}", delete_device, methods=["DELETE"]),
    Route(f"{_P}/devices/{{device_id:id}}/credentials", rotate_device_credentials, methods=["POST"]),
    Route(f"{_P}/topics", list_topics, methods=["GET"]),
    Route(f"{_P}/topics", create_topic, methods=["POST"]),
    Route(f"{_P}/topics/{{topic_id:id}}", get_topic, methods=["GET"]),
    Route(f"{_P}/topics/{{topic_id:id}}", update_topic, methods=["PUT"]),
    Route(f"{_P}/topics/{{topic_id:id}}", delete_topic, methods=["DELETE"]),
    Route(f"{_P}/messages", list_messages, methods=["GET"]),
    Route(f"{_P}/messages", publish_message, methods=["POST"]),
    Route(f"{_P}/messages/{{message_id:id}}", get_message, methods=["GET"]),
    Route(f"{_P}/messages/{{message_id:id}}", delete_message, methods=["DELETE"]),
    Route(f"{_P}/api-keys", list_api_keys, methods=["GET"]),
    Route(f"{_P}/api-keys", create_api_key, methods=["POST"]),
    Route(f"{_P}/api-keys/{{key_id:id}}/deactivate", deactivate_api_key, methods=["POST"]),
    Route(f"{_P}/api-keys/{{key_id:id}}", delete_api_key, methods=["DELETE"]),
    Route(f"{_P}/users/me", me, methods=["GET"]),
    Route(f"{_P}/users", list_users, methods=["GET"]),
    Route(f"{_P}/users", create_user, methods=["POST"]),
    Route(f"{_P}/users/{{user_id:id}}", get_user, methods=["GET"]),
    Route(f"{_P}/users/{{user_id:id}}", update_user, methods=["PUT"]),
    Route(f"{_P}/users/{{user_id:id}}", delete_user, methods=["DELETE"]),
]
