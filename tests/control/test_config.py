"""`control/config.py`: the TOML configuration is validated strictly, and every error names its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.errors import ConfigError
from broker.settings import BrokerSettings
from control.config import AnonymousACL, Config, MQTTConfig, lan_address, load_config, parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def _defaults() -> Config:
    """The built-in defaults as read from an empty file: public_host is the LAN address when there is one."""
    return Config(mqtt=MQTTConfig(public_host=lan_address() or "localhost"))


def test_empty_document_gives_the_defaults() -> None:
    config = parse_config({})
    assert config == _defaults()
    assert config.data_dir == Path("roost-data")
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.allow_anonymous) == ("0.0.0.0", 1883, False)
    assert config.mqtt.broker == BrokerSettings()
    assert config.mqtt.anonymous == AnonymousACL()
    assert (config.http.host, config.http.port) == ("0.0.0.0", 8080)
    assert config.log.level == "info"


def test_no_file_means_defaults() -> None:
    assert load_config(None) == _defaults()


def test_values_are_read() -> None:
    config = parse_config(
        {
            "data_dir": "/var/lib/roost",
            "mqtt": {
                "host": "127.0.0.1",
                "port": 1884,
                "allow_anonymous": True,
                "max_packet_size": 4096,
                "max_keepalive": 30,
                "receive_maximum": 10,
                "max_inflight": 5,
                "max_queued_messages": 7,
                "topic_alias_maximum": 0,
                "max_session_expiry": 3600,
                "sys_interval": 0,
                "write_buffer_high": 65536,
                "connect_timeout": 2,
                "shutdown_grace": 0.5,
                "anonymous": {"publish": ["a/#"], "subscribe": ["a/+", "$SYS/#"], "deny": ["a/secret"]},
            },
            "http": {"host": "::1", "port": 0},
            "log": {"level": "DEBUG"},
        }
    )
    assert config.data_dir == Path("/var/lib/roost")
    mqtt = config.mqtt
    assert (mqtt.host, mqtt.port, mqtt.allow_anonymous) == ("127.0.0.1", 1884, True)
    assert mqtt.broker == BrokerSettings(
        max_packet_size=4096,
        max_keepalive=30,
        receive_maximum=10,
        max_inflight=5,
        max_queued_messages=7,
        topic_alias_maximum=0,
        max_session_expiry=3600,
        sys_interval=0,
        write_buffer_high=65536,
        connect_timeout=2.0,
        shutdown_grace=0.5,
    )
    assert mqtt.anonymous == AnonymousACL(("a/#",), ("a/+", "$SYS/#"), ("a/secret",))
    assert (config.http.host, config.http.port) == ("::1", 0)
    assert config.log.level == "debug"


# (key path, a bad value): each must be refused with an error that names the key.
_BAD_VALUES: list[tuple[str, Any]] = [
    ("data_dir", ""),
    ("data_dir", 3),
    ("mqtt.host", ""),
    ("mqtt.host", 1),
    ("mqtt.port", -1),
    ("mqtt.port", 65_536),
    ("mqtt.port", "1883"),
    ("mqtt.port", 1883.0),
    ("mqtt.port", True),
    ("mqtt.allow_anonymous", "yes"),
    ("mqtt.allow_anonymous", 1),
    ("mqtt.max_packet_size", 63),
    ("mqtt.max_packet_size", 268_435_456),
    ("mqtt.max_keepalive", 65_536),
    ("mqtt.receive_maximum", 0),
    ("mqtt.receive_maximum", 65_536),
    ("mqtt.max_inflight", 0),
    ("mqtt.max_queued_messages", -1),
    ("mqtt.topic_alias_maximum", 70_000),
    ("mqtt.max_session_expiry", 0x1_0000_0000),
    ("mqtt.sys_interval", -1),
    ("mqtt.sys_interval", 86_401),
    ("mqtt.write_buffer_high", 4095),
    ("mqtt.connect_timeout", 0),
    ("mqtt.connect_timeout", "10"),
    ("mqtt.shutdown_grace", -0.1),
    ("mqtt.shutdown_grace", False),
    ("mqtt.anonymous.publish", "#"),
    ("mqtt.anonymous.subscribe", [1]),
    ("mqtt.anonymous.deny", {"a": 1}),
    ("http.host", ""),
    ("http.port", 70_000),
    ("log.level", "verbose"),
    ("log.level", 10),
    ("mqtt", "not a table"),
    ("mqtt.anonymous", ["#"]),
    ("http", 8080),
    ("log", "info"),
]


def _document(key: str, value: Any) -> dict[str, Any]:
    document: dict[str, Any] = {}
    table = document
    *parents, last = key.split(".")
    for part in parents:
        table = table.setdefault(part, {})
    table[last] = value
    return document


@pytest.mark.parametrize(("key", "value"), _BAD_VALUES, ids=[f"{k}={v!r}" for k, v in _BAD_VALUES])
def test_bad_value_is_refused_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_document(key, value))
    assert str(info.value).startswith(f"{key}:"), str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("mqtt.port", 0), ("mqtt.port", 65_535), ("mqtt.max_packet_size", 64), ("mqtt.max_packet_size", 268_435_455),
     ("mqtt.max_queued_messages", 0), ("mqtt.max_keepalive", 0), ("mqtt.shutdown_grace", 0),
     ("mqtt.connect_timeout", 0.1)],
)
def test_range_bounds_are_inclusive(key: str, value: Any) -> None:
    parse_config(_document(key, value))


@pytest.mark.parametrize(
    "key",
    ["port", "mqtt.prot", "mqtt.anonymous.allow", "mqtt.broker", "http.tls", "log.file", "mqtt.max_packet"],
)
def test_unknown_key_is_refused(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_document(key, 1))
    assert "unknown" in str(info.value) and key in str(info.value)


def test_every_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"mqtt": {"prot": 1, "hots": "x"}})
    assert "mqtt.hots" in str(info.value) and "mqtt.prot" in str(info.value)


@pytest.mark.parametrize(
    "topic_filter",
    ["a/#/b", "a#", "a/b+", "", "$share/g", "$share//a", "$share/g+/a"],
)
@pytest.mark.parametrize("list_name", ["publish", "subscribe", "deny"])
def test_invalid_topic_filter_in_anonymous_acl(list_name: str, topic_filter: str) -> None:
    """ACL filters are checked as SUBSCRIBE filters are [MQTT-4.7.1-2][MQTT-4.7.1-3][MQTT-4.7.3-1]."""
    with pytest.raises(ConfigError) as info:
        parse_config({"mqtt": {"anonymous": {list_name: ["ok/#", topic_filter]}}})
    message = str(info.value)
    assert message.startswith(f"mqtt.anonymous.{list_name}:"), message
    assert repr(topic_filter) in message


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text("[mqtt\nport = 1883\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid TOML" in str(info.value)
    assert str(path) in str(info.value)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_bytes(b'data_dir = "\xff"\n')
    with pytest.raises(ConfigError):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "missing.toml" in str(info.value)


def test_load_config_validates_like_parse_config(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text("[mqtt]\nport = 99999\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("mqtt.port:")


def test_relative_data_dir_is_resolved_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc" / "roost"
    folder.mkdir(parents=True)
    path = folder / "roost.toml"
    path.write_text('data_dir = "state/db"\n')
    monkeypatch.chdir(tmp_path)  # not the config's folder
    assert load_config(path).data_dir.resolve() == (folder / "state" / "db").resolve()


def test_default_data_dir_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text("")
    assert load_config(path).data_dir.resolve() == (tmp_path / "roost-data").resolve()


def test_absolute_data_dir_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    target = tmp_path / "elsewhere"
    path.write_text(f'data_dir = "{target.as_posix()}"\n')
    assert load_config(path).data_dir == target


def test_config_example_loads_and_equals_the_defaults() -> None:
    """config.example.toml documents every key with its default value."""
    example = REPO_ROOT / "config.example.toml"
    config = load_config(example)
    defaults = _defaults()
    assert config.data_dir == example.parent / defaults.data_dir
    assert config.mqtt == defaults.mqtt
    assert config.http == defaults.http
    assert config.log == defaults.log
    assert config.plans == defaults.plans and config.default_plan == defaults.default_plan == "unlimited"


def test_config_example_documents_every_broker_setting_the_parser_accepts() -> None:
    """Every BrokerSettings field that is a config key (the parser accepts it under [mqtt]) is in the
    example; a field that is not a config key is refused as unknown, never silently ignored."""
    import tomllib

    document = tomllib.loads((REPO_ROOT / "config.example.toml").read_text())
    documented = set(document["mqtt"])
    for name in BrokerSettings.__dataclass_fields__:
        if name in documented:
            continue
        with pytest.raises(ConfigError, match="unknown"):
            parse_config({"mqtt": {name: getattr(BrokerSettings(), name)}})
    assert {"host", "port", "allow_anonymous", "anonymous"} <= documented
    assert set(document["mqtt"]["anonymous"]) == {"publish", "subscribe", "deny"}
    assert set(document["http"]) == {"host", "port"}
    assert set(document["log"]) == {"level", "format"}
    assert set(document["metrics"]) == {"enabled", "per_tenant", "max_tenants"}


def test_find_config_looks_at_the_flag_then_the_environment_then_here_then_etc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import control.config as config_module
    from control.config import find_config

    system = tmp_path / "etc" / "roost.toml"
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", system)
    monkeypatch.delenv("ROOST_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_config(None) is None  # nothing anywhere: the built-in defaults
    system.parent.mkdir()
    system.write_text("")
    assert find_config(None) == system
    (tmp_path / "roost.toml").write_text("")
    assert find_config(None) == Path("roost.toml")
    monkeypatch.setenv("ROOST_CONFIG", "/somewhere/else.toml")
    assert find_config(None) == Path("/somewhere/else.toml")  # named: used even if missing (load_config says so)
    assert find_config("given.toml") == Path("given.toml")


def test_every_problem_is_reported_at_once_with_the_closest_key() -> None:
    from control.config import ConfigProblems

    with pytest.raises(ConfigProblems) as info:
        parse_config({"mqtt": {"prot": 1, "port": "x"}, "metrcs": {}, "log": {"level": "loud"}})
    assert info.value.problems == [
        "mqtt.port: expected an integer from 0 to 65535, got 'x'",
        "mqtt.prot: unknown configuration key (did you mean mqtt.port?)",
        "log.level: expected one of debug, info, warning, error, critical, got 'loud'",
        "metrcs: unknown configuration key (did you mean metrics?)",
    ]
    assert info.value.partial is not None and info.value.partial.mqtt.port == 1883  # the default in its place


def test_a_table_read_on_its_own_still_raises_at_the_first_problem() -> None:
    """Code that reads a table of its own (a section another module parses) keeps the strict behaviour."""
    from control.config import _Table

    table = _Table({"port": "x"}, "bridge.")
    with pytest.raises(ConfigError, match="bridge.port: expected an integer"):
        table.integer("port", 1, 0, 65_535)
    with pytest.raises(ConfigError, match="did you mean bridge.host"):
        strict = _Table({"hots": "a"}, "bridge.")
        strict.string("host", "")
        strict.done()
