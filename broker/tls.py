"""MQTT over TLS: a listener whose certificate can be replaced while it runs.

Each accepted TCP connection is upgraded with `loop.start_tls(..., ssl_handshake_timeout=...)` using the
listener's *current* `ssl.SSLContext`, read at that moment. So a certificate reload is one assignment
(`listener.context = new_context`): new connections get the new certificate, connections already up keep
the session they negotiated and are not dropped. (`create_server(ssl=...)` would bind one context for the
server's life, and it settles failed handshakes silently; upgrading each connection ourselves also lets
every failure be logged once, with the peer's address.)

What a bad peer can cost is bounded: a TLS handshake that fails, a plain-text client, or a client that says
nothing ends within `handshake_timeout` seconds, with the transport's bounded read buffer; then the
`MQTTConnection`'s engine applies its own CONNECT timeout as on plain TCP.

Mutual TLS is optional: with a client CA, the context asks for a client certificate (`CERT_OPTIONAL`);
a client that presents one must present one signed by that CA, and one that presents none is left to
authenticate with a user name and password. The certificate's subject CN and serial reach the auth hooks
through `ConnectRequest` (see `broker.engine.Connection._on_connect`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from functools import partial
from pathlib import Path
from typing import Any

from broker.listeners import TCPListener
from broker.tls_chain import chain_with_issuers
from broker.connection import MQTTConnection
from broker.registry import ServerState

__all__ = ["TLSListener", "server_context"]

log = logging.getLogger("roost.listeners")


def server_context(cert_file: str | Path, key_file: str | Path, client_ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A TLS 1.2/1.3 server context for a PEM certificate chain and key; with `client_ca_file`, clients may
    present a certificate signed by one of its CAs (mutual TLS), and one they present is verified.

    Session resumption is on: TLS 1.3 tickets and TLS 1.2 tickets and session ids, so a device that
    reconnects skips the certificate and its signature. One TLS 1.3 ticket is sent per handshake, not
    OpenSSL's default two: a device holds one connection to its broker and takes a fresh ticket each time
    it reconnects, and every ticket costs both sides a session encoding, an encryption and a record.
    (A TLS 1.2 session id survives only a connection that was closed with a close_notify, as OpenSSL drops
    a session whose connection ended without one; tickets have no such limit.)

    When the certificate file holds the server certificate alone and its issuer is among the client CAs
    (Roost's own CA signs both), the issuer is loaded as the certificate's chain, so that OpenSSL does not
    search the verify store for it at every handshake (see broker/tls_chain.py).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.num_tickets = 1
    chain = chain_with_issuers(Path(cert_file), Path(client_ca_file)) if client_ca_file is not None else None
    if chain is None:
        context.load_cert_chain(str(cert_file), str(key_file))
    else:
        import tempfile  # with shutil, bz2 and lzma: 0.3 MB a Roost without mutual TLS never needs

        with tempfile.NamedTemporaryFile(suffix=".pem") as file:
            file.write(chain)
            file.flush()
            context.load_cert_chain(file.name, str(key_file))
    if client_ca_file is not None:
        context.load_verify_locations(cafile=str(client_ca_file))
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class _Upgrading(asyncio.Protocol):
    """Stands in for the MQTT connection while the TLS handshake runs.

    The TLS layer may deliver the first application bytes (a CONNECT sent right behind the handshake) in
    the same call that completes the handshake, before the `start_tls` caller resumes; they are held here
    and handed to the `MQTTConnection` once it has its transport.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.lost = False
        self.lost_exc: Exception | None = None
        self.writing_paused = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_exc = exc

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False


class _Accepted(asyncio.Protocol):
    """A raw TCP connection on the TLS port, until `TLSListener` has upgraded it.

    Bytes that arrive before `start_tls` takes the transport over (the start of the ClientHello: uvloop
    starts reading right after `connection_made`, whatever it was told) are kept, at most `_EARLY_LIMIT`
    of them, and handed to the TLS layer once it is in place.
    """

    def __init__(self, listener: TLSListener) -> None:
        self.listener = listener
        self.early: list[bytes] = []
        self.early_size = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.listener._upgrade(self)

    def data_received(self, data: bytes) -> None:
        self.early.append(data)
        self.early_size += len(data)
        if self.early_size > _EARLY_LIMIT and self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        pass


