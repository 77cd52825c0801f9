"""The keys of a `[[bridge]]` whose `url` is `nats://...` (or `tls://...`): a NATS JetStream upstream.

    url = "nats://10.0.0.1:4222,nats://10.0.0.2:4222,nats://10.0.0.3:4222"   # any of the cluster's servers
    stream = "TELEMETRY"          # the JetStream stream that acknowledges each forwarded message
    replicas = 3                  # used when Roost creates the stream (it does when it is missing)
    duplicate_window = 3600       # seconds; the stream's de-duplication window when Roost creates it
    consumer = "roost-fleet"      # the durable consumer that brings `subscribe` down (default roost-NAME)
    creds_file = "/etc/roost/fleet.creds"      # or nkey_seed_file, or username/password
    ca_file = "/etc/roost/nats-ca.pem"         # TLS (also cert_file/key_file for mutual TLS)

Why `remote_prefix` is required and ends with `/`: it becomes the first tokens of every subject (`site1/`
-> `site1.`), so the stream Roost creates takes `site1.>`, gateways of one fleet share a stream without
overlapping, and commands for this gateway (`site1.cmd.>`) live in the same stream as its telemetry.

Why a duplicate window of an hour by default (JetStream's own default is two minutes): a message whose
PubAck was lost (the link died, Roost was killed) is resent under the same `Nats-Msg-Id` when the link is
back; within the window the stream drops the copy. An outage longer than the window after such a send
can store that one message twice. A longer window costs the servers memory per message id.

This module validates only what is NATS's; bridge/config.py reads the keys shared with MQTT bridges
(name, forward, subscribe, caps, timeouts) and calls `parse_nats` for the rest, naming the key at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import SplitResult, unquote, urlsplit

from broker.errors import ConfigError

__all__ = ["NATS_SCHEMES", "NatsSettings", "parse_nats", "parse_nats_url", "server_address", "split_url"]

NATS_SCHEMES = ("nats", "tls")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")  # no spaces, '.', '*', '>', path separators
_DEFAULT_PORT = 4222


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """What a NATS link needs beyond the shared bridge keys."""

    servers: tuple[str, ...]  # nats://host:port each, no credentials in them
    tls: bool  # a tls:// url, or TLS files given
    stream: str
    replicas: int = 1
    duplicate_window: float = 3600.0
    consumer: str = ""
    creds_file: Path | None = None
    nkey_seed_file: Path | None = None


class _KeyReader(Protocol):
    """bridge/config.py's typed reader of one `[[bridge]]` table: a bad value is reported (`fail`) and the
    default returned, so every problem of a file is told at once."""

    prefix: str

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any: ...
    def integer(self, key: str, default: int, low: int, high: int) -> int: ...
    def number(self, key: str, default: float, low: float, high: float) -> float: ...
    def file(self, key: str) -> Path | None: ...
    def fail(self, problem: str) -> None: ...


def server_address(server: str) -> tuple[str, int]:
    """`nats://[::1]:4222` -> ("::1", 4222), for one entry of `NatsSettings.servers`."""
    host, _, port = server.split("//", 1)[1].rpartition(":")
    return host.strip("[]"), int(port)


def parse_nats_url(url: str, key: str) -> tuple[tuple[str, ...], bool, str | None, str | None]:
    """`nats://a:4222,nats://b:4222` -> (servers, tls, user, password). Credentials may be given in the
    first url (as nats-py allows); they are taken out of the server list."""
    servers: list[str] = []
    tls = False
    user = password = None
    for index, part in enumerate(item.strip() for item in url.split(",")):
        parts, port = split_url(part, key)
        scheme = parts.scheme.lower()
        if scheme not in NATS_SCHEMES:
            raise ConfigError(f"{key}: {part!r}: every server of a NATS bridge is nats://host:port or tls://host:port")
        if not parts.hostname:
            raise ConfigError(f"{key}: {part!r} names no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"{key}: {part!r}: a NATS url is scheme://host:port, with no path or query")
        if parts.username:
            if index:
                raise ConfigError(f"{key}: credentials go in the first url only (or in username/password)")
            user = unquote(parts.username)
            password = unquote(parts.password) if parts.password else None
        tls = tls or scheme == "tls"
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        servers.append(f"nats://{host}:{port or _DEFAULT_PORT}")
    return tuple(servers), tls, user, password


def split_url(url: str, key: str) -> tuple[SplitResult, int | None]:
    """The url's parts and port, or a ConfigError naming `key` (urlsplit checks the port only when asked)."""
    try:
        parts = urlsplit(url)
        return parts, parts.port
    except ValueError as exc:
        raise ConfigError(f"{key}: {url!r} is not a valid url ({exc})") from exc


