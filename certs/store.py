"""Keeps Roost's own CA and server certificate on disk, in `data_dir/certs/`.

    ca.pem  ca.key            the local certificate authority (made once, kept for ten years)
    server.pem  server.key    the server certificate it signed, renewed 30 days before it ends

Private keys are written readable by the owner only (0600, in a 0700 folder), and every file is written
whole to a temporary name and renamed into place, so a reader (the TLS listener reloading) never sees half
a file. The certificates themselves come from the pure functions in `certs.authority`.

Making a key or a certificate needs `cryptography`, whose import costs several MB that stay with the
process for its life. So a process that has not loaded it (`roost serve`) makes them in a short-lived
child, `python -m certs.generate`, which writes the files itself; checking that the files on disk are
still good needs no cryptography at all once a full check has passed (see `_checked_before`). A process
that has loaded cryptography already (the CLI issuing a device certificate, the tests) makes them itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import ipaddress
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from broker.errors import RoostError
from certs.keypair import KeyPair

__all__ = ["CertificateError", "CertificateStore", "machine_hosts"]

# Generous: a Raspberry Pi Zero takes a few seconds to start Python and import cryptography.
_CHILD_TIMEOUT = 120.0


class CertificateError(RoostError):
    """Roost's own certificates could not be made; the message says why (the child's own words)."""


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
    """Roost's certificate files in one folder.

    `in_child` says where keys and certificates are made: True in a child process, False here, None (the
    default) in a child unless this process has loaded cryptography already.
    """

    def __init__(self, directory: Path, *, in_child: bool | None = None) -> None:
        self.directory = Path(directory)
        self.ca_certificate = self.directory / "ca.pem"
        self.ca_key = self.directory / "ca.key"
        self.server_certificate = self.directory / "server.pem"
        self.server_key = self.directory / "server.key"
        self.check_file = self.directory / "server.check.json"
        self._in_child = in_child

    def _save(self, pair: KeyPair, certificate: Path, key: Path) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The key first: a certificate on disk always has its key beside it.
        _write(key, pair.key, 0o600)
        _write(certificate, pair.certificate, 0o644)

    def _has_authority(self) -> bool:
        return self.ca_certificate.exists() and self.ca_key.exists()

    def authority(self) -> KeyPair:
        """The local CA, made on first use and read from disk after."""
        if not self._has_authority():
            if self._generate_in_child():
                self._run_child("authority")
            else:
                self._make_authority()
        return KeyPair(self.ca_certificate.read_bytes(), self.ca_key.read_bytes())

    def ensure_server(self, hosts: Sequence[str], *, now: datetime | None = None) -> bool:
        """Make sure a valid server certificate for `hosts` signed by the local CA is on disk (and the CA
        too): issue one if there is none, if it ends within 30 days, or if it lacks one of `hosts`. True if
        one was written."""
        wanted = _normalized(hosts)
        moment = (now or datetime.now(timezone.utc)).timestamp()
        if self._checked_before(wanted, moment):
            return False  # Same files, same hosts, renewal not due: no need to parse anything.
        if self._generate_in_child():
            when = ["--now", now.isoformat()] if now is not None else []
            return self._run_child("server", *when, "--", *hosts) == "issued"
        return self.check_and_issue_server(hosts, now=now)

    def issue_client(self, common_name: str) -> KeyPair:
        """A client certificate for a device, signed by the local CA (not stored: the caller hands it over).
        Made in this process: cryptography is loaded from here on."""
        from certs.authority import issue_client

        return issue_client(self.authority(), common_name)

    # -- in this process (cryptography imported here) ------------------------------------------------------

    def _make_authority(self) -> None:
        from certs.authority import new_authority

        self._save(new_authority(), self.ca_certificate, self.ca_key)

    def check_and_issue_server(self, hosts: Sequence[str], *, now: datetime | None = None) -> bool:
        """`ensure_server`'s full check, in this process: parse the certificate on disk, issue a new one if
        it is missing, due, lacks a host or was not signed by the local CA. True if one was written."""
        from certs.authority import describe, issue_server, needs_renewal

        if not self._has_authority():
            self._make_authority()
        authority = KeyPair(self.ca_certificate.read_bytes(), self.ca_key.read_bytes())
        wanted = _normalized(hosts)
        if self.server_certificate.exists() and self.server_key.exists():
            current = self.server_certificate.read_bytes()
            info = describe(current)
            names = {name.lower() for name in info.dns_names} | set(info.ip_addresses)
            issuer_matches = _issuer_is(current, authority.certificate)
            if set(wanted) <= names and issuer_matches and not needs_renewal(current, now=now):
                self._remember_check(current, authority.certificate, wanted, info.not_after)
                return False
        issued = issue_server(authority, hosts, now=now)
        self._save(issued, self.server_certificate, self.server_key)
        self._remember_check(issued.certificate, authority.certificate, wanted, describe(issued.certificate).not_after)
        return True

    # -- in a child process ------------------------------------------------------------------------------------

    def _generate_in_child(self) -> bool:
        if self._in_child is not None:
            return self._in_child
        return "cryptography" not in sys.modules

    def _run_child(self, *arguments: str) -> str:
        """Run `python -m certs.generate DIRECTORY ARGUMENTS...` and return what it printed.

        The child gets this process's interpreter and import path (as multiprocessing's spawn does), so it
        finds Roost and cryptography wherever they live: a virtualenv, a source tree, the single file's
        unpacked folder. `-P`: the working directory is not put in front of that path."""
        command = [sys.executable, "-P", "-m", "certs.generate", str(self.directory), *arguments]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry)}
        try:
            done = subprocess.run(
                command, env=environment, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=_CHILD_TIMEOUT,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise CertificateError(f"could not make certificates in {self.directory}: {exc}") from exc
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            reason = lines[-1] if lines else f"the generator exited with status {done.returncode}"
            raise CertificateError(f"could not make certificates in {self.directory}: {reason}")
        return done.stdout.strip()

    # -- the outcome of the last full check ----------------------------------------------------------------
    # Kept so that a restart does not import cryptography (several MB of memory on a Raspberry Pi) just to
    # find that nothing changed.

    def _checked_before(self, hosts: list[str], moment: float) -> bool:
        try:
            record = json.loads(self.check_file.read_text())
            server_pem = self.server_certificate.read_bytes()
            ca_pem = self.ca_certificate.read_bytes()
            if not (self.server_key.exists() and self.ca_key.exists()):
                return False
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


def _normalized(hosts: Sequence[str]) -> list[str]:
    """The hosts as a certificate lists them: addresses in canonical form, names in lower case, sorted."""
    return sorted({str(ipaddress.ip_address(h)) if _is_ip(h) else h.lower() for h in hosts})


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
