"""Projects: a user's groups of devices and topics."""

from __future__ import annotations

from dataclasses import dataclass

from control.errors import NotFound
from control.services.context import Context
from control.services.validation import Fields
from storage.records import Page, Project, User

__all__ = ["ProjectDetails", "ProjectService"]

PER_PAGE = 15


@dataclass(frozen=True, slots=True)
class ProjectDetails:
    project: Project
    devices_count: int
    topics_count: int


class ProjectService:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = context.store

    async def list(self, user: User, *, page: int = 1) -> tuple[Page[Project], int]:
        """One page of the user's projects, and the plan's project limit (0 = unlimited)."""
        result = await self.store.projects.list_by_user(user.id, offset=(page - 1) * PER_PAGE, limit=PER_PAGE)
        return result, self.context.plan_of(user).max_projects

    async def get(self, user: User, project_id: int) -> ProjectDetails:
        project = await self.context.owned_project(user, project_id)
        devices = await self.store.devices.count_by_project(project_id)
        topics = await self.store.topics.count_by_project(project_id)
        return ProjectDetails(project, devices, topics)

    async def create(self, user: User, name: object, description: object = None) -> Project:
        fields = Fields()
        name_value = fields.name("name", name)
        description_value = fields.text("description", description)
        fields.check()
        assert name_value is not None
        plan = self.context.plan_of(user)
        async with self.store.db.transaction():
            count = await self.store.projects.count_by_user(user.id)
            self.context.check_limit(
                user, "projects", plan.max_projects, count,
                f"You have reached your plan's limit of {plan.max_projects} projects",
            )
            return await self.store.projects.create(user.id, name_value, description_value or "")

    async def update(self, user: User, project_id: int, name: object = None, description: object = None) -> Project:
        fields = Fields()
        name_value = fields.name("name", name, required=False)
        if name is not None and isinstance(name, str) and not name.strip():
            fields.fail("name", "The name field must not be empty.")
        description_value = fields.text("description", description)
        fields.check()
        project = await self.store.projects.update(
            project_id, user_id=user.id, name=name_value, description=description_value
        )
        if project is None:
            raise NotFound("Project not found")
        return project

    async def delete(self, user: User, project_id: int) -> None:
        """Delete a project with its devices (disconnected at once), topics and messages."""
        if not await self.store.projects.delete(project_id, user_id=user.id):
            raise NotFound("Project not found")
        await self.context.access_changed()
