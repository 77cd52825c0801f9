"""Issue 18, the self-hoster's first hour: each numbered point of the issue, through the real `roost`
processes (the CLI and `roost serve`) and HTTP, as a user meets them.

Every listener is on a free port (tests/control/cli_helpers.py), every folder temporary; the CLI finds the
configuration as a user's does (`./roost.toml`, `ROOST_CONFIG`, `--config`). Waits are on things a user can
see (a console line, an HTTP answer), bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.control.cli_helpers import ServedRoost, roost_cli

# Root ignores file permissions; without these capabilities it is held to them, as a service user is.
NO_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., ServedRoost]]:
    started: list[ServedRoost] = []

    def start(extra: str = "", folder: str = "site") -> ServedRoost:
        roost = ServedRoost(tmp_path / folder, extra).start()
        started.append(roost)
        return roost

    yield start
    for roost in started:
        roost.stop()


def _until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll something a user can see until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # the server's next batch (quota counts, history) or check (the data folder)


def _stats(roost: ServedRoost, key: str) -> dict[str, Any]:
    status, body = roost.http("GET", "/api/v1/stats", key=key)
    assert status == 200, body
    return json.loads(body)["data"]["user"]  # type: ignore[no-any-return]


def _publish(roost: ServedRoost, credentials: dict[str, Any], count: int, version: str = "311",
             topic: str = "sensors/t") -> subprocess.CompletedProcess[str]:
    """`count` QoS 0 messages from one mosquitto_pub (`-l`: one message per line of standard input)."""
    return subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(roost.mqtt_port), "-u", credentials["user"],
         "-P", credentials["password"], "-t", topic, "-l", "-V", version],
        input="x\n" * count, capture_output=True, text=True, timeout=30,
    )


# -- 1. their own devices are not throttled; quotas stay the seed's for users given a plan; drops visible ---


def test_1_users_made_without_a_plan_are_unlimited_and_seed_plans_keep_their_quota(served, mosquitto_clients) -> None:
    roost = served()
    admin = roost.cli_json("user", "add", "me", "--admin")
    users = {u["name"]: u for u in roost.cli_json("user", "list")}
    assert users["me"]["plan"] == "unlimited" and users["me"]["is_admin"]
    mine = roost.cli_json("mqtt", "add", "me")
    # A sensor every 30 s for 3 hours, in one go: far past the seed's free plan (100 an hour), never refused.
    assert _publish(roost, mine, 360).returncode == 0
    counted = _until(lambda: (s := _stats(roost, admin["api_key"]))["messages_this_hour"] == 360 and s, "360 counted")
    assert counted["messages_refused_this_hour"] == 0 and counted["messages_per_hour"] is None

    # A user given the seed's free plan gets exactly its 100 messages an hour.
    carol = roost.cli_json("user", "add", "carol", "--plan", "free")
    login = roost.cli_json("mqtt", "add", "carol")
    assert _publish(roost, login, 105).returncode == 0  # 3.1.1 QoS 0: the client is never told
    stats = _until(lambda: (s := _stats(roost, carol["api_key"]))["messages_refused_this_hour"] == 5 and s, "5 refused")
    assert stats["messages_this_hour"] == 100 and stats["messages_per_hour"] == 100
    # The dashboard shows when the window resets: the start of the next hour.
    resets = datetime.fromtimestamp(stats["quota_resets_at"], timezone.utc)
    assert resets.minute == resets.second == 0 and 0 < stats["quota_resets_at"] - time.time() <= 3600
    status, body = roost.http("GET", "/api/v1/users/me", key=carol["api_key"])
    limits = json.loads(body)["limits"]
    assert (limits["messages_refused_this_hour"], limits["messages_per_hour"]) == (5, 100)
    assert limits["quota_resets_at"].endswith(":00:00.000Z")
    # Logged once per window, not once per message.
    assert _publish(roost, login, 20).returncode == 0
    _until(lambda: _stats(roost, carol["api_key"])["messages_refused_this_hour"] == 25, "25 refused")
    assert sum("quota: user" in line for line in roost.log) == 1, roost.log

    # One command lifts it, and the next message goes through at once.
    changed = roost.cli_json("user", "set", "carol", "--plan", "unlimited")
    assert changed["plan"] == "unlimited"
    assert _publish(roost, login, 1).returncode == 0
    _until(lambda: _stats(roost, carol["api_key"])["messages_this_hour"] == 101, "the message after the change")


def test_1_the_default_plan_is_a_config_key_and_the_cli_never_says_upgrade(served) -> None:
    roost = served('default_plan = "free"')
    roost.cli("user", "add", "dan")
    assert {u["name"]: u["plan"] for u in roost.cli_json("user", "list")} == {"dan": "free"}
    roost.cli("mqtt", "add", "dan")
    refused = roost.cli("mqtt", "add", "dan", ok=False)  # the free plan's single MQTT instance is in use
    assert refused.returncode == 1
    assert "upgrade" not in refused.stderr.lower() and "account" not in refused.stderr.lower()
    assert "roost user set dan --plan" in refused.stderr and "roost mqtt delete" in refused.stderr


def test_1_an_unknown_default_plan_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "roost.toml").write_text('default_plan = "unlimted"\n')
    result = roost_cli("check-config", cwd=tmp_path, ok=False)
    assert result.returncode == 1
    assert "default_plan: no plan named 'unlimted' (did you mean unlimited?)" in result.stderr


# -- 2. the CLI works on the server's database, or says why not ---------------------------------------------


def test_2_the_cli_finds_the_servers_configuration_or_refuses_to_make_a_new_database(served, tmp_path: Path) -> None:
    roost = served()
    roost.cli("user", "add", "alice")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # From another folder whose configuration names no existing data (an empty ./roost.toml, found before
    # any /etc/roost/roost.toml this machine may have): it says so, and makes no empty database there.
    (elsewhere / "roost.toml").write_text("")
    lost = roost_cli("device", "revoke-cert", "X", cwd=elsewhere, ok=False)
    assert lost.returncode == 1 and "does not exist" in lost.stderr and "--create" in lost.stderr
    assert [path.name for path in elsewhere.iterdir()] == ["roost.toml"]
    # ROOST_CONFIG, then --config: the server's database, from anywhere.
    by_env = roost_cli("user", "list", "--json", cwd=elsewhere, env={"ROOST_CONFIG": str(roost.config)})
    assert [u["name"] for u in json.loads(by_env.stdout)] == ["alice"]
    by_flag = roost_cli("user", "list", "--json", "--config", str(roost.config), cwd=elsewhere)
    assert [u["name"] for u in json.loads(by_flag.stdout)] == ["alice"]
    # --create starts a new Roost on purpose.
    roost_cli("user", "add", "bob", "--create", cwd=elsewhere)
    assert (elsewhere / "roost-data" / "roost.db").is_file()


def test_2_a_data_folder_deleted_under_the_server_turns_health_unhealthy(served) -> None:
    roost = served()
    roost.cli("user", "add", "alice")
    assert roost.http("GET", "/health")[0] == 200
    shutil.rmtree(roost.folder / "roost-data")
    status, body = _until(lambda: (r := roost.http("GET", "/health"))[0] == 503 and r, "an unhealthy /health")
    health = json.loads(body)
    assert health["status"] == "unhealthy" and "was deleted" in health["problem"]
    assert any("was deleted while Roost runs" in line for line in roost.log), roost.log
    # And the CLI does not quietly write a database this server never reads.
    refused = roost.cli("user", "add", "carol", ok=False)
    assert refused.returncode == 1 and "does not exist" in refused.stderr


# -- 3. errors in words ------------------------------------------------------------------------------------


def test_3_a_read_only_data_folder_is_called_read_only_never_damaged(tmp_path: Path) -> None:
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv, to run the CLI without permission overrides")
    (tmp_path / "roost.toml").write_text("")
    roost_cli("user", "add", "alice", "--create", cwd=tmp_path)  # a healthy database
    data = tmp_path / "roost-data"
    for path in data.iterdir():
        path.chmod(0o444)
    data.chmod(0o555)
    try:
        for command in (("user", "list"), ("user", "add", "bob")):
            result = roost_cli(*command, cwd=tmp_path, ok=False, prefix=NO_OVERRIDE)
            assert result.returncode == 1, result.stderr
            assert "read-only" in result.stderr and "damaged" not in result.stderr, result.stderr
        served = roost_cli("serve", cwd=tmp_path, ok=False, prefix=NO_OVERRIDE)
        assert served.returncode == 1 and "read-only" in served.stderr and "damaged" not in served.stderr
        # An empty read-only folder: words, not a traceback.
        empty = tmp_path / "empty"
        empty.mkdir(mode=0o555)
        (tmp_path / "other.toml").write_text(f'data_dir = "{empty}"\n')
        result = roost_cli("user", "add", "carol", "--config", str(tmp_path / "other.toml"), cwd=tmp_path,
                           ok=False, prefix=NO_OVERRIDE)
        assert result.returncode == 1 and "read-only" in result.stderr, result.stderr
    finally:
        data.chmod(0o755)


@pytest.mark.parametrize("key", ["mqtt.port", "http.port", "tls.port"])
def test_3_a_port_in_use_names_the_address_and_the_key(tmp_path: Path, key: str) -> None:
    from tests.session_helpers import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {"mqtt.port": free_port(), "http.port": free_port(), "tls.port": free_port(), key: busy}
        (tmp_path / "roost.toml").write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {ports["mqtt.port"]}\n[http]\nhost = "127.0.0.1"\n'
            f'port = {ports["http.port"]}\n[tls]\nport = {ports["tls.port"]}\n'
        )
        result = roost_cli("serve", cwd=tmp_path, ok=False)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{busy} ({key}): the address is already in use" in result.stderr
    assert "Errno" not in result.stderr


def test_3_check_config_reports_every_problem_in_one_run_with_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / "roost.toml").write_text(
        '[mqtt]\nprot = 1883\nallow_anonymus = true\nport = 8080\n[htp]\nport = 1\n[http]\nport = 8080\n'
        '[log]\nlevel = "loud"\n[tls]\ncert_file = "missing.pem"\nkey_file = "missing.key"\n'
    )
    result = roost_cli("check-config", cwd=tmp_path, ok=False)
    assert result.returncode == 1
    for expected in (
        "mqtt.prot: unknown configuration key (did you mean mqtt.port?)",
        "mqtt.allow_anonymus: unknown configuration key (did you mean mqtt.allow_anonymous?)",
        "htp: unknown configuration key (did you mean http?)",
        "log.level: expected one of",
        "http.port: port 8080 is also mqtt.port",
        "tls.cert_file: cannot read",
        "tls.key_file: cannot read",
        "7 problem(s)",
    ):
        assert expected in result.stderr, result.stderr
    # `roost serve` refuses the same file with the same sentences.
    served = roost_cli("serve", cwd=tmp_path, ok=False)
    assert served.returncode == 2 and "did you mean mqtt.port?" in served.stderr


def test_6_backup_into_a_folder_writes_a_file_inside_it(served) -> None:
    roost = served()
    roost.cli("user", "add", "alice")
    result = roost.cli("backup", "backups/")
    files = list((roost.folder / "backups").iterdir())
    assert len(files) == 1 and re.fullmatch(r"roost-\d{8}T\d{6}\.db", files[0].name), files
    assert str(files[0].relative_to(roost.folder)) in result.stdout


# -- 5. where next: first run, /docs, the server shown for credentials, history ----------------------------


def test_5_first_run_prints_the_dashboard_and_a_one_time_setup_link(served) -> None:
    roost = served()
    roost.wait_for_console(r"^Dashboard: http://\S+:%d/$" % roost.http_port)
    link = roost.wait_for_console(r"(http://\S+/setup\?token=(\S+))")
    token = link.group(2)
    assert not any(token in line for line in roost.log), "the token must be printed on the console only"
    status, page = roost.http("GET", f"/setup?token={token}")
    assert status == 200 and 'name="password"' in page
    assert roost.http("GET", "/setup?token=wrong")[0] == 403

    def submit(token: str, name: str, password: str) -> tuple[int, str]:
        form = urlencode({"token": token, "name": name, "password": password}).encode()
        return roost.http("POST", "/setup", raw=form, headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert submit("wrong", "root", "a long passphrase")[0] == 403
    assert submit(token, "root", "short")[0] == 422  # the form again, with the reason
    status, page = submit(token, "root", "a long passphrase")
    assert status == 201 and "sk_" in page
    assert submit(token, "mallory", "a long passphrase")[0] == 410  # once only
    users = {u["name"]: u for u in roost.cli_json("user", "list")}
    assert set(users) == {"root"} and users["root"]["is_admin"] and users["root"]["plan"] == "unlimited"
    status, body = roost.http("POST", "/dashboard/session", {"name": "root", "password": "a long passphrase"},
                              headers={"Origin": f"http://127.0.0.1:{roost.http_port}"})
    assert status == 200, body


def test_5_a_user_made_on_the_command_line_closes_the_setup_link(served) -> None:
    roost = served()
    token = roost.wait_for_console(r"/setup\?token=(\S+)").group(1)
    roost.cli("user", "add", "alice", "--admin")
    assert roost.http("GET", f"/setup?token={token}")[0] == 410


def test_5_no_setup_link_once_a_user_exists(served, tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "roost.toml").write_text("")
    roost_cli("user", "add", "alice", "--create", cwd=tmp_path / "site")
    roost = served()
    roost.wait_for_console(r"^Dashboard: ")
    assert not any("setup" in line for line in roost.console), roost.console


def test_5_api_docs_at_docs_from_the_packages_files(served) -> None:
    roost = served()
    status, page = roost.http("GET", "/docs")
    assert status == 200 and "swagger-ui" in page
    scripts = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert scripts and all(s.startswith("/docs/static/") for s in scripts), scripts  # nothing from a CDN
    for path in scripts:
        status, body = roost.http("GET", path)
        assert status == 200 and len(body) > 100, path
    status, init = roost.http("GET", "/docs/static/init.js")
    assert "/api/v1/openapi.json" in init
    assert roost.http("GET", "/docs/static/swagger-ui-bundle.js.map")[0] == 404  # only the files it needs
    assert roost.http("GET", "/api/v1/openapi.json")[0] == 200


def test_5_the_server_shown_for_new_credentials_is_the_lan_address(served) -> None:
    from control.config import lan_address

    roost = served()
    roost.cli("user", "add", "alice")
    credentials = roost.cli_json("mqtt", "add", "alice")
    expected = lan_address()
    if expected is None:
        assert credentials["server"] == "localhost"
        return
    assert credentials["server"] == expected and not expected.startswith("127.")
    with socket.socket() as probe:
        probe.bind((expected, 0))  # an address of this machine
    # public_host in the configuration still wins.
    (roost.folder / "roost.toml").write_text(roost.config.read_text().replace("[mqtt]\n", '[mqtt]\npublic_host = "mqtt.example.org"\n'))
    assert roost.cli_json("mqtt", "list", "alice")[0]["server"] == "mqtt.example.org"


def test_5_messages_sent_with_instance_credentials_are_in_the_history(served, mosquitto_clients) -> None:
    roost = served()
    alice = roost.cli_json("user", "add", "alice")
    device = roost.cli_json("device", "add", "alice", "gate-1", "--project", "home", "--topic", "home/#")
    assert device["device_id"] == "gate-1" and device["topics"] == ["home/#"] and device["password"]
    login = roost.cli_json("mqtt", "add", "alice")
    assert _publish(roost, login, 1, topic="home/door").returncode == 0
    assert _publish(roost, login, 1, topic="elsewhere/door").returncode == 0  # no project topic: not kept

    def history() -> list[dict[str, Any]]:
        status, body = roost.http("GET", f"/api/v1/messages?project_id={device['project_id']}", key=alice["api_key"])
        assert status == 200, body
        return json.loads(body)["data"]  # type: ignore[no-any-return]

    messages = _until(history, "the message in the history")
    assert len(messages) == 1
    message = messages[0]
    # The seed's fields (icmqtt-rest-api-v1.md, "List Messages").
    assert {"id", "project_id", "topic_id", "payload", "qos", "retained", "expires_at", "created_at"} <= set(message)
    assert (message["project_id"], message["payload"], message["qos"], message["retained"]) == (
        device["project_id"], "x", 0, False)


# -- 6. CLI credentials work when the command returns ------------------------------------------------------


def test_6_credentials_work_the_moment_mqtt_add_returns(served, mosquitto_clients) -> None:
    roost = served()
    roost.cli("user", "add", "alice")
    for _ in range(5):
        login = roost.cli_json("mqtt", "add", "alice")
        result = _publish(roost, login, 1, version="5")  # no retry: the first CONNECT must be accepted
        assert result.returncode == 0, result.stderr
    # Deleting them is felt as quickly: the next CONNECT is refused.
    deleted = roost.cli_json("mqtt", "delete", login["user"])
    assert deleted == {"deleted": login["user"], "owner": "alice"}
    refused = _publish(roost, login, 1, version="5")
    assert refused.returncode != 0 and "bad user name or password" in refused.stderr.lower()


# -- the complete CLI, each with --json ----------------------------------------------------------------------


def test_cli_user_set_and_delete_and_mqtt_list(served) -> None:
    roost = served()
    roost.cli("user", "add", "alice")
    assert roost.cli("user", "set", "alice", ok=False).returncode == 1  # nothing to change: says so
    changed = roost.cli_json("user", "set", "alice", "--admin", "--password-stdin", input="a long passphrase\n")
    assert changed["is_admin"] and changed["has_password"]
    assert roost.cli_json("user", "set", "alice", "--no-admin")["is_admin"] is False
    bad = roost.cli("user", "set", "alice", "--plan", "gold", ok=False)
    assert bad.returncode == 2 and "plan" in bad.stderr
    login = roost.cli_json("mqtt", "add", "alice")
    listed = roost.cli_json("mqtt", "list")
    assert [(row["owner"], row["user"], row["password"]) for row in listed] == [("alice", login["user"], login["password"])]
    assert roost.cli_json("user", "delete", "alice")["deleted"] == "alice"
    assert roost.cli_json("user", "list") == [] and roost.cli_json("mqtt", "list") == []
    missing = roost.cli("user", "delete", "alice", ok=False)
    assert missing.returncode == 1 and "no user named 'alice'" in missing.stderr
