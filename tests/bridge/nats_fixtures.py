"""Fixtures for the NATS bridge tests: the nats-server processes of bench/nats_cluster.py, skipped when the
binary is missing, stopped after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.nats_cluster import NatsCluster, NatsServer, NatsUnavailable

__all__ = ["nats_cluster", "nats_mqtt"]


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A running three-node JetStream cluster on 127.0.0.1, stopped after the test."""
    try:
        cluster = NatsCluster(tmp_path / "nats")
    except NatsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nats_mqtt(tmp_path: Path) -> Iterator[NatsServer]:
    """One nats-server with JetStream and its MQTT listener (which needs both and a server_name)."""
    try:
        server = NatsServer(tmp_path / "nats-mqtt", "mqtt0", mqtt=True)
    except NatsUnavailable as exc:
        pytest.skip(str(exc))
    server.write_config([])
    try:
        server.start()
        yield server
    finally:
        server.stop()
