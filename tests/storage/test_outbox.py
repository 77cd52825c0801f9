"""The bridge outbox on its own: what is acknowledged is on disk, what comes back after a restart, and
the caps (messages, bytes, age) with drop-oldest."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.outbox import Outbox, OutboxEntry, open_outbox, outbox_path


@contextlib.asynccontextmanager
async def running(folder: Path, **limits: float) -> AsyncIterator[Outbox]:
    outbox = await open_outbox(folder, "cloud", **limits)
    task = asyncio.create_task(outbox.run())
    try:
        yield outbox
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await outbox.close()


async def committed(outbox: Outbox) -> None:
    done = asyncio.Event()
    outbox.when_committed(done.set)
    await asyncio.wait_for(done.wait(), 5)


async def take(outbox: Outbox) -> OutboxEntry | None:
    """The next entry, once the commit task has done what `take()` asked of it (commit the sent mark it
    needs, read more back from disk): `on_ready` tells, as it tells the bridge. None when empty."""
    for _ in range(5):  # each round is one turn of the commit task
        entry = outbox.take()
        if entry is not None or not (outbox.count - outbox.in_flight or outbox.backlog_on_disk):
            return entry
        ready = asyncio.Event()
        outbox.on_ready = ready.set
        await asyncio.wait_for(ready.wait(), 5)
    raise AssertionError("the outbox holds messages but gives none")


def rows(folder: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(outbox_path(folder, "cloud")) as db:
        return db.execute("SELECT seq, topic FROM messages ORDER BY seq").fetchall()


async def test_on_disk_when_committed_and_back_after_a_restart(tmp_path: Path) -> None:
    async with running(tmp_path) as outbox:
        for i in range(5):
            outbox.add(f"t/{i}", b"x" * i, 1, False)
        await committed(outbox)
        assert [topic for _, topic in rows(tmp_path)] == [f"t/{i}" for i in range(5)]
        first = await take(outbox)
        assert first is not None and first.topic == "t/0" and not first.dup
        outbox.acked(first)
        second = await take(outbox)  # sent, never acknowledged: comes back with DUP after the restart
        assert second is not None
        await committed(outbox)
    async with running(tmp_path) as outbox:
        assert (outbox.count, outbox.bytes) == (4, sum(3 + i for i in range(1, 5)))
        again = [await take(outbox) for _ in range(4)]
        assert [e.topic for e in again if e] == ["t/1", "t/2", "t/3", "t/4"]
        # Everything up to the committed sent mark may have been sent: DUP (the mark runs 256 ahead).
        assert all(e is not None and e.dup for e in again)


async def test_put_back_resends_in_order_with_dup(tmp_path: Path) -> None:
    async with running(tmp_path) as outbox:
        for i in range(3):
            outbox.add(f"t/{i}", b"", 1, False)
        await committed(outbox)
        taken = [await take(outbox) for _ in range(3)]
        assert all(taken)
        outbox.acked(taken[1])  # type: ignore[arg-type]  # acknowledged out of order
        back = outbox.put_back()
        assert [e.topic for e in back] == ["t/0", "t/2"] and all(e.dup for e in back)
        assert [e.topic for e in (outbox.take(), outbox.take()) if e] == ["t/0", "t/2"]


async def test_release_waits_for_disk(tmp_path: Path) -> None:
    async with running(tmp_path) as outbox:
        outbox.add("t", b"", 2, False)
        await committed(outbox)
        entry = await take(outbox)
        assert entry is not None
        released = asyncio.Event()
        outbox.release(entry, released.set)
        assert not entry.released  # not before it is on disk
        await asyncio.wait_for(released.wait(), 5)
        assert entry.released
    async with running(tmp_path) as outbox:
        entry = await take(outbox)
        assert entry is not None and entry.released  # after a restart: PUBREL, not the PUBLISH


async def test_cap_on_messages_drops_the_oldest(tmp_path: Path) -> None:
    async with running(tmp_path, max_messages=10) as outbox:
        for i in range(25):
            outbox.add(f"t/{i}", b"", 1, False)
        await committed(outbox)
        await committed(outbox)  # the cap is enforced right after the commit that overshot
        assert outbox.count == 10 and outbox.dropped == 15
        assert [topic for _, topic in rows(tmp_path)] == [f"t/{i}" for i in range(15, 25)]
        assert outbox.full


async def test_cap_on_bytes_and_a_backlog_left_on_disk(tmp_path: Path) -> None:
    """More than the read-ahead: the oldest dropped are partly in memory and partly on disk only."""
    async with running(tmp_path, max_bytes=64 * 1024, read_ahead=20) as outbox:
        for i in range(200):
            outbox.add(f"t/{i:03}", b"y" * 1000, 1, False)
        await committed(outbox)
        await committed(outbox)
        assert outbox.bytes <= 64 * 1024 and outbox.count == 65  # 1,005 bytes each
        topics = []
        while (entry := await take(outbox)) is not None:
            topics.append(entry.topic)
        assert topics == [f"t/{i:03}" for i in range(135, 200)]


async def test_age_cap(tmp_path: Path) -> None:
    async with running(tmp_path, max_age=0.2) as outbox:
        outbox.add("old", b"", 1, False)
        await committed(outbox)
        await asyncio.sleep(0.3)  # the message must age past max_age: time itself is what is tested
        outbox.add("new", b"", 1, False)
        await committed(outbox)
        await committed(outbox)
        assert [topic for _, topic in rows(tmp_path)] == ["new"]
        assert outbox.dropped == 1


async def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    from storage.errors import StorageError

    outbox_path(tmp_path, "cloud").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        await open_outbox(tmp_path, "cloud")
