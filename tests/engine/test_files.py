"""Bad input files, header slots, corruption detection, maintenance and CLI."""

import hashlib
import os
import struct
import subprocess
import sys
import zlib

import pytest

import engine
from engine import layout
from engine.store import Store
from enginetest_support import subprocess_env

SCHEMA = {"Item": {"k": "int primary_key", "v": "str index"}}


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_db(path, commits=3, per_commit=200):
    with engine.open(path, schema=SCHEMA) as db:
        for c in range(commits):
            with db.write() as tx:
                for i in range(per_commit):
                    key = c * per_commit + i
                    tx.create("Item", {"k": key, "v": f"value-{key}" * 5})
    return path


def newest_slot_offset(path) -> int:
    with open(path, "rb") as f:
        index, _slot = layout.read_current_slot(lambda: os.pread(f.fileno(), layout.HEAD_BYTES, 0))
    return layout.SLOT_OFFSETS[index]


def older_tree_page(path) -> int:
    """A tree page the newest commit did not write (damage to one of its own
    pages reads as a commit cut short by a crash: open falls back past it)."""
    with engine.open(path) as db, db.read() as snap:
        leftmost = snap._view.load(snap._catalog.tables["Item"]["root"]).vals[0]
        with open(path, "rb") as f:
            txnid = layout.U64.unpack_from(os.pread(f.fileno(), 16, leftmost * layout.PAGE_SIZE), 8)[0]
        assert txnid < snap.txnid
    return leftmost


def patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def rewrite_header_crc(path):
    with open(path, "r+b") as f:
        head = f.read(layout.HEADER.size)
        f.seek(layout.HEADER_CRC_OFFSET)
        f.write(struct.pack("<I", zlib.crc32(head)))


def damage_not_engine(path):
    with open(path, "wb") as f:
        f.write(b"SQLite format 3\x00" + bytes(8192))


def damage_empty(path):
    open(path, "wb").close()


def damage_truncate_pages(path):
    os.truncate(path, 4 * layout.PAGE_SIZE)


def damage_partial_page(path):
    os.truncate(path, os.path.getsize(path) - 100)


def damage_version(path):
    patch(path, 8, struct.pack("<I", 99))
    rewrite_header_crc(path)


def damage_header_crc(path):
    patch(path, 12, struct.pack("<I", 8192))


def damage_both_slots(path):
    for offset in layout.SLOT_OFFSETS:
        patch(path, offset + 3, b"\xee")


@pytest.mark.parametrize("damage, error, fragment", [
    (damage_not_engine, engine.NotAnEngineFileError, "not an engine database"),
    (damage_empty, engine.NotAnEngineFileError, "not an engine database"),
    (damage_truncate_pages, engine.TruncatedFileError, "pages"),
    (damage_partial_page, engine.TruncatedFileError, "whole number"),
    (damage_version, engine.UnsupportedVersionError, "version 99"),
    (damage_header_crc, engine.CorruptFileError, "header checksum"),
    (damage_both_slots, engine.CorruptFileError, "both root slots"),
])
def test_bad_files_raise_specific_errors_and_stay_untouched(db_dir, damage, error, fragment):
    path = str(db_dir / "bad.db")
    make_db(path)
    os.unlink(path + ".lock")
    damage(path)
    before = digest(path)
    with pytest.raises(error, match=fragment) as info:
        engine.open(path, schema=SCHEMA)
    assert "\n" not in str(info.value)
    assert digest(path) == before
    assert not os.path.exists(path + ".lock")


def test_torn_newest_slot_falls_back_to_previous_commit(db_dir):
    path = make_db(str(db_dir / "torn.db"), commits=3)
    patch(path, newest_slot_offset(path) + 5, b"\x99")    # as if power failed mid-write
    with engine.open(path) as db:
        with db.read() as snap:
            assert snap.count("Item") == 400                   # the commit before the last
        assert db.verify() == []
        with db.write() as tx:
            tx.create("Item", {"k": -1, "v": "after repair"})
    with engine.open(path) as db, db.read() as snap:
        assert snap.count("Item") == 401


