"""Fresh broker processes for one measurement: Roost or Mosquitto, on a free loopback port, in a temp dir.

    with start_broker("roost", limits) as broker:
        broker.port, broker.pid, broker.credentials, broker.rss_kb()

Both get the same limits (`Limits`): in-flight window and queue length raised for the benchmark, $SYS off,
TCP_NODELAY on, logging quiet. Both authenticate every client, as their users run them:

- Mosquitto: a `password_file` made with `mosquitto_passwd -b` and an `acl_file` granting the bench user
  `bench/#`.
- Roost: `allow_anonymous = false`; before the broker starts, its own CLI (`roost user add bench --plan
  enterprise --json`, `roost mqtt add bench --json`) creates a tenant with an unlimited plan and one MQTT
  instance, whose user name and password the clients send. Their topics live in the tenant's namespace
  (`$u1/bench/...` inside the broker) and every PUBLISH and SUBSCRIBE goes through the storage ACL hook.
  `broker.tenant` has the user's id and API key, for benchmarks that drive the REST API
  (`http://127.0.0.1:{broker.http_port}`). `start_broker("roost", anonymous=True)` is the old setup
  (anonymous clients with a `bench/#` ACL), kept for measuring what authentication costs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .wire import Credentials

__all__ = [
    "BROKERS", "Broker", "Limits", "RoostBroker", "Tenant", "ensure_mosquitto", "export_roost", "free_port",
    "read_rss_kb", "start_broker",
]

HOST = "127.0.0.1"
# The CPUs a broker process may run on (None: any); `python -m bench.run --pin` gives the broker one core and
# the load generator the others, so that the generator's processes never take the broker's CPU.
BROKER_CPUS: set[int] | None = None
BENCH_USER = Credentials("bench", "bench-password")


@dataclass(frozen=True, slots=True)
class Tenant:
    """A Roost user made for the benchmark: its id, its REST API key, and one MQTT instance's credentials."""

    user_id: int
    api_key: str
    credentials: Credentials


@dataclass(frozen=True, slots=True)
class Limits:
    max_inflight: int = 1000
    max_queued_messages: int = 10_000


def free_port() -> int:
    """A free loopback port below Linux's ephemeral range (32768+), so that other programs asking the kernel
    for port 0 (test suites starting brokers of their own) cannot take it between now and our broker's bind."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-32000")


def read_rss_kb(pid: int, field: str = "VmRSS") -> int:
    """Resident set size of `pid` in kB (VmRSS, or VmHWM for the peak), from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def ensure_mosquitto() -> None:
    """Mosquitto and its tools must be on PATH; as root, install Debian's packages if they are not."""
    if shutil.which("mosquitto") and shutil.which("mosquitto_passwd"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: installing mosquitto and mosquitto-clients with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "update"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "mosquitto", "mosquitto-clients"], check=True,
                       stdout=subprocess.DEVNULL)
        if shutil.which("mosquitto"):
            return
    raise SystemExit("bench: Mosquitto is missing; install it with: sudo apt-get install -y mosquitto mosquitto-clients")


