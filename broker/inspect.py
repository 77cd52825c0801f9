"""Read-only snapshots of the broker for the dashboard: clients with their details, subscriptions, shared
groups and retained messages, one page at a time.

Everything here runs on the event loop, between two packets, so a page must not hold the broker up however
large the broker is: a page walks the broker's dicts once (no sort), a slice of `SLICE` at a time (`Scan`),
and builds records only for the rows it returns; retained messages are walked through the topic trie and
the walk stops one row past the page. The
snapshots are frozen records, never live objects, so a view cannot change the broker by accident.

`mount` narrows a snapshot to one tenant's namespace (topics and filters are then given as the tenant
names them, the mount point taken out); None is the whole broker, as an administrator sees it.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Generic, TypeVar

from broker.codec.topics import parse_shared
from broker.engine import Connection

if TYPE_CHECKING:
    from broker.core import Broker
    from broker.session import Message, Session, SubscriptionRecord

__all__ = ["ClientDetail", "Page", "RetainedItem", "Scan", "SharedGroupView", "SubscriptionView",
           "client_page", "retained_page", "shared_groups", "subscription_page"]

T = TypeVar("T")

# The most rows one page may ask for.
MAX_PAGE = 500
# How much of the broker a scan looks at (connections, or sessions and their subscriptions) before it
# hands the event loop back to the broker's clients (see `Scan`).
SLICE = 250


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Rows `offset` .. `offset + len(items)` of a view; `total` is None where counting would mean walking
    everything (retained messages), and `more` says whether a next page exists."""

    items: list[T]
    total: int | None
    more: bool


# A scan of the broker, a slice at a time: each `next()` does one slice, and the page is the generator's
# return value. Between slices the caller lets the event loop run (control/api/paging.py `finish`), so
# listing 100,000 subscriptions never holds the broker's other clients up for more than one slice. A scan
# walks a list of references taken when it starts; what left meanwhile is skipped.
Scan = Generator[None, None, "Page[T]"]


@dataclass(frozen=True, slots=True)
class ClientDetail:
    session_key: str
    client_id: str
    username: str | None
    mount: str
    protocol_version: int
    remote_address: str
    listener: str
    tls: bool
    keep_alive: int
    connected_at: float
    subscriptions: int
    inflight: int
    queued: int
    messages_in: int
    messages_out: int


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    session_key: str
    client_id: str
    mount: str
    topic_filter: str  # as the client named it ($share/... included), the mount point taken out
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int
    subscription_id: int | None
    share_group: str | None
    online: bool


@dataclass(frozen=True, slots=True)
class SharedGroupView:
    mount: str
    group: str
    topic_filter: str  # the plain filter, the mount point taken out
    members: tuple[str, ...]  # client ids
    online: int


@dataclass(frozen=True, slots=True)
class RetainedItem:
    topic: str  # as the tenant names it (mount None: the broker's own topic, tenant prefix included)
    mount: str
    payload: bytes
    qos: int
    stored_at: float
    expires_at: float | None


def _limit(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))


def _slice(rows: Iterable[T], offset: int, limit: int) -> tuple[list[T], bool]:
    """Rows offset .. offset + limit of an iterable, and whether there is one more."""
    taken = list(islice(rows, max(0, offset), max(0, offset) + limit + 1))
    return taken[:limit], len(taken) > limit


def _unmount(name: str, mount: str) -> str:
    return name[len(mount):] if mount and name.startswith(mount) else name


def client_page(broker: Broker, mount: str | None, text: str = "", offset: int = 0,
                limit: int = 50) -> Scan[ClientDetail]:
    """Connected clients in the order they arrived, those of `mount` only, those whose client id, user
    name or address contains `text` (any case)."""
    limit = _limit(limit)
    offset = max(0, offset)
    needle = text.casefold()
    matching: list[Connection] = []  # references only: the rows are built for the page alone
    for n, connection in enumerate(list(broker.connections.values())):
        if n % SLICE == SLICE - 1:
            yield
        # The control plane's watchers are no MQTT connection; a session None: gone meanwhile.
        if not isinstance(connection, Connection) or connection.session is None:
            continue
        client = connection.client
        assert client is not None  # a connection is in `connections` only once it was let in
        if mount is not None and client.mount != mount:
            continue
        if needle and not any(needle in value.casefold() for value in
                              (client.client_id, client.username or "", connection.remote_address)):
            continue
        matching.append(connection)
    # A client may have left while a later slice was scanned: its row is left out rather than made.
    items = [_detail(connection) for connection in matching[offset:offset + limit] if connection.session is not None]
    return Page(items, len(matching), offset + limit < len(matching))


def client_counts(broker: Broker) -> dict[str, int]:
    """Connected clients by mount: one pass, no record made (a count the Overview asks for every 2 s)."""
    counts: dict[str, int] = {}
    for connection in broker.connections.values():
        if isinstance(connection, Connection) and connection.session is not None:
            counts[connection.mount] = counts.get(connection.mount, 0) + 1
    return counts