def test_verify_reports_damaged_pages(db_dir):
    path = make_db(str(db_dir / "corrupt.db"))
    with engine.open(path) as db:
        assert db.verify() == []
    patch(path, older_tree_page(path) * layout.PAGE_SIZE + 100, b"\xde\xad")
    with engine.open(path) as db:
        problems = db.verify()
    assert any("checksum mismatch" in p for p in problems)


def test_write_copy_to_compacts_and_preserves_content(db_dir):
    path = make_db(str(db_dir / "big.db"), commits=5)
    copy_path = str(db_dir / "copy.db")
    with engine.open(path) as db:
        with db.write() as tx:
            for key in range(0, 1000, 3):
                tx.delete("Item", key)
        db.write_copy_to(copy_path)
        with pytest.raises(engine.EngineError, match="already exists"):
            db.write_copy_to(copy_path)
        with db.read() as snap:
            original = [dict(o) for o in snap.objects("Item")]
    assert os.path.getsize(copy_path) < os.path.getsize(path)
    with engine.open(copy_path) as copy:
        assert copy.verify() == []
        with copy.read() as snap:
            assert [dict(o) for o in snap.objects("Item")] == original
            assert snap.objects("Item").filter(v="value-1" * 5).keys() == [1]
        assert copy.stats()["objects"] == {"Item": len(original)}


def test_stats(db_dir):
    path = make_db(str(db_dir / "stats.db"))
    with engine.open(path) as db:
        stats = db.stats()
        snap = db.read()
        assert db.stats()["live_snapshots"] == 1
        snap.close()
    assert stats["objects"] == {"Item": 600}
    assert stats["pages_total"] * layout.PAGE_SIZE == stats["file_size"]
    assert stats["pages_allocated"] <= stats["pages_total"]
    assert stats["version"] == 4 and stats["live_snapshots"] == 0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=60)


def test_cli(db_dir):
    path = make_db(str(db_dir / "cli.db"), commits=1, per_commit=3)
    info = run_cli("info", path)
    assert info.returncode == 0 and "objects: {'Item': 3}" in info.stdout
    verify = run_cli("verify", path)
    assert verify.returncode == 0 and verify.stdout.strip() == "ok"
    dump = run_cli("dump", path, "Item")
    assert dump.returncode == 0 and len(dump.stdout.splitlines()) == 3 and '"_key": 0' in dump.stdout
    out = str(db_dir / "compact.db")
    assert run_cli("compact", path, out).returncode == 0 and os.path.exists(out)
    bad = str(db_dir / "notdb")
    damage_not_engine(bad)
    for args in (("info", bad), ("dump", path, "Nope"), ("verify", str(db_dir / "missing.db"))):
        result = run_cli(*args)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    damaged = make_db(str(db_dir / "damaged.db"))
    patch(damaged, older_tree_page(damaged) * layout.PAGE_SIZE + 50, b"\x00\x01")
    result = run_cli("verify", damaged)
    assert result.returncode == 1 and "problem" in result.stdout


