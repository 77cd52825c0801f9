"""`$SYS/broker/...` topics: the broker describing itself, republished as retained messages.

Clients read them like any topic (subscriptions with a leading wildcard do not see them [MQTT-4.7.2-1]);
clients cannot publish to them.
"""

from __future__ import annotations

import asyncio
import time

from broker.core import Broker
from broker.settings import VERSION

__all__ = ["publish_sys_topics", "run_sys_topics"]


def publish_sys_topics(broker: Broker) -> None:
    """Publish the current values once."""
    stats = broker.stats
    values = {
        "version": f"roost {VERSION}",
        "uptime": f"{int(time.time() - broker.started_at)} seconds",
        "clients/connected": stats.clients_connected,
        "clients/total": len(broker.sessions),
        "messages/received": stats.messages_received,
        "messages/sent": stats.messages_sent,
        "messages/dropped": stats.messages_dropped,
        "bytes/received": stats.bytes_received,
        "bytes/sent": stats.bytes_sent,
        "retained messages/count": stats.retained,
        "subscriptions/count": stats.subscriptions,
    }
    for name, value in values.items():
        broker.publish_system(f"$SYS/broker/{name}", str(value).encode())


async def run_sys_topics(broker: Broker, interval: float) -> None:
    """Republish every `interval` seconds until cancelled."""
    while True:
        publish_sys_topics(broker)
        await asyncio.sleep(interval)
