"""Keeps Roost's own CA and server certificate on disk, in `data_dir/certs/`.

    ca.pem  ca.key            the local certificate authority (made once, kept for ten years)
    server.pem  server.key    the server certificate it signed, renewed 30 days before it ends

Private keys are written readable by the owner only (0600, in a 0700 folder), and every file is written
whole to a temporary name and renamed into place, so a reader (the TLS listener reloading) never sees half
a file. The certificates themselves come from the pure functions in `certs.authority`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import ipaddress
import os
import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from certs.keypair import KeyPair

__all__ = ["CertificateStore", "machine_hosts"]


def machine_hosts(public_host: str | None = None) -> list[str]:
    """The names a server certificate should carry: the public host name, `localhost`, this machine's host
    name and its addresses (as the resolver knows them), and the loopback addresses."""
    hosts = [public_host] if public_host else []
    hosts.append("localhost")
    hostname = socket.gethostname()
    if hostname:
        hosts.append(hostname)
        with contextlib.suppress(OSError, UnicodeError):
            for *_, address in socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP):
                hosts.append(str(ipaddress.ip_address(str(address[0]).split("%")[0])))
    hosts += ["127.0.0.1", "::1"]
    unique: list[str] = []
    for host in hosts:
        if host.lower() not in unique:
            unique.append(host.lower())
    return unique


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` atomically with permissions `mode` from the first byte on."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


class CertificateStore:
    """Roost's certificate files in one folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.ca_certificate = self.directory / "ca.pem"
        self.ca_key = self.directory / "ca.key"
        self.server_certificate = self.directory / "server.pem"
        self.server_key = self.directory / "server.key"
        self.check_file = self.directory / "server.check.json"

    def _save(self, pair: KeyPair, certificate: Path, key: Path) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The key first: a certificate on disk always has its key beside it.
        _write(key, pair.key, 0o600)
        _write(certificate, pair.certificate, 0o644)

    def authority(self) -> KeyPair:
        """The local CA, made on first use and read from disk after."""
        if self.ca_certificate.exists() and self.ca_key.exists():
            return KeyPair(self.ca_certificate.read_bytes(), self.ca_key.read_bytes())
        from certs.authority import new_authority

        pair = new_authority()
        self._save(pair, self.ca_certificate, self.ca_key)
        return pair

    def ensure_server(self, hosts: Sequence[str], *, now: datetime | None = None) -> bool:
        """Make sure a valid server certificate for `hosts` signed by the local CA is on disk: issue one if
        there is none, if it ends within 30 days, or if it lacks one of `hosts`. True if one was written."""
        authority = self.authority()
        wanted = sorted({str(ipaddress.ip_address(h)) if _is_ip(h) else h.lower() for h in hosts})
        moment = (now or datetime.now(timezone.utc)).timestamp()
        if self.server_certificate.exists() and self.server_key.exists():
            current = self.server_certificate.read_bytes()
            if self._checked_before(current, authority.certificate, wanted, moment):
                return False  # Same files, same hosts, renewal not due: no need to parse anything.
            from certs.authority import describe, needs_renewal

            info = describe(current)
            names = {name.lower() for name in info.dns_names} | set(info.ip_addresses)
            issuer_matches = _issuer_is(current, authority.certificate)
            if set(wanted) <= names and issuer_matches and not needs_renewal(current, now=now):
                self._remember_check(current, authority.certificate, wanted, info.not_after)
                return False
        from certs.authority import describe, issue_server

        issued = issue_server(authority, hosts, now=now)
        self._save(issued, self.server_certificate, self.server_key)
        self._remember_check(issued.certificate, authority.certificate, wanted, describe(issued.certificate).not_after)
        return True

    # The outcome of the last full check, so that a restart does not import cryptography (several MB of
    # memory on a Raspberry Pi) just to find that nothing changed.
    def _checked_before(self, server_pem: bytes, ca_pem: bytes, hosts: list[str], moment: float) -> bool:
        try:
            record = json.loads(self.check_file.read_text())
        except (OSError, ValueError):
            return False
        return (
            isinstance(record, dict)
            and record.get("server") == _digest(server_pem)
            and record.get("ca") == _digest(ca_pem)
            and record.get("hosts") == hosts
            and isinstance(record.get("renew_after"), (int, float))
            and moment < record["renew_after"]
        )

    def _remember_check(self, server_pem: bytes, ca_pem: bytes, hosts: list[str], not_after: datetime) -> None:
        from certs.authority import RENEW_BEFORE

        record = {
            "server": _digest(server_pem),
            "ca": _digest(ca_pem),
            "hosts": hosts,
            "renew_after": (not_after - RENEW_BEFORE).timestamp(),
        }
        _write(self.check_file, json.dumps(record).encode(), 0o644)

    def issue_client(self, common_name: str) -> KeyPair:
        """A client certificate for a device, signed by the local CA (not stored: the caller hands it over)."""
        from certs.authority import issue_client

        return issue_client(self.authority(), common_name)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _digest(pem: bytes) -> str:
    return hashlib.sha256(pem).hexdigest()


def _issuer_is(certificate_pem: bytes, authority_pem: bytes) -> bool:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    certificate = x509.load_pem_x509_certificate(certificate_pem)
    authority = x509.load_pem_x509_certificate(authority_pem)
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
