"""What an idle `roost serve` holds: the modules it does not import at start-up, and the glibc settings
(control/process_memory.py). The RSS itself is measured by bench/ (docs/benchmarks.md), not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from control import process_memory

# Imported only when used: the HTTP stack at the first request (control/http_front.py), the control plane's
# services with it, bridges' parsers with a [[bridge]], difflib for a misspelt key, tempfile for mutual TLS.
NOT_AT_START = ("broker.inspect", "control.ops", "storage.devices", "storage.instances", "storage.projects", "storage.topics", "uvicorn", "starlette", "anyio", "h11", "control.app", "control.services", "bridge.config",
                "bridge.bridge", "prometheus_client", "difflib", "tempfile", "uuid", "cryptography")


def test_starting_roost_imports_none_of_what_a_plain_broker_does_not_use() -> None:
    script = (
        "import json, sys\n"
        "import control.server, control.cli\n"
        f"print(json.dumps([m for m in {list(NOT_AT_START)!r} if m in sys.modules]))\n"
    )
    found = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                      text=True, timeout=60).stdout)
    assert found == []


def test_the_serve_command_line_loads_neither_the_management_commands_nor_shutil(tmp_path: Path) -> None:
    """`roost serve` parses its command line with the serve command's parser alone (control/cli.py): the
    management commands' modules, and `shutil` with `bz2` and `lzma` (argparse's help width), stay unloaded."""
    script = (
        "import json, sys\n"
        "from control.cli import main\n"
        f"code = main(['serve', '--config', {str(tmp_path / 'missing.toml')!r}])\n"
        "names = ('control.cli_manage', 'control.state_cli', 'shutil', 'bz2', 'lzma')\n"
        "print(json.dumps([code, [m for m in names if m in sys.modules]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    code, found = json.loads(done.stdout)
    assert code == 2 and "missing.toml" in done.stderr  # stopped at the configuration, before serving
    assert found == []


def test_other_command_lines_still_get_the_whole_parser() -> None:
    """`roost --help` lists every command, and a mistake after `serve` is reported with the whole usage."""
    help_text = subprocess.run([sys.executable, "-m", "control.cli", "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    assert all(command in help_text for command in ("serve", "user", "mqtt", "device", "backup", "state"))
    wrong = subprocess.run([sys.executable, "-m", "control.cli", "serve", "--bogus"], capture_output=True,
                           text=True, timeout=60)
    assert wrong.returncode == 2
    assert "unrecognized arguments: --bogus" in wrong.stderr and "user" in wrong.stderr


def test_the_environment_variable_wins_over_the_arena_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert process_memory.limit_malloc_arenas() is False


def test_on_glibc_the_arena_limit_is_taken_and_trim_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    if process_memory._glibc() is None:
        pytest.skip("not glibc")
    assert process_memory.limit_malloc_arenas() is True
    process_memory.trim()
