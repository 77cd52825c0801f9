"""The pure certificate functions: what each certificate says, who signed it, and when it is due."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs.authority import (
    common_name_and_serial,
    describe,
    issue_client,
    issue_server,
    needs_renewal,
    new_authority,
)


@pytest.fixture(scope="module")
def authority():
    return new_authority("Test CA")


def test_the_authority_is_a_ca_with_an_ec_p256_key(authority) -> None:
    info = describe(authority.certificate)
    assert info.is_ca and info.common_name == "Test CA"
    certificate = x509.load_pem_x509_certificate(authority.certificate)
    assert certificate.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert info.not_after - info.not_before > timedelta(days=3000)


def test_a_server_certificate_names_every_host_and_verifies(authority, tmp_path) -> None:
    pair = issue_server(authority, ["mqtt.example.org", "localhost", "LOCALHOST", "192.0.2.7", "::1"])
    info = describe(pair.certificate)
    assert info.dns_names == ("mqtt.example.org", "localhost")
    assert info.ip_addresses == ("192.0.2.7", "::1")
    assert not info.is_ca and info.common_name == "mqtt.example.org"
    x509.load_pem_x509_certificate(pair.certificate).verify_directly_issued_by(
        x509.load_pem_x509_certificate(authority.certificate)
    )
    # The standard library accepts the pair as a server identity.
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(pair.certificate)
    key.write_bytes(pair.key)
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)


def test_a_client_certificate_carries_the_device_id_and_a_unique_serial(authority) -> None:
    first, second = issue_client(authority, "thermo-1"), issue_client(authority, "thermo-1")
    a, b = describe(first.certificate), describe(second.certificate)
    assert a.common_name == b.common_name == "thermo-1"
    assert a.serial != b.serial and a.serial == a.serial.upper() and not a.serial.startswith("0")
    der = x509.load_pem_x509_certificate(first.certificate).public_bytes(Encoding.DER)
    assert common_name_and_serial(der) == ("thermo-1", a.serial)
    eku = x509.load_pem_x509_certificate(first.certificate).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku.value


@pytest.mark.parametrize("name", ["", "x" * 65])
def test_a_client_name_must_fit_a_common_name(authority, name: str) -> None:
    with pytest.raises(ValueError):
        issue_client(authority, name)


def test_renewal_is_due_thirty_days_before_the_end(authority) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    pair = issue_server(authority, ["localhost"], days=90, now=now)
    assert not needs_renewal(pair.certificate, now=now + timedelta(days=59))
    assert needs_renewal(pair.certificate, now=now + timedelta(days=61))
    assert needs_renewal(pair.certificate, now=now + timedelta(days=400))
