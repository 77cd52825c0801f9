"""Live authentication and topic ACLs, answered from an in-memory snapshot of the database.

The broker asks its hooks on every CONNECT, PUBLISH and SUBSCRIBE; none of those may wait on disk. So the
rows that decide access (users, MQTT credentials, topic rules) are read into an `AccessSnapshot`, and
`StorageAuthHook` answers from it. The snapshot is replaced whole, never edited in place, so a check always
sees one consistent state.

`LiveAccess` keeps that promise live: after every write through Roost's own services it reloads the
snapshot and *enforces* it on the broker at once: clients whose credentials were deleted, rotated or
deactivated are disconnected (v5: DISCONNECT 0x98) and their sessions removed; subscriptions that the new
rules no longer allow are removed from live sessions, so deliveries stop. Writes by another process are
noticed through `PRAGMA data_version` within the poll interval.

Tenants: every client of a user lives under that user's mount point `$u{user_id}/`; MQTT-instance
credentials may use any topic there, devices only their project's registered topics, as each topic's
permission allows. A device's SUBSCRIBE is granted when a can_subscribe rule overlaps its filter
(Mosquitto's model); when no rule covers all of it, each message is checked against the rules at delivery
(`authorize_read`), so `#` brings the device exactly what its rules let it read. `$SYS` is readable by admin users only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from broker.codec.topics import parse_shared
from broker.hooks import AuthResult, ClientInfo, ConnectRequest, Decision, Hook
from broker.service import BrokerService
from broker.tenants import UNLIMITED, TenantLimits
from broker.topic_match import filter_covers, filters_overlap, topic_matches
from storage.auth_snapshot import AuthSnapshot, DeviceCredential, InstanceCredential, load_auth_snapshot
from storage.clock import format_timestamp, utc_now
from storage.recorder import MessageRecorder
from storage.records import NewMessage
from storage.usage import UsageMeter
from storage.database import Database
from storage.secrets import verify_secret

__all__ = ["LiveAccess", "PlanTerms", "StorageAuthHook", "tenant_mount"]

log = logging.getLogger("roost.access")

# Longest user name we look up; a longer one cannot exist (generated names are short, device ids are capped).
MAX_USERNAME = 255
_ACL_CACHE_LIMIT = 10_000
# The longest the re-check of subscriptions after an access change runs before it lets the loop turn, in
# seconds: a client of the changed tenant waits about this, plus what the loop has queued meanwhile. A
# check costs 2 µs with a rule or two, 50 µs with 50 rules in the project, so the slice is timed, not
# counted (docs/benchmarks.md, "Access changes").
ENFORCE_SLICE = 0.001
_UNKNOWN = object()


@dataclass(frozen=True, slots=True)
class PlanTerms:
    """What the broker needs of a user's plan: the hourly quota (0 = unlimited), history retention, and
    the tenant's limits on connected clients and subscriptions (0 = unlimited)."""

    messages_per_hour: int
    retention_days: int
    limits: TenantLimits = UNLIMITED


def tenant_mount(user_id: int) -> str:
    """The topic namespace of a user's clients.

    It starts with `$` so that clients outside any tenant (anonymous ones) can never reach into it: filters
    starting with a wildcard do not match `$` topics [MQTT-4.7.2-1], and the broker refuses `$` topics and
    filters (other than `$SYS`) to them."""
    return f"$u{user_id}/"


