"""Every configured bridge, started and stopped with Roost (control/server.py), and their state.

The composition root builds `Bridges` before the broker (its `hooks()` go into the broker's hook chain)
and starts them after the broker's state is restored and before the listeners open, so no local message
published after start-up misses its bridge. A bridge's `user` is resolved here through a callback the
composition root gives (a name -> (mount point, user name) lookup in the database): a name that does
not exist stops start-up naming the key, as bad configuration does.

This Roost's ID on the path of forwarded messages (the user property `roost-via`, bridge/bridge.py) is
made once, at random, and kept in `data_dir/node-id`, so it stays the same across restarts (a message
looping back after a restart is still recognised). A copied data folder copies it: delete the file in the
copy to give that Roost its own.

`bridge.bridge` (the links, their outboxes, the NATS client) is imported only when a bridge is configured:
a broker without bridges does not hold their modules in memory (docs/benchmarks.md, "Memory (issue 20)").
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.core import Broker
from broker.errors import ConfigError
from broker.hooks import Hook

if TYPE_CHECKING:
    from bridge.config import BridgeConfig
    from bridge.bridge import Bridge

__all__ = ["Bridges"]

log = logging.getLogger("roost.bridge")

# name -> (mount point, user name), or None when there is no such user
UserLookup = Callable[[str], Awaitable[tuple[str, str] | None]]


class Bridges:
    def __init__(self, configs: Sequence[BridgeConfig]) -> None:
        self.bridges: list[Bridge] = []
        if configs:
            from bridge.bridge import Bridge

            self.bridges = [Bridge(config) for config in configs]
        self._started: list[Bridge] = []

    def hooks(self) -> list[Hook]:
        """The hooks the broker's chain needs: one that refuses with 0x97 when a bridge with policy
        "refuse" is full (none at all otherwise, so the publish path pays nothing)."""
        if any(b.config.policy == "refuse" for b in self.bridges):
            from bridge.bridge import RefuseWhenFull

            return [RefuseWhenFull(self.bridges)]
        return []

    def get(self, name: str) -> Bridge | None:
        return next((b for b in self.bridges if b.config.name == name), None)

    async def start(self, broker: Broker, data_dir: Path, lookup: UserLookup) -> None:
        if not self.bridges:
            return  # no ID, no loop check: nothing here ever names this Roost
        via = broker.via = node_id(data_dir)
        for index, bridge in enumerate(self.bridges):
            mount, origin = "", None
            user = bridge.config.user
            if user is not None:
                found = await lookup(user)
                if found is None:
                    raise ConfigError(f"bridge[{index}].user: there is no user named {user!r}")
                mount, origin = found
            await bridge.start(broker, data_dir, mount, origin, via)
            self._started.append(bridge)
        log.info("%d bridge%s started (this Roost is %s on their messages' roost-via)", len(self.bridges),
                 "" if len(self.bridges) == 1 else "s", via)

    async def stop(self) -> None:
        started, self._started = self._started, []
        for bridge in started:
            try:
                await bridge.stop()
            except Exception:
                log.exception("bridge %s did not stop cleanly", bridge.config.name)

    def statuses(self) -> list[dict[str, Any]]:
        return [bridge.status() for bridge in self.bridges]


def node_id(data_dir: Path) -> str:
    """This Roost's ID for `roost-via`: read from `data_dir/node-id`, made (16 hex digits) the first time."""
    path = data_dir / "node-id"
    try:
        value = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        value = ""
    if value:
        return value
    value = secrets.token_hex(8)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(value + "\n", encoding="ascii")
    temporary.replace(path)
    return value
