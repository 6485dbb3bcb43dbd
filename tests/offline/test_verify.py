"""verify: every injected fault is found and classified; clean is clean; wrong key is not damage;
--repair fixes torn pages and (explicitly) zeroes the rest, after a backup that restores."""

from __future__ import annotations

import os
import random

import pytest

from realmfs.tools import offline, repair, verify
from realmfs.errors import ExitCode, RekeyInProgress, WrongKey
from realmfs.keys.key import Key
from realmfs.format.layout import HEADER_BASE, PAGE_SIZE, entry_offset, page_offset
from realmfs.format.pagecipher import PageCipher
from realmfs.storage.pagefile import open_backing
from realmfs.tools.verify import Kind, Severity
from tests.offline.conftest import write_tree

PAGES = 130


@pytest.fixture
def backing(tmp_path):
    """A backing directory with a Realm-layout and a header-layout file, pages 3 rewritten."""
    key = Key.generate()
    rnd = random.Random(5)
    write_tree(tmp_path / "src", {"a.realm": rnd.randbytes(PAGES * PAGE_SIZE),
                                  "b.bin": rnd.randbytes(PAGES * PAGE_SIZE - 100),
                                  "sub/c.txt": b"small"})
    offline.encrypt(str(tmp_path / "src"), str(tmp_path / "backing"), key)
    cipher = PageCipher(key.raw)
    for name, realm in (("a.realm", True), ("b.bin", False)):
        f = open_backing(str(tmp_path / "backing" / name), cipher, realm_layout=realm)
        f.write(3 * PAGE_SIZE, b"rewritten" * 100)     # page 3: slot 2 populated
        f.close()
    return tmp_path / "backing", key


def base_of(name: str) -> int:
    return 0 if name.endswith(".realm") else HEADER_BASE


