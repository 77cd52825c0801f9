"""What every service shares: the store, the plans, and the live parts of a running server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from broker.service import BrokerService
from control.errors import LimitReached, NotFound
from control.plans import DEFAULT_PLAN, DEFAULT_PLANS, Plan
from certs.store import CertificateStore
from storage.access import LiveAccess
from storage.records import Project, User
from storage.store import Store
from storage.usage import UsageMeter

__all__ = ["Context"]


@dataclass
class Context:
    store: Store
    plans: dict[str, Plan]
    access: LiveAccess | None
    broker: BrokerService | None
    usage: UsageMeter | None
    public_host: str
    public_port: int
    # Roost's local CA, which issues device certificates (None: certificates are not offered).
    certificates: CertificateStore | None = None
    # Called with a user's id when their password changes or they are deactivated or deleted: the
    # dashboard ends their sign-in sessions.
    user_listeners: list[Callable[[int], None]] = field(default_factory=list)
    # The plan of a user created without one (`default_plan` in the config).
    default_plan: str = DEFAULT_PLAN

    def plan_of(self, user: User) -> Plan:
        """The user's plan; one no longer configured counts as the default plan."""
        return self.plans.get(user.plan) or self.plans.get(self.default_plan) or DEFAULT_PLANS[DEFAULT_PLAN]

    def user_changed(self, user_id: int) -> None:
        for listener in self.user_listeners:
            listener(user_id)

    async def access_changed(self) -> None:
        """Make a write felt at once: reload live access and enforce it on connected clients."""
        if self.access is not None:
            await self.access.refresh()

    def disconnect_now(self, *, username: str | None = None, user_id: int | None = None) -> None:
        """Close the clients of revoked credentials at once, before the access reload that follows: a
        revoke is felt in microseconds, not after a database read."""
        broker = self.broker
        if broker is None:
            return
        if username is not None:
            broker.kick(username=username)
        if user_id is not None:
            broker.kick(where=lambda client: client.attributes.get("user_id") == user_id)

    def check_limit(self, user: User, kind: str, limit: int, current: int, message: str) -> None:
        if limit and current >= limit:
            raise LimitReached(message, kind, limit)

    async def owned_project(self, user: User, project_id: int) -> Project:
        project = await self.store.projects.get(project_id, user_id=user.id)
        if project is None:
            raise NotFound("Project not found")
        return project
