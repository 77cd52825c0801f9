"""A first `roost serve` makes its CA and server certificate without loading cryptography into the serving
process (a short-lived child makes them), and the files it leaves are a working CA and server certificate.

The server runs as a real process, as users start it, so that what the serving process has loaded can be
read from /proc; readiness is its "started" log line, which names the ports the OS chose.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.store import CertificateError, CertificateStore
from tests.dist_helpers import ServeProcess

TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/PID/maps")


def _serve(config: Path) -> ServeProcess:
    """`roost serve` in a process of its own, from this checkout, its JSON log lines read by a thread."""
    return ServeProcess([sys.executable, "-m", "control.cli", "serve", "--config", str(config)], dict(os.environ),
                        timeout=TIMEOUT)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start `roost serve` on free ports with its data in `tmp_path / "data"`; stopped after the test.
    `https=True` (the default) serves HTTPS on the HTTP port, which needs Roost's own server certificate."""
    config = tmp_path / "roost.toml"
    started: list[ServeProcess] = []

    def factory(https: bool = True) -> ServeProcess:
        config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            '[mqtt]\nhost = "127.0.0.1"\nport = 0\n'
            '[http]\nhost = "127.0.0.1"\nport = 0\n'
            f'[tls]\nport = 0\nhttps = {str(https).lower()}\n'
            '[log]\nformat = "json"\n'
        )
        started.append(_serve(config))
        return started[-1]

    yield factory
    for server in started:
        server.kill()


def _mapped_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as maps:
        return {line.split(maxsplit=5)[5].strip() for line in maps if len(line.split(maxsplit=5)) == 6}


def test_first_start_makes_a_ca_and_server_certificate_without_loading_cryptography(
    start: Callable[[], ServeProcess], tmp_path: Path
) -> None:
    serve = start()
    _, http_port = serve.wait_started()

    loaded = [path for path in _mapped_files(serve.process.pid) if "cryptography" in path or "_cffi" in path]
    assert loaded == [], "the serving process loaded cryptography"

    certs = tmp_path / "data" / "certs"
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    for certificate, key_file in ((ca, "ca.key"), (server, "server.key")):
        key = serialization.load_pem_private_key((certs / key_file).read_bytes(), password=None)
        assert key.public_key() == certificate.public_key()

    # A client that trusts only that CA gets through the handshake on 127.0.0.1 (an IP address name).
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    connection = http.client.HTTPSConnection("127.0.0.1", http_port, context=context, timeout=TIMEOUT)
    try:
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_no_certificate_is_made_while_tls_is_off_until_the_ca_is_asked_for(
    start: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    serve = start(https=False)
    _, http_port = serve.wait_started()
    assert not (tmp_path / "data" / "certs").exists()

    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=TIMEOUT)
    try:
        connection.request("GET", "/api/v1/ca.pem")
        response = connection.getresponse()
        pem = response.read()
    finally:
        connection.close()
    assert response.status == 200
    assert pem == (tmp_path / "data" / "certs" / "ca.pem").read_bytes()
    assert x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not (tmp_path / "data" / "certs" / "server.pem").exists()  # no server certificate: nothing serves TLS


def test_start_stops_with_the_reason_when_the_certificates_cannot_be_made(
    start: Callable[[], ServeProcess], tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "certs").write_text("a file where the certificate folder should be")
    serve = start()
    errors = []
    while (line := serve.lines.get(timeout=TIMEOUT)) is not None:
        entry = json.loads(line)
        if entry["level"] == "error":
            errors.append(entry["message"])
    assert serve.process.wait(TIMEOUT) == 1
    reasons = [message for message in errors if message.startswith("cannot start: could not make certificates in ")]
    assert reasons, errors


def test_certificates_made_in_a_child_are_reused_and_renewed(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "certs", in_child=True)
    assert store.ensure_server(["localhost", "127.0.0.1"])
    first = x509.load_pem_x509_certificate(store.server_certificate.read_bytes())
    assert not store.ensure_server(["127.0.0.1", "localhost"])
    later = first.not_valid_after_utc - timedelta(days=10)
    assert later > datetime.now(UTC)
    assert store.ensure_server(["localhost", "127.0.0.1"], now=later)
    renewed = x509.load_pem_x509_certificate(store.server_certificate.read_bytes())
    assert renewed.serial_number != first.serial_number and renewed.not_valid_after_utc > first.not_valid_after_utc
    renewed.verify_directly_issued_by(x509.load_pem_x509_certificate(store.authority().certificate))


def test_a_failed_child_raises_certificate_error_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    store = CertificateStore(tmp_path / "taken" / "certs", in_child=True)
    with pytest.raises(CertificateError, match="NotADirectoryError"):
        store.authority()
