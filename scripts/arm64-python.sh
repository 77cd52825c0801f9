#!/usr/bin/env bash
# Makes an aarch64 (arm64) Python 3.11 that runs on an x86-64 Debian machine under qemu-user, to run
# dist/roost-aarch64.pyz here as it runs on a Raspberry Pi (tests/test_emulated_aarch64.py):
#
#     bash scripts/arm64-python.sh [FOLDER]          # default .cache/arm64 (gitignored)
#     FOLDER/python3 dist/roost-aarch64.pyz serve --config roost.toml
#
# Debian's own arm64 packages of Python and the libraries it loads are downloaded (`apt-get download`,
# after `dpkg --add-architecture arm64`) and unpacked (`dpkg -x`) into FOLDER/root: installing them with
# apt would conflict with the machine's amd64 Python. Needs root for the apt steps the first time only;
# afterwards FOLDER is reused as it is (delete it to start over).
#
# FOLDER/python3 is a shell script that runs FOLDER/root/usr/bin/python3.11 under qemu-aarch64-static
# with FOLDER/root as the library prefix and itself as the interpreter's argv[0]. So `sys.executable` is
# that script, and a child Python started with `sys.executable` (Roost makes its certificates in one,
# `python -m certs.generate`) is emulated too, with no binfmt_misc registration: the kernel runs the
# script with /bin/sh, which starts qemu again.
set -euo pipefail
cd "$(dirname "$0")/.."

folder=$(realpath -m "${1:-.cache/arm64}")
root="$folder/root"
[ -x "$folder/python3" ] && [ -e "$folder/complete" ] && { echo "$folder/python3"; exit 0; }

# The interpreter and everything it or Roost's compiled wheels (uvloop, cffi, cryptography) load.
packages=(
    python3.11 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
    libc6 libgcc-s1 libstdc++6 gcc-12-base libssl3 zlib1g libffi8 libexpat1 libsqlite3-0 libbz2-1.0
    liblzma5 libuuid1 libncursesw6 libtinfo6 libreadline8 libcrypt1 libdb5.3 libgdbm6 libnsl2 libtirpc3
    libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2 media-types
)

export DEBIAN_FRONTEND=noninteractive
apt_install=(apt-get install -y -qq -o DPkg::Lock::Timeout=300)  # waits while another apt or dpkg runs
if ! command -v qemu-aarch64-static >/dev/null; then
    "${apt_install[@]}" qemu-user-static >/dev/null ||
        { apt-get update -qq && "${apt_install[@]}" qemu-user-static >/dev/null; }
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -qq
elif ! apt-cache show python3.11:arm64 >/dev/null 2>&1; then
    apt-get update -qq
fi

debs="$folder/debs"
rm -rf "$root"
mkdir -p "$debs" "$root"
arm=()
for package in "${packages[@]}"; do
    [ "$package" = media-types ] && arm+=("$package") || arm+=("$package:arm64")
done
(cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "${arm[@]}")
for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$root"
done
# qemu looks up every absolute path in the prefix first and falls back to the machine's own: empty folders
# here keep the machine's amd64 site-packages off the emulated interpreter's path.
mkdir -p "$root/usr/lib/python3/dist-packages" "$root/usr/local/lib/python3.11/dist-packages"

cat > "$folder/python3" <<EOF
#!/bin/sh
# aarch64 Python 3.11 under emulation (made by scripts/arm64-python.sh).
exec qemu-aarch64-static -L "$root" -0 "\$0" "$root/usr/bin/python3.11" "\$@"
EOF
chmod +x "$folder/python3"
"$folder/python3" -c 'import platform, ssl, sqlite3, ctypes; assert platform.machine() == "aarch64"'
touch "$folder/complete"
echo "$folder/python3"
