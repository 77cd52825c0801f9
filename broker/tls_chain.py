"""The issuers to serve beside a lone server certificate, found without loading `cryptography`.

OpenSSL builds a server's chain from the verify store at every handshake when the context has no explicit
chain (`ssl_add_cert_chain` runs `X509_verify_cert`): with mutual TLS on, Roost's verify store holds the CA
that signed its own server certificate, and that search cost about a fifth of the server's CPU per full
handshake. Loading the issuer as the chain ends the search. The serving process keeps `cryptography` out
of memory (certificates are made in a child: see certs/store.py), so the issuer and subject names are read
here from the DER with a few lines of TLV walking: a loop, no recursion. The files are the operator's own;
any certificate this cannot read is simply not matched, and OpenSSL then builds the chain as before.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

__all__ = ["chain_with_issuers"]

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.S)
# A chain longer than this is not one Roost would serve.
_MAX_CHAIN = 8


def _element(der: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, offset of the value, offset past the value) of the DER element at `offset`."""
    if offset + 2 > len(der):
        raise ValueError("truncated DER")
    tag, length, start = der[offset], der[offset + 1], offset + 2
    if length & 0x80:
        size = length & 0x7F
        if not 0 < size <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[start : start + size], "big")
        start += size
    if start + length > len(der):
        raise ValueError("truncated DER")
    return tag, start, start + length


def _issuer_and_subject(der: bytes) -> tuple[bytes, bytes]:
    """The encoded issuer and subject Names of an X.509 certificate (RFC 5280 section 4.1)."""
    _, certificate, _ = _element(der, 0)
    _, offset, tbs_end = _element(der, certificate)
    fields: list[tuple[int, int, int]] = []  # (tag, element start, element end)
    while offset < tbs_end and len(fields) < 6:
        tag, _, end = _element(der, offset)
        fields.append((tag, offset, end))
        offset = end
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    if len(fields) < 5:
        raise ValueError("not a certificate")
    # serialNumber, signature, issuer, validity, subject
    return der[fields[2][1] : fields[2][2]], der[fields[4][1] : fields[4][2]]


def _certificates(pem: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(PEM block, issuer, subject) of each certificate in a PEM file's bytes."""
    found = []
    for match in _PEM.finditer(pem):
        block = match.group(0)
        issuer, subject = _issuer_and_subject(ssl.PEM_cert_to_DER_cert(block.decode("ascii")))
        found.append((block, issuer, subject))
    return found


def chain_with_issuers(cert_file: Path, ca_file: Path) -> bytes | None:
    """The certificate file's PEM followed by the issuers found in `ca_file`, or None when there is nothing
    to add (the chain already ends in a self-signed certificate, no issuer is in the CA file, or a file
    cannot be read: then `load_cert_chain` reports the problem in its own words)."""
    try:
        own = cert_file.read_bytes()
        chain = _certificates(own)
        authorities = _certificates(ca_file.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not chain:
        return None
    by_subject = {subject: block for block, _, subject in authorities}
    issuer_of = {subject: issuer for _, issuer, subject in authorities}
    added: list[bytes] = []
    issuer, subject = chain[-1][1], chain[-1][2]
    while issuer != subject and issuer in by_subject and len(chain) + len(added) < _MAX_CHAIN:
        added.append(by_subject.pop(issuer))
        issuer, subject = issuer_of[issuer], issuer
    if not added:
        return None
    return own.rstrip(b"\n") + b"\n" + b"\n".join(added) + b"\n"
