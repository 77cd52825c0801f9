"""Counters the broker keeps, read by $SYS (and later by metrics and the dashboard).

Plain integer attributes on a slotted object: incrementing one on the hot path costs one attribute store.
"""

from __future__ import annotations

__all__ = ["Stats"]


class Stats:
    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "clients_connected",
        "connections_opened",
        "connections_refused",
        "messages_dropped",
        "messages_expired",
        "messages_received",
        "messages_sent",
        "messages_unrouted",
        "protocol_errors",
        "retained",
        "subscriptions",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
