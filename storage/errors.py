"""The storage layer's errors, under the project's root `RoostError`.

    RoostError                      (broker/errors.py)
    └── StorageError                the database cannot do what was asked: unreadable or damaged file,
        │                           schema newer than this code, a failed migration, an undecryptable secret
        └── Conflict                a write would break a uniqueness rule: a name or MQTT username is taken

Arguments that are plainly wrong (a negative offset, a 300-character device name) are the caller's bug
and raise `ValueError`; the control plane validates input before it gets here, so those never reach a
client as a storage failure. A row that does not exist is not an error either: getters return `None`
and deleters return `False`, so a route can answer 404 without catching anything.
"""

from __future__ import annotations

from broker.errors import RoostError

__all__ = ["Conflict", "StorageError"]


class StorageError(RoostError):
    """The database could not be opened, read, migrated or written, or a stored secret cannot be decrypted."""


class Conflict(StorageError):
    """A write would duplicate something that must be unique (a user name, an MQTT username, a topic name
    within a project). The message names what is taken, and is safe to show to the user who asked."""
