"""Shared fixtures: a running Roost on free ports in a temporary folder, and client factories."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PahoClient, RoostThread, roost_document


@pytest.fixture
def make_roost(tmp_path: Path) -> Iterator[Callable[..., RoostThread]]:
    """Start a Roost with [mqtt] overrides, e.g. `make_roost(max_keepalive=10)`; stopped after the test."""
    started: list[RoostThread] = []

    def factory(**mqtt: Any) -> RoostThread:
        instance = RoostThread(roost_document(tmp_path / f"roost{len(started)}", **mqtt)).start()
        started.append(instance)
        return instance

    yield factory
    for instance in started:
        instance.stop()
    errors = [error for instance in started for error in instance.loop_errors]
    assert not errors, f"the broker's loop reported exceptions nothing caught: {errors}"


@pytest.fixture
def roost(make_roost: Callable[..., RoostThread]) -> RoostThread:
    """A Roost that lets anonymous clients in (the broker-core tests are about MQTT, not auth)."""
    return make_roost()


@pytest.fixture
def client_factory(roost: RoostThread) -> Iterator[Callable[..., PahoClient]]:
    """Make connected paho clients against `roost`; all are stopped after the test."""
    clients: list[PahoClient] = []

    def factory(client_id: str = "", version: int = 5, connect: bool = True, **kwargs: Any) -> PahoClient:
        client = PahoClient(roost.mqtt_port, client_id=client_id, version=version, **kwargs)
        clients.append(client)
        return client.connect() if connect else client

    yield factory
    for client in clients:
        # DISCONNECT first: it wakes paho's network thread, so loop_stop() returns at once.
        client.client.disconnect()
        client.client.loop_stop()


@pytest.fixture
def mosquitto_clients() -> None:
    """Skip when Debian's mosquitto-clients are missing (the test command installs them)."""
    if shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto-clients not installed")
