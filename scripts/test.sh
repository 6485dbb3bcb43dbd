#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine (apt packages as root,
# Python packages into .venv/ in the repository), then runs them from that venv.
# Usage: bash scripts/test.sh                    everything: all tiers (libfuse 3), the mount tier again on
#                                                libfuse 2, then the engine suite on a realmfs mount
#        bash scripts/test.sh [pytest arguments]  only pytest, with those arguments (e.g. tests/unit)
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/setup.sh          # APT_PACKAGES, need_apt_packages, have_fusermount, make_venv, $VENV_PY
need_apt_packages
if ! have_fusermount; then
    echo "fusermount3/fusermount not found: run this script as root once to install ${APT_PACKAGES[*]} (apt)" >&2
    exit 1
fi
make_venv test,bench
export PATH="$PWD/$VENV/bin:$PATH"     # a `realmfs` or `python` the tests start is this clone's

if [ $# -gt 0 ]; then
    exec "$VENV_PY" -m pytest "$@"
fi

echo "== running the tests (unit, pagefile, offline, mount, engine)"
status=0
"$VENV_PY" -m pytest -q || status=$?
echo "== running the mount tests again on the libfuse 2 fallback (REALMFS_FUSE=2, fusepy)"
REALMFS_FUSE=2 "$VENV_PY" -m pytest -q -m "not slow" tests/mount tests/offline/test_mount_roundtrip.py || status=$?
echo "== running the engine suite again, its databases on a realmfs mount"
"$VENV_PY" scripts/engine_on_mount.py -q || status=$?
exit $status
