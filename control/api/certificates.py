"""Certificates over HTTP: the CA certificate devices need, and device client certificates.

    GET    /api/v1/ca.pem                          Roost's CA certificate (no authentication: it is public)
    POST   /api/v1/devices/{id}/certificate        issue a client certificate; certificate and key shown once
    DELETE /api/v1/devices/{id}/certificate        revoke it (a device using it is disconnected at once)
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control.api import serialize
from control.api.common import authenticated, ok, services
from control.errors import NotFound

__all__ = ["routes"]


async def ca_certificate(request: Request) -> Response:
    authority = services(request).context.certificates
    if authority is None:
        raise NotFound("No CA certificate")
    return Response(
        authority.authority().certificate,
        media_type="application/x-pem-file",
        headers={"content-disposition": 'attachment; filename="roost-ca.pem"'},
    )


def _device_id(request: Request) -> int:
    value = int(request.path_params["device_id"])
    if value > 2**63 - 1:
        raise NotFound("Device not found")
    return value


async def issue_device_certificate(request: Request) -> JSONResponse:
    user = await authenticated(request)
    created = await services(request).devices.issue_certificate(user, _device_id(request))
    return ok(
        {
            "data": {
                **serialize.device(created.view),
                "certificate": {
                    "serial": created.serial,
                    "expires_at": created.expires_at,
                    "certificate_pem": created.issued.certificate.decode(),
                    "private_key_pem": created.issued.key.decode(),
                    "ca_certificate_pem": created.ca_certificate.decode(),
                },
            },
            "message": "Save the device's private key now: it will not be shown again.",
        },
        201,
    )


async def revoke_device_certificate(request: Request) -> JSONResponse:
    user = await authenticated(request)
    await services(request).devices.revoke_certificate(user, _device_id(request))
    return ok({"message": "Device certificate revoked"})


_P = "/api/v1"
routes = [
    Route(f"{_P}/ca.pem", ca_certificate, methods=["GET"]),
    Route(f"{_P}/devices/{{device_id:id}}/certificate", issue_device_certificate, methods=["POST"]),
    Route(f"{_P}/devices/{{device_id:id}}/certificate", revoke_device_certificate, methods=["DELETE"]),
]
