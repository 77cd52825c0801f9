"""Roost's own certificates on disk: made once, owner-only keys, reused, renewed when due or when a host
name is added."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certs.authority import describe
from certs.store import CertificateStore, machine_hosts


def test_first_use_makes_the_ca_and_server_certificate_with_private_keys(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "certs")
    assert store.ensure_server(["mqtt.example.org", "localhost", "127.0.0.1"])
    for path in (store.ca_key, store.server_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    info = describe(store.server_certificate.read_bytes())
    assert "mqtt.example.org" in info.dns_names and "127.0.0.1" in info.ip_addresses
    assert not list(store.directory.glob(".*.tmp"))


def test_later_starts_reuse_them(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "certs")
    store.ensure_server(["localhost"])
    before = store.server_certificate.read_bytes(), store.ca_certificate.read_bytes()
    again = CertificateStore(tmp_path / "certs")
    assert not again.ensure_server(["localhost"])
    assert (again.server_certificate.read_bytes(), again.ca_certificate.read_bytes()) == before


def test_renewed_before_it_ends_and_when_a_host_is_added(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "certs")
    store.ensure_server(["localhost"])
    first = describe(store.server_certificate.read_bytes())
    later = datetime.now(UTC) + (first.not_after - datetime.now(UTC)) - timedelta(days=10)
    assert store.ensure_server(["localhost"], now=later)
    renewed = describe(store.server_certificate.read_bytes())
    assert renewed.serial != first.serial and renewed.not_after > first.not_after
    assert store.ensure_server(["localhost", "broker.example.net"])
    assert "broker.example.net" in describe(store.server_certificate.read_bytes()).dns_names
    assert store.ca_certificate.read_bytes() == CertificateStore(tmp_path / "certs").authority().certificate


def test_machine_hosts_include_the_public_name_localhost_and_loopback() -> None:
    hosts = machine_hosts("Roost.Example.org")
    assert hosts[0] == "roost.example.org"
    assert {"localhost", "127.0.0.1", "::1"} <= set(hosts)
    assert len(hosts) == len(set(hosts))
