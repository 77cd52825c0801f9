"""`/api/v1` routes the dashboard needs beyond the two documents: broker figures, a live stream of a
namespace's messages, and the connected clients (with a kick). Like every `/api/v1` route they take an API
key or the dashboard's session cookie, and show a user only their own namespace; administrators see
the whole broker.

    GET  /api/v1/stats                  version, uptime, the user's clients and quota (admins: broker counters)
    GET  /api/v1/live?filter=F          server-sent events: messages on F inside the user's namespace
    GET  /api/v1/clients                connected clients (own namespace; admins: every tenant's)
    POST /api/v1/clients/{id}/kick      disconnect one and end its session
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from broker.codec.topics import validate_topic_filter
from broker.errors import ProtocolError
from broker.service import BrokerService, ClientSummary, WatchedMessage
from broker.settings import VERSION
from control.api.common import ApiError, authenticated, ok, services
from storage.access import tenant_mount
from storage.records import User

log = logging.getLogger("roost.api")

__all__ = ["routes", "LIVE_QUEUE", "LIVE_STREAMS_PER_USER"]

# Messages waiting to be written to one live stream; past this the newest are dropped (and counted).
LIVE_QUEUE = 256
LIVE_STREAMS_PER_USER = 4
HEARTBEAT_SECONDS = 15.0
# How often an idle stream looks whether the server is stopping (uvicorn waits for open responses).
_WAKE_SECONDS = 1.0



def _streams(request: Request) -> dict[int, int]:
    """Open live streams per user id, for this app."""
    state = request.app.state
    if not hasattr(state, "live_streams"):
        state.live_streams = {}
    return state.live_streams  # type: ignore[no-any-return]


def _valid_filter(topic_filter: str) -> bool:
    """A plain filter inside a namespace: valid MQTT, not shared, not a `$` topic."""
    if topic_filter.startswith("$") or len(topic_filter) > 1024:
        return False
    try:
        validate_topic_filter(topic_filter)
    except ProtocolError:
        return False
    return True


def _broker(request: Request) -> BrokerService:
    broker = services(request).context.broker
    if broker is None:
        raise ApiError(503, "Service Unavailable", "The broker is not running")
    return broker


def _client_id(summary: ClientSummary) -> str:
    """An opaque, URL-safe id for a connected client: its session key, unique across tenants."""
    return base64.urlsafe_b64encode(summary.session_key.encode()).decode().rstrip("=")


def _session_key(client_id: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(client_id + "=" * (-len(client_id) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _owner(mount: str) -> int | None:
    """The user id of a tenant namespace `$u{id}/`, or None (a client outside any tenant)."""
    if mount.startswith("$u") and mount.endswith("/") and mount[2:-1].isdigit():
        return int(mount[2:-1])
    return None


def _visible(user: User, summaries: list[ClientSummary]) -> list[ClientSummary]:
    if user.is_admin:
        return summaries
    mount = tenant_mount(user.id)
    return [s for s in summaries if s.mount == mount]


async def stats(request: Request) -> JSONResponse:
    user = await authenticated(request)
    broker = _broker(request)
    context = services(request).context
    plan = context.plan_of(user)
    clients = broker.clients()
    mount = tenant_mount(user.id)
    body: dict[str, Any] = {
        "version": VERSION,
        "uptime_seconds": int(broker.uptime()),
        "time": time.time(),
        "user": {
            "clients_connected": sum(1 for c in clients if c.mount == mount),
            "messages_this_hour": context.usage.used(user.id) if context.usage is not None else 0,
            # What the tenant's clients were sent (messages out); the chart takes rates of both.
            "messages_sent": broker.tenant_messages_sent(mount),
            "messages_per_hour": plan.messages_per_hour or None,
            # Refused over the quota this hour (a 3.1.1 QoS 0 publisher is never told), and when that ends.
            "messages_refused_this_hour": context.usage.refused(user.id) if context.usage is not None else 0,
            "quota_resets_at": int(context.usage.resets_at()) if context.usage is not None else None,
        },
    }
    if user.is_admin:
        counters = broker.counters()
        counters["clients_connected"] = len(clients)  # MQTT clients only, not the live views
        body["broker"] = counters
    return ok({"data": body})


async def list_clients(request: Request) -> JSONResponse:
    user = await authenticated(request)
    summaries = _visible(user, _broker(request).clients())
    names: dict[int, str | None] = {}
    if user.is_admin:
        for owner in {_owner(s.mount) for s in summaries} - {None}:
            assert owner is not None
            record = await services(request).context.store.users.get(owner)
            names[owner] = record.name if record is not None else None
    data = []
    for s in sorted(summaries, key=lambda s: s.connected_at):
        owner = _owner(s.mount)
        item: dict[str, Any] = {
            "id": _client_id(s),
            "client_id": s.client_id,
            "username": s.username,
            "protocol_version": s.protocol_version,
            "remote_address": s.remote_address,
            "listener": s.listener,
            "connected_at": s.connected_at,
            "subscriptions": [f[len(s.mount):] if f.startswith(s.mount) else f for f in s.subscriptions],
        }
        if user.is_admin:
            item["user_id"] = owner
            item["user_name"] = names.get(owner) if owner is not None else None
        data.append(item)
    return ok({"data": data})


async def kick_client(request: Request) -> JSONResponse:
    user = await authenticated(request)
    broker = _broker(request)
    key = _session_key(request.path_params["client"])
    target = next((s for s in _visible(user, broker.clients()) if s.session_key == key), None)
    if target is None:
        raise ApiError(404, "Not Found", "No such connected client")
    broker.kick(where=lambda info: info.session_key == key)
    log.info("kicked client %s (user %r) at the request of %s", target.client_id, target.username, user.name)
    return ok({"message": "Client disconnected"})


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def live(request: Request) -> StreamingResponse:
    """Server-sent events: `message` for each message on the filter (topic without the namespace,
    payload as UTF-8 text when it is, else base64), `dropped` when the browser reads too slowly."""
    user = await authenticated(request)
    broker = _broker(request)
    topic_filter = request.query_params.get("filter") or "#"
    if _streams(request).get(user.id, 0) >= LIVE_STREAMS_PER_USER:
        raise ApiError(429, "Too many live views",
                       f"At most {LIVE_STREAMS_PER_USER} live views may be open at once: close one first",
                       headers={"Retry-After": "5"})
    queue: asyncio.Queue[WatchedMessage] = asyncio.Queue(LIVE_QUEUE)
    dropped = 0

    def deliver(message: WatchedMessage) -> None:
        nonlocal dropped
        try:
            queue.put_nowait(message)
        except asyncio.QueueFull:
            dropped += 1

    if not _valid_filter(topic_filter):
        raise ApiError(422, "Validation failed", "The filter is not a valid MQTT topic filter",
                       fields={"filter": "Use a topic filter such as sensors/# or home/+/temperature "
                                         "(no $ topics, no $share)."})
    streams = _streams(request)

    async def events() -> AsyncIterator[bytes]:
        nonlocal dropped
        # Opened here, not before: the `finally` below is sure to run for every watch opened.
        watch = broker.watch(tenant_mount(user.id), topic_filter, deliver)
        streams[user.id] = streams.get(user.id, 0) + 1
        try:
            yield b"retry: 3000\n" + _event("ready", {"filter": topic_filter})
            idle = 0.0
            while not broker.closing:
                try:
                    message = await asyncio.wait_for(queue.get(), _WAKE_SECONDS)
                except TimeoutError:
                    idle += _WAKE_SECONDS
                    if idle >= HEARTBEAT_SECONDS:
                        idle = 0.0
                        yield b": keep-alive\n\n"
                    continue
                idle = 0.0
                if dropped:
                    yield _event("dropped", {"count": dropped})
                    dropped = 0
                yield _event("message", _message(message))
        finally:
            watch.close()
            left = streams.get(user.id, 1) - 1
            if left > 0:
                streams[user.id] = left
            else:
                streams.pop(user.id, None)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _message(message: WatchedMessage) -> dict[str, Any]:
    body: dict[str, Any] = {"topic": message.topic, "qos": message.qos, "retain": message.retain,
                            "time": time.time()}
    try:
        body["payload"] = message.payload.decode("utf-8")
    except UnicodeDecodeError:
        body["payload_base64"] = base64.b64encode(message.payload).decode()
    return body


routes = [
    Route("/api/v1/stats", stats, methods=["GET"]),
    Route("/api/v1/live", live, methods=["GET"]),
    Route("/api/v1/clients", list_clients, methods=["GET"]),
    Route("/api/v1/clients/{client}/kick", kick_client, methods=["POST"]),
]
