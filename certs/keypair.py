"""`KeyPair`, in a module of its own so that code handling PEM files need not import cryptography."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyPair"]


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key, both PEM (the key unencrypted PKCS#8)."""

    certificate: bytes
    key: bytes
