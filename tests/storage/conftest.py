"""Fixtures: a fresh store in tmp_path, and a user and project to hang things on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.records import Project, User
from storage.store import Store, open_store


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
