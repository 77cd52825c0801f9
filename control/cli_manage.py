"""The `roost` management commands: users, MQTT credentials and devices, as the dashboard manages them.

Each command calls the same services as the REST API, on the database of the configuration `roost serve`
uses (control/config.py::find_config). A command that writes asks a running server to reload access
before it returns (control/local_control.py), so credentials it prints work for a client that connects
the moment the command exits. With `--json`, each prints one JSON document on standard output.

A data folder that does not exist is refused unless `--create` is given: a command run from the wrong
folder must not quietly start a new, empty Roost there.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from control.config import Config
from control.errors import Forbidden, LimitReached, ServiceError

__all__ = ["CommandFailed", "add_commands"]


class CommandFailed(ServiceError):
    """A management command cannot do what was asked; the message says why and what to do instead."""


Action = Callable[[Any, argparse.Namespace], Awaitable[Any]]


def _open_data_dir(config: Config, create: bool) -> None:
    folder = config.data_dir
    if folder.is_dir():
        return
    if folder.exists():
        raise CommandFailed(f"data_dir {folder} is not a folder")
    if not create:
        raise CommandFailed(
            f"the data folder {folder} does not exist, so there is no Roost database here. Run the command "
            "where `roost serve` runs, or give the server's configuration (--config FILE, or ROOST_CONFIG); "
            "add --create to start a new, empty Roost in that folder"
        )
    folder.mkdir(parents=True)


def _run_action(config: Config, args: argparse.Namespace, action: Action, *, writes: bool) -> int:
    """Open the store, run `action(services, args)`, print its result; tell a running server after a write."""
    from control.cli import print_result, run
    from control.local_control import tell_server

    _open_data_dir(config, getattr(args, "create", False))

    async def opened() -> Any:
        from certs.store import CertificateStore
        from control.services import Services
        from storage.store import open_store

        store = await open_store(config.data_dir)
        try:
            services = Services.build(
                store, config.plans, public_host=config.mqtt.public_host,
                public_port=config.mqtt.public_port or config.mqtt.port,
                certificates=CertificateStore(config.data_dir / "certs"), default_plan=config.default_plan,
            )
            return await action(services, args)
        finally:
            await store.close()

    result = run(opened)
    if writes:
        tell_server(config.data_dir)  # credentials work as soon as this command returns
    if result is not None:
        print_result(args, result)
    return 0


async def _user(services: Any, name: str) -> Any:
    user = await services.context.store.users.get_by_name(name)
    if user is None:
        raise CommandFailed(f"no user named {name!r} (`roost user list` shows them)")
    return user


def _password(args: argparse.Namespace) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    line = sys.stdin.readline()
    if not line:
        raise CommandFailed("--password-stdin: nothing on standard input (pipe the password in)")
    return line.rstrip("\n")


def _user_row(user: Any) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "plan": user.plan, "is_admin": user.is_admin,
            "is_active": user.is_active, "has_password": user.has_password}


async def _user_add(services: Any, args: argparse.Namespace) -> Any:
    created = await services.users.create(None, args.name, plan=args.plan, is_admin=args.admin,
                                          password=args.password)
    if not args.json:
        print("Save the API key and secret now: they will not be shown again.", file=sys.stderr)
    return {"id": created.user.id, "api_key": created.api_key.key, "secret": created.api_key.secret}


async def _user_set(services: Any, args: argparse.Namespace) -> Any:
    user = await _user(services, args.name)
    if args.plan is None and args.admin is None and args.active is None and args.password is None:
        raise CommandFailed("nothing to change: give --plan, --password-stdin, --admin/--no-admin or "
                            "--active/--inactive")
    updated = await services.users.update(None, user.id, plan=args.plan, is_admin=args.admin,
                                          is_active=args.active, password=args.password)
    return _user_row(updated)


async def _user_delete(services: Any, args: argparse.Namespace) -> Any:
    user = await _user(services, args.name)
    await services.users.delete(None, user.id)
    return {"deleted": user.name, "id": user.id}


async def _every(fetch: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Every item of a paged listing (`fetch(offset)` returns a page of at most 1,000)."""
    items: list[Any] = []
    while True:
        page = await fetch(len(items))
        items += page.items
        if not page.items or len(items) >= page.total:
            return items


async def _user_list(services: Any, args: argparse.Namespace) -> Any:
    users = await _every(lambda offset: services.users.list(None, offset=offset, limit=1000))
    rows = [_user_row(u) for u in users]
    if args.json:
        return rows
    for row in rows:
        flags = ("admin " if row["is_admin"] else "") + ("" if row["is_active"] else "inactive")
        print(f"{row['id']:>5}  {row['name']:<24} {row['plan']:<13} {flags}".rstrip())
    return None


