"""The deadline wheel (broker/deadlines.py): one loop timer for every connection's deadline."""

from __future__ import annotations

import asyncio

from broker.deadlines import DeadlineWheel


class Owner:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.bucket: int | None = None
        self.reported: list[tuple[int, float]] = []  # (bucket, loop time when reported)
        self.event = asyncio.Event()

    def deadline_passed(self, bucket: int) -> None:
        self.reported.append((bucket, self.loop.time()))
        self.event.set()


async def test_a_deadline_is_reported_once_and_never_early() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel()
    owners = [Owner(loop) for _ in range(3)]
    deadlines = [loop.time() + delay for delay in (0.05, 0.01, 0.12)]
    for owner, deadline in zip(owners, deadlines):
        owner.bucket = wheel.add(owner, deadline)
    await asyncio.wait_for(asyncio.gather(*(owner.event.wait() for owner in owners)), 5)
    for owner, deadline in zip(owners, deadlines):
        [(bucket, when)] = owner.reported
        assert bucket == owner.bucket
        assert when >= deadline
    assert len(wheel) == 0


async def test_a_cancelled_deadline_is_not_reported() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel()
    cancelled, kept = Owner(loop), Owner(loop)
    deadline = loop.time() + 0.01
    cancelled.bucket = wheel.add(cancelled, deadline)
    kept.bucket = wheel.add(kept, deadline + 0.2)  # later: reported after the cancelled one would have been
    wheel.cancel(cancelled, cancelled.bucket)
    await asyncio.wait_for(kept.event.wait(), 5)
    assert cancelled.reported == []
    assert [bucket for bucket, _ in kept.reported] == [kept.bucket]


async def test_an_owner_reported_can_arm_again_from_the_callback() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel()
    owner = Owner(loop)
    second = asyncio.Event()

    def deadline_passed(bucket: int) -> None:
        owner.reported.append((bucket, loop.time()))
        if len(owner.reported) == 1:
            owner.bucket = wheel.add(owner, loop.time() + 0.02)  # the keep alive moved on: armed again
        else:
            second.set()

    owner.deadline_passed = deadline_passed  # type: ignore[method-assign]
    owner.bucket = wheel.add(owner, loop.time() + 0.01)
    await asyncio.wait_for(second.wait(), 5)
    assert len(owner.reported) == 2 and owner.reported[1][0] == owner.bucket


async def test_cancelled_deadlines_leave_nothing_behind() -> None:
    """Clients come and go with long keep alives: the wheel holds only the deadlines still pending."""
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel()
    kept = Owner(loop)
    wheel.add(kept, loop.time() + 3600)
    for index in range(10_000):
        owner = Owner(loop)
        wheel.cancel(owner, wheel.add(owner, loop.time() + 1000 + index))  # a bucket of its own each
    assert len(wheel) == 1
    assert wheel.entries <= 2 * 1 + 64
