"""Roost's configuration: a TOML file read with the standard library, validated before anything starts.

Every key has a default, so Roost runs with no file at all. Validation is strict: an unknown key or a value
of the wrong type or range stops start-up with a `ConfigError` that names the key (`mqtt.port: expected an
integer from 0 to 65535, got "x"`), because a typo that is silently ignored is a broker that is silently
insecure. Every problem of a file is reported in one go (`ConfigProblems`), an unknown key with the
closest known one ("did you mean mqtt.port?"), so one run of `roost check-config` shows all there is to fix.

Where the file is (`find_config`): `--config FILE`, else `$ROOST_CONFIG`, else `./roost.toml`, else
`/etc/roost/roost.toml`, else the built-in defaults: `roost serve` and every other command look in the same
places, so the CLI works on the database the server serves. `config.example.toml` documents every key;
keep the two in step.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.errors import ConfigError
from broker.settings import BrokerSettings
from control.plans import DEFAULT_PLAN, DEFAULT_PLANS, Plan

if TYPE_CHECKING:
    from bridge.config import BridgeConfig

__all__ = [
    "AnonymousACL", "CONFIG_ENV", "Config", "ConfigProblems", "SYSTEM_CONFIG", "find_config", "lan_address", "HTTPConfig", "LogConfig", "MQTTConfig", "MetricsConfig", "StorageConfig", "TLSConfig",
    "load_config", "parse_config",
]


@dataclass(frozen=True, slots=True)
class AnonymousACL:
    """Topic filters that anonymous clients may use (`[mqtt.anonymous]`); deny wins over both lists."""

    publish: tuple[str, ...] = ("#",)
    subscribe: tuple[str, ...] = ("#", "$SYS/#")
    deny: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MQTTConfig:
    host: str = "0.0.0.0"
    port: int = 1883
    allow_anonymous: bool = False
    # What the instance API tells devices to connect to (`server`, `port`); 0 = the MQTT port above.
    # Empty in the file: the machine's LAN address (`lan_address()`), else "localhost".
    public_host: str = "localhost"
    public_port: int = 0
    anonymous: AnonymousACL = field(default_factory=AnonymousACL)
    broker: BrokerSettings = field(default_factory=BrokerSettings)


@dataclass(frozen=True, slots=True)
class HTTPConfig:
    host: str = "0.0.0.0"
    port: int = 8080


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """`[tls]`: MQTT over TLS, mutual TLS for devices, and HTTPS. Without `cert_file`, Roost serves a
    certificate signed by its own CA in `data_dir/certs/` (made on first start, renewed before it ends)."""

    host: str = "0.0.0.0"
    port: int = 8883  # 0 disables the MQTT over TLS listener
    cert_file: Path | None = None  # a PEM chain (server certificate first), e.g. Let's Encrypt's fullchain.pem
    key_file: Path | None = None
    # CAs whose client certificates are accepted; None means Roost's own CA (which issues device certificates).
    client_ca_file: Path | None = None
    handshake_timeout: float = 10.0
    https: bool = False  # serve the HTTP port (REST, dashboard, MQTT over WebSocket) over TLS too
    watch_interval: float = 10.0  # seconds between checks of the certificate files; 0: only on SIGHUP


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "text"  # "text": one human-readable line per event; "json": one JSON object per line


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`[metrics]`: Prometheus metrics at `GET /metrics` on the HTTP port."""

    enabled: bool = True
    # Series labelled by tenant (user id): clients, sessions, queued messages, messages this hour. Off by
    # default; at most `max_tenants` tenants get their own series, the busiest first, so cardinality stays
    # bounded however many users there are.
    per_tenant: bool = False
    max_tenants: int = 50


