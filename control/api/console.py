"""`/api/v1` routes of the dashboard's broker console: subscriptions and shared groups, retained messages
(browse, delete), the event log and the last hour of figures. Like every `/api/v1` route they take an API
key or the dashboard's session cookie; a user sees only their own namespace (topics as they name them),
administrators the whole broker. Every list is one page at a time (`page`, `per_page` up to 500), built
by the broker between two packets (broker/inspect.py), so a broker with 100,000 subscriptions answers a
page as fast as one with ten.

    GET    /api/v1/subscriptions?q=          subscriptions, session by session
    GET    /api/v1/shared-subscriptions      shared groups with their members
    GET    /api/v1/retained?filter=F         retained messages on a filter (payload previews)
    DELETE /api/v1/retained?filter=F         delete the retained messages on a filter (a topic: just it)
    GET    /api/v1/events?kind=&q=           connection, refusal, disconnection and kick events
    GET    /api/v1/stats/history             the last hour, one point per interval (administrators)
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broker.codec.topics import validate_topic_filter
from broker.errors import ProtocolError
from broker.events import KINDS
from broker.inspect import Page
from control.api.common import ApiError, authenticated, ok
from control.api.dashboard_api import _broker, _valid_filter
from control.api.paging import answer, finish, mount_of, owner_of, paging
from control.api.payloads import preview
from storage.records import User

__all__ = ["routes"]


def _text(request: Request, name: str = "q") -> str:
    value = request.query_params.get(name, "")
    if len(value) > 256:
        raise ApiError(422, "Validation failed", f"The {name} parameter is too long",
                       fields={name: "Use at most 256 characters."})
    return value


def _filter(request: Request, user: User) -> str:
    """The topic filter of a retained-message request: the tenant's own (no `$`, no `$share`); an
    administrator may also name `$` topics, e.g. `$u3/#` for one tenant or `$SYS/#`."""
    topic_filter = request.query_params.get("filter") or "#"
    valid = _valid_filter(topic_filter)
    if not valid and user.is_admin and topic_filter.startswith("$") and not topic_filter.startswith("$share/"):
        try:
            validate_topic_filter(topic_filter)
            valid = len(topic_filter) <= 1024
        except ProtocolError:
            valid = False
    if not valid:
        raise ApiError(422, "Validation failed", "The filter is not a valid MQTT topic filter",
                       fields={"filter": "Use a topic filter such as sensors/# or home/+/temperature "
                                         "(no $share)."})
    return topic_filter


async def list_subscriptions(request: Request) -> JSONResponse:
    user = await authenticated(request)
    page, per_page, offset = paging(request)
    result = await finish(_broker(request).subscription_page(mount_of(user), _text(request), offset, per_page))
    return await answer(request, user, result, page, per_page, lambda s: {
        "client_id": s.client_id, "topic_filter": s.topic_filter, "qos": s.qos, "no_local": s.no_local,
        "retain_as_published": s.retain_as_published, "retain_handling": s.retain_handling,
        "subscription_id": s.subscription_id, "share_group": s.share_group, "online": s.online,
    }, lambda s: s.mount)


async def list_shared(request: Request) -> JSONResponse:
    user = await authenticated(request)
    page, per_page, offset = paging(request)
    result = await finish(_broker(request).shared_group_page(mount_of(user), offset, per_page))
    return await answer(request, user, result, page, per_page, lambda g: {
        "group": g.group, "topic_filter": g.topic_filter, "members": list(g.members), "online": g.online,
    }, lambda g: g.mount)


async def list_retained(request: Request) -> JSONResponse:
    user = await authenticated(request)
    page, per_page, offset = paging(request)
    topic_filter = _filter(request, user)
    result = _broker(request).retained_page(mount_of(user), topic_filter, offset, per_page)
    now = time.time()
    return await answer(request, user, result, page, per_page, lambda r: {
        "topic": r.topic, "qos": r.qos, "payload": preview(r.payload), "stored_at": r.stored_at,
        "age_seconds": max(0.0, now - r.stored_at), "expires_at": r.expires_at,
    }, lambda r: _topic_mount(r.topic))


def _topic_mount(topic: str) -> str:
    head, sep, _rest = topic.partition("/")
    return head + "/" if sep and owner_of(head + "/") is not None else ""


async def delete_retained(request: Request) -> JSONResponse:
    user = await authenticated(request)
    if "filter" not in request.query_params:
        raise ApiError(400, "Bad Request", "Missing required parameter: filter")
    topic_filter = _filter(request, user)
    removed = _broker(request).delete_retained(mount_of(user), topic_filter)
    return ok({"message": f"{removed} retained message{'s' if removed != 1 else ''} deleted", "deleted": removed})


async def list_events(request: Request) -> JSONResponse:
    user = await authenticated(request)
    page, per_page, offset = paging(request)
    kind = request.query_params.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise ApiError(422, "Validation failed", "Unknown kind of event",
                       fields={"kind": f"Use one of: {', '.join(KINDS)}."})
    needle = _text(request).casefold()
    mount = mount_of(user)
    matching = [e for e in _broker(request).events()
                if (mount is None or e.mount == mount) and (kind is None or e.kind == kind)
                and (not needle or any(needle in v.casefold() for v in
                                       (e.client_id, e.username or "", e.address, e.reason, e.detail)))]
    result = Page(matching[offset:offset + per_page], len(matching), offset + per_page < len(matching))
    return await answer(request, user, result, page, per_page, lambda e: {
        "id": e.id, "time": e.time, "kind": e.kind, "client_id": e.client_id, "username": e.username,
        "address": e.address, "reason_code": e.reason_code, "reason": e.reason, "detail": e.detail,
    }, lambda e: e.mount)


async def stats_history(request: Request) -> JSONResponse:
    """Administrators: the whole broker's last hour; a user: their namespace's (no drops per tenant)."""
    user = await authenticated(request)
    broker = _broker(request)
    points = [{"time": p.time, "messages_in": p.messages_in, "messages_out": p.messages_out,
               "dropped": p.dropped, "connections": p.connections} for p in broker.history_points(mount_of(user))]
    return ok({"data": {"interval": broker.history.interval, "span": broker.history.span, "points": points}})


routes = [
    Route("/api/v1/subscriptions", list_subscriptions, methods=["GET"]),
    Route("/api/v1/shared-subscriptions", list_shared, methods=["GET"]),
    Route("/api/v1/retained", list_retained, methods=["GET"]),
    Route("/api/v1/retained", delete_retained, methods=["DELETE"]),
    Route("/api/v1/events", list_events, methods=["GET"]),
    Route("/api/v1/stats/history", stats_history, methods=["GET"]),
]
