"""The OpenAPI 3.1 document served at /api/v1/openapi.json.

Every operation of the app is described here: its parameters, its request body (`additionalProperties:
false`, as the handlers answer unknown fields with 422), each response body, and each error the handlers can
answer with. `/v1/mqtt` errors are `{"message"}` (500s add `error`), as mqtt-instances-api.md shows them;
`/api/v1` errors are `{"error", "message"}` (422 adds `errors`, one message per field; 429 adds a
`Retry-After` header), as icmqtt-rest-api-v1.md shows them. docs/api.md explains the choices.

`openapi_document(routes)` walks the app's routes, so the document lists exactly the app's operations: a
route with no description here still appears, marked `x-undocumented` (tests/control/test_openapi.py fails
on that mark), rather than stopping the server.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import BaseRoute, Route, WebSocketRoute

from broker.settings import VERSION
from control.api.common import MAX_BODY
from control.plans import DEFAULT_PLANS
from control.services.devices import STATUSES
from control.services.messages import DEFAULT_LIMIT, MAX_LIMIT, MAX_PAYLOAD

__all__ = ["OPENAPI_PATH", "openapi_document", "openapi_path"]

OPENAPI_PATH = "/api/v1/openapi.json"

Schema = dict[str, Any]

_INT32_MAX = 2**31 - 1
_CONVERTOR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[A-Za-z_]+)?\}")


def openapi_path(route_path: str) -> str:
    """A Starlette path as OpenAPI writes it: `{project_id:int}` becomes `{project_id}`."""
    return _CONVERTOR.sub(r"{\1}", route_path)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Schema], required: list[str] | None = None, *, closed: bool = True) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    schema["required"] = list(properties) if required is None else required
    if closed:
        schema["additionalProperties"] = False
    return schema


_TIMESTAMP: Schema = {
    "type": "string",
    "format": "date-time",
    "description": "UTC, millisecond precision, e.g. 2020-01-18T19:11:26.413Z",
    "examples": ["2026-02-09T10:00:00.000Z"],
}
_ID: Schema = {"type": "integer", "minimum": 1}
_NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"}
_TEXT: Schema = {"type": "string", "maxLength": 10_000}
_MESSAGE_BODY = _object({"message": {"type": "string"}})
_DEVICE_PROPERTIES: dict[str, Schema] = {
    "id": _ID,
    "project_id": _ID,
    "name": {"type": "string"},
    "device_id": {"type": "string", "description": "The device's MQTT client id and user name."},
    "status": {"enum": list(STATUSES), "description": "online/offline: live; inactive: refused."},
    "created_at": _TIMESTAMP,
    "updated_at": _TIMESTAMP,
    "mqtt_credentials": _ref("MqttCredentials"),
}
_DEVICE_REQUIRED = ["id", "project_id", "name", "device_id", "status", "created_at", "updated_at"]
_USER_PROPERTIES: dict[str, Schema] = {
    "id": _ID,
    "public_id": {"type": "string", "pattern": "^[0-9a-f]{24}$",
                  "description": "The `owner` of the user's /v1/mqtt instances."},
    "name": {"type": "string"},
    "plan": {"type": "string", "examples": list(DEFAULT_PLANS)},
    "is_admin": {"type": "boolean"},
    "is_active": {"type": "boolean"},
    "created_at": _TIMESTAMP,
    "updated_at": _TIMESTAMP,
}

_SCHEMAS: dict[str, Schema] = {
    # -- errors ----------------------------------------------------------------------------------------
    "Error": _object(
        {
            "error": {"type": "string", "description": "A short error code, e.g. \"Not Found\"."},
            "message": {"type": "string", "description": "A human-readable message."},
        }
    ),
    "ValidationError": _object(
        {
            "error": {"type": "string", "examples": ["Validation failed", "Limit exceeded"]},
            "message": {"type": "string"},
            "errors": {
                "type": "object",
                "description": "One message per invalid field (or, for a plan limit, per limited resource).",
                "additionalProperties": {"type": "string"},
            },
        },
        ["error", "message", "errors"],
    ),
    "MqttError": _object({"message": {"type": "string"}}),
    "MqttServerError": _object(
        {"message": {"type": "string"}, "error": {"type": "string"}}, ["message"]
    ),
    # -- /health ---------------------------------------------------------------------------------------
    "Health": _object(
        {
            "status": {"const": "ok"},
            "version": {"type": "string"},
            "uptime_seconds": {"type": "integer", "minimum": 0},
            "clients_connected": {"type": "integer", "minimum": 0},
        }
    ),
    "Unhealthy": _object(
        {
            "status": {"const": "unhealthy"},
            "problem": {"type": "string", "description": "What is wrong, e.g. the data folder was deleted."},
            "version": {"type": "string"},
            "uptime_seconds": {"type": "integer", "minimum": 0},
            "clients_connected": {"type": "integer", "minimum": 0},
        }
    ),
    # -- /v1/mqtt --------------------------------------------------------------------------------------
    "MqttInstance": _object(
        {
            "_id": {"type": "string", "pattern": "^[0-9a-f]{24}$", "description": "The instance's id."},
            "server": {"type": "string", "description": "MQTT server endpoint."},
            "user": {"type": "string", "description": "MQTT user name of this instance."},
            "password": {"type": "string", "description": "MQTT password of this instance."},
            "port": {"type": "string", "pattern": "^[0-9]+$", "description": "MQTT port, as a string."},
            "owner": {"type": "string", "pattern": "^[0-9a-f]{24}$", "description": "The owner's user id."},
            "created_at": _TIMESTAMP,
            "__v": {"type": "integer", "minimum": 0},
        }
    ),
    "MqttInstanceList": _object(
        {
            "mqtts": {"type": "array", "items": _ref("MqttInstance")},
            "recordsTotal": {"type": "integer", "minimum": 0, "description": "All of the user's instances."},
            "recordsFiltered": {"type": "integer", "minimum": 0, "description": "Those matching search_value."},
            "draw": {"type": "string", "description": "The request's draw, echoed."},
        }
    ),
    # -- projects --------------------------------------------------------------------------------------
    "Project": _object(
        {
            "id": _ID,
            "name": {"type": "string"},
            "description": {"type": "string"},
            "user_id": _ID,
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
        }
    ),
    "ProjectList": _object(
        {
            "data": {"type": "array", "items": _ref("Project")},
            "pagination": _object(
                {
                    "total": {"type": "integer", "minimum": 0},
                    "per_page": {"type": "integer", "minimum": 1},
                    "current_page": {"type": "integer", "minimum": 1},
                    "last_page": {"type": "integer", "minimum": 1},
                }
            ),
            "limits": _object(
                {
                    "max_projects": _nullable({"type": "integer", "minimum": 1}),
                    "current_projects": {"type": "integer", "minimum": 0},
                }
            ),
        }
    ),
    "ProjectDetails": _object(
        {
            "data": _ref("Project"),
            "devices_count": {"type": "integer", "minimum": 0},
            "topics_count": {"type": "integer", "minimum": 0},
        }
    ),
    "ProjectEnvelope": _object({"data": _ref("Project")}),
    "ProjectCreate": _object({"name": _NAME, "description": _TEXT}, ["name"]),
    "ProjectUpdate": _object({"name": _NAME, "description": _TEXT}, []),
    # -- devices ---------------------------------------------------------------------------------------
    "MqttCredentials": _object(
        {
            "client_id": {"type": "string", "description": "The device's device_id."},
            "username": {"type": "string", "description": "The device's device_id."},
            "password": {"type": "string", "description": "Shown once."},
        }
    ),
    "Device": _object(_DEVICE_PROPERTIES, _DEVICE_REQUIRED),
    "DeviceWithCredentials": {
        "allOf": [_ref("Device"), {"type": "object", "required": ["mqtt_credentials"]}],
    },
    "DeviceList": _object(
        {
            "data": {"type": "array", "items": _ref("Device")},
            "pagination": _object(
                {
                    "total": {"type": "integer", "minimum": 0},
                    "per_page": {"type": "integer", "minimum": 1},
                    "current_page": {"type": "integer", "minimum": 1},
                }
            ),
        }
    ),
    "DeviceEnvelope": _object({"data": _ref("Device")}),
    "DeviceCredentialsEnvelope": _object({"data": _ref("DeviceWithCredentials"), "message": {"type": "string"}}),
    "DeviceCreate": _object(
        {
            "project_id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            "name": _NAME,
            "device_id": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[^\s\x00-\x1f]+$"},
            "status": {"enum": list(STATUSES)},
        },
        ["project_id", "name", "device_id"],
    ),
    "DeviceUpdate": _object({"name": _NAME, "status": {"enum": list(STATUSES)}}, []),
    # -- topics ----------------------------------------------------------------------------------------
    "Topic": _object(
        {
            "id": _ID,
            "project_id": _ID,
            "name": {"type": "string", "description": "An MQTT topic name or filter (+ and # allowed)."},
            "description": {"type": "string"},
            "can_publish": {"type": "boolean"},
            "can_subscribe": {"type": "boolean"},
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
        }
    ),
    "TopicList": _object(
        {
            "data": {"type": "array", "items": _ref("Topic")},
            "pagination": _object(
                {
                    "total": {"type": "integer", "minimum": 0},
                    "per_page": {"type": "integer", "minimum": 1},
                    "current_page": {"type": "integer", "minimum": 1},
                }
            ),
        }
    ),
    "TopicEnvelope": _object({"data": _ref("Topic")}),
    "TopicCreate": _object(
        {
            "project_id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            "name": {"type": "string", "minLength": 1, "maxLength": 65_535, "pattern": r"^[^$]",
                     "description": "An MQTT topic name or filter, not starting with $ and not blank."},
            "description": _TEXT,
            "can_publish": {"type": "boolean", "default": True},
            "can_subscribe": {"type": "boolean", "default": True},
        },
        ["project_id", "name"],
    ),
    "TopicUpdate": _object(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 65_535},
            "description": _TEXT,
            "can_publish": {"type": "boolean"},
            "can_subscribe": {"type": "boolean"},
        },
        [],
    ),
    # -- messages --------------------------------------------------------------------------------------
    "Message": _object(
        {
            "id": _ID,
            "project_id": _ID,
            "topic_id": _nullable(_ID),
            "topic": {"type": "string", "description": "The MQTT topic it was published to."},
            "payload": {"type": "string"},
            "qos": {"enum": [0, 1, 2]},
            "retained": {"type": "boolean"},
            "expires_at": _nullable(_TIMESTAMP),
            "created_at": _TIMESTAMP,
        }
    ),
    "MessageList": _object({"data": {"type": "array", "items": _ref("Message")}}),
    "MessageEnvelope": _object({"data": _ref("Message")}),
    "MessagePublish": _object(
        {
            "project_id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            "topic_id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            "payload": {"type": "string", "description": f"At most {MAX_PAYLOAD} bytes as UTF-8."},
            "qos": {"type": "integer", "minimum": 0, "maximum": 2, "default": 0},
            "retained": {"type": "boolean", "default": False},
        },
        ["project_id", "topic_id", "payload"],
    ),
    # -- API keys --------------------------------------------------------------------------------------
    "ApiKey": _object(
        {
            "id": _ID,
            "name": {"type": "string"},
            "key": {"type": "string", "description": "Only the key's prefix, e.g. \"sk_ab12cd...\"."},
            "is_active": {"type": "boolean"},
            "last_used_at": _nullable(_TIMESTAMP),
            "expires_at": _nullable(_TIMESTAMP),
            "created_at": _TIMESTAMP,
        }
    ),
    "ApiKeyList": _object(
        {
            "data": {"type": "array", "items": _ref("ApiKey")},
            "pagination": _object(
                {"total": {"type": "integer", "minimum": 0}, "per_page": {"type": "integer", "minimum": 1}}
            ),
        }
    ),
    "ApiKeyEnvelope": _object({"data": _ref("ApiKey")}),
    "ApiKeyCreate": _object(
        {
            "name": _NAME,
            "expires_at": _nullable(
                {"type": "string", "description": "A future date (2027-02-09) or ISO-8601 time.",
                 "examples": ["2027-02-09"]}
            ),
        },
        ["name"],
    ),
    "CreatedApiKey": _object(
        {
            "data": _object(
                {
                    "id": _ID,
                    "name": {"type": "string"},
                    "key": {"type": "string", "pattern": "^sk_", "description": "The full key; shown once."},
                    "secret": {"type": "string", "pattern": "^secret_", "description": "Shown once."},
                    "expires_at": _nullable(_TIMESTAMP),
                    "message": {"type": "string"},
                }
            )
        }
    ),
    # -- users -----------------------------------------------------------------------------------------
    "User": _object(_USER_PROPERTIES),
    "UserList": _object(
        {
            "data": {"type": "array", "items": _ref("User")},
            "pagination": _object(
                {
                    "total": {"type": "integer", "minimum": 0},
                    "per_page": {"type": "integer", "minimum": 1},
                    "current_page": {"type": "integer", "minimum": 1},
                }
            ),
        }
    ),
    "UserEnvelope": _object({"data": _ref("User")}),
    "Me": _object(
        {
            "data": _ref("User"),
            "limits": _object(
                {
                    "messages_per_hour": _nullable({"type": "integer", "minimum": 1}),
                    "messages_this_hour": {"type": "integer", "minimum": 0},
                    "messages_refused_this_hour": {"type": "integer", "minimum": 0,
                                                   "description": "Refused this hour: the quota was used up."},
                    "quota_resets_at": _nullable({"type": "string", "format": "date-time",
                                                  "description": "When this hour's counts start again from 0."}),
                    "max_projects": _nullable({"type": "integer", "minimum": 1}),
                    "max_devices": _nullable({"type": "integer", "minimum": 1}),
                    "max_topics": _nullable({"type": "integer", "minimum": 1}),
                    "max_instances": _nullable({"type": "integer", "minimum": 1}),
                    "max_connections": _nullable({"type": "integer", "minimum": 1}),
                    "max_subscriptions": _nullable({"type": "integer", "minimum": 1}),
                    "connections": {"type": "integer", "minimum": 0},
                    "subscriptions": {"type": "integer", "minimum": 0},
                    "retention_days": {"type": "integer", "minimum": 0},
                },
            ),
        }
    ),
    "UserCreate": _object(
        {
            "name": _NAME,
            "plan": {"type": "string", "description": "A configured plan; without one, the configured default plan "
                     "(`default_plan`, \"unlimited\" unless changed).", "examples": list(DEFAULT_PLANS)},
            "is_admin": {"type": "boolean", "default": False},
            "is_active": {"type": "boolean", "default": True},
            "password": _nullable({"type": "string", "minLength": 8, "maxLength": 1024}),
        },
        ["name"],
    ),
    "CreatedUser": _object(
        {
            "data": _object(
                {
                    **_USER_PROPERTIES,
                    "api_key": {"type": "string", "pattern": "^sk_", "description": "The first API key; shown once."},
                    "secret": {"type": "string", "pattern": "^secret_", "description": "Shown once."},
                    "message": {"type": "string"},
                }
            )
        }
    ),
    "UserUpdate": _object(
        {
            "plan": {"type": "string", "examples": list(DEFAULT_PLANS)},
            "is_admin": {"type": "boolean"},
            "is_active": {"type": "boolean"},
            "password": {"type": "string", "minLength": 8, "maxLength": 1024},
        },
        [],
    ),
    "Deleted": _MESSAGE_BODY,
    # -- device certificates ---------------------------------------------------------------------------
    "IssuedCertificate": _object(
        {
            "data": _object(
                {
                    **_DEVICE_PROPERTIES,
                    "certificate": _object(
                        {
                            "serial": {"type": "string"},
                            "expires_at": {"type": "string", "format": "date-time"},
                            "certificate_pem": {"type": "string", "pattern": "^-----BEGIN CERTIFICATE-----"},
                            "private_key_pem": {"type": "string", "description": "Shown once."},
                            "ca_certificate_pem": {"type": "string", "pattern": "^-----BEGIN CERTIFICATE-----"},
                        }
                    ),
                },
                [*_DEVICE_REQUIRED, "certificate"],
            ),
            "message": {"type": "string"},
        }
    ),
    # -- dashboard figures -----------------------------------------------------------------------------
    "Stats": _object(
        {
            "data": _object(
                {
                    "version": {"type": "string"},
                    "uptime_seconds": {"type": "integer", "minimum": 0},
                    "time": {"type": "number", "description": "Server time, seconds since the epoch."},
                    "user": _object(
                        {
                            "clients_connected": {"type": "integer", "minimum": 0},
                            "messages_this_hour": {"type": "integer", "minimum": 0},
                            "messages_sent": {
                                "type": "integer",
                                "minimum": 0,
                                "description": "PUBLISH packets sent to the user's clients since Roost started.",
                            },
                            "messages_per_hour": _nullable({"type": "integer", "minimum": 1}),
                            "messages_refused_this_hour": {"type": "integer", "minimum": 0},
                            "quota_resets_at": _nullable({"type": "integer", "minimum": 0,
                                                          "description": "Unix time the hour's counts reset."}),
                        }
                    ),
                    "broker": {"type": "object", "description": "Broker counters (administrators only).",
                               "additionalProperties": {"type": "number"}},
                },
                ["version", "uptime_seconds", "time", "user"],
            )
        }
    ),
    # -- the dashboard's broker console (control/api/dashboard_api.py, control/api/console.py) ------------
    "ConnectedClient": _object(
        {
            "id": {"type": "string", "description": "Opaque id for /clients/{client}/kick."},
            "client_id": {"type": "string"},
            "username": _nullable({"type": "string"}),
            "protocol_version": {"type": "integer"},
            "remote_address": _nullable({"type": "string"}),
            "listener": _nullable({"type": "string"}),
            "tls": {"type": "boolean"},
            "keep_alive": {"type": "integer", "minimum": 0},
            "connected_at": {"type": "number"},
            "subscriptions": {"type": "integer", "minimum": 0, "description": "How many it holds."},
            "inflight": {"type": "integer", "minimum": 0},
            "queued": {"type": "integer", "minimum": 0},
            "messages_in": {"type": "integer", "minimum": 0},
            "messages_out": {"type": "integer", "minimum": 0},
            "user_id": _nullable({"type": "integer"}),
            "user_name": _nullable({"type": "string"}),
        },
        ["id", "client_id", "username", "protocol_version", "remote_address", "listener", "tls", "keep_alive",
         "connected_at", "subscriptions", "inflight", "queued", "messages_in", "messages_out"],
    ),
    "ConsolePagination": _object(
        {
            "total": _nullable({"type": "integer", "minimum": 0}),
            "per_page": {"type": "integer", "minimum": 1},
            "current_page": {"type": "integer", "minimum": 1},
            "more": {"type": "boolean", "description": "Whether a next page exists."},
        }
    ),
    "ConnectedClientList": _object({"data": {"type": "array", "items": _ref("ConnectedClient")},
                                    "pagination": _ref("ConsolePagination")}),
    "KickRequest": _object({"reason": {"type": "string", "maxLength": 200}}, []),
    "SubscriptionList": _object({
        "data": {"type": "array", "items": _object(
            {
                "client_id": {"type": "string"},
                "topic_filter": {"type": "string"},
                "qos": {"type": "integer", "minimum": 0, "maximum": 2},
                "no_local": {"type": "boolean"},
                "retain_as_published": {"type": "boolean"},
                "retain_handling": {"type": "integer", "minimum": 0, "maximum": 2},
                "subscription_id": _nullable({"type": "integer"}),
                "share_group": _nullable({"type": "string"}),
                "online": {"type": "boolean"},
                "tenant": _nullable({"type": "string"}),
            },
            ["client_id", "topic_filter", "qos", "no_local", "retain_as_published", "retain_handling",
             "subscription_id", "share_group", "online"],
        )},
        "pagination": _ref("ConsolePagination"),
    }),
    "SharedGroupList": _object({
        "data": {"type": "array", "items": _object(
            {
                "group": {"type": "string"},
                "topic_filter": {"type": "string"},
                "members": {"type": "array", "items": {"type": "string"}},
                "online": {"type": "integer", "minimum": 0},
                "tenant": _nullable({"type": "string"}),
            },
            ["group", "topic_filter", "members", "online"],
        )},
        "pagination": _ref("ConsolePagination"),
    }),
    "PayloadPreview": _object(
        {
            "format": {"enum": ["text", "json", "binary", "empty"]},
            "size": {"type": "integer", "minimum": 0},
            "text": {"type": "string", "description": "Text, pretty-printed JSON, or hex of the first bytes."},
            "truncated": {"type": "boolean"},
        }
    ),
    "RetainedList": _object({
        "data": {"type": "array", "items": _object(
            {
                "topic": {"type": "string"},
                "qos": {"type": "integer", "minimum": 0, "maximum": 2},
                "payload": _ref("PayloadPreview"),
                "stored_at": {"type": "number"},
                "age_seconds": {"type": "number", "minimum": 0},
                "expires_at": _nullable({"type": "number"}),
                "tenant": _nullable({"type": "string"}),
            },
            ["topic", "qos", "payload", "stored_at", "age_seconds", "expires_at"],
        )},
        "pagination": _ref("ConsolePagination"),
    }),
    "RetainedDeleted": _object({"message": {"type": "string"}, "deleted": {"type": "integer", "minimum": 0}}),
    "EventList": _object({
        "data": {"type": "array", "items": _object(
            {
                "id": {"type": "integer"},
                "time": {"type": "number"},
                "kind": {"enum": ["connected", "refused", "disconnected", "kicked"]},
                "client_id": {"type": "string"},
                "username": _nullable({"type": "string"}),
                "address": {"type": "string"},
                "reason_code": _nullable({"type": "integer"}),
                "reason": {"type": "string", "description": "The reason code in words."},
                "detail": {"type": "string"},
                "tenant": _nullable({"type": "string"}),
            },
            ["id", "time", "kind", "client_id", "username", "address", "reason_code", "reason", "detail"],
        )},
        "pagination": _ref("ConsolePagination"),
    }),
    "StatsHistory": _object({"data": _object({
        "interval": {"type": "number"},
        "span": {"type": "number"},
        "points": {"type": "array", "items": _object({
            "time": {"type": "number"},
            "messages_in": {"type": "number", "description": "Per second over the interval."},
            "messages_out": {"type": "number"},
            "dropped": _nullable({"type": "number"}),
            "connections": {"type": "integer"},
        })},
    })}),
}



# -- responses -----------------------------------------------------------------------------------------

def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


_API_ERRORS: dict[str, dict[str, Any]] = {
    "400": _json(_ref("Error"), "Bad Request: malformed JSON, a body that is not an object, or a missing "
                                "required query parameter."),
    "401": _json(_ref("Error"), "Unauthorized: missing, invalid, inactive or expired API key.",
                 {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}),
    "403": _json(_ref("Error"), "Forbidden."),
    "404": _json(_ref("Error"), "Not Found: no such resource, or it belongs to another user."),
    "413": _json(_ref("Error"), f"Payload too large: the body exceeds {MAX_BODY} bytes."),
    "422": _json(_ref("ValidationError"), "Unprocessable Entity: invalid or unknown fields, invalid query "
                                          "parameters, or a plan limit reached."),
    "429": _json(_ref("Error"), "Rate limit exceeded: the plan's hourly message quota (or, for /live, the "
                                "number of open live views) is used up.",
                 {"Retry-After": {"description": "Seconds to wait.",
                                  "schema": {"type": "string", "pattern": "^[0-9]+$"}}}),
    "500": _json(_ref("Error"), "Internal Server Error."),
    "503": _json(_ref("Error"), "The broker is not running."),
}

_MQTT_ERRORS: dict[str, dict[str, Any]] = {
    "400": _json(_ref("MqttError"), "Bad Request: offset, limit or order_dir is invalid."),
    "401": _json(_ref("MqttError"), "Unauthorized: missing, invalid, inactive or expired API key.",
                 {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}),
    "403": _json(_ref("MqttError"), "Maximum number of MQTT instances reached."),
    "404": _json(_ref("MqttError"), "No such MQTT instance (or another user's)."),
    "500": _json(_ref("MqttServerError"), "The instance store failed."),
}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name, "in": "path", "required": True, "description": description,
        "schema": {"type": "integer", "minimum": 0},
    }


def _query(name: str, schema: Schema, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


_PAGE = _query("page", {"type": "integer", "minimum": 1, "maximum": _INT32_MAX, "default": 1}, "Page number.")
_PER_PAGE = _query("per_page", {"type": "integer", "minimum": 1, "maximum": 500}, "Rows per page.")
_SEARCH = _query("q", {"type": "string", "maxLength": 256}, "Text to look for.")
_PROJECT_FILTER = _query("project_id", {"type": "integer", "minimum": 1, "maximum": _INT32_MAX},
                         "The project (required).", required=True)


def _op(
    op_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Any],
    errors: tuple[str, ...],
    *,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    mqtt: bool = False,
    public: bool = False,
    description: str | None = None,
) -> dict[str, Any]:
    table = _MQTT_ERRORS if mqtt else _API_ERRORS
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag]}
    if description:
        operation["description"] = description
    if params:
        operation["parameters"] = params
    if body is not None:
        required = bool(_SCHEMAS[body].get("required"))
        operation["requestBody"] = {"required": required, "content": {"application/json": {"schema": _ref(body)}}}
    all_responses = dict(responses)
    for code in errors:
        all_responses[code] = table[code]
    if not public:
        all_responses.setdefault("401", table["401"])
    all_responses.setdefault("500", table["500"])
    operation["responses"] = dict(sorted(all_responses.items()))
    if public:
        operation["security"] = []
    return operation


_BODY_ERRORS = ("400", "413", "422")
_DELETED = {"200": _json(_ref("Deleted"), "Deleted.")}

# (method, OpenAPI path) -> operation
_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/health"): _op(
        "health", "Liveness and basic counters (for load balancers and systemd)", "health",
        {"200": _json(_ref("Health"), "Roost is up."),
         "503": _json(_ref("Unhealthy"), "Roost runs but something is wrong (its database was deleted).")},
        (), public=True,
    ),
    ("GET", OPENAPI_PATH): {
        "operationId": "openapi", "summary": "This document", "tags": ["meta"], "security": [],
        "responses": {"200": {"description": "The OpenAPI document.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    },
    # -- /v1/mqtt --------------------------------------------------------------------------------------
    ("GET", "/v1/mqtt"): _op(
        "listMqttInstances", "Get all MQTT instances", "mqtt",
        {"200": _json(_ref("MqttInstanceList"), "The user's instances.")}, ("400",), mqtt=True,
        params=[
            _query("search_value", {"type": "string"}, "Keep instances whose user name contains this "
                                                      "(case-insensitive)."),
            _query("offset", {"type": "integer", "minimum": 0, "maximum": _INT32_MAX, "default": 0},
                   "Records to skip."),
            _query("limit", {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100},
                   "Records to return."),
            _query("draw", {"type": "string"}, "Echoed back in the response."),
            _query("order_dir", {"enum": ["asc", "desc"], "default": "asc"},
                   "By creation time (case-insensitive)."),
        ],
    ),
    ("POST", "/v1/mqtt"): _op(
        "createMqttInstance", "Create new MQTT instance (credentials are generated)", "mqtt",
        {"201": _json(_ref("MqttInstance"), "Created.")}, ("403",), mqtt=True,
        description="Takes no body; one is ignored.",
    ),
    ("GET", "/v1/mqtt/{mqtt_id}"): _op(
        "getMqttInstance", "Get specific MQTT instance", "mqtt",
        {"200": _json(_ref("MqttInstance"), "The instance.")}, ("404",), mqtt=True,
        params=[{"name": "mqtt_id", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "The instance's `_id`."}],
    ),
    ("DELETE", "/v1/mqtt/{mqtt_id}"): _op(
        "deleteMqttInstance", "Remove MQTT instance (its clients are disconnected at once)", "mqtt",
        {"200": _json(_ref("Deleted"), "Removed: {\"message\": \"'MQTT instance succesfully removed\"}.")},
        ("404",), mqtt=True,
        params=[{"name": "mqtt_id", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "The instance's `_id`."}],
    ),
    # -- projects --------------------------------------------------------------------------------------
    ("GET", "/api/v1/projects"): _op(
        "listProjects", "List all projects", "projects",
        {"200": _json(_ref("ProjectList"), "One page of projects.")}, ("422",), params=[_PAGE],
    ),
    ("POST", "/api/v1/projects"): _op(
        "createProject", "Create project", "projects",
        {"201": _json(_ref("ProjectEnvelope"), "Created.")}, _BODY_ERRORS, body="ProjectCreate",
        description="422 `Limit exceeded` when the plan's max_projects is reached.",
    ),
    ("GET", "/api/v1/projects/{project_id}"): _op(
        "getProject", "Get project details", "projects",
        {"200": _json(_ref("ProjectDetails"), "The project.")}, ("404",),
        params=[_path_param("project_id", "Project id.")],
    ),
    ("PUT", "/api/v1/projects/{project_id}"): _op(
        "updateProject", "Update project", "projects",
        {"200": _json(_ref("ProjectEnvelope"), "Updated.")}, ("404", *_BODY_ERRORS), body="ProjectUpdate",
        params=[_path_param("project_id", "Project id.")],
    ),
    ("DELETE", "/api/v1/projects/{project_id}"): _op(
        "deleteProject", "Delete project (with its devices, topics and messages)", "projects", _DELETED, ("404",),
        params=[_path_param("project_id", "Project id.")],
    ),
    # -- devices ---------------------------------------------------------------------------------------
    ("GET", "/api/v1/devices"): _op(
        "listDevices", "List devices of a project", "devices",
        {"200": _json(_ref("DeviceList"), "One page of devices.")}, ("400", "404", "422"),
        params=[_PROJECT_FILTER, _PAGE],
    ),
    ("POST", "/api/v1/devices"): _op(
        "createDevice", "Create device (its MQTT password is in the response, once)", "devices",
        {"201": _json(_ref("DeviceCredentialsEnvelope"), "Created.")}, _BODY_ERRORS, body="DeviceCreate",
        description="422 `Limit exceeded` when the plan's max_devices is reached.",
    ),
    ("GET", "/api/v1/devices/{device_id}"): _op(
        "getDevice", "Get device details", "devices",
        {"200": _json(_ref("DeviceEnvelope"), "The device.")}, ("404",),
        params=[_path_param("device_id", "Device row id (not its MQTT device_id).")],
    ),
    ("PUT", "/api/v1/devices/{device_id}"): _op(
        "updateDevice", "Update device (inactive disconnects it)", "devices",
        {"200": _json(_ref("DeviceEnvelope"), "Updated.")}, ("404", *_BODY_ERRORS), body="DeviceUpdate",
        params=[_path_param("device_id", "Device row id.")],
    ),
    ("DELETE", "/api/v1/devices/{device_id}"): _op(
        "deleteDevice", "Delete device (disconnects it)", "devices", _DELETED, ("404",),
        params=[_path_param("device_id", "Device row id.")],
    ),
    ("POST", "/api/v1/devices/{device_id}/credentials"): _op(
        "rotateDeviceCredentials", "New MQTT password (the old one's sessions are disconnected)", "devices",
        {"200": _json(_ref("DeviceCredentialsEnvelope"), "Rotated.")}, ("404",),
        params=[_path_param("device_id", "Device row id.")],
    ),
    ("POST", "/api/v1/devices/{device_id}/certificate"): _op(
        "issueDeviceCertificate", "Issue a TLS client certificate for the device (key shown once)", "devices",
        {"201": _json(_ref("IssuedCertificate"), "Issued; any earlier certificate is revoked.")}, ("404", "422"),
        params=[_path_param("device_id", "Device row id.")],
        description="404 also when Roost runs without a CA; 422 when the device_id is too long for a "
                    "certificate's common name (64 characters).",
    ),
    ("DELETE", "/api/v1/devices/{device_id}/certificate"): _op(
        "revokeDeviceCertificate", "Revoke the device's certificate (a connection using it is closed)", "devices",
        _DELETED, ("404",), params=[_path_param("device_id", "Device row id.")],
    ),
    ("GET", "/api/v1/ca.pem"): {
        "operationId": "caCertificate", "summary": "Roost's CA certificate (PEM), for TLS clients", "tags": ["meta"],
        "security": [],
        "responses": {
            "200": {"description": "The CA certificate.",
                    "content": {"application/x-pem-file": {"schema": {"type": "string"}}}},
            "404": _API_ERRORS["404"],
            "500": _API_ERRORS["500"],
        },
    },
    # -- topics ----------------------------------------------------------------------------------------
    ("GET", "/api/v1/topics"): _op(
        "listTopics", "List topics of a project", "topics",
        {"200": _json(_ref("TopicList"), "One page of topics.")}, ("400", "404", "422"),
        params=[_PROJECT_FILTER, _PAGE],
    ),
    ("POST", "/api/v1/topics"): _op(
        "createTopic", "Create topic (a name or filter the project's devices may use)", "topics",
        {"201": _json(_ref("TopicEnvelope"), "Created.")}, _BODY_ERRORS, body="TopicCreate",
        description="422 `Limit exceeded` when the plan's max_topics is reached.",
    ),
    ("GET", "/api/v1/topics/{topic_id}"): _op(
        "getTopic", "Get topic details", "topics",
        {"200": _json(_ref("TopicEnvelope"), "The topic.")}, ("404",),
        params=[_path_param("topic_id", "Topic id.")],
    ),
    ("PUT", "/api/v1/topics/{topic_id}"): _op(
        "updateTopic", "Update topic (narrowing it is enforced on live clients at once)", "topics",
        {"200": _json(_ref("TopicEnvelope"), "Updated.")}, ("404", *_BODY_ERRORS), body="TopicUpdate",
        params=[_path_param("topic_id", "Topic id.")],
    ),
    ("DELETE", "/api/v1/topics/{topic_id}"): _op(
        "deleteTopic", "Delete topic", "topics", _DELETED, ("404",),
        params=[_path_param("topic_id", "Topic id.")],
    ),
    # -- messages --------------------------------------------------------------------------------------
    ("GET", "/api/v1/messages"): _op(
        "listMessages", "List messages of a project, newest first", "messages",
        {"200": _json(_ref("MessageList"), "The messages.")}, ("400", "404", "422"),
        params=[
            _PROJECT_FILTER,
            _query("topic_id", {"type": "integer", "minimum": 1, "maximum": _INT32_MAX}, "Filter by topic."),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                   f"Max {MAX_LIMIT}, default {DEFAULT_LIMIT}."),
        ],
    ),
    ("POST", "/api/v1/messages"): _op(
        "publishMessage", "Publish message to the topic's MQTT subscribers", "messages",
        {"201": _json(_ref("MessageEnvelope"), "Published and recorded.")}, (*_BODY_ERRORS, "429"),
        body="MessagePublish",
        description="422 when the topic is a filter (has + or #) or does not belong to the project; 429 when "
                    "the hourly quota (MQTT and REST messages together) is used up.",
    ),
    ("GET", "/api/v1/messages/{message_id}"): _op(
        "getMessage", "Get message details", "messages",
        {"200": _json(_ref("MessageEnvelope"), "The message.")}, ("404",),
        params=[_path_param("message_id", "Message id.")],
    ),
    ("DELETE", "/api/v1/messages/{message_id}"): _op(
        "deleteMessage", "Delete message from the history", "messages", _DELETED, ("404",),
        params=[_path_param("message_id", "Message id.")],
    ),
    # -- API keys --------------------------------------------------------------------------------------
    ("GET", "/api/v1/api-keys"): _op(
        "listApiKeys", "List API keys (prefixes only)", "api-keys",
        {"200": _json(_ref("ApiKeyList"), "One page of keys.")}, ("422",), params=[_PAGE],
    ),
    ("POST", "/api/v1/api-keys"): _op(
        "createApiKey", "Create API key (key and secret shown once)", "api-keys",
        {"201": _json(_ref("CreatedApiKey"), "Created.")}, _BODY_ERRORS, body="ApiKeyCreate",
    ),
    ("POST", "/api/v1/api-keys/{key_id}/deactivate"): _op(
        "deactivateApiKey", "Deactivate API key (it answers 401 from then on)", "api-keys",
        {"200": _json(_ref("ApiKeyEnvelope"), "Deactivated.")}, ("404",),
        params=[_path_param("key_id", "Key id.")],
    ),
    ("DELETE", "/api/v1/api-keys/{key_id}"): _op(
        "deleteApiKey", "Delete API key", "api-keys", _DELETED, ("404",),
        params=[_path_param("key_id", "Key id.")],
    ),
    # -- the dashboard's figures -----------------------------------------------------------------------
    ("GET", "/api/v1/stats"): _op(
        "stats", "Version, uptime, the caller's clients and quota (administrators: broker counters)", "broker",
        {"200": _json(_ref("Stats"), "Figures.")}, ("503",),
    ),
    ("GET", "/api/v1/clients"): _op(
        "listClients", "Connected MQTT clients of the caller's namespace (administrators: all)", "broker",
        {"200": _json(_ref("ConnectedClientList"), "One page of connected clients, oldest connection first.")},
        ("422", "503"), params=[_PAGE, _PER_PAGE, _SEARCH,
                                _query("own", {"enum": ["true", "false"]}, "Only the caller's own namespace.")],
    ),
    ("POST", "/api/v1/clients/{client}/kick"): _op(
        "kickClient", "Disconnect a connected client and end its session", "broker",
        {"200": _json(_ref("Deleted"), "Disconnected.")}, ("404", "503", *_BODY_ERRORS), body="KickRequest",
        params=[{"name": "client", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "A client's `id` from GET /api/v1/clients."}],
    ),
    ("GET", "/api/v1/subscriptions"): _op(
        "listSubscriptions", "Subscriptions of the caller's sessions (administrators: all)", "broker",
        {"200": _json(_ref("SubscriptionList"), "One page of subscriptions.")}, ("422", "503"),
        params=[_PAGE, _PER_PAGE, _SEARCH],
    ),
    ("GET", "/api/v1/shared-subscriptions"): _op(
        "listSharedSubscriptions", "Shared subscription groups with their members", "broker",
        {"200": _json(_ref("SharedGroupList"), "One page of groups.")}, ("422", "503"), params=[_PAGE, _PER_PAGE],
    ),
    ("GET", "/api/v1/retained"): _op(
        "listRetained", "Retained messages on a filter, with payload previews", "broker",
        {"200": _json(_ref("RetainedList"), "One page of retained messages.")}, ("422", "503"),
        params=[_PAGE, _PER_PAGE, _query("filter", {"type": "string", "default": "#"},
                                         "An MQTT topic filter (administrators may name $ topics).")],
    ),
    ("DELETE", "/api/v1/retained"): _op(
        "deleteRetained", "Delete the retained messages on a filter (a topic name: that one)", "broker",
        {"200": _json(_ref("RetainedDeleted"), "How many were deleted.")}, ("400", "422", "503"),
        params=[_query("filter", {"type": "string"}, "An MQTT topic filter or topic name.", required=True)],
    ),
    ("GET", "/api/v1/events"): _op(
        "listEvents", "Recent connection, refusal, disconnection and kick events, newest first", "broker",
        {"200": _json(_ref("EventList"), "One page of events.")}, ("422", "503"),
        params=[_PAGE, _PER_PAGE, _SEARCH,
                _query("kind", {"enum": ["connected", "refused", "disconnected", "kicked"]}, "One kind only.")],
    ),
    ("GET", "/api/v1/stats/history"): _op(
        "statsHistory", "The last hour, one point per interval: the broker's (administrators) or the caller's "
        "namespace's (drops are null: not counted per tenant)", "broker",
        {"200": _json(_ref("StatsHistory"), "Rates per second and connections.")}, ("503",),
    ),
    ("GET", "/api/v1/live"): _op(
        "liveMessages", "Server-sent events: messages on a filter inside the caller's namespace", "broker",
        {"200": {"description": "An event stream: `ready`, then `message` events ({topic, qos, retain, time, "
                                "payload: {format, size, text, truncated}}) and `dropped` ({count}) when the "
                                "reader is slow.",
                 "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
        ("422", "429", "503"),
        params=[_query("filter", {"type": "string", "default": "#"}, "An MQTT topic filter (no $ topics).")],
    ),
    # -- users -----------------------------------------------------------------------------------------
    ("GET", "/api/v1/users/me"): _op(
        "getMe", "The caller's account, plan limits and this hour's message count", "users",
        {"200": _json(_ref("Me"), "The caller.")}, (),
    ),
    ("GET", "/api/v1/users"): _op(
        "listUsers", "List users (administrators only)", "users",
        {"200": _json(_ref("UserList"), "One page of users.")}, ("403", "422"), params=[_PAGE],
    ),
    ("POST", "/api/v1/users"): _op(
        "createUser", "Create user with a first API key (administrators only)", "users",
        {"201": _json(_ref("CreatedUser"), "Created.")}, ("403", *_BODY_ERRORS), body="UserCreate",
    ),
    ("GET", "/api/v1/users/{user_id}"): _op(
        "getUser", "Get user (administrators, or the user themself)", "users",
        {"200": _json(_ref("UserEnvelope"), "The user.")}, ("403", "404"),
        params=[_path_param("user_id", "User id.")],
    ),
    ("PUT", "/api/v1/users/{user_id}"): _op(
        "updateUser", "Change plan, role, activity or password (administrators only)", "users",
        {"200": _json(_ref("UserEnvelope"), "Updated.")}, ("403", "404", *_BODY_ERRORS), body="UserUpdate",
        params=[_path_param("user_id", "User id.")],
    ),
    ("DELETE", "/api/v1/users/{user_id}"): _op(
        "deleteUser", "Delete user and all they own (administrators only, not themself)", "users",
        _DELETED, ("403", "404"),
        params=[_path_param("user_id", "User id.")],
    ),
}


def describe(method: str, path: str, op_id: str, summary: str, tag: str, schema: Schema, description: str,
             errors: tuple[str, ...] = ()) -> None:
    """Describe a JSON operation from the module that serves it (control/api/bridges.py), so that its
    schema sits next to its handler; call at import, before `openapi_document`."""
    _OPERATIONS[(method, path)] = _op(op_id, summary, tag, {"200": _json(schema, description)}, errors)


def _undocumented(method: str, path: str) -> dict[str, Any]:
    return {
        "operationId": f"undocumented_{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}",
        "summary": "Not described yet",
        "x-undocumented": True,
        "responses": {"default": {"description": "Not described yet."}},
    }


def openapi_document(routes: list[BaseRoute]) -> dict[str, Any]:
    """The document for exactly these routes (plus the document's own path)."""
    operations: dict[tuple[str, str], dict[str, Any]] = {}
    websockets = sorted(route.path for route in routes if isinstance(route, WebSocketRoute))
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        path = openapi_path(route.path)
        for method in sorted(route.methods - {"HEAD"}):
            operations[(method, path)] = _OPERATIONS.get((method, path)) or _undocumented(method, path)
    operations[("GET", OPENAPI_PATH)] = _OPERATIONS[("GET", OPENAPI_PATH)]
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), operation in operations.items():
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Roost control plane",
            "version": VERSION,
            "description": (
                "Roost's two REST APIs: `/v1/mqtt` (MQTT instances, as mqtt-instances-api.md) and `/api/v1` "
                "(projects, devices, topics, messages, API keys, users, as icmqtt-rest-api-v1.md). "
                "Authenticate with `Authorization: Bearer <API key>` (the dashboard's session cookie also "
                "works, with an X-CSRF-Token header on changes). See docs/api.md."
                + (f" MQTT over WebSocket (not an HTTP operation): {', '.join(websockets)}." if websockets else "")
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": name} for name in
                 ("health", "meta", "mqtt", "projects", "devices", "topics", "messages", "api-keys", "users",
                  "broker")],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key (sk_...)."}
            },
            "schemas": _SCHEMAS,
        },
    }
