"""API keys: `sk_`-prefixed keys with a secret, shown once, stored only as hashes."""

from __future__ import annotations

from datetime import datetime, timezone

from control.errors import NotFound
from control.services.context import Context
from control.services.validation import Fields
from storage.records import ApiKey, CreatedApiKey, Page, User

__all__ = ["ApiKeyService"]

PER_PAGE = 10


def _parse_expiry(fields: Fields, value: object) -> datetime | None:
    """`expires_at` as the document shows it ("2027-02-09"), or a full ISO-8601 time; must be in the future."""
    if value is None:
        return None
    if not isinstance(value, str):
        fields.fail("expires_at", "The expires_at field must be a date such as 2027-02-09.")
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fields.fail("expires_at", "The expires_at field must be a date such as 2027-02-09.")
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        moment = moment.astimezone(timezone.utc)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        fields.fail("expires_at", "The expires_at field must be a date before the year 9999.")
        return None
    if moment <= datetime.now(timezone.utc):
        fields.fail("expires_at", "The expires_at field must be a date in the future.")
        return None
    return moment


class ApiKeyService:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store

    async def authenticate(self, key: str) -> User | None:
        """The active user behind a valid, active, unexpired key; its last use is noted (written in batches)."""
        record = await self.store.api_keys.find_by_key(key)
        if record is None:
            return None
        user = await self.store.users.get(record.user_id)
        if user is None or not user.is_active:
            return None
        await self.store.api_keys.touch_last_used(record.id)
        return user

    async def list(self, user: User, *, page: int = 1) -> Page[ApiKey]:
        return await self.store.api_keys.list_by_user(user.id, offset=(page - 1) * PER_PAGE, limit=PER_PAGE)

    async def create(self, user: User, name: object, expires_at: object = None) -> CreatedApiKey:
        fields = Fields()
        name_value = fields.name("name", name)
        expiry = _parse_expiry(fields, expires_at)
        fields.check()
        assert name_value is not None
        return await self.store.api_keys.create(user.id, name_value, expires_at=expiry)

    async def deactivate(self, user: User, key_id: int) -> ApiKey:
        record = await self.store.api_keys.deactivate(key_id, user_id=user.id)
        if record is None:
            raise NotFound("API key not found")
        self.context.api_key_revoked(record.user_id)
        return record

    async def delete(self, user: User, key_id: int) -> None:
        if not await self.store.api_keys.delete(key_id, user_id=user.id):
            raise NotFound("API key not found")
        self.context.api_key_revoked(user.id)
