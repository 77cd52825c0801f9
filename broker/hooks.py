"""The auth and ACL hook interface: how the broker asks whether a client may connect, publish or subscribe.

Modelled on Mosquitto's plugin interface: each hook answers ALLOW, DENY or DEFER; a `HookChain` asks its hooks
in order and stops at the first answer that is not DEFER; if every hook defers, the answer is DENY. So a
broker with no hook that vouches for a client refuses it: secure by default.

Subscriptions follow Mosquitto's model: a SUBSCRIBE is granted when an allowed filter overlaps it, and
refused when a denied filter covers it (so a SUBSCRIBE to exactly a denied topic is refused, and `#` is
not). A filter granted only in part (`Decision.PARTIAL`) is filtered message by message: each message is
checked with `authorize_read` at delivery, the answer cached by the chain until access changes.

Every answer is synchronous: a hook answers from memory (the storage hook keeps an in-memory view of the
database, refreshed in the background), so a CONNECT costs no task and a PUBLISH no await.

The broker never imports the storage layer: storage implements `Hook`, and the composition root hands the
broker a chain of hooks.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from broker.codec.topics import parse_shared
from broker.tenants import UNLIMITED, TenantLimits
from broker.topic_match import filter_covers, filters_overlap, topic_matches

__all__ = [
    "AnonymousHook",
    "AuthResult",
    "ClientInfo",
    "ConnectRequest",
    "Decision",
    "Grant",
    "Hook",
    "HookChain",
]


class Decision(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    DEFER = "defer"
    # Subscribe only: allowed in part (an allowed filter overlaps it, none covers it): each message is then
    # checked with `authorize_read` before it is delivered.
    PARTIAL = "partial"


class Grant(enum.IntEnum):
    """The chain's answer to a SUBSCRIBE: false when refused, so `if not grant` reads as before."""

    NONE = 0  # refused
    ALL = 1  # every message matching the filter may be read
    PARTIAL = 2  # granted; each message is checked with `HookChain.authorize_read` at delivery


_GRANTS = {Decision.ALLOW: Grant.ALL, Decision.PARTIAL: Grant.PARTIAL}
# Answers of authorize_read kept per (session key, topic) until access changes.
_READ_CACHE_LIMIT = 8_192


class ConnectRequest(NamedTuple):
    """What a CONNECT says about who the client is. A NamedTuple, as the engine's `Terms` is: one is made
    per CONNECT, and a frozen dataclass would set each of its eight fields through object.__setattr__."""

    client_id: str
    username: str | None
    password: bytes | None
    protocol_version: int
    remote_address: str
    # Whether the client asked for an identifier to be assigned (it sent an empty client id).
    assigned_client_id: bool = False
    # The client certificate verified during the TLS handshake (mutual TLS): its subject CN and its serial
    # number as upper-case hex without leading zeros. None on plain TCP or when no certificate was presented.
    certificate_cn: str | None = None
    certificate_serial: str | None = None


@dataclass(frozen=True, slots=True, init=False)
class ClientInfo:
    """Who a connected client is, as the hook that let it in describes it.

    `mount` is the client's tenant namespace: a prefix such as `t42/` that the broker puts in front of every
    topic the client names and strips from every topic it receives, so tenants can use the same topic
    names without ever meeting. Hooks see the client's own (unprefixed) topics. `attributes` carries
    whatever the hook needs to answer later checks quickly (a tenant, a device id).

    One is made per CONNECT, so `__init__` is written by hand, as `Publish`'s is: it sets the slots
    through their descriptors, about twice as fast as the generated frozen `__init__`.
    """

    client_id: str
    username: str | None
    protocol_version: int
    is_admin: bool
    anonymous: bool
    mount: str
    attributes: dict[str, object] = field(compare=False)

    def __init__(
        self,
        client_id: str,
        username: str | None,
        protocol_version: int,
        is_admin: bool = False,
        anonymous: bool = False,
        mount: str = "",
        attributes: dict[str, object] | None = None,
    ) -> None:
        _set_client_id(self, client_id)
        _set_username(self, username)
        _set_protocol_version(self, protocol_version)
        _set_is_admin(self, is_admin)
        _set_anonymous(self, anonymous)
        _set_mount(self, mount)
        _set_attributes(self, {} if attributes is None else attributes)

    def own_topic(self, topic: str) -> str:
        """A topic inside the broker as this client names it: its tenant's mount point taken off."""
        mount = self.mount
        return topic[len(mount):] if mount and topic.startswith(mount) else topic

    @property
    def session_key(self) -> str:
        """The broker's key for this client's session: client ids are unique per tenant, not globally."""
        return f"{self.mount}\x00{self.client_id}" if self.mount else self.client_id


