#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs it.
# Installs Debian's mosquitto-clients (real MQTT clients for the tests), mosquitto (the bridge tests'
# upstream) and chromium (the dashboard's
# end-to-end tests drive it with Playwright; no browser is downloaded); for the packaging tests
# qemu-user-static (tests/test_emulated_aarch64.py runs the aarch64 file under emulation), binutils for
# both architectures (scripts/deb.sh strips the libraries) and lintian; makes .venv, installs Roost with
# its test and dist extras, and runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
if ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v mosquitto_sub >/dev/null 2>&1; then
    missing+=(mosquitto-clients)
fi
if [ ! -x /usr/sbin/mosquitto ]; then
    missing+=(mosquitto)  # the upstream broker of the bridge tests (tests/bridge), and the benchmarks' peer
fi
if [ ! -x /usr/bin/chromium ]; then
    missing+=(chromium)
fi
for tool in qemu-aarch64-static:qemu-user-static strip:binutils aarch64-linux-gnu-strip:binutils-aarch64-linux-gnu \
            lintian:lintian; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "warning: ${missing[*]} not installed and no apt-get; those tests will be skipped" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,dist]'

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest selected no test (exit 5)" >&2
    status=0
fi
exit "$status"
