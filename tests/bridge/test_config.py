"""`[[bridge]]` validation: bad configuration stops start-up with a message naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.errors import ConfigError
from control.config import load_config, parse_config


def _parse(**table: Any) -> Any:
    base: dict[str, Any] = {"name": "cloud", "url": "mqtt://127.0.0.1:1883", "forward": ["sensors/#"]}
    base.update(table)
    return parse_config({"bridge": [base]}).bridges[0]


def test_defaults() -> None:
    bridge = _parse()
    assert (bridge.host, bridge.port, bridge.scheme, bridge.protocol, bridge.qos) == ("127.0.0.1", 1883, "mqtt", 5, 1)
    assert bridge.max_messages >= 100_000 and bridge.policy == "drop_oldest"
    assert bridge.client_id == "roost-bridge-cloud"
    assert _parse(url="mqtts://cloud.example.com").port == 8883
    assert parse_config({}).bridges == ()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"url": "ftp://h"}, r"bridge\[0\]\.url: unknown scheme 'ftp'"),
        ({"url": "mqtt://"}, r"bridge\[0\]\.url: .* names no host"),
        ({"url": "mqtt://h/path"}, r"bridge\[0\]\.url: .*no path"),
        ({"url": "ws://h#frag"}, r"bridge\[0\]\.url: .*a fragment"),
        ({"url": "ws://h", "ca_file": "/etc/hostname"}, r"bridge\[0\]\.ca_file: TLS files need an mqtts:// or wss://"),
        ({"name": "a b"}, r"bridge\[0\]\.name"),
        ({"forward": ["a/#/b"]}, r"bridge\[0\]\.forward: 'a/#/b' is not a valid topic filter"),
        ({"forward": ["$SYS/#"]}, r"bridge\[0\]\.forward: '\$SYS/#': \$ topics"),
        ({"subscribe": ["$share/g/x"]}, r"bridge\[0\]\.subscribe"),
        ({"forward": [], "subscribe": []}, r"bridge\[0\]\.forward: a bridge with neither"),
        ({"qos": 3}, r"bridge\[0\]\.qos: expected an integer from 0 to 2"),
        ({"policy": "drop"}, r"bridge\[0\]\.policy: expected one of drop_oldest, refuse"),
        ({"remote_prefix": "a/+/"}, r"bridge\[0\]\.remote_prefix"),
        ({"protocol": "3"}, r"bridge\[0\]\.protocol"),
        ({"forwrd": ["x"]}, r"bridge\[0\]\.forwrd: unknown configuration key \(did you mean bridge\[0\]\.forward\?\)"),
        ({"url": "mqtts://h", "ca_file": "/no/such/ca.pem"}, r"bridge\[0\]\.ca_file: cannot read '/no/such/ca.pem'"),
        ({"ca_file": "/etc/hostname"}, r"bridge\[0\]\.ca_file: TLS files need an mqtts:// or wss:// url"),
        # A 3.1.1 upstream without the bridge bit echoes what we forward back down: a loop.
        ({"protocol": "3.1.1", "try_private": False, "subscribe": ["sensors/+/x"]},
         r"bridge\[0\]\.subscribe: 'sensors/\+/x' overlaps forward filter 'sensors/#'.*loop"),
        ({"keep_alive": 0}, r"bridge\[0\]\.keep_alive"),
        ({"max_messages": 0}, r"bridge\[0\]\.max_messages"),
    ],
)
def test_bad_bridge_config(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _parse(**table)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://h", ("ws", "h", 80, "/", False, "ws://h:80/")),
        ("ws://h:8080/mqtt", ("ws", "h", 8080, "/mqtt", False, "ws://h:8080/mqtt")),
        ("wss://u:p@h/mqtt?token=x", ("wss", "h", 443, "/mqtt?token=x", True, "wss://h:443/mqtt?token=x")),
    ],
)
def test_websocket_urls(url: str, expected: tuple[Any, ...]) -> None:
    """ws:// and wss://: the path (and query) is the WebSocket request's target, "/" when the url has none."""
    bridge = _parse(url=url)
    assert (bridge.scheme, bridge.host, bridge.port, bridge.path, bridge.tls, bridge.safe_url) == expected
    assert bridge.websocket


def test_unreadable_or_bad_ca_file(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"bridge\[0\]\.ca_file: cannot use the TLS files"):
        _parse(url="mqtts://h", ca_file=str(garbage))


