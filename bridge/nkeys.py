"""NATS nkeys: read a seed (from a `.creds` file or a seed file), sign the server's nonce, name the public key.

Why our own: nats-py signs with the `nkeys` package, which needs PyNaCl (a second copy of Ed25519 in
native code). Roost already depends on `cryptography`, which has Ed25519; the nkey format around it is
small (nkeys, `strkey.go`): base32 without padding of a prefix, the 32-byte key and a CRC-16/XMODEM,
little-endian. The seed's two prefix bytes hold `S` and the key type (`U` for a user).

`NkeyClient` is nats-py's client with its nkeys step (`_setup_nkeys_connect`, which nats-py runs when a
connect names `user_credentials` or `nkeys_seed`) done here: it sends the user JWT from a creds file, or
the public key for a plain nkey user, and the nonce signed with the seed. tests/bridge/test_nkeys.py
authenticates with both against a real nats-server (a creds file against one in operator mode, with
JWTs it issues itself).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from nats.aio.client import Client

from bridge.errors import BridgeError

__all__ = ["NkeyClient", "NkeyError", "encode_public", "encode_seed", "public_key", "read_jwt", "read_seed", "sign"]

_PREFIX_SEED = 18 << 3  # 'S'
_PREFIX_USER = 20 << 3  # 'U'


class NkeyError(BridgeError):
    """A seed or creds file that does not hold what it should (named in the message)."""


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial 0), as nkeys' crc16.go."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _b32encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _b32decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 8)
    try:
        return base64.b32decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise NkeyError("not an nkey (bad base32)") from exc


def encode_seed(raw: bytes, prefix: int = _PREFIX_USER) -> str:
    """A seed string (`SU...` for a user) from 32 raw bytes."""
    body = bytes([_PREFIX_SEED | (prefix >> 5), (prefix & 31) << 3]) + raw
    return _b32encode(body + _crc16(body).to_bytes(2, "little"))


def encode_public(raw_public: bytes, prefix: int = _PREFIX_USER) -> str:
    """A public key string (`U...` for a user) from 32 raw bytes."""
    body = bytes([prefix]) + raw_public
    return _b32encode(body + _crc16(body).to_bytes(2, "little"))


def _decode_seed(seed: str) -> tuple[int, bytes]:
    data = _b32decode(seed.strip())
    if len(data) != 36:
        raise NkeyError("not an nkey seed (wrong length)")
    body, crc = data[:-2], int.from_bytes(data[-2:], "little")
    if _crc16(body) != crc:
        raise NkeyError("not an nkey seed (checksum mismatch)")
    if body[0] & 0xF8 != _PREFIX_SEED:
        raise NkeyError("not an nkey seed (it does not start with S)")
    prefix = ((body[0] & 7) << 5) | ((body[1] & 0xF8) >> 3)
    return prefix, body[2:]


def _block_after(text: str, marker: str) -> str | None:
    lines = [line.strip() for line in text.splitlines()]
    for index, line in enumerate(lines):
        if marker in line:
            for following in lines[index + 1:]:
                if following:
                    return following
    return None


def read_seed(text: str) -> str:
    """The user seed in a creds file (after `BEGIN USER NKEY SEED`) or a seed file (its `SU...` line)."""
    seed = _block_after(text, "BEGIN USER NKEY SEED")
    if seed is None:
        seed = next((line.strip() for line in text.splitlines() if line.strip().startswith("S")), None)
    if seed is None:
        raise NkeyError("no nkey seed in it")
    prefix, _ = _decode_seed(seed)
    if prefix != _PREFIX_USER:
        raise NkeyError("the nkey seed is not a user seed (SU...)")
    return seed


def read_jwt(text: str) -> str:
    """The user JWT of a creds file (after `BEGIN NATS USER JWT`)."""
    jwt = _block_after(text, "BEGIN NATS USER JWT")
    if jwt is None or jwt.startswith("-"):
        raise NkeyError("no user JWT in it (a creds file holds a JWT and a seed)")
    return jwt


def _private_key(seed: str):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(_decode_seed(seed)[1])


def public_key(seed: str) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = _private_key(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return encode_public(raw, _decode_seed(seed)[0])


def sign(seed: str, nonce: bytes) -> bytes:
    """The nonce's signature as the CONNECT `sig` field wants it (base64url, no padding)."""
    return base64.urlsafe_b64encode(_private_key(seed).sign(nonce)).rstrip(b"=")


class NkeyClient(Client):
    """nats-py's client, signing with `cryptography` instead of the `nkeys` package (see the module
    docstring). Pass `user_credentials=path` or `nkeys_seed=path` to `connect()` as for nats-py."""

    def _setup_nkeys_connect(self) -> None:
        creds = self._user_credentials
        path = Path(str(creds if creds is not None else self._nkeys_seed))
        text = path.read_text()
        seed = read_seed(text)
        if creds is not None:
            jwt = read_jwt(text)
            self._user_jwt_cb = lambda: jwt.encode()
        else:
            self._public_nkey = public_key(seed)
        self._signature_cb = lambda nonce: sign(seed, nonce.encode())
