"""MQTT over TLS with real clients: mosquitto_pub/mosquitto_sub with `--cafile` on Roost's generated CA,
paho-mqtt with a device certificate (mutual TLS), revocation, certificate rotation without a restart, and
what a bad peer costs on the TLS port.

Certificates are made by Roost's own `certs` functions into tmp_path; no `openssl` anywhere. Readiness is
awaited (a printed retained marker, a CONNACK, a reload callback), never slept for.
"""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.codec import Connack, Connect
from certs.authority import KeyPair, issue_server, new_authority
from tests.broker.test_mosquitto_clients import FORMAT, MosquittoSub
from tests.helpers import TIMEOUT, PahoClient, RoostThread, roost_document
from tests.tenant_helpers import Tenant, make_tenant


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tls_roost(tmp_path: Path) -> Iterator[Callable[..., RoostThread]]:
    """Start a Roost with a TLS listener; keyword arguments go to [tls], `mqtt=` to [mqtt]; `uvloop=True`
    serves it on uvloop (as `roost serve` does) instead of asyncio's own loop."""
    started: list[RoostThread] = []

    def factory(mqtt: dict[str, Any] | None = None, uvloop: bool = False, **tls: Any) -> RoostThread:
        document = roost_document(tmp_path / f"roost{len(started)}", **(mqtt or {}))
        document["tls"] = {"host": "127.0.0.1", "port": free_port(), "watch_interval": 0.0, **tls}
        instance = RoostThread(document)
        if uvloop:
            instance.loop.close()
            instance.loop = pytest.importorskip("uvloop").new_event_loop()
        instance.start()
        started.append(instance)
        return instance

    yield factory
    for instance in started:
        instance.stop()


def ca_file(roost: RoostThread) -> Path:
    return roost.config.data_dir / "certs" / "ca.pem"


def tls_port(roost: RoostThread) -> int:
    assert roost.roost is not None and roost.roost.tls_port is not None
    return roost.roost.tls_port


def raw_tls(roost: RoostThread, cafile: Path, **context_options: Any) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(cafile))
    for name, value in context_options.items():
        setattr(context, name, value)
    sock = socket.create_connection(("127.0.0.1", tls_port(roost)), timeout=TIMEOUT)
    return context.wrap_socket(sock, server_hostname="localhost")


def mqtt_connect_over(sock: ssl.SSLSocket, client_id: str = "raw-tls") -> Connack:
    from broker.codec import NEED_DATA, PacketReader, encode

    sock.sendall(encode(Connect(client_id=client_id, protocol_version=5), 5))
    reader = PacketReader(5)
    while True:
        packet = reader.next_packet()
        if packet is not NEED_DATA:
            assert isinstance(packet, Connack)
            return packet
        data = sock.recv(4096)
        assert data, "closed before CONNACK"
        reader.receive_data(data)


# -- real clients ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("mosquitto_clients")
@pytest.mark.parametrize("version", ["311", "5"])
def test_mosquitto_clients_over_tls_with_the_generated_ca(tls_roost, version: str) -> None:
    roost = tls_roost()
    cafile = str(ca_file(roost))
    port = str(tls_port(roost))
    common = ["-h", "localhost", "-p", port, "--cafile", cafile, "-V", version]
    marker = subprocess.run(
        ["mosquitto_pub", *common, "-t", "ready/tls", "-m", "ready", "-r", "-q", "1"],
        capture_output=True, text=True, timeout=TIMEOUT * 2,
    )
    assert marker.returncode == 0, marker.stderr
    sub = MosquittoSub(tls_port(roost), version, ["ready/tls", "tls/#"], "--cafile", cafile, "-F", FORMAT, "-C", "2", "-q", "1")
    try:
        assert sub.line() == "ready/tls|1|1|ready"
        done = subprocess.run(
            ["mosquitto_pub", *common, "-t", "tls/hello", "-m", "over tls", "-q", "1"],
            capture_output=True, text=True, timeout=TIMEOUT * 2,
        )
        assert done.returncode == 0, done.stderr
        code, lines, stderr = sub.finish()
        assert code == 0, stderr
        assert lines == ["tls/hello|1|0|over tls"]
    finally:
        sub.stop()


