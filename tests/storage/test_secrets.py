"""Generated secrets, the two hash schemes, the key file and SecretBox."""

from __future__ import annotations

import hmac
import re
import stat
from pathlib import Path

import pytest

from storage import secrets as roost_secrets
from storage.errors import StorageError
from storage.secrets import (
    SecretBox,
    api_key_digest,
    generate_api_key,
    generate_password,
    generate_public_id,
    generate_username,
    hash_password,
    hash_secret,
    load_or_create_key,
    verify_password,
    verify_secret,
)


def test_generated_values_have_the_promised_shape() -> None:
    password = generate_password()
    assert re.fullmatch(r"[A-Za-z0-9]{24}", password)
    assert re.fullmatch(r"[A-Za-z0-9]{8}", generate_username())
    assert re.fullmatch(r"[0-9a-f]{24}", generate_public_id())
    key, secret = generate_api_key()
    assert re.fullmatch(r"sk_[A-Za-z0-9_-]{32}", key)
    assert re.fullmatch(r"secret_[A-Za-z0-9_-]{40}", secret)
    assert len({generate_password() for _ in range(50)}) == 50


def test_short_generated_passwords_are_refused() -> None:
    with pytest.raises(ValueError):
        generate_password(12)


def test_secret_hash_round_trip_and_salt() -> None:
    stored = hash_secret("s3cret")
    assert stored.startswith("s256$")
    assert verify_secret("s3cret", stored)
    assert not verify_secret("s3creT", stored)
    assert not verify_secret("", stored)
    assert hash_secret("s3cret") != stored  # salted


@pytest.mark.parametrize("stored", ["", "s256$", "s256$zz$00", "md5$00$00", "scrypt$1$1$1$00$00"])
def test_malformed_secret_hashes_never_verify(stored: str) -> None:
    assert not verify_secret("anything", stored)


def test_secret_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: object, b: object) -> bool:
        calls.append((a, b))
        return real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(roost_secrets.hmac, "compare_digest", spy)
    stored = hash_secret("x")
    assert verify_secret("x", stored)
    assert not verify_secret("y", stored)
    assert len(calls) == 2


def test_password_hash_round_trip() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert not verify_password("correct horse", hash_secret("correct horse"))  # wrong scheme


def test_api_key_digest_is_a_stable_lookup_value() -> None:
    key, _ = generate_api_key()
    assert api_key_digest(key) == api_key_digest(key)
    assert re.fullmatch(r"[0-9a-f]{64}", api_key_digest(key))


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    box = SecretBox.from_data_dir(tmp_path)
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    content = key_file.read_bytes()
    token = box.encrypt("p4ss")
    again = SecretBox.from_data_dir(tmp_path)
    assert key_file.read_bytes() == content
    assert again.decrypt(token) == "p4ss"
    assert [path.name for path in tmp_path.iterdir()] == ["secret.key"]  # no temporary left behind


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    first = load_or_create_key(tmp_path / "secret.key")
    assert load_or_create_key(tmp_path / "secret.key") == first


def test_decrypting_with_another_key_is_a_storage_error(tmp_path: Path) -> None:
    token = SecretBox.from_data_dir(tmp_path / "one").encrypt("p4ss")
    with pytest.raises(StorageError, match="cannot be decrypted"):
        SecretBox.from_data_dir(tmp_path / "two").decrypt(token)


def test_tampered_token_is_a_storage_error(tmp_path: Path) -> None:
    box = SecretBox.from_data_dir(tmp_path)
    token = bytearray(box.encrypt("p4ss"))
    token[-5] ^= 1
    with pytest.raises(StorageError):
        box.decrypt(bytes(token))


@pytest.mark.parametrize("content", [b"", b"not a fernet key\n"])
def test_bad_key_file_is_a_storage_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "secret.key").write_bytes(content)
    with pytest.raises(StorageError):
        SecretBox.from_data_dir(tmp_path)