class StorageAuthHook(Hook):
    """Answers CONNECT, PUBLISH and SUBSCRIBE checks from the current snapshot."""

    def __init__(
        self,
        snapshot: AuthSnapshot | None = None,
        *,
        usage: UsageMeter | None = None,
        recorder: MessageRecorder | None = None,
        plan_terms: Callable[[str], PlanTerms] = lambda plan: PlanTerms(0, 30),
    ) -> None:
        self.snapshot = snapshot or AuthSnapshot({}, {}, {}, (0, 0))
        self.usage = usage
        self.recorder = recorder
        self.plan_terms = plan_terms
        self._quota_logged: dict[int, float] = {}  # user id -> until when their exhausted quota is logged
        # Per-message caches, emptied with every new snapshot: plan terms by user, and the (project id,
        # topic rule id) a message is recorded under (None: not recorded), by (project id, topic) for a
        # device and by (-user id, topic) for an MQTT instance.
        self._terms: dict[int, PlanTerms] = {}
        self._recorded_topics: dict[tuple[int, str], tuple[int, int] | None] = {}
        self._expiries: dict[int, tuple[int, str]] = {}
        # (project id, topic) -> may publish; cleared whenever the snapshot changes.
        self._publish_cache: dict[tuple[int, str], bool] = {}

    def replace(self, snapshot: AuthSnapshot) -> None:
        self.snapshot = snapshot
        self._publish_cache = {}
        self._terms = {}
        self._recorded_topics = {}

    def authenticate(self, request: ConnectRequest) -> AuthResult:
        username = request.username
        if request.certificate_serial is not None and request.password is None:
            return self._authenticate_certificate(request)
        if username is None:
            return AuthResult(Decision.DEFER)
        snapshot = self.snapshot
        credential = snapshot.credentials.get(username) if len(username) <= MAX_USERNAME else None
        password = request.password
        if credential is None or password is None:
            return AuthResult(Decision.DENY, 0x86)
        try:
            secret = password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(Decision.DENY, 0x86)
        if not verify_secret(secret, credential.secret_hash):
            return AuthResult(Decision.DENY, 0x86)
        return self._admit(request, credential, username, {"secret_hash": credential.secret_hash})

    def _authenticate_certificate(self, request: ConnectRequest) -> AuthResult:
        """A client certificate verified by the TLS layer stands for a password: its subject CN names the
        device, and its serial must be the one the device was last issued (revoking clears or replaces
        it). A user name, if sent, must be that device's too."""
        snapshot = self.snapshot
        device_id = request.certificate_cn or ""
        credential = snapshot.credentials.get(device_id) if len(device_id) <= MAX_USERNAME else None
        if request.username is not None and request.username != device_id:
            return AuthResult(Decision.DENY, 0x86)
        if (
            not isinstance(credential, DeviceCredential)
            or credential.cert_serial is None
            or credential.cert_serial != request.certificate_serial
        ):
            return AuthResult(Decision.DENY, 0x86)
        # `secret_hash` present marks one of ours; None: it logged in by certificate.
        return self._admit(request, credential, device_id, {"secret_hash": None, "cert_serial": credential.cert_serial})

    def _admit(
        self,
        request: ConnectRequest,
        credential: InstanceCredential | DeviceCredential,
        username: str,
        proof: dict[str, object],
    ) -> AuthResult:
        """The checks after the secret (or certificate) matched: the owner and the device must be active, and
        a device must connect with its own device_id as client id. `proof` records how it logged in, so
        `still_valid` can tell later whether that still holds."""
        user = self.snapshot.users.get(credential.user_id)
        is_device = isinstance(credential, DeviceCredential)
        if user is None or not user.is_active or (is_device and not credential.is_active):
            return AuthResult(Decision.DENY, 0x87)
        if is_device and request.client_id != credential.device_id:
            return AuthResult(Decision.DENY, 0x85)
        client = ClientInfo(
            client_id=request.client_id,
            username=username,
            protocol_version=request.protocol_version,
            is_admin=user.is_admin,
            mount=tenant_mount(user.id),
            attributes={
                "user_id": user.id,
                "project_id": credential.project_id if is_device else None,
                "device_row_id": credential.device_row_id if is_device else None,
                "instance_id": None if is_device else credential.instance_id,
                **proof,
            },
        )
        return AuthResult(Decision.ALLOW, client=client)

    def authorize_publish(self, client: ClientInfo, topic: str) -> Decision:
        attributes = client.attributes
        if "secret_hash" not in attributes:
            return Decision.DEFER  # Not one of ours (anonymous).
        project_id = attributes["project_id"]
        if project_id is None:
            return Decision.ALLOW  # MQTT-instance credentials: any topic in the owner's namespace.
        key = (project_id, topic)
        allowed = self._publish_cache.get(key)
        if allowed is None:
            rules = self.snapshot.topics.get(project_id, ())
            allowed = any(rule.can_publish and topic_matches(rule.name, topic) for rule in rules)
            if len(self._publish_cache) >= _ACL_CACHE_LIMIT:
                self._publish_cache.clear()
            self._publish_cache[key] = allowed
        return Decision.ALLOW if allowed else Decision.DENY

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> Decision:
        attributes = client.attributes
        if "secret_hash" not in attributes:
            return Decision.DEFER
        _, plain = parse_shared(topic_filter)
        if plain.startswith("$"):
            return Decision.ALLOW if client.is_admin and plain.startswith("$SYS") else Decision.DENY
        project_id = attributes["project_id"]
        if project_id is None:
            return Decision.ALLOW
        # Mosquitto's model: granted when a can_subscribe rule overlaps the filter; whole when one covers
        # it, else in part, each message then checked by authorize_read at delivery.
        rules = [rule.name for rule in self.snapshot.topics.get(project_id, ()) if rule.can_subscribe]
        if any(filter_covers(rule, plain) for rule in rules):
            return Decision.ALLOW
        if any(filters_overlap(rule, plain) for rule in rules):
            return Decision.PARTIAL
        return Decision.DENY

    def authorize_read(self, client: ClientInfo, topic: str) -> Decision:
        """A message on `topic` reaches a device's partly granted subscription when a can_subscribe rule of
        its project matches the topic (the broker caches the answer until access changes)."""
        attributes = client.attributes
        if "secret_hash" not in attributes:
            return Decision.DEFER
        if topic.startswith("$"):
            return Decision.ALLOW if client.is_admin and topic.startswith("$SYS") else Decision.DENY
        project_id = attributes["project_id"]
        if project_id is None:
            return Decision.ALLOW
        rules = self.snapshot.topics.get(project_id, ())
        allowed = any(rule.can_subscribe and topic_matches(rule.name, topic) for rule in rules)
        return Decision.ALLOW if allowed else Decision.DENY

    def on_publish(self, client: ClientInfo, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Count the message against the owner's hourly quota (0x97 when it is used up; the refusal is
        counted per user and logged once per window), and record it in a project's history when one of
        the project's topics matches (`_history_target`)."""
        attributes = client.attributes
        user_id = attributes.get("user_id")
        if user_id is None:
            return 0
        terms = self._terms_of(user_id)  # type: ignore[arg-type]
        if self.usage is not None and not self.usage.try_consume(user_id, terms.messages_per_hour):  # type: ignore[arg-type]
            now = time.time()
            if self._quota_logged.get(user_id, 0.0) <= now:  # once per user per hour, not per message
                self._quota_logged[user_id] = now + self.usage.seconds_until_reset()
                log.warning("quota: user %s used up the %d messages of this hour; their messages are refused "
                            "(and counted) until %s", user_id, terms.messages_per_hour,
                            time.strftime("%H:%M:%S UTC", time.gmtime(self.usage.resets_at())))
            return 0x97
        if self.recorder is not None:
            target = self._history_target(attributes.get("project_id"), user_id, topic)  # type: ignore[arg-type]
            if target is not None:
                self.recorder.add(
                    NewMessage(target[0], topic, payload, qos, retain, target[1], self._expiry(terms.retention_days))
                )
        return 0

    def _terms_of(self, user_id: int) -> PlanTerms:
        """The user's plan terms, from the per-snapshot cache."""
        terms = self._terms.get(user_id)
        if terms is None:
            user = self.snapshot.users.get(user_id)
            terms = self._terms[user_id] = self.plan_terms(user.plan if user is not None else "")
        return terms

    def tenant_limits(self, client: ClientInfo) -> TenantLimits | None:
        """The connection and subscription limits of the plan of the user who owns the client's credentials
        (one dictionary lookup once cached); None for clients that are not ours (anonymous)."""
        user_id = client.attributes.get("user_id")
        if user_id is None:
            return None
        terms = self._terms.get(user_id)  # type: ignore[call-overload]
        return (terms if terms is not None else self._terms_of(user_id)).limits  # type: ignore[arg-type]

    def _history_target(self, project_id: int | None, user_id: int, topic: str) -> tuple[int, int] | None:
        """The (project id, topic rule id) a message on `topic` is recorded under, or None.

        A device's message goes to its project's history when one of the project's topics matches. An MQTT
        instance belongs to no project: its message goes to the first of its owner's projects (oldest
        first) with a matching topic, so what a user sends with instance credentials is in the history
        too, with the same fields as a device's."""
        key = (project_id if project_id is not None else -user_id, topic)
        target = self._recorded_topics.get(key, _UNKNOWN)  # type: ignore[arg-type]
        if target is _UNKNOWN:
            snapshot = self.snapshot
            projects = (project_id,) if project_id is not None else snapshot.projects.get(user_id, ())
            target = next(
                ((rule.project_id, rule.id) for pid in projects for rule in snapshot.topics.get(pid, ())
                 if topic_matches(rule.name, topic)),
                None,
            )
            if len(self._recorded_topics) >= _ACL_CACHE_LIMIT:
                self._recorded_topics.clear()
            self._recorded_topics[key] = target  # type: ignore[assignment]
        return target  # type: ignore[return-value]

    def _expiry(self, retention_days: int) -> str:
        """When a message recorded now expires, formatted; recomputed at most once a second per retention."""
        now = int(time.time())
        cached = self._expiries.get(retention_days)
        if cached is None or cached[0] != now:
            cached = self._expiries[retention_days] = (now, format_timestamp(utc_now() + timedelta(days=retention_days)))
        return cached[1]

    def still_valid(self, client: ClientInfo) -> bool:
        """Whether the credentials a client connected with still open the door, as they did then."""
        attributes = client.attributes
        if "secret_hash" not in attributes:
            return True
        snapshot = self.snapshot
        credential = snapshot.credentials.get(client.username or "")
        if credential is None:
            return False
        cert_serial = attributes.get("cert_serial")
        if cert_serial is not None:
            # Logged in by certificate: it holds while the device's certificate is still that one.
            if not isinstance(credential, DeviceCredential) or credential.cert_serial != cert_serial:
                return False
        elif credential.secret_hash != attributes["secret_hash"]:
            return False
        if isinstance(credential, DeviceCredential) and not credential.is_active:
            return False
        user = snapshot.users.get(credential.user_id)
        return user is not None and user.is_active and user.is_admin == client.is_admin


