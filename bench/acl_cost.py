"""Instructions per QoS 0 PUBLISH, counted by callgrind: what the ACL and quota hooks add (issue 3).

Wall-clock CPU per message on the shared 2-core machine varies by more than the few microseconds to be
measured, so this counts instructions instead, which do not depend on what else the machine is doing:

    valgrind --tool=callgrind python -m bench.acl_cost KIND N

runs N QoS 0 PUBLISH packets (in reads of 100) from one client to one subscriber on `bench/#` through
Roost's real protocol engine, broker and hooks (the sans-IO engine needs no socket), for KIND:
`anonymous` (the anonymous ACL), `acl` (a tenant's MQTT-instance credentials: mount point and the storage
ACL hook, quota off) or `quota` (the same with the hourly quota meter on). `python -m bench.acl_cost
--report` runs all three under callgrind for 0 and 20,000 messages and prints instructions per message.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from broker.codec import Connect, Publish, Subscribe, Subscription, encode
from broker.clock import ManualClock
from broker.core import Broker
from broker.engine import Connection
from broker.hooks import AnonymousHook, HookChain
from broker.settings import BrokerSettings
from storage.access import PlanTerms, StorageAuthHook
from storage.auth_snapshot import AuthSnapshot, AuthUser, InstanceCredential
from storage.secrets import hash_secret
from storage.usage import UsageMeter

KINDS = ("anonymous", "acl", "quota")


def run(kind: str, messages: int) -> None:
    snapshot = AuthSnapshot(
        {1: AuthUser(1, "a" * 24, False, True, "enterprise")},
        {"bench": InstanceCredential("bench", hash_secret("pw"), 1, 1)},
        {},
        (0, 0),
    )
    usage = UsageMeter(None) if kind == "quota" else None  # type: ignore[arg-type]  # never flushed here
    storage = StorageAuthHook(snapshot, usage=usage, plan_terms=lambda plan: PlanTerms(0, 30))
    broker = Broker(BrokerSettings(), HookChain([storage, AnonymousHook(True)]), clock=ManualClock())
    credentials: dict[str, Any] = {} if kind == "anonymous" else {"username": "bench", "password": b"pw"}
    subscriber = Connection(broker, remote_address="127.0.0.1:1234")
    subscriber.receive_data(
        encode(Connect("sub", protocol_version=4, **credentials), 4)
        + encode(Subscribe(1, (Subscription("bench/#", 0),)), 4),
        0.0,
    )
    publisher = Connection(broker, remote_address="127.0.0.1:1235")
    publisher.receive_data(encode(Connect("pub", protocol_version=4, **credentials), 4), 0.0)
    chunk = encode(Publish("bench/1", b"x" * 64, 0), 4) * 100
    written = 0
    for _ in range(messages // 100):
        publisher.receive_data(chunk, 0.0)
        written += len(subscriber.data_to_send())
    if messages and not written:
        raise SystemExit(f"{kind}: nothing was delivered")


def _instructions(kind: str, messages: int) -> int:
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m", "bench.acl_cost",
         kind, str(messages)],
        capture_output=True, text=True, check=True,
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise SystemExit(result.stderr)
    return int(match.group(1))


def report(messages: int = 20_000) -> None:
    per_message = {}
    for kind in KINDS:
        per_message[kind] = (_instructions(kind, messages) - _instructions(kind, 0)) / messages
    print("| publisher | instructions per PUBLISH | added vs anonymous |")
    print("| --- | ---: | ---: |")
    for kind in KINDS:
        print(f"| {kind} | {per_message[kind]:,.0f} | {per_message[kind] - per_message['anonymous']:+,.0f} |")


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        report()
    elif len(sys.argv) == 3 and sys.argv[1] in KINDS:
        run(sys.argv[1], int(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
