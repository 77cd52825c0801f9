"""The broker's tunables, as one frozen record the composition root builds from the config file.

The broker never reads TOML itself: `control/config.py` validates the file and hands over this record, so
the broker can be built the same way in tests, benchmarks and production.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BrokerSettings", "VERSION"]

VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Limits and timers. Every default is what a Raspberry Pi gateway should run with."""

    # Largest packet accepted from a client, also announced to v5 clients in CONNACK [MQTT-3.2.2-15].
    max_packet_size: int = 1_048_576
    # Keep alive ceiling in seconds: v5 clients asking for more (or for 0) are told this value as Server Keep
    # Alive [MQTT-3.2.2-21]; 3.1.1 clients asking for more are refused, as Mosquitto does. 65535 = no ceiling.
    max_keepalive: int = 65_535
    # How many QoS 1/2 PUBLISH packets a client may have unacknowledged towards us (v5 Receive Maximum).
    receive_maximum: int = 1_024
    # How many QoS 1/2 PUBLISH packets we send a client before waiting for acknowledgements; a v5 client's
    # own Receive Maximum lowers it [MQTT-3.3.4-7].
    max_inflight: int = 100
    # Messages queued per session while its client is offline or its in-flight window is full.
    max_queued_messages: int = 1_000
    # Topic aliases a v5 client may use towards us (announced in CONNACK).
    topic_alias_maximum: int = 64
    # Cap on the v5 session expiry interval, and the expiry of 3.1.1 persistent sessions (seconds).
    # 0xFFFFFFFF means "never expires".
    max_session_expiry: int = 0xFFFFFFFF
    # Seconds between $SYS updates; 0 disables $SYS.
    sys_interval: int = 10
    # Bytes buffered towards one client before it counts as slow: QoS 0 to it is then dropped and counted,
    # QoS 1/2 is queued up to max_queued_messages.
    write_buffer_high: int = 1_048_576
    # Seconds a new connection may take to send its CONNECT.
    connect_timeout: float = 10.0
    # Seconds given to clients to receive their last bytes at shutdown.
    shutdown_grace: float = 2.0
    # Subscriptions one session may hold (0 = unlimited); one more is refused: SUBACK 0x97 Quota exceeded
    # (v5) or 0x80 (3.1.1). A tenant's own limit is its plan's (broker/tenants.py).
    max_subscriptions_per_client: int = 1_000
    # Whether retained messages are accepted (announced as Retain Available).
    retain_available: bool = True
    # Topic shape (broker/limits.py): levels and characters of a topic name or filter as the client names
    # it. Over it, SUBSCRIBE gets 0x8F (3.1.1: 0x80), PUBLISH a DISCONNECT 0x90 (3.1.1: the connection is
    # closed), a will CONNACK 0x90, REST 422.
    max_topic_levels: int = 128
    max_topic_length: int = 4_096
    # Memory before authentication (broker/limits.py): the largest CONNECT, and what all connections that
    # have not finished CONNECT may hold together; beyond it new connections are closed at once.
    max_connect_size: int = 65_536
    max_pending_connections: int = 512
    max_pending_bytes: int = 8_388_608
