"""Helpers for the live-access tests: clients that keep their PUBACK reason codes, a pool that stops every
client after a test, CONNACK and close behaviour read byte-exact with `RawClient`, and a copy of the
database's rows to show that a refused CONNECT changed nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from paho.mqtt.packettypes import PacketTypes

from broker.codec import Connack, Pingreq, Pingresp
from tests.helpers import TIMEOUT, PahoClient, RawClient, RoostThread, paho_properties
from tests.tenant_helpers import Tenant

# Every table a client's actions could touch.
TABLES = ("users", "mqtt_instances", "projects", "devices", "topics", "api_keys", "messages", "quota_usage")


class AckClient(PahoClient):
    """A PahoClient that also keeps the reason code of each PUBACK (by message id)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ack_codes: dict[int, int] = {}
        self.disconnect_reasons: list[Any] = []  # every one, in order (paho reconnects on its own)
        super().__init__(*args, **kwargs)
        # paho's constructor option `reconnect_on_failure=False` (PahoClient does not pass it through): a
        # closed client stays closed, so tests see the broker's close, not paho's retries.
        self.client._reconnect_on_failure = False

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.disconnect_reasons.append(reason_code)
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self.ack_codes[mid] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def publish_code(self, topic: str, payload: bytes = b"x") -> int:
        """Publish at QoS 1, wait for the PUBACK and return its reason code (always 0 for 3.1.1)."""
        info = self.publish(topic, payload, qos=1)
        return self.ack_codes[info.mid]

    @property
    def alive(self) -> bool:
        return self.connected.is_set() and not self.disconnected.is_set()


class Clients:
    """Makes paho clients for tenants' credentials and stops them all after the test."""

    def __init__(self) -> None:
        self._all: list[PahoClient] = []

    def make(
        self,
        roost: RoostThread,
        credentials: tuple[str, str] | None,
        client_id: str,
        version: int = 5,
        persistent: bool = False,
        **kwargs: Any,
    ) -> AckClient:
        """An unconnected client; `persistent` asks for a session that outlives the connection (v5: clean
        start 0 with a five-minute Session Expiry Interval; 3.1.1: clean session 0)."""
        username, password = credentials if credentials is not None else (None, None)
        if persistent:
            kwargs["clean"] = False
            if version == 5:
                kwargs["properties"] = paho_properties(PacketTypes.CONNECT, SessionExpiryInterval=300)
        client = AckClient(
            roost.mqtt_port, client_id=client_id, version=version, username=username, password=password, **kwargs
        )
        self._all.append(client)
        return client

    def connect(
        self,
        roost: RoostThread,
        credentials: tuple[str, str] | None,
        client_id: str,
        version: int = 5,
        persistent: bool = False,
        **kwargs: Any,
    ) -> AckClient:
        client = self.make(roost, credentials, client_id, version, persistent, **kwargs)
        client.connect()
        return client

    def close_all(self) -> None:
        for client in self._all:
            stop(client)


def stop(client: PahoClient) -> None:
    """Stop paho's thread (and its automatic reconnects) at once."""
    client.client.disconnect()  # Wakes paho's network thread, so loop_stop() returns at once.
    client.client.loop_stop()


def wait_revoked(client: AckClient) -> None:
    """The broker closed the client: v5 first hears DISCONNECT 0x98 Administrative action [MQTT-3.14.2-1];
    3.1.1 has no server DISCONNECT and is just closed."""
    assert client.disconnected.wait(TIMEOUT), "the client was not disconnected"
    if client.version == 5:
        first = client.disconnect_reasons[0]
        assert first is not None and first.value == 0x98, client.disconnect_reasons
    stop(client)


def raw_connack(
    port: int, version: int, client_id: str, username: str | None = None, password: bytes | None = None, **kwargs: Any
) -> int:
    """CONNECT with RawClient; return the CONNACK's reason code (v5) or return code (3.1.1).

    A refusal must come with Session Present 0 and be followed by the broker closing the connection
    (v5 [MQTT-3.2.2-6][MQTT-3.2.2-7]; 3.1.1 [MQTT-3.2.2-4][MQTT-3.2.2-5])."""
    raw = RawClient(port, version)
    try:
        connack = raw.connect(client_id, username=username, password=password, **kwargs)
        assert isinstance(connack, Connack), connack
        if connack.reason_code:
            assert not connack.session_present
            assert raw.closed_by_broker()
        return connack.reason_code
    finally:
        raw.close()


def packets_until_closed(raw: RawClient) -> list[Any]:
    """Every packet the broker sends until it closes the connection."""
    packets: list[Any] = []
    while True:
        try:
            packets.append(raw.receive())
        except (AssertionError, ConnectionResetError):
            return packets


def ping(raw: RawClient) -> list[Any]:
    """Round-trip a PINGREQ; return the packets that arrived before the PINGRESP [MQTT-3.12.4-1]."""
    raw.send(Pingreq())
    before = []
    while not isinstance(packet := raw.receive(), Pingresp):
        before.append(packet)
    return before


def db_rows(roost: RoostThread) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read on the broker's loop through its own store."""
    assert roost.roost is not None and roost.roost.store is not None
    db = roost.roost.store.db

    async def read() -> dict[str, list[tuple[Any, ...]]]:
        return {table: [tuple(row) for row in await db.fetch_all(f"SELECT * FROM {table} ORDER BY 1, 2")]
                for table in TABLES}

    return roost.run(read())


def poll(fetch: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Call `fetch` until it returns something truthy (for writers that batch, e.g. once a second)."""
    deadline = time.monotonic() + timeout
    wake = threading.Event()
    while True:
        value = fetch()
        if value or time.monotonic() > deadline:
            return value
        wake.wait(0.05)


def instance_public_id(tenant: Tenant) -> str:
    view = tenant.roost.run(tenant.services.instances.list(tenant.user))
    return view.items[0].instance.public_id


def device_row_id(tenant: Tenant, project_id: int, device_id: str) -> int:
    views, _ = tenant.roost.run(tenant.services.devices.list(tenant.user, project_id))
    return next(view.device.id for view in views if view.device.device_id == device_id)