def _mosquitto_binary() -> str:
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def mosquitto_version() -> str:
    try:
        out = subprocess.run([_mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


class Broker:
    name = "broker"
    credentials: Credentials | None = None

    def __init__(self, workdir: Path, limits: Limits, **options: Any) -> None:
        if options:
            raise TypeError(f"{self.name} takes no options: {', '.join(options)}")
        self.workdir = workdir
        self.limits = limits
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "broker.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write the config (and whatever else the broker needs) into `workdir` before it starts."""

    def environment(self) -> dict[str, str] | None:
        """The broker's environment (None: this process's)."""
        return None

    def start(self, timeout: float = 20.0) -> None:
        self.prepare()
        log = open(self.log_path, "wb")
        cpus = BROKER_CPUS
        self.process = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=self.environment(),
                                        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        log.close()
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.5):
                time.sleep(0.2)  # a broker that failed to bind exits now: then the listener was someone else's
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {HOST}:{self.port} within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # A broker still working off a flood would take long to stop gracefully, and every run gets a
        # fresh process anyway: a short grace, then SIGKILL.
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_kb(self) -> int:
        return read_rss_kb(self.pid)

    def peak_rss_kb(self) -> int:
        return read_rss_kb(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        """User + system CPU time the broker process has used so far."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout: float = 60.0, window: float = 0.3, busy: float = 0.1) -> float:
        """Wait until the broker used under `busy` of a core over `window` s (it worked off any backlog
        that was queued in socket buffers); at most `timeout` s. Returns the seconds waited."""
        began = time.perf_counter()
        while time.perf_counter() - began < timeout and self.alive():
            before = self.cpu_seconds()
            time.sleep(window)
            if self.cpu_seconds() - before < busy * window:
                break
        return time.perf_counter() - began

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def export_roost(revision: str, into: Path) -> str:
    """Export Roost's packages at a git `revision` into `into`, so a benchmark measures one fixed version even
    while the working tree changes under it. Returns the commit it resolved to."""
    repo = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", revision], check=True,
                            capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(repo), "archive", commit, "broker", "control", "storage", "certs"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    # Byte-compiled, as an installed Roost is (pip, the .deb and the single file all ship bytecode): else
    # every start compiles ~150 modules from source, and the compiler's garbage adds ~1 MB to the idle RSS
    # that no user's process has (docs/benchmarks.md, "Memory (issue 20)").
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(into)], check=True, stdout=subprocess.DEVNULL)
    return commit


@contextlib.contextmanager
def roost_revision(revision: str) -> Iterator[str]:
    """Start the Roost brokers made inside from Roost at a git `revision`, exported to a temporary folder
    (`"worktree"`: the tree as it is). Yields the version for the report."""
    if revision == "worktree":
        yield "working tree"
        return
    with tempfile.TemporaryDirectory(prefix="bench-roost-src-") as folder:
        version = export_roost(revision, Path(folder))
        previous, RoostBroker.source = RoostBroker.source, Path(folder)
        try:
            yield version
        finally:
            RoostBroker.source = previous


class RoostBroker(Broker):
    """Roost from the installed `roost` command, or from an exported source tree (`source`).

    Authenticated by default: a tenant (`tenant`) is made with Roost's CLI before start-up, and the clients
    use its MQTT instance's credentials. `anonymous=True`: anonymous clients with a `bench/#` ACL instead."""

    name = "roost"
    source: Path | None = None

    def __init__(self, workdir: Path, limits: Limits, anonymous: bool = False, probe: bool = False) -> None:
        super().__init__(workdir, limits)
        self.anonymous = anonymous
        # bench/probe.py inside the broker: its record is written to `probe_path` when the broker exits.
        self.probe_path = workdir / "probe.json" if probe else None
        self.http_port = free_port()
        self.tenant: Tenant | None = None
        self.credentials: Credentials | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "roost.toml"

    def _launcher(self) -> list[str]:
        """The `roost` command: `[...launcher, "serve", "--config", ...]`."""
        if self.source is not None:
            boot = f"import sys; sys.path.insert(0, {str(self.source)!r}); from control.cli import main; sys.exit(main())"
            return [sys.executable, "-c", boot]
        script = Path(sys.executable).with_name("roost")
        return [str(script)] if script.exists() else [sys.executable, "-m", "control.cli"]

    def command(self) -> list[str]:
        return [*self._launcher(), "serve", "--config", str(self.config_path)]

    def environment(self) -> dict[str, str] | None:
        if self.probe_path is None:
            return None
        from .probe import sitecustomize

        site = self.workdir / "probe-site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(sitecustomize(self.probe_path))
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": str(site) + (os.pathsep + path if path else "")}

    def start(self, timeout: float = 20.0) -> None:
        super().start(timeout)
        # The HTTP port opens last (storage -> broker -> MQTT -> HTTP): wait for it too.
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"roost exited at start-up:\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.http_port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"roost's HTTP port {self.http_port} did not open within {timeout} s:\n{self.log_tail()}")

    def cli(self, *commands: list[str]) -> list[Any]:
        """Run `roost COMMAND --json --config ...` for each command, in one Python process (each `roost`
        start costs ~0.7 s of imports), on this broker's database, running or not; the parsed JSON outputs."""
        script = (
            "import contextlib, io, json, sys\n"
            + (f"sys.path.insert(0, {str(self.source)!r})\n" if self.source is not None else "")
            + "from control.cli import main\n"
            "outputs = []\n"
            "for command in json.loads(sys.argv[1]):\n"
            "    buffer = io.StringIO()\n"
            "    with contextlib.redirect_stdout(buffer):\n"
            "        code = main(command)\n"
            "    if code:\n"
            "        sys.exit(f'roost {\" \".join(command)}: exit status {code}')\n"
            "    outputs.append(json.loads(buffer.getvalue()))\n"
            "print(json.dumps(outputs))\n"
        )
        # The management commands refuse a data folder that does not exist (a new, empty database made by
        # mistake); making the folder here works with every Roost revision, old ones without --create too.
        (self.workdir / "data").mkdir(exist_ok=True)
        argv = [[*command, "--json", "--config", str(self.config_path)] for command in commands]
        done = subprocess.run([sys.executable, "-c", script, json.dumps(argv)], cwd=self.workdir,
                              capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"roost CLI failed: {done.stderr.strip()[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def prepare(self) -> None:
        self.write_config()
        if self.anonymous:
            return
        user, instance = self.cli(["user", "add", "bench", "--plan", "enterprise"], ["mqtt", "add", "bench"])
        self.credentials = Credentials(instance["user"], instance["password"])
        self.tenant = Tenant(int(user["id"]), user["api_key"], self.credentials)

    def write_config(self) -> None:
        self.config_path.write_text(
            f"""# Written by bench/brokers.py for one benchmark run.
data_dir = "{self.workdir / 'data'}"

[mqtt]
host = "{HOST}"
port = {self.port}
allow_anonymous = {"true" if self.anonymous else "false"}
max_inflight = {self.limits.max_inflight}
max_queued_messages = {self.limits.max_queued_messages}
receive_maximum = 65535
# The routing scenario holds 100,000 subscriptions on one client (Mosquitto has no such limit): over the
# default of 1,000 it would be refused.
max_subscriptions_per_client = 0
sys_interval = 0
shutdown_grace = 0.5

[mqtt.anonymous]
publish = ["bench/#"]
subscribe = ["bench/#"]

[http]
host = "{HOST}"
port = {self.http_port}

[tls]
port = 0  # no MQTT over TLS listener: parallel runs would all want 8883

[log]
level = "warning"
"""
        )


class MosquittoBroker(Broker):
    name = "mosquitto"
    credentials = BENCH_USER

    def command(self) -> list[str]:
        return [_mosquitto_binary(), "-c", str(self.workdir / "mosquitto.conf")]

    def prepare(self) -> None:
        self.write_config()

    def write_config(self) -> None:
        passwords = self.workdir / "passwords"
        subprocess.run(
            ["mosquitto_passwd", "-c", "-b", str(passwords), BENCH_USER.username, BENCH_USER.password],
            check=True, capture_output=True, timeout=30,
        )
        acl = self.workdir / "acl"
        acl.write_text(f"user {BENCH_USER.username}\ntopic readwrite bench/#\n")
        for path in (passwords, acl):
            path.chmod(0o600)
        user = "root" if os.geteuid() == 0 else ""
        (self.workdir / "mosquitto.conf").write_text(
            f"""# Written by bench/brokers.py for one benchmark run.
listener {self.port} {HOST}
allow_anonymous false
password_file {passwords}
acl_file {acl}
max_inflight_messages {self.limits.max_inflight}
max_queued_messages {self.limits.max_queued_messages}
persistence false
sys_interval 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
{"user " + user if user else ""}
"""
        )


BROKERS: dict[str, type[Broker]] = {"roost": RoostBroker, "mosquitto": MosquittoBroker}


@contextlib.contextmanager
def start_broker(name: str, limits: Limits | None = None, **options: Any) -> Iterator[Broker]:
    """A fresh broker process in a fresh temp dir; stopped and removed on exit. `options` go to the broker's
    class (Roost: `anonymous=True`)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        broker = BROKERS[name](Path(tmp), limits or Limits(), **options)
        try:
            broker.start()
            yield broker
        finally:
            broker.stop()
