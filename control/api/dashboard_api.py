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
from broker.service import BrokerService, WatchedMessage
from broker.settings import VERSION
from control.api.common import ApiError, authenticated, json_body, ok, services
from control.api.paging import answer, finish, mount_of, owner_of, paging
from control.api.payloads import preview
from control.api.live_guard import RECHECK, LiveStream, Rechecks, StreamGuard, credential_of
from control.errors import LimitReached
from storage.access import tenant_mount

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


def _client_id(session_key: str) -> str:
    """An opaque, URL-safe id for a connected client: its session key, unique across tenants."""
    return base64.urlsafe_b64encode(session_key.encode()).decode().rstrip("=")


def _session_key(client_id: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(client_id + "=" * (-len(client_id) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


async def stats(request: Request) -> JSONResponse:
    user = await authenticated(request)
    broker = _broker(request)
    context = services(request).context
    plan = context.plan_of(user)
    # Counted, not listed: the Overview asks every 2 s, and a broker may hold 10,000 clients.
    counts = broker.client_counts()
    mount = tenant_mount(user.id)
    body: dict[str, Any] = {
        "version": VERSION,
        "uptime_seconds": int(broker.uptime()),
        "time": time.time(),
        "user": {
            "clients_connected": counts.get(mount, 0),
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
        counters["clients_connected"] = sum(counts.values())  # MQTT clients only, not the live views
        counters["events_dropped"] = broker.events_dropped()  # pushed out of the console's event log
        body["broker"] = counters
    return ok({"data": body})


async def list_clients(request: Request) -> JSONResponse:
    """One page of connected clients, oldest connection first; `q` narrows to those whose client id, user
    name or address contains it."""
    user = await authenticated(request)
    page, per_page, offset = paging(request, default=100)
    text = request.query_params.get("q", "")[:256]
    # `own` narrows an administrator's view to their own namespace (the Instances page).
    mount = tenant_mount(user.id) if request.query_params.get("own") == "true" else mount_of(user)
    result = await finish(_broker(request).client_page(mount, text, offset, per_page))
    return await answer(request, user, result, page, per_page, lambda c: {
        "id": _client_id(c.session_key), "client_id": c.client_id, "username": c.username,
        "protocol_version": c.protocol_version, "remote_address": c.remote_address, "listener": c.listener,
        "tls": c.tls, "keep_alive": c.keep_alive, "connected_at": c.connected_at,
        "subscriptions": c.subscriptions, "inflight": c.inflight, "queued": c.queued,
        "messages_in": c.messages_in, "messages_out": c.messages_out,
        **({"user_id": owner_of(c.mount)} if user.is_admin else {}),
    }, lambda c: c.mount, tenant_key="user_name")


async def kick_client(request: Request) -> JSONResponse:
    """Disconnect a client (v5: DISCONNECT 0x98) and end its session; the optional `reason` goes to the
    event log with the name of who kicked it."""
    user = await authenticated(request)
    broker = _broker(request)
    body = await json_body(request, ("reason",))
    reason = body.get("reason") or ""
    if not isinstance(reason, str) or len(reason) > 200:
        raise ApiError(422, "Validation failed", "The reason must be text of at most 200 characters",
                       fields={"reason": "Use at most 200 characters."})
    key = _session_key(request.path_params["client"])
    connection_mount = key.partition("\x00")[0] if key is not None and "\x00" in key else ""
    if key is None or (not user.is_admin and connection_mount != tenant_mount(user.id)):
        raise ApiError(404, "Not Found", "No such connected client")
    target = broker.kick_client(key, reason.strip(), user.name)
    if target is None:
        raise ApiError(404, "Not Found", "No such connected client")
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
    queue: asyncio.Queue[Any] = asyncio.Queue(LIVE_QUEUE)
    stream = LiveStream(credential_of(request, user.id), queue)
    guard: StreamGuard = request.app.state.live_guard
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
    plan = services(request).context.plan_of(user)
    if plan.max_subscriptions and broker.tenant_usage(tenant_mount(user.id))[1] >= plan.max_subscriptions:
        # A live view holds a subscription in the tenant's namespace, counted against the plan's limit.
        raise LimitReached(f"You have reached your plan's limit of {plan.max_subscriptions} subscriptions: "
                           "close a live view or unsubscribe a client first", "max_subscriptions",
                           plan.max_subscriptions)
    streams = _streams(request)

    async def events() -> AsyncIterator[bytes]:
        nonlocal dropped
        # Opened here, not before: the `finally` below is sure to run for every watch opened.
        watch = broker.watch(tenant_mount(user.id), topic_filter, deliver)
        streams[user.id] = streams.get(user.id, 0) + 1
        guard.open(stream)
        try:
            rechecks = Rechecks(request, stream)
            await rechecks.start()
            yield b"retry: 3000\n" + _event("ready", {"filter": topic_filter})
            idle = 0.0
            while not broker.closing:
                try:
                    message = await asyncio.wait_for(queue.get(), _WAKE_SECONDS)
                except TimeoutError:
                    message = None
                if await rechecks.due() and not await rechecks.still_valid():
                    # Revoked (key deleted, signed out, user deactivated): end as a kicked MQTT client would.
                    log.info("live stream of user %s closed: its credential was revoked", user.id)
                    yield _event("revoked", {"message": "Your API key or session is no longer valid"})
                    return
                if message is RECHECK:
                    continue
                if message is None:
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
            guard.close(stream)
            watch.close()
            left = streams.get(user.id, 1) - 1
            if left > 0:
                streams[user.id] = left
            else:
                streams.pop(user.id, None)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _message(message: WatchedMessage) -> dict[str, Any]:
    # A preview (text, pretty JSON, or hex for binary), never the whole payload as base64.
    return {"topic": message.topic, "qos": message.qos, "retain": message.retain, "time": time.time(),
            "payload": preview(message.payload)}


routes = [
    Route("/api/v1/stats", stats, methods=["GET"]),
    Route("/api/v1/live", live, methods=["GET"]),
    Route("/api/v1/clients", list_clients, methods=["GET"]),
    Route("/api/v1/clients/{client}/kick", kick_client, methods=["POST"]),
]
