"""Timestamps as the database stores them: ISO-8601 UTC text with milliseconds and a `Z`.

One fixed format ("2020-01-18T19:11:26.413Z", as the /v1/mqtt API shows it) means the strings sort in
time order, so SQL can compare and index them (`expires_at < ?`) without parsing.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_timestamp", "hour_key", "parse_timestamp", "utc_now"]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """`moment` as stored: UTC, millisecond precision, `Z` suffix. A naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """The inverse of `format_timestamp` (it also accepts any ISO-8601 form `fromisoformat` reads)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def hour_key(moment: datetime) -> str:
    """The quota bucket `moment` falls in, e.g. '2026-11-22T21' (UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H")
