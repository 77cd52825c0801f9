"""End-to-end smoke tests through real sockets with paho-mqtt in both protocol versions."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("version", [4, 5])
def test_publish_reaches_subscriber(client_factory, version: int) -> None:
    sub = client_factory("sub", version=version)
    granted = sub.subscribe("smoke/#", qos=1)
    assert [int(getattr(code, "value", code)) for code in granted] == [1]
    pub = client_factory("pub", version=version)
    pub.publish("smoke/a", b"hello", qos=1)
    message = sub.expect()
    assert (message.topic, message.payload, message.qos) == ("smoke/a", b"hello", 1)
