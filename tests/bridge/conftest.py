"""Fixtures for the bridge tests: a Mosquitto upstream on a free port, stopped after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bridge.upstreams import Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    upstream = Mosquitto(tmp_path / "mosquitto").start()
    yield upstream
    upstream.kill()
