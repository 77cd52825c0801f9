"""Generating, hashing and encrypting the secrets Roost keeps: pure functions, plus the key file.

Two kinds of hash, chosen by where the secret comes from:

- Secrets Roost generates (MQTT passwords, device secrets, API key secrets) carry >= 140 bits of
  randomness, so nobody can guess them and a slow hash buys nothing; it would only make every MQTT
  CONNECT cost tens of milliseconds. They get one salted SHA-256 (`hash_secret`), a microsecond's work.
- Passwords people choose (dashboard logins) are guessable, so they get scrypt (`hash_password`).

Both produce self-describing strings ("s256$salt$digest", "scrypt$n$r$p$salt$digest"), so the scheme can
change later without a migration: a verifier reads the prefix.

An API key is looked up, not just checked: `api_key_digest` is its unsalted SHA-256, stored in a unique
index, which is safe because the key itself is ~190 random bits (no dictionary to try).

The /v1/mqtt API must hand an instance's password back on every GET, so that one secret is also kept
encrypted (`SecretBox`, Fernet) with a key that lives beside the database in `secret.key`, never in it:
a copied database alone does not reveal passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import string
from pathlib import Path
from typing import Any

from storage.errors import StorageError

__all__ = [
    "KEY_FILE_NAME",
    "SecretBox",
    "api_key_digest",
    "generate_api_key",
    "generate_password",
    "generate_public_id",
    "generate_username",
    "hash_password",
    "hash_secret",
    "verify_password",
    "verify_secret",
]

log = logging.getLogger(__name__)

KEY_FILE_NAME = "secret.key"

_ALPHANUMERIC = string.ascii_letters + string.digits
_SECRET_SCHEME = "s256"
_PASSWORD_SCHEME = "scrypt"
# scrypt cost: 16 MiB of memory and ~50 ms per check; OWASP's minimum for scrypt.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def generate_password(length: int = 24) -> str:
    """A random alphanumeric password; 24 characters carry 24 * log2(62) ~= 143 bits."""
    if length < 24:
        raise ValueError("a generated password needs at least 24 characters (>= 140 bits)")
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def generate_username() -> str:
    """An 8-character alphanumeric MQTT username, like "Hcixd1Fx" in the /v1/mqtt API.

    ~47 bits: collisions are rare but possible, so the caller retries on `Conflict`.
    """
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(8))


def generate_public_id() -> str:
    """24 lowercase hex characters, shaped like a MongoDB ObjectId, as /v1/mqtt shows `_id` and `owner`."""
    return secrets.token_hex(12)


def generate_api_key() -> tuple[str, str]:
    """A new (key, secret): "sk_" + 32 URL-safe characters (192 bits) and "secret_" + 40 (240 bits)."""
    key = "sk_" + secrets.token_urlsafe(24)
    secret = "secret_" + secrets.token_urlsafe(30)
    return key, secret


def api_key_digest(key: str) -> str:
    """The indexed lookup value for an API key: unsalted SHA-256 hex (the key is too random to guess)."""
    return hashlib.sha256(key.encode()).hexdigest()


def hash_secret(secret: str) -> str:
    """A salted SHA-256 of a generated, high-entropy secret: "s256$<salt hex>$<digest hex>"."""
    salt = secrets.token_bytes(16)
    digest = hashlib.sha256(salt + secret.encode()).hexdigest()
    return f"{_SECRET_SCHEME}${salt.hex()}${digest}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether `secret` matches `stored` (from `hash_secret`); the comparison takes constant time."""
    scheme, _, rest = stored.partition("$")
    salt_hex, _, digest_hex = rest.partition("$")
    if scheme != _SECRET_SCHEME or not digest_hex:
        return False
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    candidate = hashlib.sha256(salt + secret.encode()).hexdigest()
    return hmac.compare_digest(candidate, digest_hex)


def hash_password(password: str) -> str:
    """A scrypt hash of a human-chosen password: "scrypt$<n>$<r>$<p>$<salt hex>$<digest hex>"."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"{_PASSWORD_SCHEME}${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (from `hash_password`), using the cost recorded in `stored`."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _PASSWORD_SCHEME:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        candidate = _scrypt(password, salt, n, r, p, len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(candidate, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int = 32) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=length)


class SecretBox:
    """Symmetric encryption (Fernet: AES-128-CBC + HMAC-SHA256) for the few secrets Roost must give back.

    Build it with `SecretBox.from_data_dir(data_dir)`, which reads `data_dir/secret.key` or, on first
    start, creates it. Losing the key file loses the stored instance passwords (not the ability to log
    in: MQTT checks the hash), so back it up with the database.
    """

    __slots__ = ("_fernet", "_key")

    def __init__(self, key: bytes) -> None:
        # Checked here, but the cipher is built on first use: importing cryptography costs several MB of
        # memory, which an idle gateway that never lists its instances need not pay.
        try:
            valid = len(base64.urlsafe_b64decode(key)) == 32
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise StorageError("the secret key is not a valid Fernet key: 32 url-safe base64-encoded bytes expected")
        self._key = key
        self._fernet: Any = None

    def _cipher(self) -> Any:
        if self._fernet is None:
            from cryptography.fernet import Fernet

            self._fernet = Fernet(self._key)
        return self._fernet

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SecretBox:
        """Load `data_dir/secret.key`, creating it (mode 0600) if it does not exist yet."""
        return cls(load_or_create_key(data_dir / KEY_FILE_NAME))

    def encrypt(self, plaintext: str) -> bytes:
        return self._cipher().encrypt(plaintext.encode())  # type: ignore[no-any-return]

    def decrypt(self, token: bytes) -> str:
        """The plaintext of `token`; StorageError if it was made with another key or was altered."""
        from cryptography.fernet import InvalidToken

        try:
            return self._cipher().decrypt(token).decode()  # type: ignore[no-any-return]
        except InvalidToken as exc:
            raise StorageError(
                "a stored secret cannot be decrypted: secret.key is not the key it was encrypted with"
            ) from exc


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, or a new one written there first.

    The new key is written to a private temporary file and hard-linked into place, so the key file
    appears complete or not at all, and `os.link` refuses to replace a file another process created in
    the meantime: an existing key is never overwritten (that would orphan every encrypted secret).
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.urlsafe_b64encode(os.urandom(32))  # what Fernet.generate_key() makes
    import tempfile  # once, when the key is first made: not at every start

    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret.key.")  # mode 0600
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_key(path)  # another process won the race; use its key
    finally:
        os.unlink(temporary)
    return key


def _read_key(path: Path) -> bytes:
    data = path.read_bytes().strip()
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o); chmod 600 it", path, mode)
    if not data:
        raise StorageError(f"{path} is empty; restore the key from a backup or remove the file")
    return data
