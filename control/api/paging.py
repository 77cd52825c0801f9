"""Pages and tenants for the dashboard's lists: `page`/`per_page` from the query, the pagination block of
the answer, and what a user may see (administrators: the whole broker; users: their own namespace)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse

from broker.inspect import MAX_PAGE, Page
from control.api.common import ok, query_int, services
from storage.access import tenant_mount
from storage.records import User

__all__ = ["answer", "finish", "mount_of", "owner_of", "pagination", "paging", "tenant_names"]

T = TypeVar("T")


async def finish(scan: Generator[None, None, T]) -> T:
    """Run a broker scan (broker/inspect.py) a slice at a time, giving the event loop back to the broker's
    clients between slices; its result."""
    while True:
        try:
            next(scan)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)


def owner_of(mount: str) -> int | None:
    """The user id of a tenant namespace `$u{id}/`, or None (a client outside any tenant)."""
    if mount.startswith("$u") and mount.endswith("/") and mount[2:-1].isdigit():
        return int(mount[2:-1])
    return None


def paging(request: Request, default: int = 50) -> tuple[int, int, int]:
    """(page, per_page, offset) from the query."""
    page = query_int(request, "page", default=1)
    per_page = query_int(request, "per_page", default=default, high=MAX_PAGE)
    assert page is not None and per_page is not None
    return page, per_page, (page - 1) * per_page


def pagination(result: Page[Any], page: int, per_page: int) -> dict[str, Any]:
    return {"total": result.total, "per_page": per_page, "current_page": page, "more": result.more}


def mount_of(user: User) -> str | None:
    """What the user may see: administrators the whole broker (None), others their own namespace."""
    return None if user.is_admin else tenant_mount(user.id)


async def tenant_names(request: Request, user: User, mounts: set[str]) -> dict[str, str | None]:
    """Administrators see whose namespace each row is in: mount -> user name (None outside any tenant)."""
    names: dict[str, str | None] = {}
    if not user.is_admin:
        return names
    users = services(request).context.store.users
    for mount in mounts:
        owner = owner_of(mount)
        record = await users.get(owner) if owner is not None else None
        names[mount] = record.name if record is not None else None
    return names


async def answer(request: Request, user: User, result: Page[T], page: int, per_page: int,
                 row: Callable[[T], dict[str, Any]], mount: Callable[[T], str],
                 tenant_key: str = "tenant") -> JSONResponse:
    """`{"data": [row(item)...], "pagination": ...}`; administrators' rows also name the tenant (under
    `tenant_key`) whose namespace `mount(item)` is."""
    names = await tenant_names(request, user, {mount(item) for item in result.items})
    data = []
    for item in result.items:
        body = row(item)
        if user.is_admin:
            body[tenant_key] = names.get(mount(item))
        data.append(body)
    return ok({"data": data, "pagination": pagination(result, page, per_page)})