def _instance_row(user: Any, view: Any) -> dict[str, Any]:
    return {"id": view.instance.public_id, "owner": user.name, "server": view.server, "port": view.port,
            "user": view.instance.username, "password": view.password}


async def _mqtt_add(services: Any, args: argparse.Namespace) -> Any:
    user = await _user(services, args.user)
    try:
        view = await services.instances.create(user)
    except Forbidden:
        limit = services.context.plan_of(user).max_instances
        raise CommandFailed(
            f"{user.name}'s plan ({user.plan}) allows {limit} set(s) of MQTT credentials and they are all in "
            f"use: `roost mqtt delete USER` frees one, `roost user set {user.name} --plan unlimited` lifts "
            "the limit"
        ) from None
    if args.env:
        values = {"MQTT_HOST": view.server, "MQTT_PORT": view.port, "MQTT_USER": view.instance.username,
                  "MQTT_PASSWORD": view.password}
        for key, value in values.items():
            print(f"{key}={shlex.quote(str(value))}")
        return None
    row = _instance_row(user, view)
    return {key: row[key] for key in ("server", "port", "user", "password")}


async def _mqtt_list(services: Any, args: argparse.Namespace) -> Any:
    if args.user:
        users = [await _user(services, args.user)]
    else:
        users = await _every(lambda offset: services.users.list(None, offset=offset, limit=1000))
    rows = []
    for user in users:
        views = await _every(lambda offset, user=user: services.instances.list(user, offset=offset, limit=1000))
        rows += [_instance_row(user, view) for view in views]
    if args.json:
        return rows
    for row in rows:
        print(f"{row['owner']:<24} {row['user']:<12} {row['password']:<16} {row['server']}:{row['port']}")
    return None


async def _mqtt_delete(services: Any, args: argparse.Namespace) -> Any:
    instance = await services.context.store.instances.get_by_username(args.username)
    if instance is None:
        raise CommandFailed(f"no MQTT credentials with user name {args.username!r} (`roost mqtt list` shows them)")
    owner = await services.context.store.users.get(instance.user_id)
    await services.instances.delete(owner, instance.public_id)
    return {"deleted": instance.username, "owner": owner.name}


