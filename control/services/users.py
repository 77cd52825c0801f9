"""Users (tenants) and their plans: created by an admin (REST) or from the command line."""

from __future__ import annotations

from dataclasses import dataclass

from control.errors import Forbidden, NotFound, ValidationFailed
from control.services.context import Context
from control.services.validation import Fields
from storage.access import tenant_mount
from storage.errors import Conflict
from storage.records import CreatedApiKey, Page, User

__all__ = ["CreatedUser", "UserService"]


@dataclass(frozen=True, slots=True)
class CreatedUser:
    user: User
    api_key: CreatedApiKey


def require_admin(actor: User | None) -> None:
    """`None` is the command line, which is trusted; otherwise only admins manage users."""
    if actor is not None and not actor.is_admin:
        raise Forbidden("Only administrators can manage users")


class UserService:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store

    async def create(
        self,
        actor: User | None,
        name: object,
        *,
        plan: object = None,
        is_admin: object = False,
        is_active: object = True,
        password: object = None,
    ) -> CreatedUser:
        """Create a user with a first API key (its key and secret are returned once). Without a plan, the
        user gets the configured default plan (unlimited unless the operator chose otherwise)."""
        require_admin(actor)
        fields = Fields()
        name_value = fields.name("name", name)
        plan_value = fields.choice("plan", plan, tuple(self.context.plans))
        admin_value = fields.boolean("is_admin", is_admin)
        active_value = fields.boolean("is_active", is_active)
        password_value = fields.password("password", password)
        fields.check()
        assert name_value is not None
        try:
            user = await self.store.users.create(
                name_value,
                password=password_value,
                plan=plan_value or self.context.default_plan,
                is_admin=bool(admin_value),
                is_active=active_value is not False,
            )
        except Conflict:
            raise ValidationFailed({"name": "The name has already been taken."}) from None
        api_key = await self.store.api_keys.create(user.id, "Initial key")
        return CreatedUser(user, api_key)

    async def list(self, actor: User | None, *, offset: int = 0, limit: int = 100) -> Page[User]:
        require_admin(actor)
        return await self.store.users.list(offset=offset, limit=limit)

    async def get(self, actor: User | None, user_id: int) -> User:
        if actor is not None and actor.id != user_id:
            require_admin(actor)
        user = await self.store.users.get(user_id)
        if user is None:
            raise NotFound("User not found")
        return user

    async def update(
        self,
        actor: User | None,
        user_id: int,
        *,
        plan: object = None,
        is_admin: object = None,
        is_active: object = None,
        password: object = None,
    ) -> User:
        """Change a user's plan, role, activity or password. Deactivating a user disconnects every client
        using their credentials at once."""
        require_admin(actor)
        fields = Fields()
        plan_value = fields.choice("plan", plan, tuple(self.context.plans))
        admin_value = fields.boolean("is_admin", is_admin)
        active_value = fields.boolean("is_active", is_active)
        password_value = fields.password("password", password)
        fields.check()
        if actor is not None and actor.id == user_id and (active_value is False or admin_value is False):
            # The last administrator could lock everyone out of user management.
            raise Forbidden("You cannot deactivate or demote your own account")
        users = self.store.users
        user = await self.get(None, user_id)
        if plan_value is not None:
            user = await users.set_plan(user_id, plan_value) or user
        if admin_value is not None:
            user = await users.set_admin(user_id, admin_value) or user
        if active_value is not None:
            user = await users.set_active(user_id, active_value) or user
        if password_value is not None:
            user = await users.set_password(user_id, password_value) or user
        if active_value is False:
            self.context.disconnect_now(user_id=user_id)
        if active_value is False or password_value is not None:
            self.context.user_changed(user_id)  # signed-in dashboard sessions end
        await self.context.access_changed()
        return user

    async def delete(self, actor: User | None, user_id: int) -> None:
        """Delete a user and everything they own; their clients are disconnected at once."""
        require_admin(actor)
        if actor is not None and actor.id == user_id:
            raise Forbidden("You cannot delete your own account")
        if not await self.store.users.delete(user_id):
            raise NotFound("User not found")
        self.context.disconnect_now(user_id=user_id)
        self.context.user_changed(user_id)
        await self.context.access_changed()
        # Nothing of theirs stays behind: retained messages in their namespace, their quota counts.
        if self.context.broker is not None:
            self.context.broker.drop_tenant_retained(tenant_mount(user_id))
        if self.context.usage is not None:
            self.context.usage.forget(user_id)