def parse_nats(keys: _KeyReader, url: str, remote_prefix: str, name: str,
               tls_files: bool) -> tuple[NatsSettings | None, str | None, str | None]:
    """The NATS settings of one bridge, plus user and password given in its url (None when not). Every
    problem is reported through `keys.fail`, naming the key; the settings are None when there was one."""
    prefix = keys.prefix
    problems: list[str] = []
    # Every key is read first, so none is taken for an unknown key when another is wrong.
    stream = keys.get("stream", str, None)
    consumer = keys.get("consumer", str, "") or f"roost-{name}"
    replicas = keys.integer("replicas", 1, 1, 5)
    duplicate_window = keys.number("duplicate_window", 3600.0, 1.0, 7 * 86_400.0)
    creds_file = keys.file("creds_file")
    nkey_seed_file = keys.file("nkey_seed_file")
    servers: tuple[str, ...] = ()
    tls, user, password = False, None, None
    try:
        servers, tls, user, password = parse_nats_url(url, prefix + "url")
    except ConfigError as exc:
        problems.append(str(exc))
    if not remote_prefix or not remote_prefix.endswith("/") or remote_prefix.startswith("/"):
        problems.append(
            f"{prefix}remote_prefix: a NATS bridge needs a remote_prefix like \"site1/\" (the first tokens of its "
            f"subjects, ending with '/'), got {remote_prefix!r}"
        )
    elif "." in remote_prefix or " " in remote_prefix:
        problems.append(f"{prefix}remote_prefix: {remote_prefix!r}: '.' and spaces have no place in a NATS token")
    if not stream or not _STREAM_NAME.match(stream):
        problems.append(f"{prefix}stream: a NATS bridge needs the JetStream stream's name "
                        f"(letters, digits, '-' or '_'), got {stream!r}")
    if not _STREAM_NAME.match(consumer):
        problems.append(f"{prefix}consumer: letters, digits, '-' or '_', got {consumer!r}")
    if creds_file is not None and nkey_seed_file is not None:
        problems.append(f"{prefix}nkey_seed_file: give creds_file or nkey_seed_file, not both")
    for key, path in (("creds_file", creds_file), ("nkey_seed_file", nkey_seed_file)):
        if path is not None:
            problem = _check_seed_file(path, prefix + key)
            if problem:
                problems.append(problem)
    for problem in problems:
        keys.fail(problem)
    if problems or stream is None:
        return None, None, None
    settings = NatsSettings(
        servers=servers, tls=tls or tls_files, stream=stream, replicas=replicas,
        duplicate_window=duplicate_window, consumer=consumer, creds_file=creds_file,
        nkey_seed_file=nkey_seed_file,
    )
    return settings, user, password


def _check_seed_file(path: Path, key: str) -> str | None:
    """A creds file holds a user JWT and an nkey seed; a seed file holds one seed (`SU...`). The problem,
    or None."""
    from bridge.nkeys import NkeyError, read_seed

    try:
        read_seed(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        return f"{key}: cannot read {str(path)!r}: {exc}"
    except NkeyError as exc:
        return f"{key}: {str(path)!r}: {exc}"
    return None