def _detail(c: Connection) -> ClientDetail:
    """One connected client, from its protocol engine's public attributes (set by the engine and its
    shell: `tls`, `keep_alive` as agreed at CONNECT, the PUBLISH counts)."""
    client, session = c.client, c.session
    assert client is not None and session is not None
    return ClientDetail(
        session_key=client.session_key, client_id=client.client_id, username=client.username, mount=client.mount,
        protocol_version=client.protocol_version, remote_address=c.remote_address, listener=c.listener,
        tls=c.tls or c.listener == "tls", keep_alive=c.keep_alive, connected_at=c.connected_at,
        subscriptions=len(session.subscriptions), inflight=len(session.inflight), queued=len(session.queue),
        messages_in=c.messages_received, messages_out=c.messages_sent,
    )


def _sessions(broker: Broker, mount: str | None) -> Iterator[Session]:
    """The sessions of `mount` (None: all), from a list of references taken now (one copy, in C): a scan
    goes on over it while the broker changes its dict."""
    for session in list(broker.sessions.values()):
        client = session.client
        if client is not None and not session.key.startswith("\x00") and (mount is None or client.mount == mount):
            yield session


def subscription_page(broker: Broker, mount: str | None, text: str = "", offset: int = 0,
                      limit: int = 50) -> Scan[SubscriptionView]:
    """Every subscription of every session (connected or not), session by session; `text` is looked for
    in the filter and the client id. A session wholly before or after the page is only counted."""
    limit = _limit(limit)
    offset = max(0, offset)
    needle = text.casefold()
    connections = broker.connections
    total = work = 0
    page: list[SubscriptionView] = []
    for session in _sessions(broker, mount):
        work += 1 + (len(session.subscriptions) if needle else 0)
        if work >= SLICE:
            work = 0
            yield
        client = session.client
        if client is None:  # ended meanwhile
            continue
        records: Iterable[SubscriptionRecord] = session.subscriptions.values()
        if needle:
            named_client = needle in client.client_id.casefold()
            records = [r for r in records if named_client or needle in r.topic_filter.casefold()]
            count = len(records)
        else:
            count = len(session.subscriptions)
        if total + count <= offset or len(page) >= limit:
            total += count
            continue
        for record in list(records):
            if offset <= total < offset + limit:
                page.append(_subscription(session, client.client_id, client.mount, record, session.key in connections))
            total += 1
    return Page(page, total, offset + limit < total)


def _subscription(session: Session, client_id: str, mount: str, record: SubscriptionRecord,
                  online: bool) -> SubscriptionView:
    group, plain = parse_shared(record.topic_filter)
    named = _unmount(plain, mount)
    return SubscriptionView(
        session.key, client_id, mount, named if group is None else f"$share/{group}/{named}", record.qos,
        record.no_local, record.retain_as_published, record.retain_handling, record.subscription_id, group, online)


def shared_groups(broker: Broker, mount: str | None, offset: int = 0, limit: int = 50) -> Scan[SharedGroupView]:
    """Shared subscription groups with their members, in the order they were first seen."""
    limit = _limit(limit)
    groups: dict[tuple[str, str, str], list[str]] = {}
    online: dict[tuple[str, str, str], int] = {}
    work = 0
    for session in _sessions(broker, mount):
        work += 1 + len(session.subscriptions)
        if work >= SLICE:
            work = 0
            yield
        client = session.client
        if client is None:
            continue
        for topic_filter in list(session.subscriptions):
            if not topic_filter.startswith("$share/"):
                continue
            group, plain = parse_shared(topic_filter)
            assert group is not None
            key = (client.mount, group, _unmount(plain, client.mount))
            groups.setdefault(key, []).append(client.client_id)
            online[key] = online.get(key, 0) + (session.key in broker.connections)
    keys = list(groups)
    chosen = keys[max(0, offset):max(0, offset) + limit]
    items = [SharedGroupView(k[0], k[1], k[2], tuple(groups[k]), online[k]) for k in chosen]
    return Page(items, len(keys), offset + limit < len(keys))


def retained_page(broker: Broker, mount: str | None, topic_filter: str = "#", offset: int = 0,
                  limit: int = 50) -> Page[RetainedItem]:
    """Retained messages matching `topic_filter` (inside `mount`; administrators: `#` is every retained
    message, `$` topics and every tenant's included). The trie is walked only as far as the page."""
    limit = _limit(limit)
    store = broker.retained
    if mount is None and topic_filter == "#":
        found: Iterator[tuple[str, Message]] = store.items()
    else:
        found = store.match((mount or "") + topic_filter)
    rows, more = _slice(found, offset, limit)
    items = []
    for topic, message in rows:
        items.append(RetainedItem(_unmount(topic, mount or ""), mount or "", message.payload, message.qos,
                                  store.since(topic) or 0.0, message.expires_at))
    return Page(items, None, more)


def retained_topics(broker: Broker, mount: str | None, topic_filter: str) -> list[str]:
    """The broker topics of every retained message matching a filter (for a delete of all of them)."""
    if mount is None and topic_filter == "#":
        return [topic for topic, _message in broker.retained.items()]
    return [topic for topic, _message in broker.retained.match((mount or "") + topic_filter)]
