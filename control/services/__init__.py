"""The control plane's services: what REST handlers, the dashboard and the CLI call.

Handlers stay thin (parse, call a service, shape the response); every rule lives here: ownership (a user
sees only their own resources; another tenant's ids are NotFound), plan limits, quotas, and the promise that
a change is felt by connected clients at once (every write that touches access ends with
`LiveAccess.refresh()`, which disconnects revoked clients and narrows live subscriptions).

The CLI builds `Services` without a running broker (`broker=None`): its writes reach a running server
through the database, which notices them within a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.service import BrokerService
from certs.store import CertificateStore
from control.plans import DEFAULT_PLAN, Plan
from control.services.api_keys import ApiKeyService
from control.services.context import Context
from control.services.devices import DeviceService
from control.services.instances import InstanceService
from control.services.messages import MessageService
from control.services.projects import ProjectService
from control.services.topics import TopicService
from control.services.users import UserService
from storage.access import LiveAccess
from storage.store import Store
from storage.usage import UsageMeter

__all__ = ["Services"]


@dataclass
class Services:
    context: Context
    users: UserService
    instances: InstanceService
    projects: ProjectService
    devices: DeviceService
    topics: TopicService
    messages: MessageService
    api_keys: ApiKeyService

    @classmethod
    def build(
        cls,
        store: Store,
        plans: dict[str, Plan],
        *,
        access: LiveAccess | None = None,
        broker: BrokerService | None = None,
        usage: UsageMeter | None = None,
        public_host: str = "localhost",
        public_port: int = 1883,
        certificates: CertificateStore | None = None,
        default_plan: str = DEFAULT_PLAN,
    ) -> Services:
        context = Context(store, plans, access, broker, usage, public_host, public_port, certificates,
                          default_plan=default_plan)
        return cls(
            context=context,
            users=UserService(context),
            instances=InstanceService(context),
            projects=ProjectService(context),
            devices=DeviceService(context),
            topics=TopicService(context),
            messages=MessageService(context),
            api_keys=ApiKeyService(context),
        )
