"""The offset/limit window every list takes, checked in one place."""

from __future__ import annotations

__all__ = ["MAX_LIMIT", "check_order", "check_window"]

MAX_LIMIT = 1000


def check_window(offset: int, limit: int) -> None:
    """Refuse a window the caller should never ask for (the control plane validates user input first)."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")
    if not 0 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 0 and {MAX_LIMIT}, not {limit}")


def check_order(order: str) -> str:
    """'asc' or 'desc' as an SQL keyword (safe to put into the statement text)."""
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    return order.upper()