_EARLY_LIMIT = 65_536


def _replay(transport: asyncio.Transport, accepted: _Accepted) -> None:
    """Feed the TLS protocol (now the transport's protocol) what `accepted` read before it took over."""
    protocol: Any = transport.get_protocol()
    if protocol is accepted or not accepted.early or transport.is_closing():
        return
    data = memoryview(b"".join(accepted.early))
    accepted.early.clear()
    if not hasattr(protocol, "buffer_updated"):
        protocol.data_received(bytes(data))
        return
    while data:
        buffer = protocol.get_buffer(len(data))
        size = min(len(buffer), len(data))
        buffer[:size] = data[:size]
        protocol.buffer_updated(size)
        data = data[size:]


class TLSListener(TCPListener):
    """MQTT over TLS. Assign `context` to serve a new certificate to new connections."""

    def __init__(
        self,
        server: ServerState,
        host: str,
        port: int,
        context: ssl.SSLContext,
        handshake_timeout: float = 10.0,
        name: str = "tls",
    ) -> None:
        super().__init__(server, host, port, name)
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.handshake_failures = 0
        self._pending: set[asyncio.Task[None]] = set()

    def _protocol(self) -> asyncio.Protocol:
        return _Accepted(self)

    def _upgrade(self, accepted: _Accepted) -> None:
        """Start the handshake: one task (the `start_tls` coroutine itself) and one callback per connection,
        which is all the Python a TLS set-up adds beside the `MQTTConnection` it ends in."""
        transport = accepted.transport
        assert transport is not None
        if self._server is None or self.server.closing:
            transport.abort()
            return
        if transport.is_closing():
            self._failed(transport, ConnectionResetError("closed by the peer before the handshake"))
            return
        loop = asyncio.get_running_loop()
        upgrading = _Upgrading()
        # start_tls swaps in the TLS protocol in its first step; the replay is queued to run right after it,
        # before the TLS protocol's own connection_made starts the handshake on the bytes it got.
        starting = loop.start_tls(
            transport, upgrading, self.context, server_side=True, ssl_handshake_timeout=self.handshake_timeout
        )
        task = loop.create_task(starting)  # type: ignore[arg-type]
        loop.call_soon(_replay, transport, accepted)
        self._pending.add(task)
        task.add_done_callback(partial(self._upgraded, transport, upgrading))

    def _upgraded(self, transport: asyncio.Transport, upgrading: _Upgrading, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if task.cancelled():  # the listener closed while the handshake ran
            transport.abort()
            return
        exc = task.exception()
        if exc is not None:  # ssl.SSLError, ConnectionError, a timeout: the peer's doing, logged once
            self._failed(transport, exc)
            return
        tls_transport = task.result()
        if tls_transport is None or upgrading.lost:
            return
        connection = MQTTConnection(self.server, self.name)
        tls_transport.set_protocol(connection)
        connection.connection_made(tls_transport)
        if upgrading.writing_paused:
            connection.pause_writing()
        if upgrading.data:
            connection.data_received(b"".join(upgrading.data))

    def _failed(self, transport: asyncio.Transport, exc: BaseException) -> None:
        self.handshake_failures += 1
        log.info("TLS handshake with %s failed: %s", _peer(transport), _reason(exc))
        transport.abort()

    async def close(self) -> None:
        """Stop accepting; handshakes under way are abandoned; MQTT connections are closed by the broker."""
        await super().close()
        for task in list(self._pending):
            task.cancel()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer: Any = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "?"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, (TimeoutError, ConnectionAbortedError)) and "taking longer" in str(exc):
        return "no handshake within the timeout"
    return str(exc) or type(exc).__name__
