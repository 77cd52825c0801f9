"""The `roost` command line.

    roost serve [--config FILE]     run the broker and the HTTP app until SIGTERM/SIGINT
    roost --version
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from broker.errors import ConfigError, RoostError
from broker.settings import VERSION
from control.config import Config, load_config

__all__ = ["main"]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def _run(coro_factory: object) -> None:
    """Run on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro_factory())  # type: ignore[operator]
    else:
        uvloop.run(coro_factory())  # type: ignore[operator]


def _serve(config: Config) -> int:
    from control.server import Roost

    _setup_logging(config.log.level)
    roost = Roost(config)
    try:
        _run(roost.run_until_signal)
    except (OSError, RoostError) as exc:
        # A port in use, a database from a newer Roost: say what, once, without a traceback.
        logging.getLogger("roost").error("cannot start: %s", exc)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roost", description="Roost: an MQTT broker with a built-in control plane.")
    parser.add_argument("--version", action="version", version=f"roost {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the broker and the HTTP app")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration file (default: built-in defaults)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"roost: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(config)
    return 2


if __name__ == "__main__":
    sys.exit(main())