@pytest.mark.usefixtures("mosquitto_clients")
def test_mosquitto_refuses_a_server_it_cannot_verify(tls_roost, tmp_path: Path) -> None:
    roost = tls_roost()
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(new_authority("Someone else").certificate)
    done = subprocess.run(
        ["mosquitto_pub", "-h", "localhost", "-p", str(tls_port(roost)), "--cafile", str(stranger),
         "-t", "x", "-m", "y"],
        capture_output=True, text=True, timeout=TIMEOUT * 2,
    )
    assert done.returncode != 0


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_tls_1_2_and_1_3(tls_roost, uvloop: bool) -> None:
    roost = tls_roost(uvloop=uvloop)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        with raw_tls(roost, ca_file(roost), minimum_version=version, maximum_version=version) as sock:
            assert sock.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            assert mqtt_connect_over(sock, f"raw-{version.name}").reason_code == 0


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_a_reconnecting_client_resumes_its_session_with_the_ticket_it_was_given(tls_roost, uvloop: bool) -> None:
    roost = tls_roost(uvloop=uvloop)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=str(ca_file(roost)))
        context.minimum_version = context.maximum_version = version
        session: ssl.SSLSession | None = None
        for attempt in range(3):
            sock = socket.create_connection(("127.0.0.1", tls_port(roost)), timeout=TIMEOUT)
            with context.wrap_socket(sock, server_hostname="localhost", session=session) as tls:
                assert mqtt_connect_over(tls, f"again-{version.name}").reason_code == 0  # the ticket came before it
                assert tls.session_reused == (attempt > 0)
                assert tls.session is not None and tls.session.has_ticket
                session = tls.session


# -- device certificates --------------------------------------------------------------------------------------


def device_with_certificate(tenant: Tenant, tmp_path: Path, device_id: str) -> tuple[int, Path, Path]:
    project = tenant.project(f"p-{device_id}")
    tenant.topic(project, "sensors/#")
    tenant.device(project, device_id)
    device = tenant.roost.run(tenant.services.context.store.devices.get_by_device_id(device_id))
    assert device is not None
    created = tenant.roost.run(tenant.services.devices.issue_certificate(tenant.user, device.id))
    certfile, keyfile = tmp_path / f"{device_id}.pem", tmp_path / f"{device_id}.key"
    certfile.write_bytes(created.issued.certificate)
    keyfile.write_bytes(created.issued.key)
    return device.id, certfile, keyfile


def cert_client(roost: RoostThread, device_id: str, certfile: Path | None, keyfile: Path | None,
                cafile: Path | None = None, **kwargs: Any) -> PahoClient:
    client = PahoClient(tls_port(roost), client_id=device_id, **kwargs)
    client.client.tls_set(ca_certs=str(cafile or ca_file(roost)), certfile=certfile and str(certfile),
                          keyfile=keyfile and str(keyfile))
    return client


@pytest.fixture
def secure(tls_roost) -> RoostThread:
    return tls_roost(mqtt={"allow_anonymous": False})


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_a_device_certificate_logs_the_device_in_without_a_password(tls_roost, tmp_path: Path, uvloop: bool) -> None:
    secure = tls_roost(mqtt={"allow_anonymous": False}, uvloop=uvloop)
    alice = make_tenant(secure, "alice")
    _, certfile, keyfile = device_with_certificate(alice, tmp_path, "thermo-1")
    client = cert_client(secure, "thermo-1", certfile, keyfile).connect()
    client.subscribe("sensors/#", qos=1)
    client.publish("sensors/t", b"21.5", qos=1)
    assert client.expect().payload == b"21.5"
    assert secure.call(lambda: secure.roost.service.clients()[0].username) == "thermo-1"  # type: ignore[union-attr]
    client.disconnect()
    # The client id must still be the device_id.
    wrong = cert_client(secure, "not-thermo", certfile, keyfile)
    wrong.connect(expect_success=False)
    assert wrong.connack is not None and wrong.connack[1].value == 0x85
    wrong.client.loop_stop()
    # Without a certificate and without a password: refused.
    bare = cert_client(secure, "thermo-1", None, None)
    bare.connect(expect_success=False)
    assert bare.connack is not None and bare.connack[1].is_failure
    bare.client.loop_stop()


