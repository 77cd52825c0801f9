"""Fixtures: a fresh store in tmp_path, and a user and project to hang things on; for the live-access
tests, a Roost that refuses anonymous clients and a pool of clients stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.records import Project, User
from storage.store import Store, open_store
from tests.helpers import RoostThread
from tests.storage.live_helpers import Clients


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await open_store(tmp_path / "data") as opened:
        yield opened


@pytest.fixture
async def user(store: Store) -> User:
    return await store.users.create("alice")


@pytest.fixture
async def other_user(store: Store) -> User:
    return await store.users.create("bob")


@pytest.fixture
async def project(store: Store, user: User) -> Project:
    return await store.projects.create(user.id, "Smart Home", "IoT home automation")


@pytest.fixture
def secure_roost(make_roost: Any) -> RoostThread:
    return make_roost(allow_anonymous=False)


@pytest.fixture
def clients() -> Iterator[Clients]:
    pool = Clients()
    yield pool
    pool.close_all()
