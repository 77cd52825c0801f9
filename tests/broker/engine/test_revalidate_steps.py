"""`Broker.revalidate_steps` in time slices, on an injected timer: after an access change the re-check of
a tenant's subscriptions yields once a slice has run its time, whatever a check costs, and removes what
the hooks no longer allow."""

from __future__ import annotations

from broker.codec import Suback, Subscribe, Subscription
from broker.hooks import AnonymousHook
from tests.broker.engine.helpers import World


class StepTimer:
    """A clock that moves 1 ms each time it is read: every subscription check "costs" 1 ms."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def _world_with_subscriptions(count: int) -> tuple[World, AnonymousHook]:
    hook = AnonymousHook(True)
    world = World([hook])
    sub = world.peer()
    sub.connect("sub")
    sub.send(Subscribe(1, tuple(Subscription(f"t/{n}", qos=0) for n in range(count))))
    suback = sub.receive()
    assert isinstance(suback, Suback) and len(suback.reason_codes) == count
    return world, hook


def test_the_recheck_yields_each_time_a_slice_has_run_its_time() -> None:
    world, hook = _world_with_subscriptions(10)
    hook.deny = tuple(f"t/{n}" for n in range(0, 10, 2))  # half of them are no longer allowed
    steps = list(world.broker.revalidate_steps(lambda client: True, seconds=0.0025, timer=StepTimer()))
    # Each check reads the timer once (1 ms), and so does the start of a slice: a slice of 2.5 ms covers
    # three checks. t/0-t/2 (two denied), t/3-t/5 (one), t/6-t/8 (two), then t/9 and the end.
    assert steps == [2, 1, 2, 0]
    assert sorted(world.broker.sessions["sub"].subscriptions) == [f"t/{n}" for n in range(1, 10, 2)]


def test_without_a_slice_the_recheck_runs_in_one_go() -> None:
    world, hook = _world_with_subscriptions(10)
    hook.deny = ("t/3",)
    assert list(world.broker.revalidate_steps(lambda client: True, seconds=0, timer=StepTimer())) == [1]
