"""What the broker keeps per tenant, so that a tenant's limits and an access change cost what they touch.

A tenant is a mount point (`ClientInfo.mount`, e.g. `$u42/`); clients outside any tenant (mount "") are
not tracked here. `TenantIndex` holds, per mount, the keys of its sessions (connected or not), how many
clients are connected and how many subscriptions its sessions hold. The broker updates it where sessions,
connections and subscriptions come and go (`broker/core.py`), so:

- a SUBSCRIBE checks the tenant's subscription limit with one dictionary lookup, not a scan;
- a CONNECT checks the tenant's connection limit the same way;
- an access change in one tenant (a topic narrowed, a device revoked) visits that tenant's sessions only
  (`session_keys`), however many sessions and subscriptions the other tenants hold.

The limits themselves are the hooks' answer (`Hook.tenant_limits`, from the tenant's plan): the broker
knows no plans.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLIENT_SUBSCRIPTIONS", "TENANT_CONNECTIONS", "TENANT_SUBSCRIPTIONS", "TenantIndex", "TenantLimits",
           "UNLIMITED"]

# The names of the limits, as counted in `Stats.limit_hits` and reported in `/metrics` and REST errors.
CLIENT_SUBSCRIPTIONS = "client_subscriptions"  # BrokerSettings.max_subscriptions_per_client
TENANT_SUBSCRIPTIONS = "tenant_subscriptions"  # the plan's max_subscriptions
TENANT_CONNECTIONS = "tenant_connections"  # the plan's max_connections


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """A tenant's limits; 0 means unlimited."""

    max_connections: int = 0
    max_subscriptions: int = 0


UNLIMITED = TenantLimits()


class TenantIndex:
    """Sessions, connected clients and subscriptions per tenant mount, kept up to date as they change."""

    __slots__ = ("_connections", "_sessions", "_subscriptions")

    def __init__(self) -> None:
        self._sessions: dict[str, set[str]] = {}
        self._connections: dict[str, int] = {}
        self._subscriptions: dict[str, int] = {}

    # -- sessions ---------------------------------------------------------------------------------------------

    def add_session(self, mount: str, key: str) -> None:
        if mount:
            self._sessions.setdefault(mount, set()).add(key)

    def remove_session(self, mount: str, key: str) -> None:
        keys = self._sessions.get(mount)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._sessions[mount]

    def session_keys(self, mount: str) -> tuple[str, ...]:
        """The keys of the tenant's sessions now (a copy: the caller may remove sessions meanwhile)."""
        return tuple(self._sessions.get(mount, ()))

    def mounts(self) -> tuple[str, ...]:
        return tuple(self._sessions)

    # -- counts -----------------------------------------------------------------------------------------------

    def connected(self, mount: str, delta: int) -> None:
        """A client of the tenant connected (+1) or went (-1). `_add`, written out: twice per connection."""
        if mount:
            counts = self._connections
            value = counts.get(mount, 0) + delta
            if value > 0:
                counts[mount] = value
            else:
                counts.pop(mount, None)

    def subscribed(self, mount: str, delta: int) -> None:
        """The tenant's sessions gained (+n) or lost (-n) subscriptions."""
        if mount and delta:
            _add(self._subscriptions, mount, delta)

    def connections(self, mount: str) -> int:
        return self._connections.get(mount, 0)

    def subscriptions(self, mount: str) -> int:
        return self._subscriptions.get(mount, 0)


def _add(counts: dict[str, int], mount: str, delta: int) -> None:
    value = counts.get(mount, 0) + delta
    if value > 0:
        counts[mount] = value
    else:
        counts.pop(mount, None)
