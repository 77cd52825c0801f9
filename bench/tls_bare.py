"""A bare TLS server's CPU per set-up, by how the TLS is driven: the prototype behind issue 20's second round.

    python -m bench.tls_bare [--modes roost,mosquitto,sslproto,socket,private] [--runs 3] [--seconds 4]
                             [--workers 2]

Every server runs on the certificate and key that `roost serve` makes for itself (EC P-256, its CA), and the
clients are `bench.tls_bench`'s set-up loop (full, then resumed handshakes, TLS 1.3); the figure is the
server process's user + system CPU per set-up, from /proc, the modes taken in turn (reversed every other
run). `roost` is `roost serve` and `mosquitto` Debian's Mosquitto, as `bench.tls_bench` starts them; the
other modes are a bare server process on uvloop with Roost's `server_context` (one TLS 1.3 ticket, the CA as
client CA) that answers the first bytes of each connection (the client's CONNECT) with a CONNACK and
nothing else:

- sslproto: `loop.create_server(ssl=context)`: uvloop's SSLProtocol, two MemoryBIOs and an SSLObject per
  connection, records copied through them (what Roost's TLS port costs before Roost's own code).
- socket: an own accept loop; `context.wrap_socket(..., do_handshake_on_connect=False)`, a non-blocking
  `ssl.SSLSocket` on the socket itself, driven by `loop.add_reader`: OpenSSL reads and writes the socket.
- private: the same through `SSLContext._wrap_socket`, the C object under `ssl.SSLSocket` (no Python
  socket subclass around it): how much of `socket` is Python's wrapper.

Loopback only, bounded in time; the servers are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import ssl
import statistics
import tempfile
from pathlib import Path

from .brokers import ensure_mosquitto, free_port
from .tls_bench import Endpoint, _stop, setups_per_second, start_mosquitto, start_roost

CONNACK = b"\x20\x02\x00\x00"


def _context(folder: Path) -> ssl.SSLContext:
    from broker.tls import server_context

    return server_context(folder / "server.pem", folder / "server.key", folder / "ca.pem")


class _Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(CONNACK)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        return None


def _serve_sslproto(loop: asyncio.AbstractEventLoop, context: ssl.SSLContext, port: int) -> None:
    loop.run_until_complete(loop.create_server(_Answer, "127.0.0.1", port, ssl=context, backlog=1024))


def _serve_direct(loop: asyncio.AbstractEventLoop, context: ssl.SSLContext, port: int, private: bool) -> None:
    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", port))
    listening.listen(1024)
    listening.setblocking(False)

    def accept() -> None:
        for _ in range(64):
            try:
                sock, _ = listening.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if private:
                tls = context._wrap_socket(sock, True)  # type: ignore[attr-defined]
                fd = sock.fileno()
                holder = sock
            else:
                tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                fd = tls.fileno()
                holder = tls
            state = [False]

            def readable(tls=tls, fd=fd, holder=holder, state=state) -> None:
                try:
                    if not state[0]:
                        tls.do_handshake()
                        state[0] = True
                    data = tls.read(65536) if private else tls.recv(65536)
                    if not data:
                        raise ConnectionResetError
                    if private:
                        tls.write(CONNACK)
                    else:
                        tls.send(CONNACK)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    return
                except (OSError, ssl.SSLError):
                    loop.remove_reader(fd)
                    holder.close()

            loop.add_reader(fd, readable)

    loop.add_reader(listening.fileno(), accept)


def _server(mode: str, folder: str, port: int, ready: multiprocessing.Event) -> None:
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    context = _context(Path(folder))
    if mode == "sslproto":
        _serve_sslproto(loop, context, port)
    else:
        _serve_direct(loop, context, port, mode == "private")
    ready.set()
    loop.run_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="roost,mosquitto,sslproto,socket,private")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    modes = args.modes.split(",")
    results: dict[str, list[tuple[float, float, float, float]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="bench-tls-bare-") as tmp:
        folder = Path(tmp)
        (folder / "roost").mkdir()
        (folder / "mosquitto").mkdir()
        roost, roost_endpoint = start_roost(folder / "roost")  # makes the CA and certificate all use
        certs = folder / "roost" / "data" / "certs"
        servers: dict[str, tuple[object, Endpoint]] = {"roost": (roost, roost_endpoint)}
        for mode in modes:
            if mode == "mosquitto":
                ensure_mosquitto()
                servers[mode] = start_mosquitto(folder / "mosquitto", certs)
            elif mode != "roost":
                ready = multiprocessing.Event()
                port = free_port()
                process = multiprocessing.Process(target=_server, args=(mode, str(certs), port, ready), daemon=True)
                process.start()
                ready.wait(30)
                servers[mode] = (process, Endpoint(mode, port, str(certs / "ca.pem"), process.pid))
        try:
            for run in range(args.runs):
                order = modes if run % 2 == 0 else modes[::-1]
                for mode in order:
                    endpoint = servers[mode][1]
                    full, _, full_cpu = setups_per_second(endpoint, False, args.seconds, args.workers)
                    resumed, fraction, resumed_cpu = setups_per_second(endpoint, True, args.seconds, args.workers)
                    results[mode].append((full, full_cpu, resumed, resumed_cpu))
                    print(f"{mode}: full {full:,.0f}/s {full_cpu:.3f} ms; resumed {resumed:,.0f}/s "
                          f"({fraction:.0%}) {resumed_cpu:.3f} ms", flush=True)
        finally:
            for process, _ in servers.values():
                if isinstance(process, multiprocessing.Process):
                    process.terminate()
                    process.join(10)
                else:
                    _stop(process)  # type: ignore[arg-type]
    print("| mode | full, ms CPU (range) | resumed, ms CPU (range) | full/s (median) | resumed/s (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode, rows in results.items():
        full_cpu = [row[1] for row in rows]
        resumed_cpu = [row[3] for row in rows]
        print(f"| {mode} | {min(full_cpu):.3f}-{max(full_cpu):.3f} | {min(resumed_cpu):.3f}-{max(resumed_cpu):.3f} "
              f"| {statistics.median(row[0] for row in rows):,.0f} | {statistics.median(row[2] for row in rows):,.0f} |")


if __name__ == "__main__":
    main()
