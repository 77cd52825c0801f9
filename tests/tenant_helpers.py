"""Helpers for tests of tenants and live access: make users, instances, projects, devices and topics
through the same services the REST API and the CLI use, on a Roost running in a background thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from control.services import Services
from storage.records import User
from tests.helpers import PahoClient, RoostThread


@dataclass
class Tenant:
    """A user with handles on the running Roost."""

    roost: RoostThread
    user: User

    @property
    def services(self) -> Services:
        assert self.roost.roost is not None and self.roost.roost.services is not None
        return self.roost.roost.services

    def instance(self) -> tuple[str, str]:
        """Create an MQTT instance; return its (username, password)."""
        view = self.roost.run(self.services.instances.create(self.user))
        return view.instance.username, view.password

    def project(self, name: str = "project") -> int:
        return self.roost.run(self.services.projects.create(self.user, name)).id

    def topic(self, project_id: int, name: str, publish: bool = True, subscribe: bool = True) -> int:
        return self.roost.run(self.services.topics.create(self.user, project_id, name, None, publish, subscribe)).id

    def device(self, project_id: int, device_id: str, **kwargs: Any) -> tuple[str, str]:
        """Create a device; return its (device_id, password)."""
        view = self.roost.run(self.services.devices.create(self.user, project_id, device_id, device_id, **kwargs))
        assert view.secret is not None
        return view.device.device_id, view.secret

    def client(self, credentials: tuple[str, str], client_id: str = "", version: int = 5, **kwargs: Any) -> PahoClient:
        username, password = credentials
        return PahoClient(
            self.roost.mqtt_port, client_id=client_id, version=version, username=username, password=password, **kwargs
        )


def make_tenant(roost: RoostThread, name: str, plan: str = "free", is_admin: bool = False) -> Tenant:
    assert roost.roost is not None and roost.roost.services is not None
    created = roost.run(roost.roost.services.users.create(None, name, plan=plan, is_admin=is_admin))
    return Tenant(roost, created.user)
