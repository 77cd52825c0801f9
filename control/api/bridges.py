"""`GET /api/v1/bridges`: every configured bridge and its state, for administrators (the dashboard reads
it too). Its OpenAPI description is here, beside the handler (`openapi.describe`).

The bridges are the composition root's (`app.state.bridges`, set in control/server.py); an app without
them (tests that build one) lists none.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control.api import openapi
from control.api.common import authenticated, ok
from control.errors import Forbidden

__all__ = ["routes"]

PATH = "/api/v1/bridges"


async def list_bridges(request: Request) -> JSONResponse:
    user = await authenticated(request)
    if not user.is_admin:
        raise Forbidden("Only administrators can see bridges")
    bridges = getattr(request.app.state, "bridges", None)
    return ok({"data": bridges.statuses() if bridges is not None else []})


routes = [Route(PATH, list_bridges, methods=["GET"])]

_INT: dict[str, Any] = {"type": "integer", "minimum": 0}
_NUMBER_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": sorted(properties)}


_BRIDGE = _object({
    "name": {"type": "string"},
    "url": {"type": "string", "description": "The upstream (credentials are never shown)."},
    "protocol": {"type": "string", "enum": ["5", "3.1.1", "nats"],
                 "description": "MQTT 5, MQTT 3.1.1, or NATS JetStream (a nats:// url)."},
    "user": {"type": ["string", "null"], "description": "Whose namespace is bridged; null: anonymous clients'."},
    "forward": {"type": "array", "items": {"type": "string"}},
    "subscribe": {"type": "array", "items": {"type": "string"}},
    "remote_prefix": {"type": "string"},
    "state": {"type": "string", "enum": ["connected", "connecting", "backoff", "stopped"]},
    "connected": {"type": "boolean"},
    "connected_to": {"type": ["string", "null"], "description": (
        "Where the link is connected now (null while it is down): MQTT, the upstream's address (IP:port); "
        "NATS, the url of the cluster's server the link picked.")},
    "stream": {"type": ["string", "null"], "description": "NATS: the JetStream stream it forwards into; null for MQTT."},
    "via": {"type": ["string", "null"], "description": (
        "This Roost's ID in the roost-via user property of forwarded messages (loop detection); null for "
        "NATS bridges, which mark them with the Roost-Origin header.")},
    "connected_since": _NUMBER_OR_NULL,
    "session_present": {"type": "boolean", "description": "The upstream kept the bridge's session."},
    "subscribed": {"type": "boolean"},
    "subscribe_failures": {"type": "array", "items": {"type": "string"}},
    "last_error": {"type": ["string", "null"], "description": "Why the link last failed."},
    "last_error_at": _NUMBER_OR_NULL,
    "connects": _INT,
    "backlog": _object({
        "messages": _INT, "bytes": _INT, "oldest_age": _NUMBER_OR_NULL, "in_flight": _INT, "qos0_queued": _INT,
    }),
    "limits": _object({
        "max_messages": _INT, "max_bytes": _INT, "max_age": {"type": "number"},
        "policy": {"type": "string", "enum": ["drop_oldest", "refuse"]},
    }),
    "counters": _object({name: _INT for name in (
        "queued", "sent", "resent", "acknowledged", "rejected", "dropped", "refused", "qos0_sent", "qos0_dropped",
        "commands", "looped",
    )}),
})

openapi.describe(
    "GET", PATH, "listBridges", "Bridges to upstream brokers and their state (administrators only)", "broker",
    _object({"data": {"type": "array", "items": _BRIDGE}}), "Every configured bridge, in config order.",
    ("403",),
)