(_set_client_id, _set_username, _set_protocol_version, _set_is_admin, _set_anonymous, _set_mount,
 _set_attributes) = (
    getattr(ClientInfo, name).__set__
    for name in ("client_id", "username", "protocol_version", "is_admin", "anonymous", "mount", "attributes")
)


class AuthResult(NamedTuple):
    """A hook's answer to a CONNECT (a NamedTuple: one per CONNECT, see `ConnectRequest`)."""

    decision: Decision
    # The v5 CONNACK reason code for a DENY: 0x86 bad user name or password, 0x87 not authorized, ...
    reason_code: int = 0x87
    client: ClientInfo | None = None


_DEFER = AuthResult(Decision.DEFER)
_DEFERRED = Decision.DEFER  # a module global: Python 3.11 does not specialise attribute loads on a class


class Hook:
    """A base class whose every answer is DEFER; a hook overrides what it has an opinion on."""

    def authenticate(self, request: ConnectRequest) -> AuthResult:
        return _DEFER

    def authorize_publish(self, client: ClientInfo, topic: str) -> Decision:
        return Decision.DEFER

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> Decision:
        return Decision.DEFER

    def authorize_read(self, client: ClientInfo, topic: str) -> Decision:
        """May `client` receive a message on `topic`? Asked only for subscriptions this hook granted with
        `Decision.PARTIAL` (Mosquitto's READ access)."""
        return Decision.DEFER

    def on_publish(self, client: ClientInfo, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """An authorized PUBLISH is about to be routed. Return 0 to let it through, or a reason code to
        refuse it (0x97 Quota exceeded). Also where a hook records or counts messages; it runs on the hot
        path, so it must not block."""
        return 0

    def tenant_limits(self, client: ClientInfo) -> TenantLimits | None:
        """The limits of the tenant `client` belongs to (its plan's), or None to defer. Asked on every
        SUBSCRIBE and CONNECT of a tenant client, so it answers from memory."""
        return None

    def connection_opened(self, client: ClientInfo) -> None:
        """A client is connected and its CONNACK sent."""

    def connection_closed(self, client: ClientInfo) -> None:
        """A client's network connection ended (for whatever reason)."""


class HookChain:
    """Asks hooks in order; the first non-DEFER answer wins; all-DEFER means DENY."""

    __slots__ = ("_closed_hooks", "_limit_hooks", "_opened_hooks", "_publish_hooks", "_reads", "generation",
                 "hooks", "publish_hook")

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self.hooks: tuple[Hook, ...] = tuple(hooks)
        # on_publish runs for every message, the others for every CONNECT: ask only the hooks that
        # implement them (the base class's answers are DEFER / None / nothing).
        self._publish_hooks = _overriding(self.hooks, "on_publish")
        self._limit_hooks = _overriding(self.hooks, "tenant_limits")
        self._opened_hooks = _overriding(self.hooks, "connection_opened")
        self._closed_hooks = _overriding(self.hooks, "connection_closed")
        # What a connection calls for every PUBLISH it routes (looked up once per CONNECT): None when no
        # hook implements on_publish, that hook's own method when only one does (a call less per message),
        # else the chain's.
        self.publish_hook: Callable[[ClientInfo, str, bytes, int, bool], int] | None = (
            None if not self._publish_hooks
            else self._publish_hooks[0].on_publish if len(self._publish_hooks) == 1
            else self.on_publish
        )
        # Bumped whenever an answer may have changed (credentials, ACLs): connections cache publish
        # decisions per topic and drop their cache when this moves.
        self.generation = 0
        self._reads: dict[tuple[str, str], bool] = {}

    def invalidate(self) -> None:
        self.generation += 1
        self._reads.clear()

    def authenticate(self, request: ConnectRequest) -> AuthResult:
        for hook in self.hooks:
            result = hook.authenticate(request)
            if result.decision is not _DEFERRED:
                return result
        return AuthResult(Decision.DENY, 0x86 if request.username is not None else 0x87)

    def authorize_publish(self, client: ClientInfo, topic: str) -> bool:
        for hook in self.hooks:
            decision = hook.authorize_publish(client, topic)
            if decision is not Decision.DEFER:
                return decision is Decision.ALLOW
        return False

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> Grant:
        for hook in self.hooks:
            decision = hook.authorize_subscribe(client, topic_filter)
            if decision is not Decision.DEFER:
                return _GRANTS.get(decision, Grant.NONE)
        return Grant.NONE

    def authorize_read(self, client: ClientInfo, topic: str) -> bool:
        """Whether a message on `topic` (the client's own name for it) reaches a subscription granted in
        part. Answers are cached per client and topic until `invalidate()`, so a busy topic asks once."""
        key = (client.session_key, topic)
        allowed = self._reads.get(key)
        if allowed is None:
            allowed = False
            for hook in self.hooks:
                decision = hook.authorize_read(client, topic)
                if decision is not Decision.DEFER:
                    allowed = decision is Decision.ALLOW
                    break
            if len(self._reads) >= _READ_CACHE_LIMIT:
                self._reads.clear()
            self._reads[key] = allowed
        return allowed

    def on_publish(self, client: ClientInfo, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        for hook in self._publish_hooks:
            code = hook.on_publish(client, topic, payload, qos, retain)
            if code:
                return code
        return 0

    def tenant_limits(self, client: ClientInfo) -> TenantLimits:
        """The first hook's answer that is not None; no limits when every hook defers."""
        for hook in self._limit_hooks:
            limits = hook.tenant_limits(client)
            if limits is not None:
                return limits
        return UNLIMITED

    def connection_opened(self, client: ClientInfo) -> None:
        for hook in self._opened_hooks:
            hook.connection_opened(client)

    def connection_closed(self, client: ClientInfo) -> None:
        for hook in self._closed_hooks:
            hook.connection_closed(client)


def _overriding(hooks: tuple[Hook, ...], method: str) -> tuple[Hook, ...]:
    """The hooks whose class overrides `method` of `Hook` (the others would only defer)."""
    base = getattr(Hook, method)
    return tuple(h for h in hooks if getattr(type(h), method) is not base)


class AnonymousHook(Hook):
    """Lets in clients that send no user name, when the config allows anonymous access, with a topic ACL.

    Clients that send a user name are left to other hooks (DEFER): with no other hook, they are refused.
    The ACL is three lists of filters: what anonymous clients may publish to, what they may subscribe to, and
    what is denied for both (deny wins). A subscription is refused when a denied filter covers it or no
    allowed filter overlaps it; it is granted whole when an allowed filter covers it and no denied filter
    overlaps it, else in part (`Decision.PARTIAL`: each message is checked by `authorize_read`).
    """

    def __init__(
        self,
        allow: bool,
        publish: Sequence[str] = ("#",),
        subscribe: Sequence[str] = ("#", "$SYS/#"),
        deny: Sequence[str] = (),
    ) -> None:
        self.allow = allow
        self.publish = tuple(publish)
        self.subscribe = tuple(subscribe)
        self.deny = tuple(deny)

    def authenticate(self, request: ConnectRequest) -> AuthResult:
        if request.username is not None or request.password is not None or not self.allow:
            return _DEFER
        client = ClientInfo(request.client_id, None, request.protocol_version, anonymous=True)
        return AuthResult(Decision.ALLOW, client=client)

    def authorize_publish(self, client: ClientInfo, topic: str) -> Decision:
        if not client.anonymous:
            return Decision.DEFER
        if any(topic_matches(f, topic) for f in self.deny):
            return Decision.DENY
        if any(topic_matches(f, topic) for f in self.publish):
            return Decision.ALLOW
        return Decision.DENY

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> Decision:
        if not client.anonymous:
            return Decision.DEFER
        _, plain = parse_shared(topic_filter)
        if any(filter_covers(f, plain) for f in self.deny):
            return Decision.DENY
        if not any(filters_overlap(f, plain) for f in self.subscribe):
            return Decision.DENY
        if any(filter_covers(f, plain) for f in self.subscribe) and not any(
            filters_overlap(plain, f) for f in self.deny
        ):
            return Decision.ALLOW
        return Decision.PARTIAL

    def authorize_read(self, client: ClientInfo, topic: str) -> Decision:
        if not client.anonymous:
            return Decision.DEFER
        if any(topic_matches(f, topic) for f in self.deny):
            return Decision.DENY
        return Decision.ALLOW if any(topic_matches(f, topic) for f in self.subscribe) else Decision.DENY