def test_revoking_the_certificate_disconnects_and_refuses_it(secure, tmp_path: Path) -> None:
    alice = make_tenant(secure, "alice")
    row_id, certfile, keyfile = device_with_certificate(alice, tmp_path, "cam-1")
    client = cert_client(secure, "cam-1", certfile, keyfile).connect()
    secure.run(alice.services.devices.revoke_certificate(alice.user, row_id))
    assert client.disconnected.wait(TIMEOUT)
    assert client.disconnect_reason.value == 0x98  # Administrative action
    client.client.loop_stop()
    again = cert_client(secure, "cam-1", certfile, keyfile)
    again.connect(expect_success=False)
    assert again.connack is not None and again.connack[1].value == 0x86
    again.client.loop_stop()


def test_reissuing_deactivating_or_deleting_the_device_disconnects(secure, tmp_path: Path) -> None:
    alice = make_tenant(secure, "alice")
    row_id, certfile, keyfile = device_with_certificate(alice, tmp_path, "dev-1")
    client = cert_client(secure, "dev-1", certfile, keyfile).connect()
    # A new certificate replaces the old one: the old one's connection goes.
    new = secure.run(alice.services.devices.issue_certificate(alice.user, row_id))
    assert client.disconnected.wait(TIMEOUT)
    client.client.loop_stop()
    certfile.write_bytes(new.issued.certificate)
    keyfile.write_bytes(new.issued.key)
    client = cert_client(secure, "dev-1", certfile, keyfile).connect()
    secure.run(alice.services.devices.update(alice.user, row_id, status="inactive"))
    assert client.disconnected.wait(TIMEOUT)
    client.client.loop_stop()
    refused = cert_client(secure, "dev-1", certfile, keyfile)
    refused.connect(expect_success=False)
    assert refused.connack is not None and refused.connack[1].value == 0x87
    refused.client.loop_stop()
    secure.run(alice.services.devices.update(alice.user, row_id, status="offline"))
    client = cert_client(secure, "dev-1", certfile, keyfile).connect()
    secure.run(alice.services.devices.delete(alice.user, row_id))
    assert client.disconnected.wait(TIMEOUT)
    client.client.loop_stop()


def test_a_certificate_from_another_ca_fails_the_handshake(secure, tmp_path: Path) -> None:
    stranger = new_authority("Someone else")
    from certs.authority import issue_client

    forged = issue_client(stranger, "thermo-1")
    (tmp_path / "f.pem").write_bytes(forged.certificate)
    (tmp_path / "f.key").write_bytes(forged.key)
    client = cert_client(secure, "thermo-1", tmp_path / "f.pem", tmp_path / "f.key")
    with pytest.raises((ssl.SSLError, OSError, AssertionError)):
        client.connect()
    client.client.loop_stop()


# -- rotation -------------------------------------------------------------------------------------------------


def write_pair(pair: KeyPair, cert: Path, key: Path) -> None:
    key.write_bytes(pair.key)
    cert.write_bytes(pair.certificate)


def reloaded(roost: RoostThread) -> threading.Event:
    event = threading.Event()
    assert roost.roost is not None
    roost.call(lambda: roost.roost.tls.on_reload.append(event.set))  # type: ignore[union-attr]
    return event


