"""Messages: publish to a project's topic through REST, and read the project's message history."""

from __future__ import annotations

from datetime import timedelta

from control.errors import NotFound, QuotaExceeded
from control.services.context import Context
from control.services.validation import Fields
from storage.access import tenant_mount
from storage.clock import format_timestamp, utc_now
from storage.records import NewMessage, StoredMessage, User

__all__ = ["MessageService", "MAX_LIMIT", "DEFAULT_LIMIT"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_PAYLOAD = 256 * 1024


class MessageService:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store

    async def list(
        self, user: User, project_id: int, *, topic_id: int | None = None, limit: int = DEFAULT_LIMIT
    ) -> tuple[StoredMessage, ...]:
        await self.context.owned_project(user, project_id)
        return await self.store.messages.list(project_id, topic_id=topic_id, limit=limit)

    async def get(self, user: User, message_id: int) -> StoredMessage:
        message = await self.store.messages.get(message_id, user_id=user.id)
        if message is None:
            raise NotFound("Message not found")
        return message

    async def delete(self, user: User, message_id: int) -> None:
        if not await self.store.messages.delete(message_id, user_id=user.id):
            raise NotFound("Message not found")

    async def publish(
        self,
        user: User,
        project_id: object,
        topic_id: object,
        payload: object,
        qos: object = None,
        retained: object = None,
    ) -> StoredMessage:
        """Publish to the MQTT subscribers of a project's topic at once, count it against the hourly
        quota, and record it in the project's history."""
        fields = Fields()
        project_value = fields.integer("project_id", project_id, required=True)
        topic_value = fields.integer("topic_id", topic_id, required=True)
        if payload is None:
            fields.fail("payload", "The payload field is required.")
        elif not isinstance(payload, str):
            fields.fail("payload", "The payload field must be a string.")
        elif len(payload.encode("utf-8")) > MAX_PAYLOAD:
            fields.fail("payload", f"The payload must not be larger than {MAX_PAYLOAD} bytes.")
        qos_value = fields.integer("qos", qos, low=0, high=2)
        retained_value = fields.boolean("retained", retained)
        topic = None
        if project_value is not None and await self.store.projects.get(project_value, user_id=user.id) is None:
            fields.fail("project_id", "The selected project_id is invalid.")
        elif topic_value is not None:
            topic = await self.store.topics.get(topic_value, user_id=user.id)
            if topic is None or topic.project_id != project_value:
                fields.fail("topic_id", "The selected topic_id is invalid.")
            elif "+" in topic.name or "#" in topic.name:
                fields.fail("topic_id", "The topic is a filter; a message needs a topic name without wildcards.")
            elif self.context.broker is not None and (problem := self.context.broker.topic_limit_problem(topic.name)):
                # A topic stored before the limits were lowered: MQTT would refuse it too (broker/limits.py).
                fields.fail("topic_id", problem)
        fields.check()
        assert topic is not None and isinstance(payload, str) and project_value is not None
        plan = self.context.plan_of(user)
        usage = self.context.usage
        if usage is not None and not usage.try_consume(user.id, plan.messages_per_hour):
            raise QuotaExceeded(plan.messages_per_hour, usage.seconds_until_reset())
        data = payload.encode("utf-8")
        qos_level = qos_value or 0
        retain = bool(retained_value)
        if self.context.broker is not None:
            self.context.broker.publish(topic.name, data, qos_level, retain, mount=tenant_mount(user.id))
        expires = utc_now() + timedelta(days=plan.retention_days)
        return await self.store.messages.insert(
            NewMessage(project_value, topic.name, data, qos_level, retain, topic.id, format_timestamp(expires))
        )
