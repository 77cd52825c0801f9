"""Looking after Roost: `roost check-config`, `backup` (while Roost runs), `restore` (refused while it runs
or for a newer schema), the data directory's lock, `--version`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.settings import VERSION
from control.cli import main
from control.ops import DataDirLock, OperationRefused
from storage.migrations import latest_version
from tests.helpers import RoostThread, roost_document
from tests.tenant_helpers import make_tenant


def _config_file(tmp_path: Path) -> Path:
    """A config file naming the same data_dir as `roost_document(tmp_path)`."""
    path = tmp_path / "roost.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return path


@pytest.fixture
def roost(tmp_path: Path) -> Iterator[RoostThread]:
    instance = RoostThread(roost_document(tmp_path, allow_anonymous=False)).start()
    yield instance
    instance.stop()


def _user_names(database: Path) -> list[str]:
    connection = sqlite3.connect(database)
    try:
        return [row[0] for row in connection.execute("SELECT name FROM users ORDER BY id")]
    finally:
        connection.close()


def test_backup_while_running_then_restore_when_stopped(
    tmp_path: Path, roost: RoostThread, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path)
    for name in ("ann", "bob"):
        make_tenant(roost, name)
    copy = tmp_path / "backups" / "roost-copy.db"
    copy.parent.mkdir()
    assert main(["backup", str(copy), "--config", str(config)]) == 0
    assert "schema 1" in capsys.readouterr().out
    assert _user_names(copy) == ["ann", "bob"]
    connection = sqlite3.connect(copy)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
    assert connection.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    connection.close()
    assert not copy.with_name(copy.name + "-wal").exists()

    make_tenant(roost, "cyd")  # after the backup
    assert main(["restore", str(copy), "--config", str(config)]) == 1
    assert "a Roost is running" in capsys.readouterr().err

    roost.stop()
    assert main(["restore", str(copy), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "kept as" in out
    data = tmp_path / "data"
    kept = [p for p in data.iterdir() if p.name.startswith("roost.db.bak-") and not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1 and _user_names(kept[0]) == ["ann", "bob", "cyd"]
    assert _user_names(data / "roost.db") == ["ann", "bob"]

    again = RoostThread(roost_document(tmp_path, allow_anonymous=False)).start()
    try:
        services = again.roost.services  # type: ignore[union-attr]
        names = [u.name for u in again.run(services.users.list(None, limit=10)).items]  # type: ignore[union-attr]
        assert names == ["ann", "bob"]
    finally:
        again.stop()


def test_restore_refuses_a_newer_schema_and_a_non_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    RoostThread(roost_document(tmp_path)).start().stop()  # makes data/roost.db
    config = _config_file(tmp_path)
    copy = tmp_path / "copy.db"
    assert main(["backup", str(copy), "--config", str(config)]) == 0
    connection = sqlite3.connect(copy)
    connection.execute(f"PRAGMA user_version = {latest_version() + 1}")
    connection.close()
    before = (tmp_path / "data" / "roost.db").read_bytes()
    assert main(["restore", str(copy), "--config", str(config)]) == 1
    assert "newer than this Roost" in capsys.readouterr().err

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    assert main(["restore", str(junk), "--config", str(config)]) == 1
    assert "not a SQLite database" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "missing.db"), "--config", str(config)]) == 1
    assert (tmp_path / "data" / "roost.db").read_bytes() == before
    assert not any(p.name.startswith("roost.db.bak-") for p in (tmp_path / "data").iterdir())


def test_a_second_roost_on_the_same_data_dir_is_refused(tmp_path: Path, roost: RoostThread) -> None:
    with pytest.raises(OperationRefused, match="a Roost is running"):
        RoostThread(roost_document(tmp_path)).start()
    roost.stop()
    lock = DataDirLock(tmp_path / "data")
    lock.acquire()  # released by stop(): free again
    lock.release()


def test_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import control.config

    # "No --config" means the built-in defaults only when nothing else is found (this machine may have
    # an /etc/roost/roost.toml of its own).
    monkeypatch.setattr(control.config, "SYSTEM_CONFIG", tmp_path / "no-such" / "roost.toml")
    monkeypatch.delenv("ROOST_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.toml"
    good.write_text('data_dir = "data"\n[mqtt]\nport = 1884\n[log]\nformat = "json"\n')
    assert main(["check-config", "--config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out

    typo = tmp_path / "typo.toml"
    typo.write_text('[mqtt]\nprot = 1883\n')
    assert main(["check-config", "--config", str(typo)]) == 1
    assert "mqtt.prot" in capsys.readouterr().err

    problems = tmp_path / "problems.toml"
    problems.write_text(
        '[mqtt]\nport = 8080\n[http]\nport = 8080\n'
        '[tls]\ncert_file = "missing.pem"\nkey_file = "missing.key"\n'
        '[metrics]\nmax_tenants = 0\n'
    )
    assert main(["check-config", "--config", str(problems)]) == 1
    assert "metrics.max_tenants" in capsys.readouterr().err
    problems.write_text('[mqtt]\nport = 8080\n[http]\nport = 8080\n[tls]\ncert_file = "missing.pem"\nkey_file = "k"\n')
    assert main(["check-config", "--config", str(problems)]) == 1
    err = capsys.readouterr().err
    assert "http.port: port 8080 is also mqtt.port" in err
    assert "tls.cert_file: cannot read" in err
    assert "3 problem(s)" in err  # the clash, the certificate, the key

    assert main(["check-config"]) == 0  # the built-in defaults


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"roost {VERSION}"
