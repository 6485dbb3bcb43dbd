#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian machine:
#   install what is needed -> key -> encrypted directory -> mount -> real workload (the engine, SQLite)
#   -> unmount -> backing holds no plaintext -> remount reads everything back -> wrong key refused.
# Usage: bash scripts/demo.sh [--keep]     (--keep leaves the work directory for a look)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
KEEP=${1:-}

say() { printf '\n== %s\n' "$*"; }
fail() { printf '\nDEMO FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- install
. scripts/setup.sh          # APT_PACKAGES, need_apt_packages, have_fusermount, make_venv, $VENV_PY
if ! need_apt_packages || ! have_fusermount; then
    fail "run as root once (apt packages: ${APT_PACKAGES[*]})"
fi
[ -e /dev/fuse ] || fail "/dev/fuse is missing (in a container: run with --device /dev/fuse --cap-add SYS_ADMIN)"
make_venv ""               # realmfs and its Python dependencies in .venv/, not the machine's Python
PY=$REPO/$VENV_PY
"$PY" -c 'import cryptography, fuse, psutil' || fail "Python dependencies could not be installed"

realmfs() { PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m realmfs "$@"; }

WORK=$(mktemp -d /tmp/realmfs-demo.XXXXXX)
KEY=$WORK/demo.key
BACKING=$WORK/backing
MNT=$WORK/mnt
MARKER="REALMFS-DEMO-PLAINTEXT-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
cleanup() {
    status=$?
    if grep -q " $MNT fuse.realmfs " /proc/mounts 2>/dev/null; then
        realmfs unmount "$MNT" >/dev/null 2>&1 || realmfs unmount --lazy "$MNT" >/dev/null 2>&1 || PYTHONPATH="$REPO" "$PY" -m realmfs.fs.fusermount -uz "$MNT" || true
    fi
    if [ "$KEEP" = "--keep" ] || [ "$status" != 0 ]; then
        echo "(work directory kept: $WORK; daemon log: $WORK/daemon.log)"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
mkdir -p "$BACKING" "$MNT"

# ---------------------------------------------------------------- key, directory, mount
say "creating a key and an encrypted directory"
realmfs keygen "$KEY"
realmfs init "$BACKING" --key-file "$KEY"
say "mounting $BACKING on $MNT"
realmfs mount "$BACKING" "$MNT" --key-file "$KEY" --log-file "$WORK/daemon.log"
realmfs status

# ---------------------------------------------------------------- workload
say "workload: the engine (an mmap object database), SQLite (WAL) and a plain text file on the mount"
PYTHONPATH="$REPO" "$PY" - "$MNT" "$MARKER" <<'PY'
import hashlib, os, sqlite3, sys
mnt, marker = sys.argv[1], sys.argv[2]
import engine
schema = {"Customer": {"name": "str primary_key", "city": "str index", "visits": "int index"}}
with engine.open(os.path.join(mnt, "crm.db"), schema=schema) as edb:
    for batch in range(20):
        with edb.write() as tx:
            for n in range(100):
                tx.create("Customer", {"name": f"{marker} {batch}-{n}", "city": f"city {n % 7}",
                                       "visits": n})
    with edb.read() as snap:
        regulars = snap.objects("Customer").filter(visits__gt=49).count()
print(f"engine: 2000 objects in 20 write transactions, {regulars} with visits > 49")
assert regulars == 1000
db = sqlite3.connect(os.path.join(mnt, "shop.db"))
db.execute("pragma journal_mode=wal")
db.execute("create table orders (id integer primary key, customer text, item text, qty integer)")
db.execute("create index orders_customer on orders(customer)")
for batch in range(40):
    with db:
        db.executemany("insert into orders (customer, item, qty) values (?, ?, ?)",
                       [(f"{marker} customer {batch}-{n}", f"item {n % 17}", n % 9 + 1) for n in range(250)])
with db:
    db.execute("update orders set qty = qty * 2 where id % 7 = 0")
    db.execute("delete from orders where id % 11 = 0")
assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
rows = db.execute("select * from orders order by id").fetchall()
digest = hashlib.sha256(repr(rows).encode()).hexdigest()
db.close()
with open(os.path.join(mnt, "notes.txt"), "w") as f:
    f.write(f"{marker}: a note kept next to the database\n" * 100)
with open(os.path.join(os.path.dirname(mnt), "expected"), "w") as f:
    f.write(f"{len(rows)} {digest}\n")
print(f"wrote {len(rows)} rows (sha256 of all rows {digest[:16]}...), integrity_check ok")
PY

say "unmounting (writes back, fsyncs every backing file)"
realmfs unmount "$MNT"

# ---------------------------------------------------------------- ciphertext check
say "backing files are ciphertext: looking for the marker $MARKER"
ls -la "$BACKING"
echo "first bytes of the sealed backing file of shop.db (header page, then IV table and pages):"
od -A x -t x1z -N 96 "$BACKING/shop.db"
if grep -r -l -a -F "$MARKER" "$BACKING"; then fail "plaintext found in the backing directory"; fi
echo "OK: the marker is in none of the backing files"

# ---------------------------------------------------------------- remount
say "remounting and reading everything back"
realmfs mount "$BACKING" "$MNT" --key-file "$KEY" --log-file "$WORK/daemon.log"
PYTHONPATH="$REPO" "$PY" - "$MNT" "$MARKER" <<'PY'
import hashlib, os, sqlite3, sys
mnt, marker = sys.argv[1], sys.argv[2]
import engine
with engine.open(os.path.join(mnt, "crm.db")) as edb:
    assert not edb.verify(), "engine verify found problems"
    with edb.read() as snap:
        assert snap.objects("Customer").count() == 2000
        assert snap.objects("Customer").filter(visits__gt=49).count() == 1000
        assert snap.get("Customer", f"{marker} 7-42")["city"] == "city 0"
print("OK: engine database verified, 2000 objects read back")
expected_count, expected_digest = open(os.path.join(os.path.dirname(mnt), "expected")).read().split()
db = sqlite3.connect(os.path.join(mnt, "shop.db"))
assert db.execute("pragma integrity_check").fetchone()[0] == "ok", "integrity_check failed"
rows = db.execute("select * from orders order by id").fetchall()
db.close()
digest = hashlib.sha256(repr(rows).encode()).hexdigest()
assert (len(rows), digest) == (int(expected_count), expected_digest), "rows differ after remount"
note = open(os.path.join(mnt, "notes.txt")).read()
assert note.count("a note kept next to the database") == 100
print(f"OK: {len(rows)} rows read back identical (sha256 {digest[:16]}...), integrity_check ok, note intact")
PY
realmfs unmount "$MNT"

# ---------------------------------------------------------------- wrong key
say "a wrong key is refused, and the backing directory is left untouched"
realmfs keygen "$WORK/wrong.key" >/dev/null
before=$(cd "$BACKING" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)
set +e
realmfs mount "$BACKING" "$MNT" --key-file "$WORK/wrong.key" --log-file "$WORK/daemon.log"
code=$?
set -e
after=$(cd "$BACKING" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)
[ "$code" = 3 ] || fail "expected exit code 3 (wrong key), got $code"
[ "$before" = "$after" ] || fail "the refused mount changed the backing directory"
grep -q " $MNT " /proc/mounts && fail "a mount was left behind"
echo "OK: refused with exit code 3, backing directory unchanged"

say "demo passed"