def test_cli_dump_into_a_closed_pipe_prints_no_error(db_dir):
    """`python -m engine dump ... | head`: the reader goes away, no error message."""
    path = make_db(str(db_dir / "pipe.db"), commits=1, per_commit=3000)
    proc = subprocess.Popen([sys.executable, "-m", "engine", "dump", path, "Item"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=subprocess_env())
    assert proc.stdout.readline().startswith(b"{")
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    proc.stderr.close()
    assert err == b"", err


def test_previous_commit_stays_intact_while_the_next_is_written(db_dir, monkeypatch):
    """The current commit's tree is never overwritten by the commit in progress,
    so a crash before the new slot lands leaves it whole."""
    path = make_db(str(db_dir / "fallback.db"), commits=3)          # txns 2, 3, 4
    with engine.open(path) as db:
        with db.read() as snap:
            at_txn_4 = {o.key: dict(o) for o in snap.objects("Item")}
        with db.write() as tx:                                        # txn 5
            for key in at_txn_4:
                tx.update("Item", key, {"v": "five"})

        def pages_then_crash(store, pages, slot):
            store.file.ensure_size(slot.npages)
            store.file.write_pages(pages)
            raise RuntimeError("simulated crash before the root slot is written")

        monkeypatch.setattr(Store, "publish", pages_then_crash)
        with pytest.raises(RuntimeError), db.write() as tx:           # txn 6, never committed
            for key in at_txn_4:
                tx.update("Item", key, {"v": "six" * 40})
            tx.commit()
    with engine.open(path) as db:
        assert db.verify() == []
        with db.read() as snap:
            assert {o.key: dict(o) for o in snap.objects("Item")} == {k: {**v, "v": "five"}
                                                                     for k, v in at_txn_4.items()}


def test_create_without_hard_link_support(db_dir, monkeypatch):
    """Some filesystems (FUSE) refuse link(); creation falls back to rename."""
    def no_link(src, dst):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_link)
    path = str(db_dir / "nolink.db")
    with engine.open(path, schema=SCHEMA) as db:
        with db.write() as tx:
            tx.create("Item", {"k": 1, "v": "x"})
    assert sorted(os.listdir(db_dir)) == ["nolink.db", "nolink.db.lock"]
    with engine.open(path) as db, db.read() as snap:
        assert snap.get("Item", 1)["v"] == "x"


def test_header_reads_retry_until_stable():
    """A header read that overlaps a writer's slot update is read again."""
    good = bytearray(layout.encode_header())
    slot = layout.RootSlot(7, 10, 1, 5, 0, 0)
    good[layout.SLOT_OFFSETS[0]:layout.SLOT_OFFSETS[0] + len(layout.encode_slot(slot))] = layout.encode_slot(slot)
    torn = bytearray(good)
    torn[layout.SLOT_OFFSETS[0] + 2] ^= 0xFF
    reads = iter([torn, good, good])
    assert layout.read_current_slot(lambda: next(reads)[:layout.HEAD_BYTES]) == (0, slot)
    assert layout.read_current_slot(lambda: torn[:layout.HEAD_BYTES]) is None   # stably damaged


def _held_by_this_process(path) -> list:
    """Descriptors and mappings of this process that still refer to `path`."""
    real = os.path.realpath(path)
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == real:
                held.append(f"fd {fd}")
        except OSError:
            pass
    with open("/proc/self/maps") as maps:
        held += [line.strip() for line in maps if line.rstrip().endswith(real)]
    return held


def test_close_releases_the_file_while_a_snapshot_is_still_referenced(db_dir):
    """What a user expects of close(): the file is no longer open (a FUSE mount
    can be unmounted, the file deleted for real), even though a snapshot and a
    query object, grown across a remap, are still referenced; using them says
    the database was closed."""
    path = make_db(str(db_dir / "close.db"), commits=1)
    db = engine.open(path)
    snap = db.read()
    query = snap.objects("Item").filter(k__lt=5)
    with db.write() as tx:                       # grows the file: a second mapping
        for i in range(2000):
            tx.create("Item", {"k": 10_000 + i, "v": "x" * 200})
    newer = db.read()
    assert newer.get("Item", 10_000)["v"] == "x" * 200
    assert snap.get("Item", 1) is not None
    assert _held_by_this_process(path)
    db.close()
    assert _held_by_this_process(path) == []
    for use in (lambda: snap.get("Item", 1), lambda: list(query), lambda: newer.count("Item")):
        with pytest.raises(engine.TransactionError, match="database was closed"):
            use()
    with engine.open(path) as again:             # and no reader slot was left behind
        assert again.stats()["live_snapshots"] == 0
