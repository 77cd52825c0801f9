"""The hourly quota survives a restart: what a tenant used this hour is written to SQLite (in batches, and
once more at shutdown) and read back at start, so restarting Roost does not hand out a fresh quota."""

from __future__ import annotations

from pathlib import Path

from broker.codec import Puback, Publish
from tests.helpers import RawClient, RoostThread, roost_document
from tests.tenant_helpers import make_tenant


def _publish_qos1(port: int, credentials: tuple[str, str], count: int) -> list[int]:
    """Publish `count` QoS 1 messages as an MQTT 5 client; return the PUBACK reason codes."""
    client = RawClient(port, 5)
    username, password = credentials
    connack = client.connect("quota-client", username=username, password=password.encode())
    assert connack.reason_code == 0
    codes = []
    for packet_id in range(1, count + 1):
        client.send(Publish("q/t", b"x", 1, packet_id=packet_id))
        ack = client.receive()
        assert isinstance(ack, Puback) and ack.packet_id == packet_id
        codes.append(ack.reason_code)
    client.close()
    return codes


def test_quota_used_before_a_restart_still_counts_after_it(tmp_path: Path) -> None:
    document = roost_document(tmp_path, allow_anonymous=False)
    first = RoostThread(document).start()
    try:
        tenant = make_tenant(first, "alice", plan="free")  # 100 messages per hour
        credentials = tenant.instance()
        assert _publish_qos1(first.mqtt_port, credentials, 100) == [0] * 100
    finally:
        first.stop()  # shutdown writes the counts still in memory

    second = RoostThread(document).start()
    try:
        # The 101st message of the hour is refused with Quota exceeded [MQTT-3.3.4 / reason 0x97].
        assert _publish_qos1(second.mqtt_port, credentials, 1) == [0x97]
    finally:
        second.stop()