def _ours(client: ClientInfo) -> bool:
    """Whether a client logged in with stored credentials (StorageAuthHook's), whose ACL can change."""
    return "secret_hash" in client.attributes


class LiveAccess:
    """Keeps `StorageAuthHook`'s snapshot in step with the database and enforces each change at once."""

    def __init__(self, database: Database, hook: StorageAuthHook, broker: BrokerService) -> None:
        self.database = database
        self.hook = hook
        self.broker = broker
        self._lock = asyncio.Lock()
        self._requested = 0  # refresh() calls so far
        self._completed = 0  # the calls covered by the last finished reload

    async def refresh(self) -> None:
        """Reload the snapshot and enforce it; call after every write that touches access.

        Calls that arrive while a reload runs share the next one: 100 revocations at once cost two or
        three reloads, not 100 in a row."""
        self._requested += 1
        wanted = self._requested
        async with self._lock:
            if self._completed >= wanted:
                return  # A reload that started after our write has already been enforced.
            covers = self._requested
            previous = self.hook.snapshot
            snapshot = await load_auth_snapshot(self.database)
            self.hook.replace(snapshot)
            # Every commit moves the token, this process's own included (the quota counts, each second under
            # traffic). Enforcing asks the hooks about subscriptions (0.3 s for 100,000 in one go): only for
            # the users whose users, credentials or topics did change, only for the projects whose
            # subscribe rules did, and in time slices.
            changed = snapshot.users_changed_since(previous)
            if changed:
                await self.enforce_users(changed, snapshot.subscribe_rules_changed_since(previous))
            self._completed = covers

    def enforce(self) -> None:
        """Disconnect clients whose credentials no longer hold; drop subscriptions no longer allowed. Every
        session at once: used at start, before any client is let in."""
        hook = self.hook
        kicked = self.broker.kick(where=lambda client: not hook.still_valid(client))
        if kicked:
            log.info("revoked: disconnected %d client session(s)", kicked)
        removed = self.broker.revalidate_subscriptions(_ours)
        if removed:
            log.info("narrowed: removed %d subscription(s) no longer allowed", removed)

    async def enforce_users(self, user_ids: set[int], projects: set[int]) -> None:
        """`enforce` for the sessions of these users only (found through the broker's tenant index, so
        another tenant's sessions cost nothing). Credentials are checked for all of their sessions;
        subscriptions only for the devices of `projects` (those whose subscribe rules changed): nothing
        else decides what a client of ours may subscribe to (an instance may take any filter in its
        namespace, and `$SYS` needs the admin flag, which `still_valid` holds to what it was at CONNECT).
        Cached publish decisions are dropped in every case, so a `can_publish` change holds from the next
        PUBLISH. The re-check lets the loop turn every `ENFORCE_SLICE` seconds, so that a tenant with
        400,000 subscriptions stalls nobody for long, its own clients included. Publishes are checked
        against the new rules at once (the hooks answer from the new snapshot); a subscription not yet
        re-checked may receive for the few milliseconds until its slice comes."""
        hook = self.hook
        self.broker.access_changed()
        mounts = [tenant_mount(user_id) for user_id in sorted(user_ids)]
        kicked = self.broker.kick(where=lambda client: not hook.still_valid(client), mounts=mounts)
        if kicked:
            log.info("revoked: disconnected %d client session(s)", kicked)
        if not projects:
            return

        def of_projects(client: ClientInfo) -> bool:
            return client.attributes.get("project_id") in projects

        removed = 0
        for count in self.broker.revalidate_steps(of_projects, mounts, ENFORCE_SLICE):
            removed += count
            await asyncio.sleep(0)  # one slice done: let every other client's packets through
        if removed:
            log.info("narrowed: removed %d subscription(s) no longer allowed", removed)

    def prune_retained(self) -> int:
        """Remove retained messages that a delete would have taken had Roost been running: those in the
        namespace of a user who no longer exists, and those published with credentials that no longer
        exist (used at start, for what was restored from the last run)."""
        snapshot = self.hook.snapshot

        def stale(topic: str, origin: str | None) -> bool:
            if not topic.startswith("$u"):
                return False
            user_id = topic.partition("/")[0][2:]  # the id in the tenant mount `$u{id}/`
            if not user_id.isdigit() or int(user_id) not in snapshot.users:
                return True
            return origin is not None and origin not in snapshot.credentials

        dropped = self.broker.drop_retained_where(stale)
        if dropped:
            log.info("dropped %d retained message(s) of deleted users or credentials", dropped)
        return dropped

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the database's change token (`PRAGMA data_version` and our own commit count) and refresh
        when it moved: another process (the CLI) wrote the file, or a write here skipped `refresh()`."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.database.change_token() != self.hook.snapshot.token:
                    await self.refresh()
            except Exception:
                log.exception("could not check the database for outside changes")
