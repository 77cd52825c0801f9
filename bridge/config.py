"""`[[bridge]]` tables -> `BridgeConfig`, validated before anything starts.

Each bridge is one array-of-tables entry in the config file. As for every other key, a bad value is a
problem naming it (`bridge[0].url: unknown scheme 'ftp' ...`), reported with the file's others
(`control/config.py`'s list, `roost check-config`), and stops start-up; an unknown key is refused, with the
closest known one, because a misspelt `forward` is a gateway that silently forwards nothing. TLS file
paths (`ca_file`, `cert_file`, `key_file`) are relative to the config file, as [tls]'s are. What cannot be
checked without the database (does `user` exist?) is checked when the bridge starts, with the same kind of
message (see `bridge/manager.py`).

Loops: a message that came down is never sent back up (the bridge's local subscription has No Local
[MQTT-3.8.3-3], and what it publishes locally carries its own session key as sender), and with MQTT 5 the
upstream subscription has No Local too, so nothing forwarded comes back down. A 3.1.1 upstream has no
No Local: the bridge sets the bridge bit in CONNECT (`try_private`, protocol level 0x84, which Mosquitto
answers by not echoing a bridge's own messages); without it, a `forward` filter that overlaps a
`subscribe` filter would echo every forwarded message back down, so that configuration is refused.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bridge.nats_config import NATS_SCHEMES, NatsSettings, parse_nats, server_address, split_url
from broker.codec.topics import parse_shared, validate_topic_filter
from broker.errors import ConfigError
from broker.topic_match import filters_overlap

__all__ = ["POLICIES", "BridgeConfig", "parse_bridges"]

POLICIES = ("drop_oldest", "refuse")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}
_TLS_SCHEMES = ("mqtts", "wss")


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """One `[[bridge]]`. Defaults hold hours of a busy gateway's traffic (1,000,000 messages, 512 MiB, a
    week), within what an SD card can keep."""

    name: str
    url: str
    scheme: str  # "mqtt", "mqtts", "ws", "wss", or "nats" (a NATS JetStream upstream: see `nats`)
    host: str
    port: int
    path: str = ""  # ws:// and wss://: the HTTP request target (the url's path and query; "/" when none)
    username: str | None = None
    password: str | None = None
    client_id: str = ""
    ca_file: Path | None = None  # None with mqtts: the system's CAs
    cert_file: Path | None = None  # mutual TLS
    key_file: Path | None = None
    user: str | None = None  # whose namespace is bridged; None: anonymous clients'
    forward: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    remote_prefix: str = ""
    qos: int = 1  # the highest QoS used upstream, both ways
    protocol: int = 5  # 5, or 4 for MQTT 3.1.1
    try_private: bool = True  # 3.1.1: the bridge bit in CONNECT (protocol level 0x84)
    keep_alive: int = 30
    session_expiry: int = 7 * 86_400  # v5: how long the upstream keeps the session while the link is down
    inflight: int = 64  # QoS 1/2 messages sent and not yet acknowledged (also capped by the upstream's)
    ack_timeout: float = 30.0  # no acknowledgement for this long: the link is taken as broken
    connect_timeout: float = 10.0
    reconnect_min: float = 0.5
    reconnect_max: float = 60.0
    max_messages: int = 1_000_000
    max_bytes: int = 512 * 1024 * 1024
    max_age: float = 7 * 86_400.0  # 0: no age limit
    policy: str = "drop_oldest"  # or "refuse": new QoS 1/2 messages get 0x97 while the outbox is full
    qos0_queue: int = 1_000  # QoS 0 messages held in memory while the link is down
    drain_rate: float = 1_000.0  # messages/s for the backlog that waited while the link was down; 0: unpaced
    commit_interval: float = 0.005  # how long a commit waits for more messages to ride along
    nats: NatsSettings | None = None  # a nats:// or tls:// url: the NATS keys (bridge/nats_config.py)

    @property
    def safe_url(self) -> str:
        """The url without credentials, for logs and the API."""
        if self.nats is not None:
            return ",".join(self.nats.servers)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path if self.websocket else ''}"

    @property
    def tls(self) -> bool:
        return self.scheme in _TLS_SCHEMES or (self.nats is not None and self.nats.tls)

    @property
    def websocket(self) -> bool:
        """MQTT over WebSocket (ws:// or wss://, bridge/ws_wire.py)."""
        return self.scheme in ("ws", "wss")

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for an mqtts:// or wss:// link: the peer verified against `ca_file` (or the system's CAs),
        its host name checked, and our certificate presented when `cert_file` is given."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return context


def parse_bridges(value: Any, problems: list[str] | None = None, base: Path | None = None) -> tuple[BridgeConfig, ...]:
    """Validate the `bridge` array of tables (None: no bridges).

    With `problems` (the list `control/config.py` reports every problem of the file in), each problem is
    added there and a bridge with any problem is left out, so one run of `roost check-config` shows them
    all; without it, the first problem raises `ConfigError`. Relative TLS file paths are taken from `base`
    (the config file's folder), as [tls]'s are; None: the working directory."""
    if value is None:
        return ()
    report = _Report(problems)
    if isinstance(value, dict):
        report.fail("bridge: expected an array of tables ([[bridge]]), got a table ([bridge])")
        return ()
    if not isinstance(value, list):
        report.fail(f"bridge: expected an array of tables ([[bridge]]), got {value!r}")
        return ()
    bridges: list[BridgeConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(value):
        bridge = _parse_one(_Keys(table, f"bridge[{index}].", report, base))
        if bridge is None:
            continue
        if bridge.name in seen:
            report.fail(f"bridge[{index}].name: {bridge.name!r} names two bridges")
            continue
        seen.add(bridge.name)
        bridges.append(bridge)
    return tuple(bridges)


class _Report:
    """Where problems go: a shared list, or (none given) raised at once."""

    def __init__(self, problems: list[str] | None) -> None:
        self.problems = problems

    def fail(self, problem: str) -> None:
        if self.problems is None:
            raise ConfigError(problem)
        self.problems.append(problem)

    def count(self) -> int:
        return len(self.problems) if self.problems is not None else 0


class _Keys:
    """Typed reads from one table, remembering which keys were used so the rest can be refused. A bad value
    is reported and its default used, so reading goes on and every problem of the table is found."""

    def __init__(self, table: Any, prefix: str, report: _Report, base: Path | None) -> None:
        self.prefix = prefix
        self.report = report
        self.base = base
        self.used: set[str] = set()
        self.problems_before = report.count()
        if not isinstance(table, dict):
            self.fail(f"{prefix.rstrip('.')}: expected a table")
            table = {}
        self.table: dict[str, Any] = table

    def fail(self, problem: str) -> None:
        self.report.fail(problem)

    @property
    def failed(self) -> bool:
        return self.report.count() > self.problems_before

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        value = self.table.get(key)
        if value is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kind):
            self.fail(f"{self.prefix}{key}: expected {_KIND_NAMES.get(kind, kind)}, got {value!r}")
            return default
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.get(key, (int, float), default)
        if not low <= value <= high:
            self.fail(f"{self.prefix}{key}: expected a number from {low} to {high}, got {value!r}")
            return default
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.get(key, int, default)
        if not low <= value <= high:
            self.fail(f"{self.prefix}{key}: expected an integer from {low} to {high}, got {value!r}")
            return default
        return int(value)

    def filters(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        valid: list[str] = []
        for item in value:
            if not isinstance(item, str):
                self.fail(f"{self.prefix}{key}: expected a list of topic filters, got {item!r} in it")
                continue
            try:
                validate_topic_filter(item)
            except Exception as exc:
                self.fail(f"{self.prefix}{key}: {item!r} is not a valid topic filter ({exc})")
                continue
            if parse_shared(item)[0] is not None or item.startswith("$"):
                self.fail(f"{self.prefix}{key}: {item!r}: $ topics and shared subscriptions are not bridged")
                continue
            valid.append(item)
        return tuple(valid)

    def file(self, key: str) -> Path | None:
        """A file that must be readable now; a relative path is relative to the config file's folder."""
        value = self.get(key, str, None)
        if not value:
            return None
        path = Path(value)
        if self.base is not None and not path.is_absolute():
            path = self.base / path
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            shown = repr(value) if str(path) == value else f"{value!r} ({path})"
            self.fail(f"{self.prefix}{key}: cannot read {shown}: {exc.strerror}")
            return None
        return path

    def done(self) -> None:
        """Refuse keys nobody asked for, each with the closest known key: most likely a typo."""
        for key in sorted(set(self.table) - self.used):
            import difflib  # only for a misspelt key (0.5 MB)

            close = difflib.get_close_matches(key, sorted(self.used), n=1, cutoff=0.6)
            hint = f" (did you mean {self.prefix}{close[0]}?)" if close else ""
            self.fail(f"{self.prefix}{key}: unknown configuration key{hint}")


_KIND_NAMES: dict[Any, str] = {
    str: "a string", int: "an integer", bool: "true or false", list: "a list", (int, float): "a number",
}


def _parse_one(keys: _Keys) -> BridgeConfig | None:
    """One [[bridge]] table; None when it has a problem (reported)."""
    prefix = keys.prefix
    name = keys.get("name", str, None)
    if name is None or not _NAME.match(name):
        keys.fail(f"{prefix}name: expected 1 to 64 letters, digits, '-' or '_', got {name!r}")
    url = keys.get("url", str, None)
    scheme, host, port, path, url_user, url_password = "", "", 0, "", None, None  # scheme "": no url to go by
    if not url:
        keys.fail(f"{prefix}url: a bridge needs the upstream's url (mqtt://host:port or mqtts://...)")
    elif url.split("://", 1)[0].strip().lower() in NATS_SCHEMES:
        scheme = "nats"  # a NATS JetStream upstream: the url is read by parse_nats below
    else:
        try:
            scheme, host, port, path, url_user, url_password = _parse_url(url, prefix + "url")
        except ConfigError as exc:
            keys.fail(str(exc))
    protocol_value = keys.get("protocol", (str, int), 5)
    protocol = {5: 5, "5": 5, "5.0": 5, 4: 4, "3.1.1": 4, "4": 4}.get(protocol_value)
    if protocol is None:
        keys.fail(f"{prefix}protocol: expected 5 or \"3.1.1\", got {protocol_value!r}")
        protocol = 5
    forward = keys.filters("forward")
    subscribe = keys.filters("subscribe")
    remote_prefix = keys.get("remote_prefix", str, "")
    if "+" in remote_prefix or "#" in remote_prefix or remote_prefix.startswith("$") or "\x00" in remote_prefix:
        keys.fail(f"{prefix}remote_prefix: {remote_prefix!r} must be plain topic levels (no wildcards, no $)")
    try_private = keys.get("try_private", bool, True)
    if protocol == 4 and not try_private:
        try:
            _refuse_echo(forward, subscribe, prefix)
        except ConfigError as exc:
            keys.fail(str(exc))
    policy = keys.get("policy", str, "drop_oldest")
    if policy not in POLICIES:
        keys.fail(f"{prefix}policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
    ca_file = keys.file("ca_file")
    cert_file = keys.file("cert_file")
    key_file = keys.file("key_file")
    if key_file is not None and cert_file is None:
        keys.fail(f"{prefix}key_file: given without cert_file")
    if scheme and scheme not in (*_TLS_SCHEMES, "nats") and (ca_file or cert_file):
        keys.fail(f"{prefix}ca_file: TLS files need an mqtts:// or wss:// url, got {url!r}")
    nats = None
    if scheme == "nats":
        nats, url_user, url_password = parse_nats(keys, url or "", remote_prefix, name or "",
                                                  tls_files=bool(ca_file or cert_file))
        if nats is not None:
            host, port = server_address(nats.servers[0])
    reconnect_min = keys.number("reconnect_min", 0.5, 0.01, 3600.0)
    config = BridgeConfig(
        name=name or "",
        url=url or "",
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        username=keys.get("username", str, url_user),
        password=keys.get("password", str, url_password),
        client_id=keys.get("client_id", str, "") or f"roost-bridge-{name}",
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        user=keys.get("user", str, None) or None,
        forward=forward,
        subscribe=subscribe,
        remote_prefix=remote_prefix,
        qos=keys.integer("qos", 1, 0, 2),
        protocol=protocol,
        try_private=try_private,
        keep_alive=keys.integer("keep_alive", 30, 2, 65_535),
        session_expiry=keys.integer("session_expiry", 7 * 86_400, 0, 0xFFFFFFFF),
        inflight=keys.integer("inflight", 64, 1, 65_535),
        ack_timeout=keys.number("ack_timeout", 30.0, 0.1, 86_400.0),
        connect_timeout=keys.number("connect_timeout", 10.0, 0.1, 600.0),
        reconnect_min=reconnect_min,
        reconnect_max=keys.number("reconnect_max", 60.0, reconnect_min, 86_400.0),
        max_messages=keys.integer("max_messages", 1_000_000, 1, 1 << 40),
        max_bytes=keys.integer("max_bytes", 512 * 1024 * 1024, 1024, 1 << 50),
        max_age=keys.number("max_age", 7 * 86_400.0, 0.0, 10 * 365 * 86_400.0),
        policy=policy,
        qos0_queue=keys.integer("qos0_queue", 1_000, 0, 1_000_000),
        drain_rate=keys.number("drain_rate", 1_000.0, 0.0, 1e9),
        commit_interval=keys.number("commit_interval", 0.005, 0.0, 10.0),
        nats=nats,
    )
    keys.done()
    if not forward and not subscribe and not keys.failed:
        keys.fail(f"{prefix}forward: a bridge with neither forward nor subscribe filters does nothing")
    if keys.failed:
        return None
    if config.tls:
        try:
            config.ssl_context()
        except (ssl.SSLError, OSError, ValueError) as exc:
            key = "cert_file" if config.cert_file is not None and "PEM" not in str(exc) and config.ca_file is None else "ca_file"
            keys.fail(f"{prefix}{key}: cannot use the TLS files: {exc}")
            return None
    return config


def _parse_url(url: str, key: str) -> tuple[str, str, int, str, str | None, str | None]:
    """(scheme, host, port, path, user, password) of an MQTT url. The path is for ws:// and wss:// only
    (the WebSocket request's target, "/" when the url has none: Roost's listener and Mosquitto's usual one
    are at /mqtt, so it is named in the url); mqtt:// and mqtts:// take none."""
    parts, port = split_url(url, key)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(
            f"{key}: unknown scheme {parts.scheme!r} in {url!r} (expected mqtt://, mqtts://, ws://, wss:// or nats://)"
        )
    if not parts.hostname:
        raise ConfigError(f"{key}: {url!r} names no host")
    if parts.fragment:
        raise ConfigError(f"{key}: {url!r}: a fragment (#...) means nothing to an upstream")
    path = ""
    if scheme in ("ws", "wss"):
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    elif parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"{key}: {url!r}: an MQTT url is scheme://host:port, with no path or query (only ws:// and wss:// take a path)")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], path, user, password


def _refuse_echo(forward: Sequence[str], subscribe: Sequence[str], prefix: str) -> None:
    """A 3.1.1 upstream without the bridge bit sends a forwarded message back to any subscription of the
    bridge that matches it: overlapping filters would bring every forwarded message back down."""
    for local in forward:
        for remote in subscribe:
            if filters_overlap(local, remote):
                raise ConfigError(
                    f"{prefix}subscribe: {remote!r} overlaps forward filter {local!r}: a 3.1.1 upstream "
                    "without the bridge bit (try_private = false) would send every forwarded message back "
                    "down (a loop); use protocol = 5, try_private = true, or filters that do not overlap"
                )
