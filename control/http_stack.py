"""The HTTP stack: uvicorn serving the Starlette app, imported and built at the first HTTP request.

This module is what control/http_front.py loads: importing it imports uvicorn, Starlette and every route
of the control plane (about 11 MB of a Roost's resident memory, and most of its start-up time on a
Raspberry Pi), which a broker that nobody visits never needs.

uvicorn runs here without listeners of its own (`serve(sockets=[])`): its main loop, its shutdown (ask
each connection to close, wait for them) and its protocols are used as they are; the connections are
accepted by the front, which hands each to `EmbeddedUvicorn.adopt` with the bytes read so far, the way
uvicorn itself hands a connection from HTTP to WebSocket (`transport.set_protocol`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn

from control.app import create_app
from control.ws_protocol import StreamingWSProtocol

__all__ = ["EmbeddedUvicorn", "build_server", "create_app"]


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn's server without its own signal handling (Roost decides when to stop) and without its own
    listening sockets (the front accepts, `adopt` takes over). `ready` is set once it can adopt."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets=[])
        self.ready.set()

    def adopt(self, transport: asyncio.Transport, data: bytes, eof: bool) -> None:
        """Give uvicorn's HTTP protocol a connection the front accepted, with what it has read so far."""
        config = self.config
        protocol: Any = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=self.server_state, app_state=self.lifespan.state
        )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        # Reading resumes before the bytes are given: the protocol's own flow control may pause it again.
        transport.resume_reading()
        if data:
            protocol.data_received(data)
        if eof and not transport.is_closing():
            protocol.eof_received()


def build_server(app: Any) -> EmbeddedUvicorn:
    """uvicorn's server for the app, configured as Roost serves it."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        # MQTT over WebSocket at /mqtt: each piece of a message goes to the broker as it arrives, so the
        # pre-authentication budget sees it; no permessage-deflate (control/ws_protocol.py says why).
        ws=StreamingWSProtocol,
        ws_per_message_deflate=False,
    )
    return EmbeddedUvicorn(config)
