"""Which certificate Roost serves, and keeping it current while Roost runs.

A user's certificate chain and key (`[tls] cert_file`, `key_file`; Let's Encrypt's `fullchain.pem` and
`privkey.pem`, say) take precedence; without them Roost serves its own, signed by its local CA, both kept
in `data_dir/certs/` by `certs.store`. The local CA exists in either case: it issues device certificates,
and unless `client_ca_file` names other CAs, it is the CA whose client certificates are accepted.

`reload()` rebuilds the TLS contexts from the files; `watch()` calls it when a file's size or modification
time changes (and renews Roost's own server certificate 30 days before it ends), and the composition root
calls it on SIGHUP. A file caught half-written fails to load; the old certificate is kept and the next
check tries again. New connections get the new certificate; connections already up keep theirs.

HTTPS is served by uvicorn, which takes one `SSLContext` for its life: that context's SNI callback (run
at every handshake, with or without a server name) points the handshake at the current context.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from broker.tls import server_context
from certs.store import CertificateError, CertificateStore, machine_hosts
from control.config import Config

__all__ = ["TLSFiles"]

log = logging.getLogger("roost.tls")


class TLSFiles:
    """The certificate files in use, and the TLS contexts built from them."""

    def __init__(self, config: Config) -> None:
        tls = config.tls
        self.store = CertificateStore(config.data_dir / "certs")
        self.own = tls.cert_file is None
        self.cert_file: Path = tls.cert_file or self.store.server_certificate
        self.key_file: Path = tls.key_file or self.store.server_key
        self.client_ca_file: Path = tls.client_ca_file or self.store.ca_certificate
        self._public_host = config.mqtt.public_host
        self._machine_hosts: list[str] | None = None
        self._signature: tuple[object, ...] = ()
        self.mqtt_context: ssl.SSLContext | None = None
        self.http_context: ssl.SSLContext | None = None
        # Called after each successful reload (the composition root hands the new context to listeners).
        self.on_reload: list[Callable[[], None]] = []

    def _hosts(self) -> list[str]:
        """The names Roost's own certificate carries, looked up when a certificate is first needed: a
        Roost with TLS off makes no resolver query at start-up (it can stall where DNS is broken)."""
        if self._machine_hosts is None:
            self._machine_hosts = machine_hosts(self._public_host) if self.own else []
        return self._machine_hosts

    def prepare(self) -> None:
        """Make the local CA (and, without a configured certificate, the server certificate) if they are
        missing, and build the contexts. Raises if the configured files cannot be loaded, `CertificateError`
        if Roost's own could not be made."""
        if self.own:
            self.store.ensure_server(self._hosts())  # the local CA too: one child process makes both
        else:
            self.store.authority()
        self._load()

    def _files(self) -> tuple[Path, ...]:
        return (self.cert_file, self.key_file, self.client_ca_file)

    def _current_signature(self) -> tuple[object, ...]:
        signature: list[object] = []
        for path in self._files():
            try:
                status = path.stat()
            except OSError:
                signature.append(None)
            else:
                signature.append((status.st_mtime_ns, status.st_size, status.st_ino))
        return tuple(signature)

    def _load(self) -> None:
        signature = self._current_signature()
        self.mqtt_context = server_context(self.cert_file, self.key_file, self.client_ca_file)
        self.http_context = server_context(self.cert_file, self.key_file)
        self._signature = signature

    def https_front_context(self) -> ssl.SSLContext:
        """The one context uvicorn gets: each handshake is switched to the current `http_context`."""
        front = server_context(self.cert_file, self.key_file)

        def use_current(ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
            if self.http_context is not None:
                ssl_object.context = self.http_context

        front.sni_callback = use_current  # type: ignore[assignment]
        return front

    def reload(self, force: bool = False) -> bool:
        """Renew Roost's own certificate if it is due, and rebuild the contexts if a file changed (or
        `force`). True if new contexts are in use; on an error the old ones stay and it is logged."""
        try:
            if self.own:
                self.store.ensure_server(self._hosts())
            if not force and self._current_signature() == self._signature:
                return False
            self._load()
        except (OSError, ssl.SSLError, ValueError, CertificateError) as exc:
            log.warning("could not load the TLS certificate (%s); keeping the one in use", exc)
            return False
        log.info("TLS certificate reloaded from %s", self.cert_file)
        for callback in self.on_reload:
            callback()
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload()  # small files, read on the loop: the callbacks swap contexts here
            except Exception:
                log.exception("could not check the TLS certificate files")