def test_two_bridges_with_one_name() -> None:
    table = {"name": "cloud", "url": "mqtt://h", "forward": ["a"]}
    with pytest.raises(ConfigError, match=r"bridge\[1\]\.name: 'cloud' names two bridges"):
        parse_config({"bridge": [table, table]})


def test_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text('[[bridge]]\nname = "cloud"\nurl = "mqtt://127.0.0.1:1884"\nforward = ["sensors/#"]\n'
                    'subscribe = ["cmd/#"]\nremote_prefix = "site1/"\nqos = 2\n')
    [bridge] = load_config(path).bridges
    assert (bridge.remote_prefix, bridge.qos, bridge.subscribe) == ("site1/", 2, ("cmd/#",))
    path.write_text('[bridge]\nname = "cloud"\n')
    with pytest.raises(ConfigError, match=r"bridge: expected an array of tables"):
        load_config(path)


def _example_bridge(marker: str) -> dict[str, Any]:
    """The commented [[bridge]] block of config.example.toml after `marker`, as TOML reads it uncommented."""
    import tomllib

    text = (Path(__file__).resolve().parents[2] / "config.example.toml").read_text()
    block = text[text.index(marker):]
    block = block[block.index("# [[bridge]]"):]
    lines = []
    for line in block.splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("#  ") or line == "#":
            continue  # a comment's continuation
        lines.append(line[2:].split("  #")[0])
    return tomllib.loads("\n".join(lines))["bridge"][0]  # type: ignore[no-any-return]


def test_config_example_documents_every_key() -> None:
    """config.example.toml's commented [[bridge]] block names every key and parses as it is written."""
    from dataclasses import fields

    from bridge.config import BridgeConfig

    table = _example_bridge("# [[bridge]]")
    derived = {"scheme", "host", "port", "path", "nats"}  # from the url
    assert set(table) == {f.name for f in fields(BridgeConfig)} - derived
    for key in ("ca_file", "cert_file", "key_file"):
        table.pop(key)  # example paths that do not exist here
    assert parse_config({"bridge": [table]}).bridges[0].name == "cloud"


def test_config_example_documents_every_nats_key() -> None:
    """The NATS [[bridge]] block of config.example.toml names every NATS key and parses once one of its two
    (exclusive) credential files is taken out."""
    from dataclasses import fields

    from bridge.nats_config import NatsSettings

    table = _example_bridge("# A bridge into a NATS JetStream cluster")
    assert {f.name for f in fields(NatsSettings)} - {"servers", "tls"} <= set(table)
    table.pop("creds_file")
    table.pop("nkey_seed_file")
    config = parse_config({"bridge": [table]}).bridges[0]
    assert config.nats is not None and config.nats.replicas == 3 and config.safe_url.count("nats://") == 3


@pytest.mark.parametrize(("overrides", "message"), [
    ({"remote_prefix": ""}, r"bridge\[0\]\.remote_prefix: a NATS bridge needs a remote_prefix"),
    ({"remote_prefix": "site1"}, r"bridge\[0\]\.remote_prefix: .*ending with '/'"),
    ({"remote_prefix": "site.1/"}, r"bridge\[0\]\.remote_prefix: .*'\.'"),
    ({"stream": None}, r"bridge\[0\]\.stream: a NATS bridge needs"),
    ({"stream": "a.b"}, r"bridge\[0\]\.stream"),
    ({"replicas": 0}, r"bridge\[0\]\.replicas"),
    ({"url": "nats://a:4222,mqtt://b:1883"}, r"bridge\[0\]\.url: .*nats://host:port"),
    ({"url": "nats://a:4222,nats://u:p@b:4222"}, r"bridge\[0\]\.url: credentials go in the first url"),
    ({"creds_file": "/nonexistent/x.creds"}, r"bridge\[0\]\.creds_file: cannot read"),
    ({"consumer": "has space"}, r"bridge\[0\]\.consumer"),
])
def test_bad_nats_keys_name_the_key(overrides: dict[str, object], message: str) -> None:
    table: dict[str, object] = {"name": "fleet", "url": "nats://127.0.0.1:4222", "forward": ["sensors/#"],
                                "remote_prefix": "site1/", "stream": "TELEMETRY"}
    table.update(overrides)
    table = {key: value for key, value in table.items() if value is not None}
    with pytest.raises(ConfigError, match=message):
        parse_config({"bridge": [table]})


