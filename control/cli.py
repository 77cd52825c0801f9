"""The `roost` command line.

    roost serve [--config FILE]                              run the broker and the HTTP app
    roost user add NAME [--plan PLAN] [--admin] [--password-stdin] [--json] [--config FILE]
    roost user list [--json] [--config FILE]
    roost mqtt add USER [--json] [--config FILE]             new MQTT credentials (an MQTT instance)
    roost device cert DEVICE_ID [--out DIR] [--json] [--config FILE]   issue a device client certificate
    roost device revoke-cert DEVICE_ID [--config FILE]       revoke it (a connected device is closed)
    roost check-config [--config FILE]                       validate a configuration; non-zero with the reasons
    roost backup FILE [--config FILE]                        copy the database consistently, even while serving
    roost restore FILE [--config FILE]                       put a backup back (Roost stopped; old file kept)
    roost state quarantine [--json] [--config FILE]          stored records a start could not restore
    roost --version

The management commands call the same services as the REST API, on the same database as `roost serve`
(the same `--config`), whether or not the server is running: a running server notices the change within
a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from broker.errors import ConfigError, RoostError
from broker.settings import VERSION
from control.config import Config, load_config
from control import state_cli
from control.errors import ValidationFailed

__all__ = ["main"]


def _run(coro_factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro_factory())  # type: ignore[arg-type]
    return uvloop.run(coro_factory())  # type: ignore[arg-type]


def _serve(config: Config, args: argparse.Namespace) -> int:
    from control.logging_setup import setup_logging
    from control.server import Roost

    setup_logging(config.log)
    roost = Roost(config)
    try:
        _run(roost.run_until_signal)
    except (OSError, RoostError) as exc:
        # A port in use, a database from a newer Roost: say what, once, without a traceback.
        logging.getLogger("roost").error("cannot start: %s", exc)
        return 1
    return 0


async def _with_services(config: Config, action: Callable[[Any], Awaitable[int]]) -> int:
    from certs.store import CertificateStore
    from control.services import Services
    from storage.store import open_store

    store = await open_store(config.data_dir)
    try:
        public_port = config.mqtt.public_port or config.mqtt.port
        services = Services.build(
            store, config.plans, public_host=config.mqtt.public_host, public_port=public_port,
            certificates=CertificateStore(config.data_dir / "certs"),
        )
        return await action(services)
    finally:
        await store.close()


def _print(args: argparse.Namespace, values: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(values))
    else:
        width = max(len(key) for key in values)
        for key, value in values.items():
            print(f"{key:<{width}}  {value}")


def _user_add(config: Config, args: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None

    async def action(services: Any) -> int:
        created = await services.users.create(None, args.name, plan=args.plan, is_admin=args.admin, password=password)
        _print(args, {"id": created.user.id, "api_key": created.api_key.key, "secret": created.api_key.secret})
        if not args.json:
            print("Save the API key and secret now: they will not be shown again.", file=sys.stderr)
        return 0

    return _run(lambda: _with_services(config, action))  # type: ignore[no-any-return]


def _user_list(config: Config, args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        page = await services.users.list(None, limit=1000)
        rows = [
            {"id": u.id, "name": u.name, "plan": u.plan, "is_admin": u.is_admin, "is_active": u.is_active}
            for u in page.items
        ]
        if args.json:
            print(json.dumps(rows))
        else:
            for row in rows:
                flags = ("admin " if row["is_admin"] else "") + ("" if row["is_active"] else "inactive")
                print(f"{row['id']:>5}  {row['name']:<24} {row['plan']:<13} {flags}".rstrip())
        return 0

    return _run(lambda: _with_services(config, action))  # type: ignore[no-any-return]


def _mqtt_add(config: Config, args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        user = await services.context.store.users.get_by_name(args.user)
        if user is None:
            print(f"roost: no user named {args.user!r}", file=sys.stderr)
            return 1
        view = await services.instances.create(user)
        _print(args, {"server": view.server, "port": view.port, "user": view.instance.username, "password": view.password})
        return 0

    return _run(lambda: _with_services(config, action))  # type: ignore[no-any-return]


def _device_cert(config: Config, args: argparse.Namespace) -> int:
    """Issue a client certificate from Roost's CA; write DEVICE_ID.pem, DEVICE_ID.key (0600) and ca.pem."""
    from pathlib import Path

    async def action(services: Any) -> int:
        device = await services.context.store.devices.get_by_device_id(args.device_id)
        if device is None:
            print(f"roost: no device with device_id {args.device_id!r}", file=sys.stderr)
            return 1
        if args.revoke:
            await services.devices.revoke_certificate(None, device.id)
            print(f"revoked the certificate of {args.device_id}", file=sys.stderr)
            return 0
        created = await services.devices.issue_certificate(None, device.id)
        if args.json:
            print(json.dumps({
                "device_id": args.device_id, "serial": created.serial, "expires_at": created.expires_at,
                "certificate_pem": created.issued.certificate.decode(), "private_key_pem": created.issued.key.decode(),
                "ca_certificate_pem": created.ca_certificate.decode(),
            }))
            return 0
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.device_id)
        key = folder / f"{safe}.key"
        key.touch(mode=0o600)
        key.chmod(0o600)
        key.write_bytes(created.issued.key)
        (folder / f"{safe}.pem").write_bytes(created.issued.certificate)
        (folder / "ca.pem").write_bytes(created.ca_certificate)
        _print(args, {"serial": created.serial, "expires_at": created.expires_at,
                      "certificate": str(folder / f"{safe}.pem"), "key": str(key), "ca": str(folder / "ca.pem")})
        return 0

    return _run(lambda: _with_services(config, action))  # type: ignore[no-any-return]


