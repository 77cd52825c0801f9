"""The Debian packages of scripts/deb.sh: the arm64 one (Raspberry Pi OS) checked with dpkg-deb and its
unpacked command run under emulation, and the amd64 one installed on this machine, served through its
unit's ExecStart as the `roost` user, upgraded with an edited config kept, removed and purged.

THE INSTALL TEST CHANGES THIS MACHINE (marked `system`): it installs the package with dpkg (files in /usr,
/etc/roost, /lib/systemd), creates the `roost` system user and /var/lib/roost, and removes all of that
again at the end, whatever happened. It runs only as root, and skips rather than touch a machine that
already has a roost package, user or folder. There is no systemd here: the maintainer scripts' systemd
steps run as they do in a container (enable by symlink, no start), and the test starts ExecStart itself
with the unit's user, group, working directory and umask.
"""

from __future__ import annotations

import grp
import json
import os
import platform
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dist_helpers import REPO, ServeProcess, config_file, emulated_aarch64_python, mosquitto, single_file
from tests.session_helpers import free_port

TIMEOUT = 60
DPKG_LOCK_SECONDS = 300  # another apt or dpkg may be running on this machine
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
UNIT = Path("/lib/systemd/system/roost.service")
CONFIG = Path("/etc/roost/roost.toml")
DATA = Path("/var/lib/roost")
ENABLED = Path("/etc/systemd/system/multi-user.target.wants/roost.service")

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="builds the packages on a linux x86-64 machine"),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed (not a Debian machine)"),
    pytest.mark.timeout(900),
]


def build(out: Path, version: str = VERSION) -> dict[str, Path]:
    """scripts/deb.sh for both architectures into `out`; the packages by Debian architecture."""
    missing = [tool for tool in ("strip", "aarch64-linux-gnu-strip") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: apt-get install binutils binutils-aarch64-linux-gnu "
                    "(scripts/test.sh does)")
    single_file("x86_64", "aarch64")
    result = subprocess.run(
        ["bash", "scripts/deb.sh", "x86_64", "aarch64"], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ROOST_DEB_VERSION": version, "ROOST_DEB_OUT": str(out)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    packages = {arch: out / f"roost_{version}_{arch}.deb" for arch in ("amd64", "arm64")}
    assert all(path.is_file() for path in packages.values()), result.stdout
    return packages


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build(tmp_path_factory.mktemp("deb"))


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True, timeout=TIMEOUT).stdout


def _elf_machine(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[18:20], "little")


def test_arm64_package_fields_and_contents(packages: dict[str, Path], tmp_path: Path) -> None:
    deb = packages["arm64"]
    fields = dict(line.split(": ", 1) for line in _dpkg_deb("-f", str(deb)).splitlines() if ": " in line)
    assert (fields["Package"], fields["Version"], fields["Architecture"]) == ("roost", VERSION, "arm64")
    depends = [part.strip() for part in fields["Depends"].split(",")]
    assert "python3 (>= 3.11)" in depends and "python3 (<< 3.14)" in depends and "adduser" in depends
    assert _dpkg_deb("-I", str(deb), "conffiles").split() == [str(CONFIG)]

    names = {line.split()[-1].removeprefix(".") for line in _dpkg_deb("-c", str(deb)).splitlines()}
    for path in ("/usr/bin/roost", "/usr/lib/roost/roost.pyz", str(UNIT), str(CONFIG),
                 "/usr/share/doc/roost/copyright", "/usr/share/man/man1/roost.1.gz"):
        assert path in names
    assert not any("x86_64" in name for name in names)

    root = tmp_path / "root"
    _dpkg_deb("-x", str(deb), str(root))
    sites = list((root / "usr/lib/roost/site").iterdir())
    assert len(sites) == 1 and sites[0].name.startswith("roost.pyz_")
    extensions = list(sites[0].rglob("*.so"))
    assert {f"loop.cpython-{v}-aarch64-linux-gnu.so" for v in ("311", "312", "313")} <= {p.name for p in extensions}
    assert all(_elf_machine(path) == 183 for path in extensions)  # EM_AARCH64
    unit = (root / UNIT.relative_to("/")).read_text()
    assert "ExecStart=/usr/bin/roost serve --config /etc/roost/roost.toml" in unit.splitlines()
    assert 'data_dir = "/var/lib/roost"' in (root / CONFIG.relative_to("/")).read_text()


