"""What the engine reports for the dashboard, with no socket: connection events with their reason codes
(`Broker.events`), the PUBLISH packets each client sent, what `broker/inspect.py` reads of an engine, and
the counts `ServerState` keeps when a client leaves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from broker import inspect
from broker.codec import Disconnect, Properties, Publish, Subscribe, Subscription
from broker.engine import Connection
from broker.events import CONNECTED, DISCONNECTED, KICKED, REFUSED
from broker.history import tenant_totals
from broker.hooks import AnonymousHook, AuthResult, ClientInfo, ConnectRequest, Decision, Hook
from broker.registry import ServerState
from broker.service import BrokerService
from tests.broker.engine.helpers import World

VERSIONS = [4, 5]


class _Tenant(Hook):
    """Lets user "t" in, inside the namespace `$u1/`, allowed everything there."""

    def authenticate(self, request: ConnectRequest) -> AuthResult:
        if request.username != "t":
            return super().authenticate(request)
        return AuthResult(Decision.ALLOW, client=ClientInfo(request.client_id, "t", request.protocol_version,
                                                            mount="$u1/"))

    def authorize_publish(self, client: ClientInfo, topic: str) -> Decision:
        return Decision.ALLOW if client.mount else Decision.DEFER

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> Decision:
        return Decision.ALLOW if client.mount else Decision.DEFER


def _events(world: World) -> list[tuple[str, str, int | None]]:
    """(kind, client id, reason code), oldest first."""
    return [(e.kind, e.client_id, e.reason_code) for e in reversed(list(world.broker.events.newest_first()))]


def test_a_connect_and_each_way_of_ending_is_one_event_with_its_reason() -> None:
    world = World()
    polite, willing, old = world.peer(5), world.peer(5), world.peer(4)
    polite.connect("polite")
    willing.connect("willing")
    old.connect("old")
    polite.send(Disconnect())
    willing.send(Disconnect(0x04))  # "disconnect with will message"
    old.send(Disconnect())
    for peer in (polite, willing, old):
        peer.drop()  # the shell closes after the DISCONNECT: the connection ends
    lost = world.peer(5)
    lost.connect("lost")
    lost.drop()  # no DISCONNECT, no server reason: the network went away
    assert _events(world)[3:] == [
        (DISCONNECTED, "polite", 0x00), (DISCONNECTED, "willing", 0x04), (DISCONNECTED, "old", 0x00),
        (CONNECTED, "lost", None), (DISCONNECTED, "lost", None),
    ]
    [gone] = [e for e in world.broker.events.newest_first() if e.client_id == "lost" and e.kind == DISCONNECTED]
    assert gone.reason == "connection lost" and gone.time == world.clock.time()  # the broker's clock


@pytest.mark.parametrize("version", VERSIONS)
def test_the_servers_reasons_for_closing_are_recorded_in_every_version(version: int) -> None:
    """Keep alive (0x8D), a session taken over (0x8E) and a bad topic name (0x90): 3.1.1 hears no
    DISCONNECT, but the event log still says why the server closed it."""
    world = World()
    quiet, first, second, rude = (world.peer(version) for _ in range(4))
    quiet.connect("quiet", keep_alive=10)
    first.connect("twin")
    second.connect("twin")  # takes the session over [MQTT-3.1.4-3]
    rude.connect("rude")
    rude.send(Publish("a/+", b"x"))  # a wildcard in a topic name [MQTT-3.3.2-2]
    world.advance(15.1)
    for peer in (quiet, first, rude):
        peer.drop()
    ended = {(client_id, code) for kind, client_id, code in _events(world) if kind == DISCONNECTED}
    assert ended == {("quiet", 0x8D), ("twin", 0x8E), ("rude", 0x90)}


def test_refusals_name_who_asked_and_why() -> None:
    world = World(hooks=[AnonymousHook(True)])
    stranger, unusual, early = world.peer(5), world.peer(5), world.peer(4)
    assert stranger.connect("guess", username="nobody", password=b"pw").reason_code == 0x86
    unusual.connect("sasl", properties=Properties(authentication_method="SCRAM-SHA-1"))  # [MQTT-4.12.0-1]
    early.send_bytes(b"\x10\x02\x00\x00")  # not a CONNECT anyone can read: who is unknown
    early.drop()
    events = list(world.broker.events.newest_first())
    assert [(e.kind, e.client_id, e.username, e.reason_code) for e in reversed(events)] == [
        (REFUSED, "guess", "nobody", 0x86), (REFUSED, "sasl", None, 0x8C),
    ]
    assert [e.reason for e in events] == ["bad authentication method", "bad user name or password"]


def test_a_connection_never_let_in_leaves_no_event() -> None:
    world = World(connect_timeout=5.0)
    silent = world.peer()
    world.advance(6)
    silent.drop()
    assert _events(world) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_every_publish_a_client_sends_is_counted_plain_runs_included(version: int) -> None:
    world = World()
    sub, pub = world.peer(version), world.peer(version)
    sub.connect("sub")
    pub.connect("pub")
    sub.send(Subscribe(1, (Subscription("c/#", qos=1),)))
    sub.receive()
    # Three plain QoS 0 packets in one read (a run the reader takes whole), then QoS 1 and a retained one.
    pub.send(Publish("c/1", b"a"), Publish("c/2", b"b"), Publish("c/3", b"c"),
             Publish("c/4", b"d", qos=1, packet_id=1), Publish("c/5", b"e", retain=True))
    pub.ping()
    assert pub.engine.messages_received == 5 and pub.engine.messages_sent == 0
    assert sub.engine.messages_received == 0 and sub.engine.messages_sent == 5
    assert len(sub.received()) == 5


def test_inspect_reads_the_engines_public_state_and_passes_watchers_by() -> None:
    world = World(max_keepalive=30)
    peer = world.peer(5)
    peer.connect("dev", keep_alive=0)  # told to use 30 s [MQTT-3.2.2-21]
    peer.send(Publish("x", b"1"))
    peer.ping()
    service = BrokerService(world.broker)
    service.watch("", "#", lambda message: None)
    page = _finish(service.client_page(None))
    [detail] = page.items
    assert (detail.client_id, detail.keep_alive, detail.tls, detail.messages_in, detail.listener) == (
        "dev", 30, False, 1, "tcp")
    assert service.client_counts() == {"": 1}


def test_a_kick_is_an_event_then_its_end_too() -> None:
    world = World()
    peer = world.peer(5)
    peer.connect("victim")
    service = BrokerService(world.broker)
    assert service.kick_client("nobody", "", "admin") is None
    kicked = service.kick_client("victim", "firmware update", "admin")
    assert kicked is not None and kicked.client_id == "victim"
    assert peer.received() == [Disconnect(0x98)]
    peer.drop()
    assert _events(world)[1:] == [(KICKED, "victim", 0x98), (DISCONNECTED, "victim", 0x98)]
    assert service.events()[1].detail == "by admin: firmware update"


@dataclass(eq=False)
class _Open:
    """What `ServerState` holds of a network connection: its engine (the shell's other half is I/O)."""

    engine: Connection
    closed: asyncio.Future[None] = field(default=None)  # type: ignore[assignment]

    def abort(self) -> None:
        raise AssertionError("not shut down here")


def test_a_tenants_totals_keep_what_departed_clients_counted() -> None:
    world = World(hooks=[_Tenant(), AnonymousHook(True)])
    server = ServerState(world.broker)
    stayer, leaver, outsider = world.peer(5), world.peer(5), world.peer(5)
    for peer in (stayer, leaver, outsider):
        server.opened(_Open(peer.engine))
    stayer.connect("stayer", username="t")
    leaver.connect("leaver", username="t")
    outsider.connect("outsider")
    stayer.send(Subscribe(1, (Subscription("#", qos=0),)))
    stayer.receive()
    leaver.send(Publish("a", b"1"), Publish("b", b"2"))
    leaver.ping()
    assert tenant_totals(server) == {"$u1/": (2, 2, 2)}
    [gone] = [c for c in server.connections if c.engine is leaver.engine]
    server.closed(gone)
    leaver.drop()
    assert tenant_totals(server) == {"$u1/": (2, 2, 1)}  # received and sent counts stay with the tenant
    assert server.messages_sent("$u1/") == 2


def _finish(scan: inspect.Scan[inspect.ClientDetail]) -> inspect.Page[inspect.ClientDetail]:
    while True:
        try:
            next(scan)
        except StopIteration as done:
            return done.value

