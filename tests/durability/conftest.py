"""Fixtures for crash tests: Roost processes that are always killed when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.durability.process import RoostProcess
from tests.helpers import PahoClient


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Remember each phase's outcome on the test item, so that a fixture can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def roost_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], RoostProcess]]:
    """`roost_process("strict")` configures a Roost (free ports, its own data_dir) without starting it.
    Whatever is still running when the test ends is killed; a test that failed prints the end of each log."""
    made: list[RoostProcess] = []

    def factory(durability: str, mqtt: str = "") -> RoostProcess:
        process = RoostProcess(tmp_path / f"roost{len(made)}", durability, mqtt)
        made.append(process)
        return process

    yield factory
    for process in made:
        process.kill()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for process in made:
            print(f"\n--- {process.log_path} (last lines) ---\n{process.log_tail()}")


@pytest.fixture
def paho() -> Iterator[Callable[..., PahoClient]]:
    """`paho(port, client_id, version, ..., cls=PahoClient)`: a connected paho client (any PahoClient
    subclass), stopped when the test ends even if it failed half-way."""
    clients: list[PahoClient] = []

    def factory(port: int, client_id: str, version: int = 5, cls: type[PahoClient] = PahoClient,
                **kwargs: Any) -> PahoClient:
        client = cls(port, client_id=client_id, version=version, **kwargs)
        clients.append(client)
        return client.connect()

    yield factory
    for client in clients:
        client.client.disconnect()  # wakes paho's network thread, so loop_stop() returns at once
        client.client.loop_stop()
