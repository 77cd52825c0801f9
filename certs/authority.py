"""A small certificate authority as pure functions: keys and certificates in, PEM bytes out.

Nothing here touches the disk, the network or a subprocess (no `openssl`): every function takes PEM bytes
and plain values and returns PEM bytes or a frozen record, so each rule is testable on its own. Keys are
EC P-256; certificates are X.509 v3 signed with ECDSA-SHA256.

- `new_authority()` makes a self-signed CA (CA:TRUE, pathlen 0, keyCertSign + cRLSign).
- `issue_server()` signs a TLS server certificate with subject alternative names (DNS names and IPs).
- `issue_client()` signs a TLS client certificate whose subject CN is a device id.
- `describe()` reads back what a certificate says (CN, serial, validity, names); `needs_renewal()` says
  whether it is close to its end.

Serial numbers are random 128-bit positive integers (RFC 5280 asks for at most 20 octets and unique per
CA); `serial_text()` is the one textual form Roost stores and compares: upper-case hex without leading zeros,
as Python's `ssl` module reports a peer's `serialNumber` once its padding is dropped.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from certs.keypair import KeyPair
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateInfo",
    "KeyPair",
    "describe",
    "issue_client",
    "issue_server",
    "needs_renewal",
    "new_authority",
    "serial_text",
]

CA_DAYS = 3650
SERVER_DAYS = 397  # the longest lifetime browsers accept for a server certificate
CLIENT_DAYS = 825
RENEW_BEFORE = timedelta(days=30)
# Backdated a little, so a device whose clock is a few minutes behind accepts a certificate made just now.
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    common_name: str | None
    serial: str
    not_before: datetime
    not_after: datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    is_ca: bool


def serial_text(serial: int) -> str:
    """The textual form of a serial number Roost stores and compares."""
    return format(serial, "X")


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(common_name: str, organization: str | None = "Roost") -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _load(authority: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    certificate = x509.load_pem_x509_certificate(authority.certificate)
    key = serialization.load_pem_private_key(authority.key, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    return certificate, key


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(secrets.randbits(127) | 1 << 126)  # positive, 16 bytes, never zero
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def new_authority(common_name: str = "Roost local CA", *, days: int = CA_DAYS, now: datetime | None = None) -> KeyPair:
    """A self-signed certificate authority that may sign end-entity certificates only (pathlen 0)."""
    key = _new_key()
    name = _name(common_name)
    certificate = (
        _builder(name, name, key.public_key(), days, _now(now))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _leaf(
    authority: KeyPair,
    common_name: str,
    usage: x509.ObjectIdentifier,
    days: int,
    now: datetime | None,
    alternative_names: Sequence[x509.GeneralName] = (),
) -> KeyPair:
    ca_certificate, ca_key = _load(authority)
    key = _new_key()
    builder = (
        _builder(_name(common_name), ca_certificate.subject, key.public_key(), days, _now(now))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if alternative_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(alternative_names)), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_server(
    authority: KeyPair, hosts: Sequence[str], *, days: int = SERVER_DAYS, now: datetime | None = None
) -> KeyPair:
    """A TLS server certificate for `hosts` (host names and IP addresses, in any order; duplicates are
    dropped). Its CN is the first host; clients check the subject alternative names."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        host = host.strip().lower()
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return _leaf(authority, hosts[0][:64], ExtendedKeyUsageOID.SERVER_AUTH, days, now, names)


def issue_client(authority: KeyPair, common_name: str, *, days: int = CLIENT_DAYS, now: datetime | None = None) -> KeyPair:
    """A TLS client certificate whose subject CN is `common_name` (a device id, at most 64 characters as
    X.509 allows for a CN)."""
    if not 1 <= len(common_name) <= 64:
        raise ValueError("a certificate's common name must be 1 to 64 characters long")
    return _leaf(authority, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, days, now)


def describe(certificate_pem: bytes) -> CertificateInfo:
    """What the first certificate in `certificate_pem` says about itself."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(address) for address in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(
        common_name=str(common_names[0].value) if common_names else None,
        serial=serial_text(certificate.serial_number),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        dns_names=dns,
        ip_addresses=ips,
        is_ca=is_ca,
    )


def needs_renewal(certificate_pem: bytes, *, before: timedelta = RENEW_BEFORE, now: datetime | None = None) -> bool:
    """Whether the certificate expires within `before` (or already has)."""
    return describe(certificate_pem).not_after - _now(now) <= before


def common_name_and_serial(certificate_der: bytes) -> tuple[str | None, str]:
    """The subject CN and serial (in `serial_text` form) of a DER certificate, as a TLS peer presents it."""
    certificate = x509.load_der_x509_certificate(certificate_der)
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (str(common_names[0].value) if common_names else None), serial_text(certificate.serial_number)
