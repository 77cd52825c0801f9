"""The upstream link interface: what a bridge needs of the protocol that carries its messages.

The bridge (bridge/bridge.py) owns the outbox, the caps, the counters and the local side; a link owns one
upstream protocol. An MQTT link (bridge/mqtt_link.py) implements it today; a NATS JetStream link (issue 17)
implements the same few methods, so the outbox, the caps, `/metrics` and `GET /api/v1/bridges` serve both.
Like uvicorn's protocol classes behind `auto.py`, the bridge picks the implementation from the url's scheme.

The contract, in order:

1. `await link.connect(handler)` opens the link (TCP, TLS, the protocol's handshake) and returns whether
   the upstream kept our session; it raises `LinkError` when it cannot (the bridge retries with backoff).
2. While it is up the bridge calls `send()` for outbox messages (at most `window` unacknowledged at a
   time), `send_qos0()` for QoS 0 messages, and `release()` for a QoS 2 message whose PUBREC is on disk.
   The link reports back through the `LinkHandler` it was given: `acked`, `received`, `command`.
3. `await link.closed()` returns (with the reason, as text) when the link is lost: reset, silence past the
   keep alive, an acknowledgement overdue, a protocol error, or `close()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from broker.codec import Properties
from storage.outbox import OutboxEntry

__all__ = ["Command", "LinkHandler", "UpstreamLink"]


@dataclass(frozen=True, slots=True)
class Command:
    """A message that came down, its topic as the local namespace names it (the link took the remote
    prefix off). `ref`: what identifies it upstream while it is unfinished (MQTT: a QoS 2 packet
    identifier), so a resend across a restart of Roost is not published twice; None when not needed."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties
    ref: int | None = None


class LinkHandler(Protocol):
    """What a link reports to (the bridge)."""

    def acked(self, entry: OutboxEntry, refused: int) -> None:
        """The upstream is done with `entry` (PUBACK, PUBCOMP; `refused` is a failure reason code or 0)."""

    def received(self, entry: OutboxEntry) -> None:
        """QoS 2: PUBREC came for `entry`; the handler records it, then calls `release(entry)`."""

    def command(self, command: Command, done: Callable[[], None]) -> bool:
        """A message came down. The handler publishes it locally and calls `done()` once it may be
        acknowledged upstream (at once, or after a commit). False: refused (not published)."""

    def command_done(self, ref: int) -> None:
        """The upstream finished the unfinished command `ref` (MQTT: PUBREL came)."""


class UpstreamLink(Protocol):
    """One upstream protocol: MQTT now, NATS later."""

    window: int  # how many outbox messages may be unacknowledged at once (ours and the upstream's limit)
    congested: bool  # the transport's write buffer is above its mark: send nothing more for now
    on_writable: Callable[[], None]  # set by the bridge: called when a congested link can take more
    subscribed: bool  # the `subscribe` filters were acknowledged upstream (at least once in this process)
    subscribe_failures: tuple[str, ...]  # filters the upstream refused
    # Where the link is connected now, for REST and the dashboard (MQTT: the peer's IP:port; NATS: the url of
    # the cluster's server it picked); None while it is down.
    connected_to: str | None

    @property
    def up(self) -> bool:
        """Between a successful `connect()` and the loss of the link."""

    async def connect(self, handler: LinkHandler) -> bool:
        """Open the link; True when the upstream kept our session. Raises LinkError."""

    def send(self, entry: OutboxEntry) -> None:
        """Send an outbox message (`entry.dup`: it may have been sent before; `entry.released`: only its
        release is left to send)."""

    def send_qos0(self, topic: str, payload: bytes, retain: bool, properties: Properties) -> bool:
        """Send a QoS 0 message (`topic` local: the link puts the remote prefix on, as for `send`); False
        when it cannot now (down or congested): the bridge queues or drops it, counted."""

    def release(self, entry: OutboxEntry) -> None:
        """QoS 2: the PUBREC of `entry` is on disk; send what completes it (PUBREL)."""

    def close(self, reason: str) -> None:
        """Close the link (politely when it is up); `closed()` then returns `reason`."""

    async def closed(self) -> str:
        """Wait until the link is lost; the reason, as text."""
