"""MQTT instances (mqtt-instances-api.md): generated credential sets in their owner's namespace."""

from __future__ import annotations

from dataclasses import dataclass

from control.errors import Forbidden, NotFound
from control.services.context import Context
from storage.records import MqttInstance, Page, User

__all__ = ["InstanceService", "InstanceView", "InstanceList"]

NO_SUCH_INSTANCE = "No such MQTT instance"
MAXIMUM_REACHED = "Maximum number of MQTT instances reached. Please upgrade your account."


@dataclass(frozen=True, slots=True)
class InstanceView:
    """An instance as the API shows it, password included (the API returns it on every read)."""

    instance: MqttInstance
    password: str
    server: str
    port: str


@dataclass(frozen=True, slots=True)
class InstanceList:
    items: tuple[InstanceView, ...]
    total: int
    filtered: int


class InstanceService:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store

    def _view(self, instance: MqttInstance, password: str | None = None) -> InstanceView:
        if password is None:
            password = self.store.instances.reveal_password(instance)
        return InstanceView(instance, password, self.context.public_host, str(self.context.public_port))

    async def list(
        self, user: User, *, search: str | None = None, offset: int = 0, limit: int = 100, order: str = "asc"
    ) -> InstanceList:
        page: Page[MqttInstance] = await self.store.instances.list_by_user(
            user.id, search=search or None, offset=offset, limit=limit, order=order
        )
        return InstanceList(tuple(self._view(i) for i in page.items), page.total, page.filtered)

    async def get(self, user: User, public_id: str) -> InstanceView:
        instance = await self.store.instances.get(public_id, user_id=user.id)
        if instance is None:
            raise NotFound(NO_SUCH_INSTANCE)
        return self._view(instance)

    async def create(self, user: User) -> InstanceView:
        """Generate credentials, if the plan has room for one more instance."""
        plan = self.context.plan_of(user)
        async with self.store.db.transaction():  # count and insert atomically
            count = await self.store.instances.count_by_user(user.id)
            if not plan.allows(plan.max_instances, count):
                raise Forbidden(MAXIMUM_REACHED)
            created = await self.store.instances.create(user.id)
        await self.context.access_changed()
        return self._view(created.instance, created.password)

    async def delete(self, user: User, public_id: str) -> None:
        """Irreversible: the credentials go, their clients are disconnected at once, and the retained
        messages they published are removed."""
        instance = await self.store.instances.get(public_id, user_id=user.id)
        if instance is None or not await self.store.instances.delete(public_id, user_id=user.id):
            raise NotFound(NO_SUCH_INSTANCE)
        self.context.disconnect_now(username=instance.username)
        await self.context.access_changed()
        if self.context.broker is not None:
            self.context.broker.drop_retained(origin=instance.username)
