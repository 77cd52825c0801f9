#!/usr/bin/env bash
# Builds Debian packages of Roost from the single files: dist/roost_VERSION_arm64.deb (Raspberry Pi OS
# 64-bit, Debian arm64) and dist/roost_VERSION_amd64.deb.
#
#     bash scripts/deb.sh                  # both (makes dist/roost-ARCH.pyz first if it is missing)
#     bash scripts/deb.sh aarch64          # one: x86_64 or aarch64
#
# Environment: ROOST_DEB_VERSION (default: the version in pyproject.toml), ROOST_DEB_OUT (default dist).
# Needs dpkg-deb and python3 only (no debhelper): every file of the package is laid out here.
#
# What the package holds, and why:
#   /usr/bin/roost                    a wrapper: the system's python3 runs the single file
#   /usr/lib/roost/roost.pyz          the single file (scripts/dist.sh)
#   /usr/lib/roost/site/...           its site-packages, unpacked here at build time where shiv would unpack
#                                     them on a first run (SHIV_ROOT), so nothing is written outside
#                                     /var/lib/roost at run time and every user's `roost` shares one copy;
#                                     postinst compiles them (.pyc) for the installed python3, prerm removes that
#   /lib/systemd/system/roost.service deploy/roost.service, enabled at install (started when systemd runs)
#   /etc/roost/roost.toml             deploy/roost.toml, a conffile: kept on upgrade once edited
#   /usr/share/doc/roost/, man page   install.md, the bundled components' licences, changelog
# postinst adds the `roost` system user and /var/lib/roost (0750, the data); purge keeps that data unless
# ROOST_PURGE_DATA=yes is set (docs/install.md, "Removing Roost").
set -euo pipefail
cd "$(dirname "$0")/.."

arches=("$@")
[ "${#arches[@]}" -gt 0 ] || arches=(x86_64 aarch64)
version=${ROOST_DEB_VERSION:-$(python3 -c \
    'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')}
out=${ROOST_DEB_OUT:-dist}
mkdir -p "$out" build/deb
# Reproducible: file times and the changelog date are the last commit's (or now, outside git).
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH=$epoch

for arch in "${arches[@]}"; do
    case "$arch" in
        x86_64) debarch=amd64 strip=strip ;;
        aarch64) debarch=arm64 strip=aarch64-linux-gnu-strip ;;
        *) echo "unknown architecture: $arch (x86_64 or aarch64)" >&2; exit 2 ;;
    esac
    pyz=dist/roost-$arch.pyz
    [ -f "$pyz" ] || bash scripts/dist.sh "$arch"
    if ! command -v "$strip" >/dev/null; then
        echo "$strip is missing: apt-get install binutils$([ "$arch" = aarch64 ] && echo -aarch64-linux-gnu)" >&2
        exit 2
    fi
    root=build/deb/roost_$debarch
    rm -rf "$root"
    install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/roost/site" "$root/lib/systemd/system" \
        "$root/etc/roost" "$root/usr/share/doc/roost" "$root/usr/share/man/man1" "$root/usr/share/lintian/overrides"

    install -m 0644 "$pyz" "$root/usr/lib/roost/roost.pyz"
    # Unpacked as shiv's bootstrap would (SHIV_ROOT/roost.pyz_BUILD-ID/site-packages): it finds them there
    # and never unpacks, so /usr stays read-only to Roost (the unit's ProtectSystem=strict).
    python3 - "$root/usr/lib/roost/roost.pyz" "$root/usr/lib/roost/site" <<'EOF'
import json, os, sys, zipfile
from pathlib import Path
archive, site = zipfile.ZipFile(sys.argv[1]), Path(sys.argv[2])
build_id = json.loads(archive.read("environment.json"))["build_id"]
target = site / f"roost.pyz_{build_id}"
for info in archive.infolist():
    if info.filename.startswith("site-packages/"):
        path = Path(archive.extract(info, target))
        os.chmod(path, 0o755 if info.is_dir() or (info.external_attr >> 16) & 0o111 else 0o644)
