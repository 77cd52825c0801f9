"""The `roost` command line.

    roost serve                                   run the broker and the HTTP app
    roost user add NAME [--plan PLAN] [--admin] [--password-stdin]
    roost user set NAME [--plan PLAN] [--password-stdin] [--admin|--no-admin] [--active|--inactive]
    roost user delete NAME
    roost user list
    roost mqtt add USER [--env]                   new MQTT credentials (an MQTT instance)
    roost mqtt list [USER]
    roost mqtt delete MQTT_USERNAME
    roost device add USER DEVICE_ID --project NAME [--topic FILTER]...
    roost device cert DEVICE_ID [--out DIR]       issue a device client certificate
    roost device revoke-cert DEVICE_ID            revoke it (a connected device is closed)
    roost check-config                            validate a configuration; every problem, non-zero if any
    roost backup FILE|DIR/                        copy the database consistently, even while serving
    roost restore FILE                            put a backup back (Roost stopped; old file kept)
    roost state quarantine [--json]               stored records a start could not restore
    roost --version

Every command takes `--config FILE`; without it, the configuration is `$ROOST_CONFIG`, else `./roost.toml`,
else `/etc/roost/roost.toml`, else the built-in defaults: the server and the CLI look in the same places.
The management commands (control/cli_manage.py) take `--json` and `--create`.

Errors are sentences on standard error with a non-zero exit, never a traceback: 1 when the command cannot
be done, 2 when the input (the configuration, a field) is invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from broker.errors import ConfigError, RoostError
from broker.settings import VERSION
from control.config import Config, ConfigProblems, find_config, load_config
from control.errors import ValidationFailed

__all__ = ["main", "print_result", "run"]


def run(coro_factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro_factory())  # type: ignore[arg-type]
    return uvloop.run(coro_factory())  # type: ignore[arg-type]


def print_result(args: argparse.Namespace, values: Any) -> None:
    """One JSON document with --json; else `key  value` lines (a dict) or one line per item (a list)."""
    if getattr(args, "json", False):
        print(json.dumps(values))
    elif isinstance(values, dict):
        width = max(len(key) for key in values)
        for key, value in values.items():
            print(f"{key:<{width}}  {value}")
    else:
        for item in values:
            print(item)


def _serve(config: Config, args: argparse.Namespace) -> int:
    from control.logging_setup import setup_logging
    from control.server import Roost

    setup_logging(config.log)
    roost = Roost(config, console=sys.stdout)
    try:
        run(roost.run_until_signal)
    except (OSError, RoostError) as exc:
        # A port in use, a read-only data folder, a database from a newer Roost: say what, once.
        logging.getLogger("roost").error("cannot start: %s", exc)
        return 1
    return 0


def _check_config(path: Path | None) -> int:
    from control.ops import check_config

    config, problems = check_config(path)
    for problem in problems:
        print(f"roost: {problem}", file=sys.stderr)
    if problems or config is None:
        print(f"roost: {path or 'the built-in defaults'}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    tls = f", MQTT over TLS on {config.tls.host}:{config.tls.port}" if config.tls.port else ""
    print(
        f"{path or 'built-in defaults'}: OK (MQTT on {config.mqtt.host}:{config.mqtt.port}{tls}, "
        f"HTTP on {config.http.host}:{config.http.port}, data in {config.data_dir})"
    )
    return 0


def _backup(config: Config, args: argparse.Namespace) -> int:
    from control.ops import backup

    result = backup(config, args.file)
    print(f"backed up {config.data_dir / 'roost.db'} to {result.path} "
          f"(schema {result.schema_version}, {result.size} bytes, {result.seconds:.2f} s)")
    print(f"Keep {config.data_dir / 'secret.key'} safe too: stored MQTT passwords can only be shown again "
          "with it.", file=sys.stderr)
    return 0


def _restore(config: Config, args: argparse.Namespace) -> int:
    from control.ops import restore

    result = restore(config, Path(args.file))
    print(f"restored {args.file} to {config.data_dir / 'roost.db'} (schema {result.schema_version})")
    if result.previous is not None:
        print(f"the database it replaced is kept as {result.previous}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's parser, with the help width read without `shutil`.

    argparse's formatter imports `shutil` for the terminal's width, and `shutil` imports `bz2`, `lzma` and
    `zlib`: 0.3 MB that `roost serve` then holds all its life for a help text it never prints. The width is
    worked out as `shutil.get_terminal_size` would (`$COLUMNS`, else the terminal, else 80). Subparsers are
    made with the parser's own class, so they get it too.
    """

    def _get_formatter(self) -> argparse.HelpFormatter:
        return self.formatter_class(prog=self.prog, width=_terminal_columns() - 2)  # type: ignore[call-arg]


def _terminal_columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser(serve_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; with `serve_only`, the `serve` command alone.

    `roost serve` runs for months: it does not keep the management commands' modules (control/cli_manage.py,
    control/state_cli.py and what they import) loaded only to build parsers it never uses. Every other
    command line, `--help` and `--version` among them, gets the whole parser.
    """
    parser = _Parser(
        prog="roost", description="Roost: an MQTT broker with a built-in control plane.",
        epilog="Configuration: --config FILE, else $ROOST_CONFIG, else ./roost.toml, else /etc/roost/roost.toml, "
               "else the built-in defaults.",
    )
    parser.add_argument("--version", action="version", version=f"roost {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--config", metavar="FILE",
                         help="TOML configuration file (default: $ROOST_CONFIG, ./roost.toml, /etc/roost/roost.toml)")
        return sub

    serve = with_config(commands.add_parser("serve", help="run the broker and the HTTP app"))
    serve.set_defaults(handler=_serve)
    if serve_only:
        return parser
    from control import state_cli
    from control.cli_manage import add_commands

    add_commands(commands, with_config)  # user, mqtt, device

    check = with_config(commands.add_parser("check-config", help="validate a configuration file and what it names"))
    check.set_defaults(handler=None)
    save = with_config(commands.add_parser("backup", help="copy the database consistently (while Roost runs too)"))
    save.add_argument("file", help="the copy to write (a folder, or a name ending in /: a dated file in it)")
    save.set_defaults(handler=_backup)
    load = with_config(commands.add_parser("restore", help="replace the database with a backup (Roost stopped)"))
    load.add_argument("file", help="a file made by roost backup")
    load.set_defaults(handler=_restore)
    state_cli.register(commands, with_config)  # roost state quarantine
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args, unknown = build_parser(serve_only=words[:1] == ["serve"]).parse_known_args(words)
    if unknown:  # only the whole parser's error shows every command in its usage line
        args = build_parser().parse_args(words)
    path = find_config(args.config)
    if args.command == "check-config":
        return _check_config(path)
    try:
        config = load_config(path)
    except ConfigProblems as exc:
        for problem in exc.problems:
            print(f"roost: {path}: {problem}", file=sys.stderr)
        print(f"roost: {len(exc.problems)} problem(s) in the configuration; `roost check-config` checks it",
              file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"roost: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.handler(config, args))
    except ValidationFailed as exc:
        for field, problem in exc.fields.items():
            print(f"roost: {field}: {problem}", file=sys.stderr)
        return 2
    except RoostError as exc:
        print(f"roost: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # A file or folder the command could not read or write: name it, no traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"roost: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("ROOST_DEBUG"):
            raise
        print(f"roost: unexpected error ({type(exc).__name__}: {exc}); this is a bug in Roost, please report "
              "it (ROOST_DEBUG=1 shows where it happened)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
