"""broker.tls.server_context: the chain it serves, and handshakes through it with and without a client CA."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from broker.tls import server_context
from broker.tls_chain import chain_with_issuers
from certs.authority import issue_client, issue_server, new_authority


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    authority = new_authority()
    server = issue_server(authority, ["localhost", "127.0.0.1"])
    device = issue_client(authority, "device-1")
    other = new_authority("another CA")
    paths = {
        "ca": authority.certificate, "server": server.certificate, "server_key": server.key,
        "device": device.certificate, "device_key": device.key, "other_ca": other.certificate,
    }
    out = {}
    for name, data in paths.items():
        out[name] = tmp_path / f"{name}.pem"
        out[name].write_bytes(data)
    return out


def test_a_lone_server_certificate_gets_its_issuer_from_the_client_cas(files: dict[str, Path]) -> None:
    chain = chain_with_issuers(files["server"], files["ca"])
    assert chain is not None
    assert chain.count(b"BEGIN CERTIFICATE") == 2
    assert chain.startswith(files["server"].read_bytes().rstrip(b"\n"))
    assert files["ca"].read_bytes().strip() in chain


def test_nothing_is_added_when_the_issuer_is_absent_or_the_chain_is_complete(files: dict[str, Path]) -> None:
    assert chain_with_issuers(files["server"], files["other_ca"]) is None
    full = files["server"].parent / "full.pem"
    full.write_bytes(chain_with_issuers(files["server"], files["ca"]) or b"")
    assert chain_with_issuers(full, files["ca"]) is None  # ends in the self-signed CA already
    assert chain_with_issuers(files["ca"], files["ca"]) is None


def test_an_unreadable_certificate_file_is_reported_by_load_cert_chain(files: dict[str, Path]) -> None:
    missing = files["server"].parent / "missing.pem"
    assert chain_with_issuers(missing, files["ca"]) is None
    with pytest.raises(OSError):
        server_context(missing, files["server_key"], files["ca"])


def _handshake(context: ssl.SSLContext, client: ssl.SSLContext) -> dict:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: dict = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            seen["peer"] = tls.getpeercert()
            tls.sendall(b"ok")
            tls.recv(1)

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as raw, client.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.recv(2) == b"ok"
        tls.sendall(b"x")
    thread.join(10)
    listener.close()
    return seen


@pytest.mark.parametrize("client_cert", [False, True])
def test_the_context_with_a_client_ca_serves_a_verifiable_chain_and_checks_devices(
    files: dict[str, Path], client_cert: bool
) -> None:
    context = server_context(files["server"], files["server_key"], files["ca"])
    client = ssl.create_default_context(cafile=str(files["ca"]))
    if client_cert:
        client.load_cert_chain(str(files["device"]), str(files["device_key"]))
    seen = _handshake(context, client)
    if client_cert:
        assert dict(item[0] for item in seen["peer"]["subject"])["commonName"] == "device-1"
    else:
        assert not seen["peer"]


def test_names_are_read_from_the_der_as_cryptography_reads_them(files: dict[str, Path]) -> None:
    from cryptography import x509

    from broker.tls_chain import _issuer_and_subject

    for name in ("ca", "server", "device", "other_ca"):
        pem = files[name].read_bytes()
        certificate = x509.load_pem_x509_certificate(pem)
        der = ssl.PEM_cert_to_DER_cert(pem.decode())
        assert _issuer_and_subject(der) == (certificate.issuer.public_bytes(), certificate.subject.public_bytes())


@pytest.mark.parametrize("junk", [b"", b"not a pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_a_file_that_is_not_a_certificate_adds_nothing(files: dict[str, Path], junk: bytes) -> None:
    bad = files["server"].parent / "bad.pem"
    bad.write_bytes(junk)
    assert chain_with_issuers(bad, files["ca"]) is None
    assert chain_with_issuers(files["server"], bad) is None


def test_the_serving_side_of_the_chain_needs_no_cryptography() -> None:
    import subprocess
    import sys

    code = "import broker.tls, sys; print(any(m.startswith('cryptography') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