EOF
    # The wheels' extension modules come with their symbols (uvloop's are 13 MB each, 2 MB stripped).
    find "$root/usr/lib/roost/site" -name '*.so' -exec "$strip" --strip-unneeded {} +
    licences=$(python3 - "$root/usr/lib/roost/site" <<'EOF'
import sys
from pathlib import Path
for info in sorted(Path(sys.argv[1]).glob("*/site-packages/*.dist-info"), key=lambda p: p.name.lower()):
    fields = {}
    for line in (info / "METADATA").read_text(errors="replace").splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(": ")
        if key in ("Name", "Version", "License-Expression") or (key == "License" and len(value) < 80):
            fields.setdefault(key, value.strip())
        if key == "Classifier" and value.startswith("License :: OSI Approved :: "):
            fields.setdefault("Classifier", value.rsplit(" :: ", 1)[1])
    licence = fields.get("License-Expression") or fields.get("License") or fields.get("Classifier") or "see its files"
    print(f" {fields['Name']} {fields['Version']}: {licence}")
EOF
)

    cat > "$root/usr/bin/roost" <<'EOF'
#!/bin/sh
# Roost's command (Debian package roost): the system's Python 3 runs the single file, whose libraries were
# unpacked at install under /usr/lib/roost/site.
SHIV_ROOT=/usr/lib/roost/site
export SHIV_ROOT
exec /usr/bin/python3 /usr/lib/roost/roost.pyz "$@"
EOF
    chmod 0755 "$root/usr/bin/roost"
    install -m 0644 deploy/roost.service "$root/lib/systemd/system/roost.service"
    install -m 0644 deploy/roost.toml "$root/etc/roost/roost.toml"
    install -m 0644 deploy/debian/lintian-overrides "$root/usr/share/lintian/overrides/roost"
    gzip -9n < deploy/roost.1 > "$root/usr/share/man/man1/roost.1.gz"
    gzip -9n < docs/install.md > "$root/usr/share/doc/roost/install.md.gz"
    cat > "$root/usr/share/doc/roost/copyright" <<EOF
Roost: a self-hosted MQTT broker with a built-in HTTP control plane.

Copyright 2026 the Roost contributors.
License: Apache-2.0
 On Debian systems the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

This package bundles, in /usr/lib/roost/roost.pyz (unpacked in /usr/lib/roost/site), these Python
distributions with Roost; each one's licence text is in its .dist-info folder there:
$licences
EOF
    {
        echo "roost ($version) unstable; urgency=medium"
        echo
        echo "  * Built by scripts/deb.sh from $(basename "$pyz")."
        echo
        echo " -- Roost developers <roost@example.org>  $(date -u -R -d "@$epoch")"
    } | gzip -9n > "$root/usr/share/doc/roost/changelog.gz"

    echo /etc/roost/roost.toml > "$root/DEBIAN/conffiles"
    for script in postinst prerm postrm; do
        install -m 0755 "deploy/debian/$script" "$root/DEBIAN/$script"
    done
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    cat > "$root/DEBIAN/control" <<EOF
Package: roost
Version: $version
Architecture: $debarch
Maintainer: Roost developers <roost@example.org>
Installed-Size: $size
Depends: python3 (>= 3.11), python3 (<< 3.14), adduser, libc6 (>= 2.28)
Section: net
Priority: optional
Description: self-hosted MQTT 3.1.1 and 5.0 broker with a web dashboard
 Roost is an MQTT broker (TCP, TLS, WebSocket) with a built-in HTTP control
 plane: a REST API, a dashboard, users with plans and quotas, device
 credentials and certificates from its own CA, retained messages and durable
 sessions in SQLite, and Prometheus metrics, in one Python process.
 .
 This package runs it as the systemd service roost, as the roost user, with
 its configuration in /etc/roost/roost.toml and its data in /var/lib/roost.
EOF
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
        > "$root/DEBIAN/md5sums"
    find "$root" -exec touch -h -d "@$epoch" {} +
    deb="$out/roost_${version}_$debarch.deb"
    dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null
    echo "$deb: $(du -h "$deb" | cut -f1)"
done