@pytest.mark.parametrize("how", ["sighup", "file_change"])
def test_a_rotated_certificate_is_served_to_new_connections_while_old_ones_stay(tls_roost, tmp_path: Path,
                                                                                how: str) -> None:
    first_ca, second_ca = new_authority("First CA"), new_authority("Second CA")
    for name, ca in (("first", first_ca), ("second", second_ca)):
        (tmp_path / f"{name}-ca.pem").write_bytes(ca.certificate)
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    write_pair(issue_server(first_ca, ["localhost", "127.0.0.1"]), cert, key)
    roost = tls_roost(mqtt={"allow_anonymous": True}, cert_file=str(cert), key_file=str(key),
                      watch_interval=0.05 if how == "file_change" else 0.0)
    old = PahoClient(tls_port(roost), client_id="old")
    old.client.tls_set(ca_certs=str(tmp_path / "first-ca.pem"))
    old.connect()
    old.subscribe("rot/#", qos=1)

    done = reloaded(roost)
    write_pair(issue_server(second_ca, ["localhost", "127.0.0.1"]), cert, key)
    if how == "sighup":
        assert roost.call(roost.roost.reload_certificates)  # type: ignore[union-attr]
    assert done.wait(TIMEOUT)

    with raw_tls(roost, tmp_path / "second-ca.pem") as sock:
        assert mqtt_connect_over(sock, "new").reason_code == 0
    with pytest.raises(ssl.SSLCertVerificationError):
        raw_tls(roost, tmp_path / "first-ca.pem")
    # The connection made before the rotation is still up and served.
    old.publish("rot/x", b"still here", qos=1)
    assert old.expect().payload == b"still here"
    old.disconnect()


def test_own_certificate_is_made_once_and_reused(tls_roost) -> None:
    first = tls_roost()
    folder = first.config.data_dir / "certs"
    assert oct((folder / "server.key").stat().st_mode & 0o777) == "0o600"
    assert oct((folder / "ca.key").stat().st_mode & 0o777) == "0o600"
    before = (folder / "server.pem").read_bytes(), (folder / "ca.pem").read_bytes()
    first.stop()
    again = RoostThread(
        {"data_dir": str(first.config.data_dir), "mqtt": {"host": "127.0.0.1", "port": 0},
         "http": {"host": "127.0.0.1", "port": 0}, "tls": {"host": "127.0.0.1", "port": free_port()}}
    ).start()
    try:
        assert ((folder / "server.pem").read_bytes(), (folder / "ca.pem").read_bytes()) == before
    finally:
        again.stop()


# -- bad peers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_a_plain_text_client_on_the_tls_port_is_closed_and_logged_once(tls_roost, caplog, uvloop: bool) -> None:
    roost = tls_roost(uvloop=uvloop)
    caplog.set_level(logging.INFO, logger="roost.listeners")
    with socket.create_connection(("127.0.0.1", tls_port(roost)), timeout=TIMEOUT) as sock:
        from broker.codec import encode

        own_address = "%s:%d" % sock.getsockname()
        sock.sendall(encode(Connect(client_id="plain", protocol_version=4), 4))
        while sock.recv(4096):  # an alert at most, then the close
            pass
    assert roost.call(lambda: roost.roost.tls_listener.handshake_failures) == 1  # type: ignore[union-attr]
    failures = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert len(failures) == 1
    assert own_address in failures[0].getMessage()  # the peer is named, though it is read after the failure


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_a_silent_client_is_closed_after_the_handshake_timeout(tls_roost, uvloop: bool) -> None:
    roost = tls_roost(handshake_timeout=0.3, uvloop=uvloop)
    with socket.create_connection(("127.0.0.1", tls_port(roost)), timeout=TIMEOUT) as sock:
        assert sock.recv(4096) == b""  # closed by Roost well before our own timeout
    assert roost.call(lambda: roost.roost.tls_listener.handshake_failures) == 1  # type: ignore[union-attr]
