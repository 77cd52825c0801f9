"""The storage layer assembled: one database, one secret box, every repository. Built by the composition
root at start-up and closed at shutdown (`async with await open_store(data_dir) as store:`)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from storage.api_keys import ApiKeyRepository
from storage.auth_snapshot import AuthSnapshot, load_auth_snapshot
from storage.database import DATABASE_FILE_NAME, Database, open_database, read_only_reason
from storage.errors import StorageError
from storage.messages import MessageRepository
from storage.quota import QuotaRepository
from storage.secrets import SecretBox
from storage.users import UserRepository

if TYPE_CHECKING:
    from storage.devices import DeviceRepository
    from storage.instances import InstanceRepository
    from storage.projects import ProjectRepository
    from storage.topics import TopicRepository

__all__ = ["Store", "open_store"]


class Store:
    """Repositories sharing one `Database`; attributes are named after what they hold. Those only the control
    plane asks (instances, projects, devices, topics) are made, and their modules imported, at first use:
    a broker nobody manages does not hold them."""

    def __init__(self, db: Database, box: SecretBox, *, api_key_flush_interval: float = 30.0) -> None:
        self.db = db
        self._box = box
        self.users = UserRepository(db)
        self.api_keys = ApiKeyRepository(db, flush_interval=api_key_flush_interval)
        self.messages = MessageRepository(db)
        self.quota = QuotaRepository(db)

    @cached_property
    def instances(self) -> InstanceRepository:
        from storage.instances import InstanceRepository

        return InstanceRepository(self.db, self._box)

    @cached_property
    def projects(self) -> ProjectRepository:
        from storage.projects import ProjectRepository

        return ProjectRepository(self.db)

    @cached_property
    def devices(self) -> DeviceRepository:
        from storage.devices import DeviceRepository

        return DeviceRepository(self.db)

    @cached_property
    def topics(self) -> TopicRepository:
        from storage.topics import TopicRepository

        return TopicRepository(self.db)

    async def auth_snapshot(self) -> AuthSnapshot:
        return await load_auth_snapshot(self.db)

    async def close(self) -> None:
        """Write what is still buffered (API key last-used times), then close the database."""
        try:
            await self.api_keys.flush_last_used()
        finally:
            await self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()


async def open_store(data_dir: Path) -> Store:
    """Open `data_dir/roost.db` (migrating it) and `data_dir/secret.key` (creating both on first start).
    A folder Roost cannot write is refused with a StorageError that says so, before anything is made."""
    data_dir.mkdir(parents=True, exist_ok=True)
    problem = read_only_reason(data_dir / DATABASE_FILE_NAME)
    if problem is not None:
        raise StorageError(problem)
    box = SecretBox.from_data_dir(data_dir)
    db = await open_database(data_dir / DATABASE_FILE_NAME)
    return Store(db, box)
