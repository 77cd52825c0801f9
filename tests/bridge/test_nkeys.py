"""nkeys with `cryptography` (bridge/nkeys.py), and the NATS link's credentials against a real nats-server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bridge.errors import LinkError
from bridge.nats_config import NatsSettings
from bridge.nats_link import NATSLink
from bridge.nkeys import NkeyError, encode_public, encode_seed, public_key, read_jwt, read_seed, sign
from bench.nats_cluster import NatsServer, nats_server_binary
from tests.bridge.test_nats_link import Handler, LinkConfig, Recorder, entry

pytestmark = pytest.mark.timeout(60)

CREDS = """-----BEGIN NATS USER JWT-----
eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------
"""


def test_a_seed_encodes_decodes_and_signs() -> None:
    seed = encode_seed(bytes(range(32)))
    assert seed.startswith("SU") and read_seed(seed + "\n") == seed
    assert public_key(seed).startswith("U") and len(public_key(seed)) == 56
    assert sign(seed, b"nonce") != sign(encode_seed(bytes(32)), b"nonce")
    creds = CREDS.format(seed=seed)
    assert read_seed(creds) == seed and read_jwt(creds).startswith("eyJ0eXAi")


@pytest.mark.parametrize(("text", "message"), [
    ("", "no nkey seed"),
    ("SUAAAA", "wrong length|bad base32"),
    (encode_seed(bytes(32))[:-1] + ("A" if encode_seed(bytes(32))[-1] != "A" else "B"), "checksum|bad base32"),
])
def test_a_bad_seed_is_refused(text: str, message: str) -> None:
    with pytest.raises(NkeyError, match=message):
        read_seed(text)


def test_a_seed_file_is_not_a_creds_file() -> None:
    with pytest.raises(NkeyError, match="no user JWT"):
        read_jwt(encode_seed(bytes(32)))


@pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed (the test extra has it)")
async def test_nkey_and_password_users_authenticate_against_nats_server(tmp_path: Path) -> None:
    seed = encode_seed(os.urandom(32))
    seed_file = tmp_path / "user.nk"
    seed_file.write_text(seed + "\n")
    server = NatsServer(tmp_path / "auth", "auth0", extra=(
        "authorization { users = [ "
        f'{{ nkey: "{public_key(seed)}" }}, {{ user: "alice", password: "s3cret" }} ] }}'
    ))
    server.write_config([])
    server.start()
    try:
        for config, settings in (
            (LinkConfig(subscribe=()), NatsSettings((server.url,), False, "S", nkey_seed_file=seed_file)),
            (LinkConfig(subscribe=(), username="alice", password="s3cret"), NatsSettings((server.url,), False, "S")),
        ):
            recorder = Recorder()
            link = NATSLink(config, settings)
            await link.connect(Handler(recorder))  # type: ignore[arg-type]
            link.send(entry(1))
            await recorder.wait(lambda: recorder.acked == [(1, 0)])
            link.close("done")
            await link.closed()
        wrong = NATSLink(LinkConfig(subscribe=(), username="alice", password="wrong", connect_timeout=2),
                         NatsSettings((server.url,), False, "S"))
        with pytest.raises(LinkError, match="[Aa]uthorization"):
            await wrong.connect(Handler(Recorder()))  # type: ignore[arg-type]
        other = tmp_path / "other.nk"
        other.write_text(encode_seed(os.urandom(32)))
        stranger = NATSLink(LinkConfig(subscribe=(), connect_timeout=2),
                            NatsSettings((server.url,), False, "S", nkey_seed_file=other))
        with pytest.raises(LinkError, match="[Aa]uthorization"):
            await asyncio.wait_for(stranger.connect(Handler(Recorder())), 20)  # type: ignore[arg-type]
    finally:
        server.stop()


@pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed (the test extra has it)")
async def test_tls_with_a_ca_and_with_a_client_certificate(tmp_path: Path) -> None:
    from bridge.config import parse_bridges
    from certs.authority import issue_client, issue_server, new_authority

    authority = new_authority("nats test CA")
    server_cert = issue_server(authority, ["127.0.0.1", "localhost"])
    client_cert = issue_client(authority, "gw-1")
    files = {"ca": authority.certificate, "cert": server_cert.certificate, "key": server_cert.key,
             "client_cert": client_cert.certificate, "client_key": client_cert.key,
             "other_ca": new_authority("another CA").certificate}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(data)
    server = NatsServer(tmp_path / "tls", "tls0", extra=(
        f'tls {{ cert_file: "{paths["cert"]}", key_file: "{paths["key"]}", ca_file: "{paths["ca"]}", verify: true }}'
    ))
    server.write_config([])
    server.start()

    def bridge(**keys: str) -> NATSLink:
        table = {"name": "fleet", "url": f"tls://127.0.0.1:{server.port}", "forward": ["sensors/#"],
                 "remote_prefix": "site1/", "stream": "S", "connect_timeout": 3, **keys}
        config = parse_bridges([table])[0]
        assert config.nats is not None and config.tls
        return NATSLink(config, config.nats)

    try:
        link = bridge(ca_file=str(paths["ca"]), cert_file=str(paths["client_cert"]), key_file=str(paths["client_key"]))
        recorder = Recorder()
        await link.connect(Handler(recorder))  # type: ignore[arg-type]
        link.send(entry(1))
        await recorder.wait(lambda: recorder.acked == [(1, 0)])
        link.close("done")
        await link.closed()
        # The server's certificate is verified against ca_file; and the server wants ours (verify: true).
        with pytest.raises(LinkError, match="(?i)certificate verify failed"):
            await bridge(ca_file=str(paths["other_ca"])).connect(Handler(Recorder()))  # type: ignore[arg-type]
        with pytest.raises(LinkError):
            await bridge(ca_file=str(paths["ca"])).connect(Handler(Recorder()))  # type: ignore[arg-type]
    finally:
        server.stop()


class _Key:
    """An nkey pair of a given type (operator O, account A, user U) for the JWTs below."""

    def __init__(self, prefix: int) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self.raw = os.urandom(32)
        self.key = Ed25519PrivateKey.from_private_bytes(self.raw)
        self.public = encode_public(self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), prefix)


def _jwt(signer: _Key, subject: _Key, nats: dict[str, object]) -> str:
    """A NATS JWT (v2 claims, alg ed25519-nkey), as `nsc` would issue it."""
    import base64
    import hashlib
    import json
    import time

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims: dict[str, object] = {"jti": "", "iat": int(time.time()), "iss": signer.public, "sub": subject.public,
                                 "name": subject.public[:8], "nats": nats}
    claims["jti"] = base64.b32encode(hashlib.new("sha512_256", json.dumps(claims).encode()).digest()).decode().rstrip("=")
    payload = b64(json.dumps(claims).encode())
    return f"{header}.{payload}.{b64(signer.key.sign(f'{header}.{payload}'.encode()))}"


@pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed (the test extra has it)")
async def test_a_creds_file_authenticates_against_an_operator_mode_nats_server(tmp_path: Path) -> None:
    operator, account, system, user = _Key(14 << 3), _Key(0), _Key(0), _Key(20 << 3)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                 "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    account_jwt = _jwt(operator, account, {"type": "account", "version": 2, "limits": unlimited})
    system_jwt = _jwt(operator, system, {"type": "account", "version": 2})
    server = NatsServer(tmp_path / "op", "op0", extra=(
        f'operator: "{_jwt(operator, operator, {"type": "operator", "version": 2})}"\n'
        f"system_account: {system.public}\nresolver: MEMORY\n"
        f'resolver_preload: {{ {account.public}: "{account_jwt}", {system.public}: "{system_jwt}" }}'
    ))
    server.write_config([])
    server.start()

    def creds(signer: _Key, name: str) -> Path:
        path = tmp_path / name
        user_jwt = _jwt(signer, user, {"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1})
        path.write_text(CREDS.replace("eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln", user_jwt)
                        .format(seed=encode_seed(user.raw)))
        return path

    try:
        recorder = Recorder()
        link = NATSLink(LinkConfig(subscribe=()), NatsSettings((server.url,), False, "S",
                                                               creds_file=creds(account, "good.creds")))
        await link.connect(Handler(recorder))  # type: ignore[arg-type]
        link.send(entry(1))
        await recorder.wait(lambda: recorder.acked == [(1, 0)])
        link.close("done")
        await link.closed()
        # A user JWT signed by an account the server does not know is refused.
        stranger = NATSLink(LinkConfig(subscribe=(), connect_timeout=2),
                            NatsSettings((server.url,), False, "S", creds_file=creds(_Key(0), "bad.creds")))
        with pytest.raises(LinkError, match="(?i)authorization"):
            await asyncio.wait_for(stranger.connect(Handler(Recorder())), 20)  # type: ignore[arg-type]
    finally:
        server.stop()
