"""Topics: the names or filters a project's devices may publish and/or subscribe to.

Narrowing a topic (deleting it, or taking away a permission) acts on connected devices at once: their
subscriptions that are no longer allowed are removed and deliveries stop; publishes are checked against
the new rule.
"""

from __future__ import annotations

from broker.codec.topics import validate_topic_filter
from broker.errors import ProtocolError
from control.errors import NotFound, ValidationFailed
from control.services.context import Context
from control.services.validation import Fields
from storage.errors import Conflict
from storage.records import Page, Topic, User

__all__ = ["TopicService"]

PER_PAGE = 15


def _check_filter(fields: Fields, name: str | None, context: Context) -> None:
    if name is None:
        return
    if "\x00" in name:
        fields.fail("name", "Topics must not contain the NUL character [MQTT-4.7.3-2].")
        return
    if name.startswith("$"):
        fields.fail("name", "Topics starting with $ are reserved for the broker.")
        return
    try:
        validate_topic_filter(name)
    except ProtocolError as exc:
        fields.fail("name", f"The name is not a valid MQTT topic or filter: {exc}")
        return
    if context.broker is not None and (problem := context.broker.topic_limit_problem(name)):
        fields.fail("name", problem)  # no client could use it (max_topic_levels, max_topic_length)


class TopicService:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store

    async def list(self, user: User, project_id: int, *, page: int = 1) -> Page[Topic]:
        await self.context.owned_project(user, project_id)
        return await self.store.topics.list_by_project(project_id, offset=(page - 1) * PER_PAGE, limit=PER_PAGE)

    async def get(self, user: User, topic_id: int) -> Topic:
        topic = await self.store.topics.get(topic_id, user_id=user.id)
        if topic is None:
            raise NotFound("Topic not found")
        return topic

    async def create(
        self,
        user: User,
        project_id: object,
        name: object,
        description: object = None,
        can_publish: object = None,
        can_subscribe: object = None,
    ) -> Topic:
        fields = Fields()
        project_value = fields.integer("project_id", project_id, required=True)
        name_value = fields.name("name", name, max_length=65_535)
        _check_filter(fields, name_value, self.context)
        description_value = fields.text("description", description)
        publish_value = fields.boolean("can_publish", can_publish)
        subscribe_value = fields.boolean("can_subscribe", can_subscribe)
        if project_value is not None and await self.store.projects.get(project_value, user_id=user.id) is None:
            fields.fail("project_id", "The selected project_id is invalid.")
        fields.check()
        assert project_value is not None and name_value is not None
        plan = self.context.plan_of(user)
        try:
            async with self.store.db.transaction():
                count = await self.store.topics.count_by_user(user.id)
                self.context.check_limit(
                    user, "topics", plan.max_topics, count,
                    f"You have reached your plan's limit of {plan.max_topics} topics",
                )
                topic = await self.store.topics.create(
                    project_value,
                    name_value,
                    description=description_value or "",
                    can_publish=True if publish_value is None else publish_value,
                    can_subscribe=True if subscribe_value is None else subscribe_value,
                )
        except Conflict:
            raise ValidationFailed({"name": "The project already has a topic with this name."}) from None
        await self.context.access_changed()
        return topic

    async def update(
        self,
        user: User,
        topic_id: int,
        name: object = None,
        description: object = None,
        can_publish: object = None,
        can_subscribe: object = None,
    ) -> Topic:
        fields = Fields()
        name_value = fields.name("name", name, required=False, max_length=65_535)
        if isinstance(name, str) and not name:
            fields.fail("name", "The name field must not be empty.")
        _check_filter(fields, name_value, self.context)
        description_value = fields.text("description", description)
        publish_value = fields.boolean("can_publish", can_publish)
        subscribe_value = fields.boolean("can_subscribe", can_subscribe)
        fields.check()
        try:
            topic = await self.store.topics.update(
                topic_id,
                user_id=user.id,
                name=name_value,
                description=description_value,
                can_publish=publish_value,
                can_subscribe=subscribe_value,
            )
        except Conflict:
            raise ValidationFailed({"name": "The project already has a topic with this name."}) from None
        if topic is None:
            raise NotFound("Topic not found")
        await self.context.access_changed()
        return topic

    async def delete(self, user: User, topic_id: int) -> None:
        if not await self.store.topics.delete(topic_id, user_id=user.id):
            raise NotFound("Topic not found")
        await self.context.access_changed()
