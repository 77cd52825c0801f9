"""An extension point: receivers that must keep a message durably before its publisher hears PUBACK/PUBREC.

A bridge (bridge/bridge.py) is a `DeliveryReceiver` in the router and writes each QoS 1/2 message it
forwards into an outbox on disk; the publisher must not be acknowledged before that write is on disk, or a
power cut right after the PUBACK loses a message the publisher was told is safe. The broker knows nothing
of outboxes: while it routes a client's QoS 1/2 PUBLISH, a receiver may call `hold(wait)`, where
`wait(callback)` calls `callback` once the message is safe (at once if it already is). The engine collects
the holds around its `Broker.route` (`begin` / `end`, `broker/engine/connection.py`) and its `AckOrder`
(`broker/engine/acks.py`, the queue strict durability uses too) sends the acknowledgement when every one of
them has called back, never before an acknowledgement that waits ahead of it [MQTT-4.6.0-2].

Holds outside `begin`/`end` (a will, a message from the control plane, a plain QoS 0 run: nobody to
acknowledge) are ignored. Sans-IO: no loop, no task; a `Wait` is a plain callable.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["AckHolds", "Wait"]

# What a receiver hands over: call the given callback once the message is safe.
Wait = Callable[[Callable[[], None]], None]


class AckHolds:
    """The holds collected while one PUBLISH is routed (one per broker: routing is synchronous)."""

    __slots__ = ("_open", "_waits")

    def __init__(self) -> None:
        self._open = False
        self._waits: list[Wait] = []

    def hold(self, wait: Wait) -> None:
        """Called by a receiver while a message is routed: its publisher's acknowledgement waits for `wait`."""
        if self._open:
            self._waits.append(wait)

    def begin(self) -> None:
        """An engine is about to route a QoS 1/2 PUBLISH that it will acknowledge. Holds left by a route
        that raised (its connection is closed: nobody to acknowledge) are dropped here."""
        self._open = True
        if self._waits:
            self._waits = []

    def end(self) -> list[Wait]:
        """Routing is done: the holds it collected (usually none)."""
        self._open = False
        waits = self._waits
        if waits:
            self._waits = []
        return waits
