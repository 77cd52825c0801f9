"""The narrow service API through which the control plane reaches the broker.

The control plane never touches sessions or connections directly: it kicks clients, publishes messages and
lists who is connected, through these few calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.core import Broker
from broker.hooks import ClientInfo
from broker.session import Message

__all__ = ["BrokerService", "ClientSummary"]


@dataclass(frozen=True, slots=True)
class ClientSummary:
    client_id: str
    username: str | None
    protocol_version: int
    remote_address: str
    listener: str
    connected_at: float
    subscriptions: tuple[str, ...]


class BrokerService:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def kick(
        self,
        client_id: str | None = None,
        username: str | None = None,
        where: Callable[[ClientInfo], bool] | None = None,
    ) -> int:
        """Disconnect matching clients at once (v5: DISCONNECT 0x98) and end their sessions, connected or
        not. `client_id` names a client outside any tenant; tenant clients are found by `username` or by
        `where`, a predicate on their `ClientInfo`. Returns how many sessions or connections were ended."""
        broker = self.broker
        targets: set[str] = set()
        if client_id is not None:
            targets.add(client_id)
        if username is not None:
            targets.update(c.session_key for c in broker.find_clients(lambda info: info.username == username))
        if where is not None:
            targets.update(c.session_key for c in broker.find_clients(where))
        return sum(1 for target in targets if broker.remove_session(target))

    def revalidate_subscriptions(self, where: Callable[[ClientInfo], bool]) -> int:
        """Re-check the subscriptions of matching clients against the hooks; remove what is now denied.
        Cached publish decisions are dropped too, so the next publish is checked against the new rules."""
        self.broker.hooks.invalidate()
        return self.broker.revalidate_subscriptions(where)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, mount: str = "") -> int:
        """Publish as the broker itself, into a tenant's namespace when `mount` is given; returns how many
        sessions it was delivered or queued to."""
        return self.broker.publish(Message(mount + topic, payload, qos, retain))

    def drop_retained(self, origin: str) -> int:
        """Remove the retained messages published by clients that authenticated as `origin`."""
        return self.broker.drop_retained(lambda _topic, message: message.origin == origin)

    def drop_tenant_retained(self, mount: str) -> int:
        """Remove every retained message in a tenant's namespace."""
        return self.broker.drop_retained(lambda topic, _message: topic.startswith(mount))

    def online_usernames(self) -> set[str]:
        """User names of the clients connected now (a device's status is `online` while it is in here)."""
        return {c.client.username for c in self.broker.connected() if c.client is not None and c.client.username}

    def clients(self) -> list[ClientSummary]:
        result = []
        for connection in self.broker.connected():
            client = connection.client
            session = connection.session
            if client is None or session is None:
                continue
            result.append(
                ClientSummary(
                    client_id=client.client_id,
                    username=client.username,
                    protocol_version=client.protocol_version,
                    remote_address=connection.remote_address,
                    listener=connection.listener,
                    connected_at=connection.connected_at,
                    subscriptions=tuple(session.subscriptions),
                )
            )
        return result

    def uptime(self) -> float:
        return time.time() - self.broker.started_at