def _check_config(args: argparse.Namespace) -> int:
    from control.ops import check_config

    config, problems = check_config(args.config)
    for problem in problems:
        print(f"roost: {problem}", file=sys.stderr)
    if problems or config is None:
        print(f"roost: {args.config or 'the built-in defaults'}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    tls = f", MQTT over TLS on {config.tls.host}:{config.tls.port}" if config.tls.port else ""
    print(
        f"{args.config or 'built-in defaults'}: OK (MQTT on {config.mqtt.host}:{config.mqtt.port}{tls}, "
        f"HTTP on {config.http.host}:{config.http.port}, data in {config.data_dir})"
    )
    return 0


def _backup(config: Config, args: argparse.Namespace) -> int:
    from control.ops import backup

    result = backup(config, Path(args.file))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roost", description="Roost: an MQTT broker with a built-in control plane.")
    parser.add_argument("--version", action="version", version=f"roost {VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--config", metavar="FILE", help="TOML configuration file (default: built-in defaults)")
        return sub

    serve = with_config(commands.add_parser("serve", help="run the broker and the HTTP app"))
    serve.set_defaults(handler=_serve)

    user = commands.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    add = with_config(user.add_parser("add", help="create a user and print its first API key and secret"))
    add.add_argument("name")
    add.add_argument("--plan", default="free", help="plan name (default: free)")
    add.add_argument("--admin", action="store_true", help="make the user an administrator")
    add.add_argument("--password-stdin", action="store_true", help="read a dashboard password from standard input")
    add.add_argument("--json", action="store_true", help="print one JSON object with keys id, api_key, secret")
    add.set_defaults(handler=_user_add)
    listing = with_config(user.add_parser("list", help="list users"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_user_list)

    mqtt = commands.add_parser("mqtt", help="manage MQTT credentials").add_subparsers(dest="mqtt_command", required=True)
    mqtt_add = with_config(mqtt.add_parser("add", help="create MQTT credentials (an MQTT instance) for a user"))
    mqtt_add.add_argument("user", help="the user's name")
    mqtt_add.add_argument("--json", action="store_true")
    mqtt_add.set_defaults(handler=_mqtt_add)

    device = commands.add_parser("device", help="manage device certificates").add_subparsers(
        dest="device_command", required=True
    )
    cert = with_config(device.add_parser("cert", help="issue a client certificate (mutual TLS) for a device"))
    cert.add_argument("device_id")
    cert.add_argument("--out", default=".", metavar="DIR", help="folder for DEVICE_ID.pem, DEVICE_ID.key, ca.pem")
    cert.add_argument("--json", action="store_true", help="print the PEMs as one JSON object instead")
    cert.set_defaults(handler=_device_cert, revoke=False)
    revoke = with_config(device.add_parser("revoke-cert", help="revoke a device's client certificate"))
    revoke.add_argument("device_id")
    revoke.set_defaults(handler=_device_cert, revoke=True, json=False, out=".")

    check = with_config(commands.add_parser("check-config", help="validate a configuration file and what it names"))
    check.set_defaults(handler=None)
    save = with_config(commands.add_parser("backup", help="copy the database consistently (while Roost runs too)"))
    save.add_argument("file", help="the copy to write (a folder: a dated file in it)")
    save.set_defaults(handler=_backup)
    load = with_config(commands.add_parser("restore", help="replace the database with a backup (Roost stopped)"))
    load.add_argument("file", help="a file made by roost backup")
    load.set_defaults(handler=_restore)
    state_cli.register(commands, with_config)  # roost state quarantine
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args)
    try:
        config = load_config(args.config)
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


if __name__ == "__main__":
    sys.exit(main())