def test_a_seed_file_that_is_not_a_seed_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nk"
    bad.write_text("not a seed")
    with pytest.raises(ConfigError, match=r"bridge\[0\]\.nkey_seed_file: .*no nkey seed"):
        parse_config({"bridge": [{"name": "fleet", "url": "nats://127.0.0.1:4222", "forward": ["a/#"],
                                  "remote_prefix": "site1/", "stream": "T", "nkey_seed_file": str(bad)}]})


def test_nats_credentials_and_tls_files_are_taken() -> None:
    config = parse_config({"bridge": [{
        "name": "fleet", "url": "tls://alice:s3cret@[::1]:4443,tls://127.0.0.1", "forward": ["a/#"],
        "remote_prefix": "site1/", "stream": "T",
    }]}).bridges[0]
    assert config.nats is not None and config.nats.servers == ("nats://[::1]:4443", "nats://127.0.0.1:4222")
    assert config.tls and (config.username, config.password) == ("alice", "s3cret")
    assert (config.host, config.port) == ("::1", 4443) and "s3cret" not in config.safe_url


def test_every_bridge_problem_is_reported_with_the_files_others(tmp_path: Path) -> None:
    """A bad [[bridge]] is one more problem of the file: reported with [mqtt]'s, each key named, an
    unknown key with the closest known one; the good bridge beside it still parses."""
    from control.config import ConfigProblems

    path = tmp_path / "roost.toml"
    path.write_text(
        '[mqtt]\nprot = 1883\n'
        '[[bridge]]\nname = "good"\nurl = "mqtt://h"\nforward = ["a/#"]\n'
        '[[bridge]]\nname = "bad"\nurl = "ftp://h"\nforwrd = ["a/#"]\nqos = 3\n'
    )
    with pytest.raises(ConfigProblems) as caught:
        load_config(path)
    problems = caught.value.problems
    assert "mqtt.prot: unknown configuration key (did you mean mqtt.port?)" in problems
    assert "bridge[1].forwrd: unknown configuration key (did you mean bridge[1].forward?)" in problems
    assert any(p.startswith("bridge[1].url: unknown scheme 'ftp'") for p in problems)
    assert any(p.startswith("bridge[1].qos: expected an integer from 0 to 2") for p in problems)
    assert len(problems) == 4, problems
    assert caught.value.partial is not None and [b.name for b in caught.value.partial.bridges] == ["good"]


def test_check_config_names_a_bad_bridge_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`roost check-config` reports a bridge's bad key among the others, and start-up (`roost serve`)
    stops with the key named."""
    from control.cli import main

    path = tmp_path / "roost.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n[log]\nlevel = "loud"\n'
                    '[[bridge]]\nname = "cloud"\nurl = "mqtt://h"\nforward = ["a/#"]\ndrain_rat = 5\n')
    assert main(["check-config", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "bridge[0].drain_rat: unknown configuration key (did you mean bridge[0].drain_rate?)" in err
    assert "log.level" in err
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bridge[0].drain_rat: unknown configuration key" in err
    assert not (tmp_path / "data").exists()  # stopped before anything started


def test_tls_files_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ca_file, cert_file and key_file of a bridge, like [tls]'s, are found beside the config file, whatever
    the working directory."""
    from certs.authority import issue_client, new_authority

    folder = tmp_path / "etc"
    (folder / "pki").mkdir(parents=True)
    authority = new_authority("relative CA")
    client = issue_client(authority, "gw-1")
    (folder / "pki" / "ca.pem").write_bytes(authority.certificate)
    (folder / "pki" / "gw.pem").write_bytes(client.certificate)
    (folder / "pki" / "gw.key").write_bytes(client.key)
    path = folder / "roost.toml"
    path.write_text('[[bridge]]\nname = "cloud"\nurl = "mqtts://h"\nforward = ["a/#"]\n'
                    'ca_file = "pki/ca.pem"\ncert_file = "pki/gw.pem"\nkey_file = "pki/gw.key"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    [bridge] = load_config(path).bridges
    assert (bridge.ca_file, bridge.cert_file, bridge.key_file) == (
        folder / "pki" / "ca.pem", folder / "pki" / "gw.pem", folder / "pki" / "gw.key")
    bridge.ssl_context()  # the files are the ones beside the config, and usable
    path.write_text('[[bridge]]\nname = "cloud"\nurl = "mqtts://h"\nforward = ["a/#"]\nca_file = "pki/none.pem"\n')
    with pytest.raises(ConfigError, match=r"bridge\[0\]\.ca_file: cannot read 'pki/none.pem' \(.*etc/pki/none.pem\)"):
        load_config(path)
