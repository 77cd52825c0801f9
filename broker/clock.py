"""The broker's clock, injected: every timer and timestamp of the protocol goes through one `Clock`.

Keep alive, the CONNECT timeout, session expiry, will delays and message expiry all ask a `Clock`, never
`time` or the event loop directly, so that tests run them on a `ManualClock` and move time by hand
(trio's `MockClock` idea) instead of sleeping through real seconds.

Two readings, because they answer different questions: `monotonic()` measures intervals within the
process (keep alive, timeouts); `time()` is the wall clock, for deadlines that must survive a restart
(message expiry, when a session's connection ended).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Clock", "LoopClock", "ManualClock", "Timer"]


class Timer(Protocol):
    """A scheduled call that can be called off (asyncio's `TimerHandle` is one)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (wall clock)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (for intervals)."""
        ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Call `callback(*args)` once, `delay` seconds from now on the monotonic clock."""
        ...


class LoopClock:
    """The real clock: the running event loop's timers (found when first needed, so a broker can be built
    before its loop runs)."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # The wall clock itself rather than a method that calls it: read per CONNECT and per routed message.
    time = staticmethod(time.time)

    def monotonic(self) -> float:
        return self.loop.time()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return self.loop.call_later(delay, callback, *args)


class _ManualTimer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to (`advance`), for tests: due timers run inside `advance`, in
    the order of their deadlines. Its wall clock is its monotonic clock plus a fixed epoch."""

    def __init__(self, start: float = 1_000.0, epoch: float = 1_800_000_000.0) -> None:
        self.now = start
        self._epoch = epoch - start
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now + self._epoch

    def monotonic(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        timer = _ManualTimer(self.now + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, running every timer that falls due on the way."""
        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.callback(*timer.args)
        self.now = target

    def pending(self) -> int:
        """How many timers are scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)
