"""Makes Roost's own certificates in a process of its own, for `certs.store`:

    python -m certs.generate DIRECTORY authority                      the local CA, if it is missing
    python -m certs.generate DIRECTORY server [--now ISO-8601] -- HOST...   the CA and the server certificate

Generating keys and certificates needs `cryptography`, whose import costs several MB that a process keeps
for its life. `CertificateStore` runs this module as a short-lived child when its own process has not
loaded cryptography (`roost serve` on its first start, and when its certificate is due for renewal), so the
serving process never does. The child writes the files itself, as the store would in-process, and prints
what it did: `ready` for the CA, `issued` or `kept` for the server certificate. On failure it prints one
line saying why on stderr and exits with status 1; the store raises that line as a `CertificateError`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from certs.store import CertificateStore

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m certs.generate", description="Make Roost's own CA and server certificate."
    )
    parser.add_argument("directory", type=Path)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("authority", help="make the local CA if it is missing")
    server = commands.add_parser("server", help="make sure a current server certificate for HOSTs is on disk")
    server.add_argument("--now", type=datetime.fromisoformat, default=None, help="the time to check against")
    server.add_argument("hosts", nargs="+", metavar="HOST")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    store = CertificateStore(args.directory, in_child=False)
    try:
        if args.command == "authority":
            store.authority()
            print("ready")
        else:
            print("issued" if store.check_and_issue_server(args.hosts, now=args.now) else "kept")
    except Exception as exc:  # one line for the parent to raise; the traceback would say less to a user
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
