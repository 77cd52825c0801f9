"""The broker's recent connection events: who connected, who was refused and why, who left and why, who
was kicked. A bounded ring (the oldest event goes when it is full), kept in memory for the dashboard's
Events page; nothing is written to disk and nothing on the message path touches it.

The broker owns one (`Broker.events`), as it owns its persistence observer, and the protocol engine
reports to it where each event happens, synchronously and with no I/O: `connected` after a CONNECT is let
in, `refused` with the CONNACK that refuses one, `ended` when the network connection of a connected
client is gone (`broker/engine/connection.py`); `BrokerService.kick_client` reports kicks. Times come from
the broker's injected clock (`broker/clock.py`). Reason codes are MQTT 5's (section 2.4), kept as numbers
(3.1.1 clients included: why the server closed them); `reason_text` gives them in words.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from broker.codec.reason_codes import ReasonCode

if TYPE_CHECKING:
    from broker.hooks import ClientInfo

__all__ = ["CONNECTED", "DEFAULT_EVENTS", "DISCONNECTED", "KICKED", "KINDS", "REFUSED", "Event", "EventLog",
           "reason_text"]

# How many events are kept (the Events page shows "the last few hundred"): ~200 bytes each, so ~100 KB.
DEFAULT_EVENTS = 500

CONNECTED = "connected"
REFUSED = "refused"
DISCONNECTED = "disconnected"
KICKED = "kicked"
KINDS = (CONNECTED, REFUSED, DISCONNECTED, KICKED)

_WORDS = {
    # Several names share 0x00; the first one is what a connection event means.
    0x00: "normal disconnection",
    0x04: "disconnect with will message",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x98: "administrative action",
}


def reason_text(code: int | None) -> str:
    """An MQTT 5 reason code in words ("bad user name or password"); None is a connection that ended
    without DISCONNECT and without the server closing it (the network went away)."""
    if code is None:
        return "connection lost"
    if code in _WORDS:
        return _WORDS[code]
    try:
        return ReasonCode(code).name.replace("_", " ").lower()
    except ValueError:
        return f"reason 0x{code:02x}"


class Event(NamedTuple):
    """One connection event. `mount` is the client's tenant namespace ("" outside any tenant, and for a
    refused client, whose tenant is not known). A NamedTuple, as the engine's `Terms` is: two are made per
    connection, and a frozen dataclass would set each of its nine fields through object.__setattr__."""

    id: int
    time: float
    kind: str
    client_id: str
    username: str | None
    mount: str
    address: str
    reason_code: int | None
    detail: str = ""

    @property
    def reason(self) -> str:
        return "" if self.kind == CONNECTED else reason_text(self.reason_code)


class EventLog:
    """The last `limit` events, oldest first. `dropped` counts those pushed out (the metric of the ring).
    `wall` is the clock the events are stamped with (the broker passes its `Clock.time`)."""

    __slots__ = ("_events", "_ids", "_wall", "dropped", "limit")

    def __init__(self, limit: int = DEFAULT_EVENTS, wall: Callable[[], float] = time.time) -> None:
        if limit < 1:
            raise ValueError("the event log keeps at least one event")
        self.limit = limit
        self._events: deque[Event] = deque(maxlen=limit)
        self._ids = itertools.count(1)
        self._wall = wall
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._events)

    def record(self, kind: str, client_id: str, username: str | None, mount: str, address: str,
               reason_code: int | None = None, detail: str = "") -> None:
        if len(self._events) == self.limit:
            self.dropped += 1
        self._events.append(Event(next(self._ids), self._wall(), kind, client_id, username, mount, address,
                                  reason_code, detail[:200]))

    # -- what the protocol engine reports, one call where each event happens ---------------------------------

    def connected(self, client: ClientInfo, address: str) -> None:
        # `record`, written out: this and `ended` run once per connection (a connect storm's path).
        events = self._events
        if len(events) == self.limit:
            self.dropped += 1
        events.append(Event(next(self._ids), self._wall(), CONNECTED, client.client_id, client.username,
                            client.mount, address, None, ""))

    def refused(self, who: tuple[str, str | None], address: str, reason_code: int) -> None:
        """A CONNECT refused with `reason_code`; `who` is the client id and user name it asked for, when
        they were read ("" and None otherwise)."""
        self.record(REFUSED, who[0], who[1], "", address, reason_code)

    def ended(self, client: ClientInfo | None, address: str, reason_code: int | None, detail: str = "") -> None:
        """A network connection is gone: an event if its client had been let in (`client`, None otherwise;
        one taken over too). `reason_code` is why (the client's DISCONNECT, or the server's reason for
        closing it), None when neither said (the network went away)."""
        if client is not None:
            events = self._events
            if len(events) == self.limit:
                self.dropped += 1
            events.append(Event(next(self._ids), self._wall(), DISCONNECTED, client.client_id, client.username,
                                client.mount, address, reason_code, detail[:200]))

    def kicked(self, client: ClientInfo, address: str, detail: str) -> None:
        """Kicked by an administrator or a tenant (`detail`: by whom, and why)."""
        code = ReasonCode.ADMINISTRATIVE_ACTION
        self.record(KICKED, client.client_id, client.username, client.mount, address, code, detail)

    def newest_first(self) -> Iterator[Event]:
        return reversed(self._events)
