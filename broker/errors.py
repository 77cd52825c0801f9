"""Roost's error tree: every error Roost raises on purpose derives from `RoostError`.

    RoostError                  root of everything Roost raises deliberately
    ├── ProtocolError           the peer broke an MQTT rule; carries the reason code to answer with
    │   ├── MalformedPacket     bytes that cannot be parsed as the spec says (0x81)
    │   ├── PacketTooLarge      a packet above the maximum packet size (0x95)
    │   └── UnsupportedProtocolVersion   a CONNECT naming a protocol we do not speak (0x84)
    └── ConfigError             a configuration value is wrong; the message names the key

Like h11's `RemoteProtocolError`, a `ProtocolError` says who is at fault (the peer) and carries a hint for
the answer: the MQTT v5 reason code that a DISCONNECT or CONNACK should carry. This module imports nothing,
so the sans-IO codec can use it without pulling in the rest of the broker.
"""

from __future__ import annotations


class RoostError(Exception):
    """The root of every error Roost raises on purpose."""


class ProtocolError(RoostError):
    """The remote peer violated the MQTT protocol.

    `reason_code` is the v5 reason code to close the connection with: 0x82 (Protocol Error) unless a
    subclass or the raiser says otherwise.
    """

    reason_code: int = 0x82

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code


class MalformedPacket(ProtocolError):
    """The bytes cannot be parsed according to the specification (reason code 0x81)."""

    reason_code = 0x81


class PacketTooLarge(ProtocolError):
    """A packet exceeds the maximum packet size in force (reason code 0x95)."""

    reason_code = 0x95


class UnsupportedProtocolVersion(ProtocolError):
    """A CONNECT names a protocol name or level we do not implement (reason code 0x84).

    For MQTT 3.1.1 the CONNACK return code is 0x01 (unacceptable protocol version) [MQTT-3.1.2-2].
    """

    reason_code = 0x84


class ConfigError(RoostError):
    """A configuration file or value is invalid. The message names the offending key."""
