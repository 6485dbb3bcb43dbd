#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine, then runs them.
# Usage: bash scripts/test.sh                    everything: all tiers, then the engine suite on a realmfs mount
#        bash scripts/test.sh [pytest arguments]  only pytest, with those arguments (e.g. tests/unit)
set -euo pipefail
cd "$(dirname "$0")/.."

# fuse/libfuse2: the mount; keyutils: keyctl for the kernel-keyring key store
if [ "$(id -u)" = 0 ] && { ! command -v fusermount >/dev/null 2>&1 || ! command -v keyctl >/dev/null 2>&1; }; then
    echo "== installing fuse, libfuse2 and keyutils (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse libfuse2 keyutils >/dev/null
fi
if ! command -v fusermount >/dev/null 2>&1; then
    echo "fusermount not found: install Debian's 'fuse' and 'libfuse2' packages (as root)" >&2
    exit 1
fi

echo "== installing Python packages (pip)"
# Output unfiltered: a failed install must show and stop this script (set -e). Debian's own
# python3 is "externally managed" (PEP 668): then the second form, as scripts/demo.sh does.
pip_install() { PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check "$@"; }
pip_install -e '.[test,bench]' || pip_install --break-system-packages -e '.[test,bench]'

if [ $# -gt 0 ]; then
    exec python3 -m pytest "$@"
fi

echo "== running the tests (unit, pagefile, offline, mount, engine)"
status=0
python3 -m pytest -q || status=$?
echo "== running the engine suite again, its databases on a realmfs mount"
python3 scripts/engine_on_mount.py -q || status=$?
exit $status
