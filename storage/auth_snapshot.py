"""Everything the broker's live auth needs, read in one consistent snapshot.

MQTT CONNECT, PUBLISH and SUBSCRIBE checks run from memory, never from the database: the broker's
storage hook holds an `AuthSnapshot` and swaps in a new one whenever `Database.change_token()` says the
file changed (a REST call in this process, or the CLI in another). Rebuilding reads four small tables;
records are plain and frozen so the old snapshot can be dropped while a check still uses it.

Secret hashes appear here (and only here), because checking a CONNECT password needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from storage.database import Database

__all__ = ["AuthSnapshot", "AuthTopic", "AuthUser", "DeviceCredential", "InstanceCredential", "load_auth_snapshot"]


@dataclass(frozen=True, slots=True)
class AuthUser:
    id: int
    public_id: str
    is_admin: bool
    is_active: bool
    plan: str


@dataclass(frozen=True, slots=True)
class InstanceCredential:
    """An MQTT instance's login: `username` with the password behind `secret_hash`."""

    username: str
    secret_hash: str = field(repr=False)
    user_id: int
    instance_id: int


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """A device's login: `device_id` is both the username and the client id it must connect with."""

    device_id: str
    secret_hash: str = field(repr=False)
    user_id: int
    project_id: int
    device_row_id: int
    is_active: bool
    cert_serial: str | None


@dataclass(frozen=True, slots=True)
class AuthTopic:
    id: int
    project_id: int
    name: str  # a topic filter
    can_publish: bool
    can_subscribe: bool


@dataclass(frozen=True, slots=True)
class AuthSnapshot:
    """Read-only maps: users by id, credentials by MQTT username, topics by project id.

    `token` is the `Database.change_token()` the snapshot was read at; a holder rebuilds when the
    database's current token differs.
    """

    users: Mapping[int, AuthUser]
    credentials: Mapping[str, InstanceCredential | DeviceCredential]
    topics: Mapping[int, tuple[AuthTopic, ...]]
    token: tuple[int, int]
    # Project ids by owner: what an MQTT instance's message is recorded under (see StorageAuthHook).
    projects: Mapping[int, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def credential(self, username: str) -> InstanceCredential | DeviceCredential | None:
        return self.credentials.get(username)

    def project_topics(self, project_id: int) -> tuple[AuthTopic, ...]:
        return self.topics.get(project_id, ())

    def grants_the_same_as(self, other: AuthSnapshot) -> bool:
        """Whether `other` holds the same users, credentials and topics, whatever its token."""
        return (self.users == other.users and self.credentials == other.credentials and self.topics == other.topics
                and self.projects == other.projects)

    def projects_changed_since(self, other: AuthSnapshot) -> set[int]:
        """The ids of the projects whose topic rules differ from `other`'s."""
        return {p for p in self.topics.keys() | other.topics.keys() if self.topics.get(p) != other.topics.get(p)}

    def subscribe_rules_changed_since(self, other: AuthSnapshot) -> set[int]:
        """The ids of the projects whose `can_subscribe` rules (their filters) differ from `other`'s: the only
        thing a device's subscriptions depend on (StorageAuthHook.authorize_subscribe, authorize_read).
        A `can_publish` toggle or a renamed publish-only rule changes no subscription."""
        def rules(snapshot: AuthSnapshot, project_id: int) -> frozenset[str]:
            return frozenset(t.name for t in snapshot.topics.get(project_id, ()) if t.can_subscribe)

        return {p for p in self.projects_changed_since(other) if rules(self, p) != rules(other, p)}

    def users_changed_since(self, other: AuthSnapshot) -> set[int]:
        """The ids of the users whose clients may be let in or out differently than under `other`: their
        user row changed (plan, admin, active, deleted), one of their credentials did, or a topic of a
        project one of their devices belongs to (instance credentials do not depend on topics). Empty
        when nothing that decides access changed. Costs one pass over users and credentials, whatever
        the broker holds: enforcement then visits those users' sessions only (storage/access.py)."""
        changed = {uid for uid in self.users.keys() | other.users.keys() if self.users.get(uid) != other.users.get(uid)}
        for name in self.credentials.keys() | other.credentials.keys():
            mine, theirs = self.credentials.get(name), other.credentials.get(name)
            if mine != theirs:
                changed.update(c.user_id for c in (mine, theirs) if c is not None)
        projects = self.projects_changed_since(other)
        if projects:
            for snapshot in (self, other):
                changed.update(
                    c.user_id for c in snapshot.credentials.values()
                    if isinstance(c, DeviceCredential) and c.project_id in projects
                )
        return changed


async def load_auth_snapshot(db: Database) -> AuthSnapshot:
    """Read users, instance and device credentials and topics in one read transaction."""
    async with db.read() as connection:
        token = await db.change_token()
        async with connection.execute("SELECT id, public_id, is_admin, is_active, plan FROM users") as cursor:
            users = {
                row[0]: AuthUser(row[0], row[1], bool(row[2]), bool(row[3]), row[4]) for row in await cursor.fetchall()
            }
        credentials: dict[str, InstanceCredential | DeviceCredential] = {}
        async with connection.execute("SELECT username, secret_hash, user_id, id FROM mqtt_instances") as cursor:
            for row in await cursor.fetchall():
                credentials[row[0]] = InstanceCredential(row[0], row[1], row[2], row[3])
        async with connection.execute(
            "SELECT d.device_id, d.secret_hash, p.user_id, d.project_id, d.id, d.is_active, d.cert_serial"
            " FROM devices AS d JOIN projects AS p ON p.id = d.project_id"
        ) as cursor:
            for row in await cursor.fetchall():
                credentials[row[0]] = DeviceCredential(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])
        topics: dict[int, list[AuthTopic]] = {}
        async with connection.execute(
            "SELECT id, project_id, name, can_publish, can_subscribe FROM topics ORDER BY project_id, id"
        ) as cursor:
            for row in await cursor.fetchall():
                topics.setdefault(row[1], []).append(AuthTopic(row[0], row[1], row[2], bool(row[3]), bool(row[4])))
        projects: dict[int, list[int]] = {}
        async with connection.execute("SELECT id, user_id FROM projects ORDER BY user_id, id") as cursor:
            for row in await cursor.fetchall():
                projects.setdefault(row[1], []).append(row[0])
    return AuthSnapshot(
        projects=MappingProxyType({user_id: tuple(ids) for user_id, ids in projects.items()}),
        users=MappingProxyType(users),
        credentials=MappingProxyType(credentials),
        topics=MappingProxyType({project_id: tuple(items) for project_id, items in topics.items()}),
        token=token,
    )