def test_arm64_package_command_runs_under_emulation_from_its_unpacked_libraries(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    """The packaged command as a Pi runs it (the wrapper's interpreter replaced by the emulated one): the
    libraries come from the folder unpacked at build time, which shiv must find as it is (same archive
    name, same build id), so nothing is unpacked at run time."""
    python = emulated_aarch64_python()
    root = tmp_path / "root"
    _dpkg_deb("-x", str(packages["arm64"]), str(root))
    wrapper = (root / "usr/bin/roost").read_text()
    assert "exec /usr/bin/python3 /usr/lib/roost/roost.pyz" in wrapper
    before = sorted(p.name for p in (root / "usr/lib/roost/site").iterdir())
    result = subprocess.run(
        [str(python), str(root / "usr/lib/roost/roost.pyz"), "--version"], capture_output=True, text=True,
        timeout=TIMEOUT, env={"PATH": "/usr/bin:/bin", "SHIV_ROOT": str(root / "usr/lib/roost/site")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"roost {VERSION}"
    assert sorted(p.name for p in (root / "usr/lib/roost/site").iterdir()) == before


# -- installed on this machine -------------------------------------------------------------------------------


def _waiting_for_locks(command: list[str], env: dict[str, str] | None = None) -> str:
    """Run `command` (dpkg or apt-get), again while another apt or dpkg holds one of their locks (up to
    DPKG_LOCK_SECONDS); its output. Fails on any other error, and on any question: stdin is closed and
    apt is non-interactive, so a conffile prompt is an error."""
    deadline = time.monotonic() + DPKG_LOCK_SECONDS
    while True:
        result = subprocess.run(
            command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT * 3,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", **(env or {})},
        )
        output = result.stdout + result.stderr
        if result.returncode == 0:
            return output
        if ("lock" in output.lower()) and time.monotonic() < deadline:
            time.sleep(2)  # the other apt or dpkg says nothing when it is done: poll
            continue
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{output}")


def _dpkg(*args: str, env: dict[str, str] | None = None) -> str:
    return _waiting_for_locks(["dpkg", *args], env)


def _apt_get(*args: str, env: dict[str, str] | None = None) -> str:
    """apt-get ARGS, as docs/install.md has users run apt (`apt install ./roost_VERSION_ARCH.deb`)."""
    return _waiting_for_locks(["apt-get", "-y", "-q", *args], env)


def _installed_version() -> str | None:
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", "roost"], capture_output=True,
                            text=True)
    if result.returncode != 0 or not result.stdout.startswith("install ok installed"):
        return None
    return result.stdout.split()[-1]


def _unit_service() -> dict[str, list[str]]:
    """The [Service] settings of the installed unit, each key's values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def _as_unit(key: str) -> tuple[list[str], dict[str, str], Path, int]:
    """The unit's `key` command (ExecStart, ExecStartPre) as systemd would run it here: its user and group,
    no new privileges, its environment, working directory and umask."""
    unit = _unit_service()
    user, group = unit["User"][0], unit["Group"][0]
    assert unit["NoNewPrivileges"] == ["yes"]
    command = ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--no-new-privs",
               *shlex.split(unit[key][0])]
    home = pwd.getpwnam(user).pw_dir
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": home,
           "USER": user, "LOGNAME": user, "LANG": "C.UTF-8"}
    for assignment in unit.get("Environment", []):
        name, value = assignment.split("=", 1)
        env[name] = value
    return command, env, Path(unit["WorkingDirectory"][0]), int(unit["UMask"][0], 8)


def _serve() -> ServeProcess:
    command, env, cwd, umask = _as_unit("ExecStart")
    return ServeProcess(command, env, timeout=TIMEOUT, cwd=cwd, umask=umask)


def _as_roost(*args: str) -> str:
    result = subprocess.run(["runuser", "-u", "roost", "--", *args], capture_output=True, text=True,
                            timeout=TIMEOUT, cwd="/")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def clean_machine() -> Iterator[None]:
    """Skip unless this machine can take the package and give it back: root, and no roost package, user or
    folder already. Afterwards remove everything the package and the test made."""
    if os.geteuid() != 0:
        pytest.skip("installs a Debian package and creates a system user: runs as root only")
    for tool in ("dpkg", "setpriv", "runuser", "mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    if _installed_version() is not None:
        pytest.skip("a roost package is installed on this machine; the install test would replace it")
    taken = [str(p) for p in (DATA, CONFIG.parent, Path("/usr/lib/roost"), Path("/usr/bin/roost")) if p.exists()]
    try:
        pwd.getpwnam("roost")
        taken.append("the roost user")
    except KeyError:
        pass
    if taken:
        pytest.skip(f"this machine already has {', '.join(taken)}; the install test would change them")
    try:
        yield
    finally:
        try:
            if subprocess.run(["dpkg-query", "-W", "roost"], capture_output=True).returncode == 0:
                _dpkg("--purge", "roost", env={"ROOST_PURGE_DATA": "yes"})
        finally:
            subprocess.run(["deluser", "--system", "--quiet", "roost"], capture_output=True)
            if subprocess.run(["getent", "group", "roost"], capture_output=True).returncode == 0:
                subprocess.run(["delgroup", "--system", "--quiet", "roost"], capture_output=True)
            for path in (DATA, CONFIG.parent):
                shutil.rmtree(path, ignore_errors=True)


def _publish_and_read_back(credentials: dict[str, str], tls_port: int, mqtt_port: int, http_port: int) -> None:
    health = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=TIMEOUT)
    assert health.status_code == 200 and health.json()["version"] == VERSION
    ca = DATA / "certs" / "ca.pem"
    assert httpx.get(f"http://127.0.0.1:{http_port}/api/v1/ca.pem", timeout=TIMEOUT).content == ca.read_bytes()
    mosquitto("mosquitto_pub", tls_port, credentials, "-t", "home/kept", "-m", "installed", "-r", "-q", "1", cafile=ca)
    received = mosquitto("mosquitto_sub", mqtt_port, credentials, "-t", "home/#", "-C", "1", "-W", "20", "-v")
    assert received.strip() == "home/kept installed"


@pytest.mark.system
def test_amd64_package_installs_serves_upgrades_and_purges(
    clean_machine: None, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    packages: dict[str, Path] = request.getfixturevalue("packages")  # built only once the machine will do
    _apt_get("install", str(packages["amd64"]))  # docs/install.md: sudo apt install ./roost_...
    assert _installed_version() == VERSION

    # What postinst made: a system user, its data folder, the config readable by its group only, the
    # service enabled (a symlink: without systemd running, nothing is started).
    user = pwd.getpwnam("roost")
    assert user.pw_uid < 1000 and user.pw_dir == str(DATA) and user.pw_shell.endswith("nologin")
    data = DATA.stat()
    assert (data.st_uid, stat.S_IMODE(data.st_mode)) == (user.pw_uid, 0o750)
    config = CONFIG.stat()
    assert (config.st_uid, grp.getgrgid(config.st_gid).gr_name, stat.S_IMODE(config.st_mode)) == (0, "roost", 0o640)
    assert ENABLED.is_symlink() and os.readlink(ENABLED) == str(UNIT)
    assert list(Path("/usr/lib/roost/site").rglob("__pycache__")), "postinst compiled nothing"

    assert _as_roost("roost", "--version").strip() == f"roost {VERSION}"
    command, env, cwd, umask = _as_unit("ExecStartPre")
    checked = subprocess.run(command, env=env, cwd=cwd, umask=umask, capture_output=True, text=True, timeout=TIMEOUT)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stderr  # the shipped config is valid

    # The administrator's edit, which every upgrade must keep: loopback, free ports, JSON logs.
    tls_port = free_port()
    edited = config_file(tmp_path, DATA, tls_port=tls_port).read_text()
    CONFIG.write_text(edited)
    _as_roost("roost", "user", "add", "pi", "--plan", "starter", "--json", "--config", str(CONFIG))
    credentials = json.loads(_as_roost("roost", "mqtt", "add", "pi", "--json", "--config", str(CONFIG)))

    server = _serve()
    try:
        mqtt_port, http_port = server.wait_started()
        assert pwd.getpwuid(os.stat(f"/proc/{server.process.pid}").st_uid).pw_name == "roost"
        _publish_and_read_back(credentials, tls_port, mqtt_port, http_port)
    except BaseException:
        server.kill()
        raise
    server.stop()
    assert all(path.stat().st_uid == user.pw_uid for path in DATA.rglob("*"))
    assert stat.S_IMODE((DATA / "certs" / "ca.key").stat().st_mode) == 0o600

    # An upgrade to a rebuilt package: the edited config is kept without a question, and so is the data.
    newer = build(tmp_path / "newer", f"{VERSION}+1")
    _dpkg("--install", str(newer["amd64"]))
    assert _installed_version() == f"{VERSION}+1"
    assert CONFIG.read_text() == edited
    assert ENABLED.is_symlink()
    server = _serve()
    try:
        mqtt_port, _ = server.wait_started()
        received = mosquitto("mosquitto_sub", mqtt_port, credentials, "-t", "home/#", "-C", "1", "-W", "20", "-v")
        assert received.strip() == "home/kept installed"  # retained, from before the upgrade
    except BaseException:
        server.kill()
        raise
    server.stop()

    # Remove: the program goes, the config and the data stay.
    _dpkg("--remove", "roost")
    assert not Path("/usr/bin/roost").exists() and not Path("/usr/lib/roost").exists()
    assert CONFIG.read_text() == edited and (DATA / "certs" / "ca.pem").exists()
    # Purge: the config and the enablement go; the data stays, since nobody asked for it to go.
    purged = _dpkg("--purge", "roost")
    assert "ROOST_PURGE_DATA=yes" in purged
    assert not CONFIG.parent.exists() and not ENABLED.is_symlink()
    assert not Path("/etc/systemd/system/roost.service").is_symlink()  # the mask set at removal is gone too
    assert (DATA / "certs" / "ca.pem").exists()

    # Installed again over the kept data, then purged with the data, through apt as docs/install.md says
    # (apt hands its environment to the maintainer scripts).
    _dpkg("--install", str(newer["amd64"]))
    _apt_get("purge", "roost", env={"ROOST_PURGE_DATA": "yes"})
    assert not DATA.exists() and _installed_version() is None


def test_packages_are_lintian_clean(packages: dict[str, Path]) -> None:
    """No error or warning from Debian's lintian (its one override is explained in
    deploy/debian/lintian-overrides; the info-level tags in docs/install.md)."""
    if shutil.which("lintian") is None:
        pytest.skip("lintian not installed (scripts/test.sh installs it)")
    result = subprocess.run(["lintian", "--tag-display-limit", "0", *map(str, packages.values())],
                            capture_output=True, text=True, timeout=300)
    tags = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert tags == [] and result.returncode == 0, result.stdout + result.stderr