async def _device_add(services: Any, args: argparse.Namespace) -> Any:
    """A device in the user's project (made if it does not exist), allowed on the given topics."""
    from control.services.topics import PER_PAGE as TOPICS_PER_PAGE

    store = services.context.store
    user = await _user(services, args.user)
    project = await store.projects.get_by_name(user.id, args.project)
    project_id = project.id if project is not None else (await services.projects.create(user, args.project)).id

    async def topic_names() -> list[str]:
        rules = await _every(lambda offset: services.topics.list(user, project_id, page=offset // TOPICS_PER_PAGE + 1))
        return [rule.name for rule in rules]

    existing = set(await topic_names())
    for topic in args.topic:
        if topic not in existing:
            await services.topics.create(user, project_id, topic, can_publish=True, can_subscribe=True)
    view = await services.devices.create(user, project_id, args.name or args.device_id, args.device_id)
    topics = await topic_names()
    context = services.context
    return {"device_id": view.device.device_id, "password": view.secret, "project": args.project,
            "project_id": project_id, "topics": ", ".join(topics) if not args.json else topics,
            "server": context.public_host, "port": str(context.public_port)}


async def _device_cert(services: Any, args: argparse.Namespace) -> Any:
    """Issue a client certificate from Roost's CA; write DEVICE_ID.pem, DEVICE_ID.key (0600) and ca.pem."""
    from pathlib import Path

    device = await services.context.store.devices.get_by_device_id(args.device_id)
    if device is None:
        raise CommandFailed(f"no device with device_id {args.device_id!r} (`roost device add` makes one)")
    if args.revoke:
        await services.devices.revoke_certificate(None, device.id)
        print(f"revoked the certificate of {args.device_id}", file=sys.stderr)
        return {"revoked": args.device_id} if args.json else None
    created = await services.devices.issue_certificate(None, device.id)
    if args.json:
        return {
            "device_id": args.device_id, "serial": created.serial, "expires_at": created.expires_at,
            "certificate_pem": created.issued.certificate.decode(), "private_key_pem": created.issued.key.decode(),
            "ca_certificate_pem": created.ca_certificate.decode(),
        }
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.device_id)
    key = folder / f"{safe}.key"
    key.touch(mode=0o600)
    key.chmod(0o600)
    key.write_bytes(created.issued.key)
    (folder / f"{safe}.pem").write_bytes(created.issued.certificate)
    (folder / "ca.pem").write_bytes(created.ca_certificate)
    return {"serial": created.serial, "expires_at": created.expires_at,
            "certificate": str(folder / f"{safe}.pem"), "key": str(key), "ca": str(folder / "ca.pem")}


def _handler(action: Action, *, writes: bool) -> Callable[[Config, argparse.Namespace], int]:
    def handle(config: Config, args: argparse.Namespace) -> int:
        args.password = _password(args)
        try:
            return _run_action(config, args, action, writes=writes)
        except LimitReached as exc:
            raise CommandFailed(f"{exc} (`roost user set NAME --plan PLAN` gives the user another plan)") from None

    return handle


def add_commands(commands: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Add `user`, `mqtt` and `device` to the `roost` parser."""

    def managed(parent: Any, name: str, action: Action, help: str, *, writes: bool = True) -> argparse.ArgumentParser:
        sub = with_config(parent.add_parser(name, help=help))
        sub.add_argument("--json", action="store_true", help="print one JSON document")
        sub.add_argument("--create", action="store_true",
                         help="make the data folder if it does not exist (a new, empty Roost)")
        sub.set_defaults(handler=_handler(action, writes=writes))
        return sub

    user = commands.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    add = managed(user, "add", _user_add, "create a user and print its first API key and secret")
    add.add_argument("name")
    add.add_argument("--plan", default=None, help="plan name (default: the configured default_plan, unlimited)")
    add.add_argument("--admin", action="store_true", help="make the user an administrator")
    add.add_argument("--password-stdin", action="store_true", help="read a dashboard password from standard input")
    change = managed(user, "set", _user_set, "change a user's plan, password, role or activity")
    change.add_argument("name")
    change.add_argument("--plan", default=None, help="a configured plan")
    change.add_argument("--password-stdin", action="store_true", help="read a new dashboard password from stdin")
    change.add_argument("--admin", dest="admin", action="store_const", const=True, default=None,
                        help="make the user an administrator")
    change.add_argument("--no-admin", dest="admin", action="store_const", const=False, help="no longer admin")
    change.add_argument("--active", dest="active", action="store_const", const=True, default=None)
    change.add_argument("--inactive", dest="active", action="store_const", const=False,
                        help="switch the user off: their clients are disconnected, their logins refused")
    delete = managed(user, "delete", _user_delete, "delete a user and everything they own")
    delete.add_argument("name")
    managed(user, "list", _user_list, "list users", writes=False)

    mqtt = commands.add_parser("mqtt", help="manage MQTT credentials").add_subparsers(dest="mqtt_command", required=True)
    mqtt_add = managed(mqtt, "add", _mqtt_add, "create MQTT credentials (an MQTT instance) for a user")
    mqtt_add.add_argument("user", help="the user's name")
    mqtt_add.add_argument("--env", action="store_true",
                          help="print MQTT_HOST, MQTT_PORT, MQTT_USER and MQTT_PASSWORD for a shell's eval")
    listing = managed(mqtt, "list", _mqtt_list, "list MQTT credentials (of one user, or everyone's)", writes=False)
    listing.add_argument("user", nargs="?", help="only this user's")
    mqtt_delete = managed(mqtt, "delete", _mqtt_delete, "delete MQTT credentials (their clients are disconnected)")
    mqtt_delete.add_argument("username", help="the credentials' MQTT user name")

    device = commands.add_parser("device", help="manage devices").add_subparsers(dest="device_command", required=True)
    device_add = managed(device, "add", _device_add, "create a device (its own MQTT login) in a user's project")
    device_add.add_argument("user", help="the owner's name")
    device_add.add_argument("device_id", help="its MQTT client id and user name")
    device_add.add_argument("--project", required=True, help="the project's name (made if it does not exist)")
    device_add.add_argument("--topic", action="append", default=[], metavar="FILTER",
                            help="a topic filter the device may publish and subscribe to (repeatable)")
    device_add.add_argument("--name", help="a display name (default: the device id)")
    cert = managed(device, "cert", _device_cert, "issue a client certificate (mutual TLS) for a device")
    cert.add_argument("device_id")
    cert.add_argument("--out", default=".", metavar="DIR", help="folder for DEVICE_ID.pem, DEVICE_ID.key, ca.pem")
    cert.set_defaults(revoke=False)
    revoke = managed(device, "revoke-cert", _device_cert, "revoke a device's client certificate")
    revoke.add_argument("device_id")
    revoke.set_defaults(revoke=True, out=".")
