"""The console's snapshots, without sockets: a Broker with sessions made by hand. Pages count and cut right,
tenants stay apart, and a scan of many sessions hands the loop back between slices and survives a session
that ends meanwhile."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

from broker import inspect
from broker.core import Broker
from broker.hooks import ClientInfo, HookChain
from broker.session import Message, Session, SubscriptionRecord
from broker.settings import BrokerSettings

T = TypeVar("T")


def _broker(tenants: dict[str, int], subscriptions: int = 3) -> Broker:
    """`count` offline sessions per mount, each with `subscriptions` filters and one shared one."""
    broker = Broker(BrokerSettings(), HookChain([]))
    for mount, count in tenants.items():
        for n in range(count):
            client = ClientInfo(f"c{n}", "user", 5, mount=mount)
            session = Session(client.session_key)
            session.client = client
            broker.sessions[session.key] = session
            for i in range(subscriptions):
                broker.subscribe(session, SubscriptionRecord(f"{mount}s/{n}/{i}", 1))
            broker.subscribe(session, SubscriptionRecord(f"$share/g/{mount}work", 0))
    return broker


def _run(scan: Generator[None, None, T]) -> tuple[T, int]:
    """The page and how many times the scan handed the loop back."""
    slices = 0
    while True:
        try:
            next(scan)
        except StopIteration as done:
            return done.value, slices
        slices += 1


def test_subscription_pages_cut_and_count_within_a_tenant() -> None:
    broker = _broker({"$u1/": 5, "$u2/": 5})
    page, _ = _run(inspect.subscription_page(broker, "$u1/", offset=3, limit=4))
    assert page.total == 20 and page.more
    assert [s.topic_filter for s in page.items] == ["$share/g/work", "s/1/0", "s/1/1", "s/1/2"]
    assert all(s.mount == "$u1/" and not s.online for s in page.items)
    everyone, _ = _run(inspect.subscription_page(broker, None, limit=500))
    assert everyone.total == 40 and not everyone.more
    found, _ = _run(inspect.subscription_page(broker, "$u2/", text="S/4/"))
    assert [s.topic_filter for s in found.items] == ["s/4/0", "s/4/1", "s/4/2"]


def test_shared_groups_are_per_tenant() -> None:
    broker = _broker({"$u1/": 3, "$u2/": 2})
    page, _ = _run(inspect.shared_groups(broker, "$u2/"))
    [group] = page.items
    assert (group.group, group.topic_filter, group.members, group.online) == ("g", "work", ("c0", "c1"), 0)
    everyone, _ = _run(inspect.shared_groups(broker, None))
    assert sorted(len(g.members) for g in everyone.items) == [2, 3]


def test_a_long_scan_yields_between_slices_and_skips_what_ended() -> None:
    broker = _broker({"$u1/": 3 * inspect.SLICE}, subscriptions=1)
    scan = inspect.subscription_page(broker, "$u1/", text="s/", limit=10)
    next(scan)  # one slice done: now a session ends before the scan reaches it
    gone: Any = broker.sessions[f"$u1/\x00c{3 * inspect.SLICE - 1}"]
    broker.remove_session(gone.key)
    page, slices = _run(scan)
    assert slices >= 2  # the loop got the broker back several times
    assert page.total == 3 * inspect.SLICE - 1


def test_retained_pages_stop_one_past_the_page() -> None:
    broker = Broker(BrokerSettings(), HookChain([]))
    for n in range(30):
        broker.publish(Message(f"$u1/r/{n:02d}", b"x", 0, True))
    broker.publish(Message("$u2/r/secret", b"y", 0, True))
    page = inspect.retained_page(broker, "$u1/", "r/#", offset=25, limit=10)
    assert len(page.items) == 5 and not page.more and page.total is None
    assert all(r.topic.startswith("r/") and r.stored_at > 0 for r in page.items)
    assert inspect.retained_page(broker, "$u1/", "#", limit=30).more is False
    assert inspect.retained_topics(broker, "$u1/", "r/secret") == []
