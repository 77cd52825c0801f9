"""The order of one connection's acknowledgements, when some of them must wait (sans-IO).

An acknowledgement (PUBACK, PUBREC, PUBCOMP, PUBREL) may have to wait before it leaves:

- with strict durability, until the state it acknowledges is on disk (`Persistence.when_durable`);
- for the receivers that hold it (`broker/ack_holds.py`): a bridge keeps each QoS 1/2 message it forwards
  in an outbox on disk, and the publisher must not hear PUBACK/PUBREC before that commit, or a power cut
  right after it loses a message the publisher was told is safe.

Whatever it waits for, an acknowledgement never overtakes one that is waiting: they leave in the order of
the packets they answer [MQTT-4.6.0-2]. `AckOrder` is the one queue for both reasons. It holds no loop or
task: the waits call back, and what is ready at the head of the queue goes to `write` (the engine's output,
which drops it once the connection is closing: the client resends after a reconnect [MQTT-4.4.0-1]).

While nothing waits (the common case) `must_wait` answers False and the engine writes the acknowledgement
itself, ahead of any copy of the message routed back to the publisher.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.ack_holds import Wait
    from broker.persistence import Persistence

__all__ = ["AckOrder"]

# What an `AckOrder` holds while nothing waits: one empty tuple for every connection, where an empty deque
# would cost each idle connection 760 bytes; the first acknowledgement that waits makes the deque.
_NOTHING_HELD: tuple[()] = ()


class _Held:
    """One acknowledgement in the queue, and how many calls back it still waits for."""

    __slots__ = ("data", "pending")

    def __init__(self, data: bytes) -> None:
        self.data = data
        # 1 is a guard: a wait that calls back at once cannot release it before every wait is registered.
        self.pending = 1


class AckOrder:
    """The acknowledgements of one connection that wait, in the order they must leave."""

    __slots__ = ("_held", "_persistence", "_strict", "_write")

    def __init__(self, persistence: Persistence, write: Callable[[bytes], None]) -> None:
        self._persistence = persistence
        self._strict = persistence.strict
        self._write = write
        self._held: deque[_Held] | tuple[()] = _NOTHING_HELD

    def __len__(self) -> int:
        """How many acknowledgements wait (bounded by the client's receive maximum and in-flight window)."""
        return len(self._held)

    def must_wait(self, data: bytes, dirtied: bool, waits: Iterable[Wait] = ()) -> bool:
        """Queue `data` if it must wait, and return True; False: nothing to wait for, the caller sends it now.

        It waits behind any acknowledgement already waiting, for every wait in `waits` (the receivers'
        holds), and with strict durability for the disk when `dirtied` (the packet it answers changed
        recorded state)."""
        held = self._held
        strict_wait = self._strict and dirtied
        if not held and not waits and not strict_wait:
            return False
        first = not held
        if held is _NOTHING_HELD:
            held = self._held = deque()
        entry = _Held(data)
        held.append(entry)
        for wait in waits:
            entry.pending += 1
            wait(lambda: self._ready(entry))
        if strict_wait:
            entry.pending += 1
            if not self._persistence.when_durable(lambda: self._ready(entry)):
                entry.pending -= 1
        if first and entry.pending == 1:
            # Every wait called back at once (already safe): it goes now, where the caller puts it (ahead
            # of a copy routed back to the publisher), as if it had never waited.
            held.pop()
            return False
        self._ready(entry)
        return True

    def close(self) -> None:
        """The connection is gone: what still waits is dropped, as the engine's output would drop it (the
        client resends after a reconnect [MQTT-4.4.0-1]), and `write`, a method of the connection, is let
        go, so that nothing here refers back to it: a closed connection is freed at once by reference
        counting instead of waiting in a cycle for the garbage collector (which, at a connect storm's
        rate, costs a collection every few hundred connections)."""
        held = self._held
        if held is not _NOTHING_HELD:  # the shared empty tuple of a queue that never held anything stays
            held.clear()  # type: ignore[union-attr]
        self._write = _dropped

    def _ready(self, entry: _Held) -> None:
        """One thing `entry` waited for is done: send every acknowledgement at the head that waits for
        nothing more."""
        entry.pending -= 1
        held = self._held
        assert isinstance(held, deque)  # `entry` is in it
        while held and held[0].pending == 0:
            self._write(held.popleft().data)


def _dropped(data: bytes) -> None:
    """The `write` of a closed connection's queue."""