@dataclass(frozen=True, slots=True)
class StorageConfig:
    # What survives a crash or power cut (storage/broker_state.py): "batched" commits durable sessions,
    # their QoS 1/2 messages and retained messages in windows of 100 ms; "strict" also holds each QoS 1/2
    # acknowledgement until what it acknowledges is on disk; "off" keeps that state in memory only.
    durability: str = "batched"


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path = Path("roost-data")
    mqtt: MQTTConfig = field(default_factory=MQTTConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    plans: dict[str, Plan] = field(default_factory=lambda: dict(DEFAULT_PLANS))
    # The plan of a user created without one (CLI, REST, first-run setup): unlimited, so a self-hoster's
    # own devices are never throttled by surprise. The seed's plans keep their quotas for users given them.
    default_plan: str = DEFAULT_PLAN
    bridges: tuple[BridgeConfig, ...] = ()  # [[bridge]]: see bridge/config.py


_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS = ("text", "json")
_DURABILITY = ("batched", "strict", "off")


CONFIG_ENV = "ROOST_CONFIG"
SYSTEM_CONFIG = Path("/etc/roost/roost.toml")


class ConfigProblems(ConfigError):
    """Every problem found in one configuration document; `problems` lists them, one sentence each."""

    def __init__(self, problems: list[str], partial: Config | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)
        # The configuration with the built-in default in place of each bad value: `check-config` goes on
        # to check the files, folders and ports it names, so one run reports everything.
        self.partial = partial


def find_config(given: str | Path | None) -> Path | None:
    """The configuration file to use: `given` (`--config`), else `$ROOST_CONFIG`, else `./roost.toml`,
    else `/etc/roost/roost.toml`; None (the built-in defaults) when there is none. A file named by the
    first two must exist (load_config says so if not); the last two are used only when they exist."""
    if given:
        return Path(given)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    for candidate in (Path("roost.toml"), SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def lan_address() -> str | None:
    """This machine's address on its LAN (the source address of its default route), or None.

    Connecting a UDP socket sends nothing; it only asks the kernel which local address would be used.
    192.0.2.1 is TEST-NET-1 (RFC 5737), which no one answers."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def load_config(path: str | Path | None) -> Config:
    """Read and validate a TOML file; `None` means the built-in defaults."""
    if path is None:
        return parse_config({})
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        config = parse_config(document, path.parent)
    except ConfigProblems as exc:
        if exc.partial is not None:
            exc.partial = _anchor(exc.partial, path)
        raise
    return _anchor(config, path)


def _anchor(config: Config, path: Path) -> Config:
    """Make the file's relative paths relative to the file. (A bridge's TLS files are too, but already
    while parsing, which reads them: `parse_config`'s `base`.)"""
    if not config.data_dir.is_absolute():
        # A relative data_dir is relative to the config file, so a service started from any working
        # directory finds the same data.
        config = _replace(config, data_dir=(path.parent / config.data_dir))
    tls = config.tls
    relative = {
        name: path.parent / value
        for name in ("cert_file", "key_file", "client_ca_file")
        if (value := getattr(tls, name)) is not None and not value.is_absolute()
    }
    if relative:
        # Certificate paths, like data_dir, are relative to the config file.
        config = _replace(config, tls=TLSConfig(**{f.name: relative.get(f.name, getattr(tls, f.name)) for f in fields(tls)}))
    return config


def parse_config(document: dict[str, Any], base: Path | None = None) -> Config:
    """Validate a parsed TOML document and build the `Config`; raise `ConfigProblems` naming every bad key.
    `base`: the config file's folder, which relative file paths of [[bridge]] are taken from (None: the
    working directory)."""
    reader = _Table(document, "", [])
    data_dir = Path(reader.string("data_dir", "roost-data", non_empty=True))

    mqtt_table = reader.table("mqtt")
    anon_table = mqtt_table.table("anonymous")
    anonymous = AnonymousACL(
        publish=anon_table.filters("publish", ("#",)),
        subscribe=anon_table.filters("subscribe", ("#", "$SYS/#")),
        deny=anon_table.filters("deny", ()),
    )
    anon_table.done()
    defaults = BrokerSettings()
    broker = BrokerSettings(
        max_packet_size=mqtt_table.integer("max_packet_size", defaults.max_packet_size, 64, 268_435_455),
        max_keepalive=mqtt_table.integer("max_keepalive", defaults.max_keepalive, 0, 65_535),
        receive_maximum=mqtt_table.integer("receive_maximum", defaults.receive_maximum, 1, 65_535),
        max_inflight=mqtt_table.integer("max_inflight", defaults.max_inflight, 1, 65_535),
        max_queued_messages=mqtt_table.integer(
            "max_queued_messages", defaults.max_queued_messages, 0, 10_000_000
        ),
        topic_alias_maximum=mqtt_table.integer("topic_alias_maximum", defaults.topic_alias_maximum, 0, 65_535),
        max_session_expiry=mqtt_table.integer(
            "max_session_expiry", defaults.max_session_expiry, 0, 0xFFFFFFFF
        ),
        sys_interval=mqtt_table.integer("sys_interval", defaults.sys_interval, 0, 86_400),
        write_buffer_high=mqtt_table.integer("write_buffer_high", defaults.write_buffer_high, 4096, 1 << 30),
        connect_timeout=mqtt_table.number("connect_timeout", defaults.connect_timeout, 0.1, 3600.0),
        shutdown_grace=mqtt_table.number("shutdown_grace", defaults.shutdown_grace, 0.0, 600.0),
        max_subscriptions_per_client=mqtt_table.integer(
            "max_subscriptions_per_client", defaults.max_subscriptions_per_client, 0, 1 << 31
        ),
        # Limits of broker/limits.py (topic shape; memory before authentication).
        max_topic_levels=mqtt_table.integer("max_topic_levels", defaults.max_topic_levels, 1, 65_535),
        max_topic_length=mqtt_table.integer("max_topic_length", defaults.max_topic_length, 1, 65_535),
        max_connect_size=mqtt_table.integer("max_connect_size", defaults.max_connect_size, 64, 268_435_455),
        max_pending_connections=mqtt_table.integer(
            "max_pending_connections", defaults.max_pending_connections, 1, 1_000_000
        ),
        max_pending_bytes=mqtt_table.integer("max_pending_bytes", defaults.max_pending_bytes, 64, 1 << 40),
    )
    mqtt = MQTTConfig(
        host=mqtt_table.string("host", "0.0.0.0", non_empty=True),
        port=mqtt_table.integer("port", 1883, 0, 65_535),
        allow_anonymous=mqtt_table.boolean("allow_anonymous", False),
        public_host=mqtt_table.string("public_host", "") or lan_address() or "localhost",
        public_port=mqtt_table.integer("public_port", 0, 0, 65_535),
        anonymous=anonymous,
        broker=broker,
    )
    mqtt_table.done()

    http_table = reader.table("http")
    http = HTTPConfig(
        host=http_table.string("host", "0.0.0.0", non_empty=True),
        port=http_table.integer("port", 8080, 0, 65_535),
    )
    http_table.done()

    tls_table = reader.table("tls")
    tls_files = {name: tls_table.string(name, "") or None for name in ("cert_file", "key_file", "client_ca_file")}
    if (tls_files["cert_file"] is None) != (tls_files["key_file"] is None):
        reader.fail("tls.cert_file and tls.key_file: give both, or neither (Roost then makes its own)")
    tls = TLSConfig(
        host=tls_table.string("host", mqtt.host, non_empty=True),
        port=tls_table.integer("port", 8883, 0, 65_535),
        cert_file=Path(tls_files["cert_file"]) if tls_files["cert_file"] else None,
        key_file=Path(tls_files["key_file"]) if tls_files["key_file"] else None,
        client_ca_file=Path(tls_files["client_ca_file"]) if tls_files["client_ca_file"] else None,
        handshake_timeout=tls_table.number("handshake_timeout", 10.0, 0.1, 600.0),
        https=tls_table.boolean("https", False),
        watch_interval=tls_table.number("watch_interval", 10.0, 0.0, 86_400.0),
    )
    tls_table.done()

    log_table = reader.table("log")
    level = log_table.string("level", "info").lower()
    if level not in _LOG_LEVELS:
        log_table.fail(f"log.level: expected one of {', '.join(_LOG_LEVELS)}, got {level!r}")
    log_format = log_table.string("format", "text").lower()
    if log_format not in _LOG_FORMATS:
        log_table.fail(f"log.format: expected one of {', '.join(_LOG_FORMATS)}, got {log_format!r}")
    log_table.done()

    metrics_table = reader.table("metrics")
    metrics = MetricsConfig(
        enabled=metrics_table.boolean("enabled", True),
        per_tenant=metrics_table.boolean("per_tenant", False),
        max_tenants=metrics_table.integer("max_tenants", 50, 1, 10_000),
    )
    metrics_table.done()

    storage_table = reader.table("storage")
    durability = storage_table.string("durability", "batched").lower()
    if durability not in _DURABILITY:
        storage_table.fail(f"storage.durability: expected one of {', '.join(_DURABILITY)}, got {durability!r}")
    storage_table.done()

    plans = dict(DEFAULT_PLANS)
    plans_table = reader.table("plans")
    for name in list(plans_table.keys()):
        plan_table = plans_table.table(name)
        base = plans.get(name) or Plan(name, 0, 0, 0, 0, 0, 30)
        plans[name] = Plan(
            name=name,
            messages_per_hour=plan_table.integer("messages_per_hour", base.messages_per_hour, 0, 1 << 40),
            max_projects=plan_table.integer("max_projects", base.max_projects, 0, 1 << 31),
            max_devices=plan_table.integer("max_devices", base.max_devices, 0, 1 << 31),
            max_topics=plan_table.integer("max_topics", base.max_topics, 0, 1 << 31),
            max_instances=plan_table.integer("max_instances", base.max_instances, 0, 1 << 31),
            max_connections=plan_table.integer("max_connections", base.max_connections, 0, 1 << 31),
            max_subscriptions=plan_table.integer("max_subscriptions", base.max_subscriptions, 0, 1 << 31),
            retention_days=plan_table.integer("retention_days", base.retention_days, 1, 36_500),
        )
        plan_table.done()
    plans_table.done()
    default_plan = reader.string("default_plan", DEFAULT_PLAN, non_empty=True)
    if default_plan not in plans:
        reader.fail(f"default_plan: no plan named {default_plan!r}{_did_you_mean(default_plan, plans)} "
                    f"(plans: {', '.join(plans)})")
        default_plan = DEFAULT_PLAN
    # [[bridge]] validates itself (bridge/config.py), into the same problem list; its TLS files are read
    # now, relative to the config file's folder.
    # Imported only when there is a [[bridge]]: a Roost without bridges does not hold their parsers.
    raw_bridges = reader.raw("bridge")
    bridges: tuple[BridgeConfig, ...] = ()
    if raw_bridges is not None:
        from bridge.config import parse_bridges

        bridges = parse_bridges(raw_bridges, reader.problems, base)
    reader.done()
    config = Config(
        data_dir=data_dir, mqtt=mqtt, http=http, tls=tls, log=LogConfig(level=level, format=log_format),
        metrics=metrics, storage=StorageConfig(durability=durability), plans=plans, default_plan=default_plan,
        bridges=bridges,
    )
    if reader.problems:
        raise ConfigProblems(reader.problems, config)
    return config


def _replace(config: Config, **changes: Any) -> Config:
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    values.update(changes)
    return Config(**values)


class _Table:
    """Reads typed values out of one TOML table and remembers which keys were used, to refuse the rest.

    Given a `problems` list (shared by a table and its sub-tables), a bad value is written there and its
    default is used instead, so that reading goes on and every problem of the file is found in one pass;
    `parse_config` raises `ConfigProblems` at the end when there was any. Without one (a table read on
    its own), the first problem raises `ConfigError` at once."""

    def __init__(self, table: Any, prefix: str, problems: list[str] | None = None) -> None:
        self.problems = problems
        if not isinstance(table, dict):
            self.fail(f"{prefix.rstrip('.')}: expected a table, got {_describe(table)}")
            table = {}
        self._table: dict[str, Any] = table
        self._prefix = prefix
        self._used: set[str] = set()

    def fail(self, problem: str) -> None:
        if self.problems is None:
            raise ConfigError(problem)
        self.problems.append(problem)

    def _get(self, key: str) -> Any:
        self._used.add(key)
        return self._table.get(key)

    def _name(self, key: str) -> str:
        return self._prefix + key

    def keys(self) -> list[str]:
        """Every key of this table, all counted as used (for tables of named sub-tables, like [plans])."""
        self._used.update(self._table)
        return list(self._table)

    def raw(self, key: str) -> Any:
        """The value as TOML gave it (for sections that validate themselves, like [[bridge]])."""
        return self._get(key)

    def table(self, key: str) -> _Table:
        value = self._get(key)
        return _Table({} if value is None else value, self._name(key) + ".", self.problems)

    def string(self, key: str, default: str, non_empty: bool = False) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or (non_empty and not value):
            self.fail(f"{self._name(key)}: expected a non-empty string, got {_describe(value)}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"{self._name(key)}: expected true or false, got {_describe(value)}")
            return default
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(f"{self._name(key)}: expected an integer from {low} to {high}, got {_describe(value)}")
            return default
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            self.fail(f"{self._name(key)}: expected a number from {low} to {high}, got {_describe(value)}")
            return default
        return float(value)

    def filters(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A list of MQTT topic filters, each validated as a SUBSCRIBE filter would be."""
        from broker.codec.topics import validate_topic_filter

        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(f"{self._name(key)}: expected a list of topic filters, got {_describe(value)}")
            return default
        valid = True
        for item in value:
            try:
                validate_topic_filter(item)
            except Exception as exc:
                self.fail(f"{self._name(key)}: {item!r} is not a valid topic filter ({exc})")
                valid = False
        return tuple(value) if valid else default

    def done(self) -> None:
        """Refuse keys nobody asked for: most likely a typo of a real key."""
        for key in sorted(set(self._table) - self._used):
            self.fail(f"{self._name(key)}: unknown configuration key{_did_you_mean(key, self._used, self._prefix)}")


def _did_you_mean(key: str, known: Any, prefix: str = "") -> str:
    import difflib  # only for a misspelt key: not imported at every start (0.5 MB)

    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