def flip(path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def problems(report) -> set:
    return {(p.file, p.page, p.kind) for p in report.problems if p.severity > Severity.INFO}


def test_clean_tree_is_clean(run, backing, tmp_path):
    path, key = backing
    report = verify.verify_path(str(path), key)
    assert not report.damaged and problems(report) == set()
    k = tmp_path / "k"
    from realmfs.keys.key import write_key_file
    write_key_file(str(k), key)
    result = run("verify", path, "--key-file", k)
    assert result.code == ExitCode.OK, result
    assert "3 file(s) checked, 0 damaged" in result.out


@pytest.mark.parametrize("name", ["a.realm", "b.bin"])
def test_flipped_bits_in_pages_and_entries(backing, name):
    path, key = backing
    target, base = path / name, base_of(name)
    flip(target, page_offset(5, base) + 1000)                 # data, written once
    flip(target, page_offset(3, base) + 7)                    # data, written twice
    flip(target, entry_offset(70, base) + 4 + 3)              # mac1 of page 70 (second block)
    report = verify.verify_path(str(path), key)
    assert problems(report) == {(name, 5, Kind.INTERRUPTED), (name, 3, Kind.AUTH_FAILED),
                                (name, 70, Kind.INTERRUPTED)}
    assert report.damaged


def test_counter_flip_is_caught_in_header_layout_only(backing):
    """Realm Core's MAC does not cover the counter (realm-format.md §10); realmfs's binding does."""
    path, key = backing
    flip(path / "b.bin", entry_offset(9, HEADER_BASE), 1)
    flip(path / "a.realm", entry_offset(9, 0), 1)
    assert problems(verify.verify_path(str(path), key)) == {("b.bin", 9, Kind.INTERRUPTED)}


def test_header_faults(backing):
    path, key = backing
    flip(path / "b.bin", 30)                                  # slot A only
    report = verify.verify_path(str(path), key)
    assert problems(report) == {("b.bin", None, Kind.HEADER_SLOT)}
    flip(path / "sub" / "c.txt", 30)
    flip(path / "sub" / "c.txt", 2048 + 30)                   # both slots
    report = verify.verify_path(str(path), key)
    assert ("sub/c.txt", None, Kind.HEADER) in problems(report)


def test_truncated_files(backing):
    path, key = backing
    a, b = path / "a.realm", path / "b.bin"
    os.truncate(a, os.path.getsize(a) - 1000)                 # mid-page
    os.truncate(b, page_offset(100, HEADER_BASE))             # at a page boundary: 30 pages gone
    found = problems(verify.verify_path(str(path), key))
    assert ("a.realm", None, Kind.SIZE) in found and ("a.realm", PAGES - 1, Kind.TRUNCATED) in found
    assert ("b.bin", None, Kind.SIZE) in found
    assert {p for f, p, k in found if f == "b.bin" and k is Kind.TRUNCATED} == set(range(100, PAGES))


def make_torn(path, name: str, key: Key, page: int) -> None:
    """Entry of a rewrite landed, its data did not: the old data under the new entry."""
    base = base_of(name)
    target = path / name
    with open(target, "rb") as f:
        old = f.read()
    f = open_backing(str(target), PageCipher(key.raw), realm_layout=name.endswith(".realm"))
    f.write(page * PAGE_SIZE, b"new" * 1000)
    f.close()
    with open(target, "r+b") as f:
        f.seek(page_offset(page, base))
        f.write(old[page_offset(page, base):page_offset(page, base) + PAGE_SIZE])


@pytest.mark.parametrize("name", ["a.realm", "b.bin"])
def test_torn_write_is_recoverable_and_repair_rolls_it_back(run, backing, name, tmp_path):
    path, key = backing
    before = verify.verify_path(str(path), key)
    make_torn(path, name, key, 3)
    report = verify.verify_path(str(path), key)
    assert problems(report) == {(name, 3, Kind.TORN)}
    assert all(p.severity is Severity.RECOVERABLE for p in report.problems if p.kind is Kind.TORN)
    offline.decrypt(str(path), str(tmp_path / "plain-before"), key)
    backup, changes = repair.repair(report, key, backup_dir=str(tmp_path / "bk"))
    assert changes == [f"{name}: page 3: torn write rolled back to the old slot"]
    after = verify.verify_path(str(path), key)
    assert not after.damaged and len(after.files) == len(before.files)
    offline.decrypt(str(path), str(tmp_path / "plain-after"), key)
    for rel in ("a.realm", "b.bin"):
        assert (tmp_path / "plain-before" / rel).read_bytes() == (tmp_path / "plain-after" / rel).read_bytes()


def test_repair_zero_damaged_then_restore_backup(run, backing, tmp_path):
    path, key = backing
    flip(path / "a.realm", page_offset(5, 0) + 10)
    flip(path / "b.bin", page_offset(PAGES - 1, HEADER_BASE) + 10)   # the partial last page
    damaged = {n: (path / n).read_bytes() for n in ("a.realm", "b.bin")}
    from realmfs.keys.key import write_key_file
    write_key_file(str(tmp_path / "k"), key)
    assert run("verify", path, "--key-file", tmp_path / "k").code == ExitCode.DAMAGED
    no_zero = run("verify", path, "--key-file", tmp_path / "k", "--repair")
    assert no_zero.code == ExitCode.DAMAGED and "--zero-damaged" in no_zero.out
    assert {n: (path / n).read_bytes() for n in damaged} == damaged       # nothing changed
    fixed = run("verify", path, "--key-file", tmp_path / "k", "--repair", "--zero-damaged",
                "--backup-dir", tmp_path / "bk")
    assert fixed.code == ExitCode.OK, fixed
    assert "a.realm: page 5: replaced by zeros" in fixed.out
    assert not verify.verify_path(str(path), key).damaged
    assert not [n for n in os.listdir(path) if "repair" in n]             # backup is outside
    out = offline.decrypt(str(path), str(tmp_path / "plain"), key)
    assert len(out.files) == 3
    assert (tmp_path / "plain" / "a.realm").read_bytes()[5 * PAGE_SIZE:6 * PAGE_SIZE] == bytes(PAGE_SIZE)
    assert os.path.getsize(tmp_path / "plain" / "b.bin") == PAGES * PAGE_SIZE - 100
    restored = run("verify", path, "--key-file", tmp_path / "k", "--restore", tmp_path / "bk")
    assert restored.code == ExitCode.DAMAGED
    assert {n: (path / n).read_bytes() for n in damaged} == damaged       # byte for byte as before


def test_restore_refuses_a_mounted_directory_and_reads_a_broken_backup_as_one_line(run, backing, tmp_path):
    path, key = backing
    from realmfs.storage.backinglock import BackingLock
    from realmfs.errors import BackingLocked
    from realmfs.keys.key import write_key_file
    write_key_file(str(tmp_path / "k"), key)
    (tmp_path / "bk").mkdir()
    (tmp_path / "bk" / "manifest.json").write_text('{"a.realm": {"path": 3}}')
    lock = BackingLock(str(path), "/somewhere/mounted").acquire()      # as a mount holds it
    try:
        with pytest.raises(BackingLocked):
            repair.restore_backup(str(tmp_path / "bk"), str(path))
    finally:
        lock.release()
    broken = run("verify", path, "--key-file", tmp_path / "k", "--restore", tmp_path / "bk")
    assert broken.code == ExitCode.DAMAGED, broken
    assert "backup is unreadable" in broken.err and len(broken.err.strip().splitlines()) == 1, broken.err


def test_wrong_key_is_not_damage(run, backing, tmp_path):
    path, _ = backing
    from realmfs.keys.key import write_key_file
    write_key_file(str(tmp_path / "wrong"), Key.generate())
    assert run("verify", path, "--key-file", tmp_path / "wrong").code == ExitCode.WRONG_KEY
    os.unlink(path / ".realmfs.conf")             # no config: judged from the pages
    result = run("verify", path, "--key-file", tmp_path / "wrong")
    assert result.code == ExitCode.WRONG_KEY and "authenticates" in result.err
    assert run("verify", path / "a.realm", "--key-file", tmp_path / "wrong").code == ExitCode.WRONG_KEY
    assert run("verify", path / "b.bin", "--key-file", tmp_path / "wrong").code == ExitCode.WRONG_KEY


def test_damage_without_config_is_damage_not_wrong_key(backing):
    path, key = backing
    os.unlink(path / ".realmfs.conf")
    flip(path / "a.realm", page_offset(0, 0) + 1)
    report = verify.verify_path(str(path), key)
    assert problems(report) == {("a.realm", 0, Kind.INTERRUPTED)}
    with pytest.raises(WrongKey):
        verify.verify_path(str(path), Key.generate())


def test_rekey_in_progress_is_refused(backing):
    path, key = backing
    from realmfs.keys import config as configmod
    config = configmod.load(str(path))
    config.rekey = {"new_key_check": "00", "keyslots": [], "key_file": None, "dropped": []}
    configmod.save(str(path), config, key)
    with pytest.raises(RekeyInProgress):
        verify.verify_path(str(path), key)


def test_never_written_pages_are_info_only(run, tmp_path):
    from tests.vectors import vector_path
    from tests.offline.conftest import write_hex_key
    k = write_hex_key(tmp_path / "k", "31323334353637383930313233343536373839303132333435363738393031"
                                      "313233343536373839303132333435363738393031323334353637383930313233")
    result = run("verify", vector_path("legacy_64k.enc"), "--key-file", k, "-v")
    assert result.code == ExitCode.OK, result
    assert "224 never written" in result.out and "never written: pages 16-143, 160-255" in result.out


@pytest.mark.parametrize("name", ["a.realm", "b.bin"])
def test_any_flipped_bit_in_any_data_page_is_found(backing, name):
    """40 random positions over every written data page: each flip is reported on its page."""
    path, key = backing
    rnd = random.Random(name)
    target, base = path / name, base_of(name)
    pristine = target.read_bytes()
    for _ in range(40):
        page = rnd.randrange(PAGES)
        offset = page_offset(page, base) + rnd.randrange(PAGE_SIZE)
        flip(target, offset, rnd.randrange(8))
        found = problems(verify.verify_path(str(path), key))
        assert {(f, p) for f, p, _ in found} == {(name, page)}, (page, found)
        target.write_bytes(pristine)


def test_a_backup_directory_is_never_reused(run, backing, tmp_path):
    path, key = backing
    flip(path / "a.realm", page_offset(5, 0) + 10)
    report = verify.verify_path(str(path), key)
    repair.repair(report, key, zero_damaged=True, backup_dir=str(tmp_path / "bk"))
    flip(path / "a.realm", page_offset(6, 0) + 10)
    from realmfs.errors import AlreadyExists
    with pytest.raises(AlreadyExists):
        repair.repair(verify.verify_path(str(path), key), key, zero_damaged=True, backup_dir=str(tmp_path / "bk"))


@pytest.mark.parametrize("name", ["a.realm", "b.bin"])
def test_erased_counter_is_damage_not_a_never_written_page(backing, name):
    """iv1 1 -> 0 would make the page read as zeros; the MAC left in the entry gives it away."""
    path, key = backing
    flip(path / name, entry_offset(8, base_of(name)), 0)
    assert problems(verify.verify_path(str(path), key)) == {(name, 8, Kind.ERASED_COUNTER)}


def test_old_slot_without_counter_is_a_warning(backing):
    path, key = backing
    flip(path / "a.realm", entry_offset(9, 0) + 40)      # mac2 of a page written once
    report = verify.verify_path(str(path), key)
    assert problems(report) == {("a.realm", 9, Kind.ODD_OLD_SLOT)} and not report.damaged
