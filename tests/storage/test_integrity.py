"""Tampering and damage: flipped bits, wrong keys, foreign and cut files, stale zero pages.
A page that fails authentication is never returned as data; only that page fails."""

from __future__ import annotations

import logging
import os

import pytest

from realmfs.errors import Damaged, IntegrityError, NotEncrypted, WrongKey
from realmfs.format.layout import ENTRY_SIZE, PAGE_SIZE
from realmfs.format.pagecipher import PageCipher
from realmfs.storage.pagefile import EncryptedFile
from tests.storage.helpers import LAYOUT_IDS, LAYOUTS, Backing, pattern

P = PAGE_SIZE
PAGES = 70                       # two IV blocks
SIZE = PAGES * P - 123           # exact in the header layout, 70 pages in the realm layout


@pytest.fixture(params=LAYOUTS, ids=LAYOUT_IDS)
def written(request, tmp_path):
    """A 70-page file; pages 3 and 66 written twice (slot 2 in use), the others once."""
    realm = request.param
    backing = Backing(tmp_path / ("f.realm" if realm else "f.bin"), realm)
    backing.f.write(0, pattern(SIZE, 1))
    for page in (3, 66):
        backing.f.write(page * P, pattern(P, 2))
    content = backing.f.read(0, backing.f.size)
    backing.close()
    yield backing, content
    backing.close()


def pages_that_fail(f: EncryptedFile) -> dict[int, type]:
    failed = {}
    for page in range(-(-f.size // P)):
        try:
            f.read(page * P, P)
        except Damaged as error:
            failed[page] = type(error)
    return failed


def assert_only_page_fails(backing, content, page, error=IntegrityError):
    f = backing.open(read_only=True)
    assert pages_that_fail(f) == {page: error}
    with pytest.raises(error) as caught:
        f.read(page * P + 5, 1)
    if error is IntegrityError:
        assert caught.value.page == page and backing.path in str(caught.value)
    for other in (0, page - 1, page + 1, PAGES - 1):
        if 0 <= other < PAGES and other != page:
            assert f.read(other * P, P) == content[other * P:(other + 1) * P]
    # a range that crosses the bad page fails as a whole
    with pytest.raises(error):
        f.read(max(0, page - 1) * P, 3 * P)


@pytest.mark.parametrize("page", [0, 3, 63, 64, 66, PAGES - 1])
@pytest.mark.parametrize("byte", [0, 15, 16, 2000, P - 1])
def test_bit_flip_in_page_body(written, page, byte):
    backing, content = written
    backing.flip(backing.page_at(page) + byte, bit=byte % 8)
    assert_only_page_fails(backing, content, page)


@pytest.mark.parametrize("page", [0, 3, 64, 66])
@pytest.mark.parametrize("field_byte", [4, 20, 31], ids=["mac1-first", "mac1-mid", "mac1-last"])
def test_bit_flip_in_slot1_mac(written, page, field_byte):
    backing, content = written
    backing.flip(backing.entry_at(page) + field_byte, bit=1)
    assert_only_page_fails(backing, content, page)


@pytest.mark.parametrize("page", [0, 3, 65, 66])
@pytest.mark.parametrize("bit", [2, 7, 17, 31])
def test_bit_flip_in_slot1_counter(written, page, bit):
    """Header layout: the counter is bound into the MAC, any change fails. Realm layout: the
    MAC does not cover the IV (Realm Core's format), the page still authenticates and only
    its first four bytes change -- by exactly the XOR of the counters (realm-format.md §10)."""
    backing, content = written
    backing.flip(backing.entry_at(page) + bit // 8, bit=bit % 8)
    assert backing.entry(page).iv1 != 0      # counter -> 0: test_cleared_counter_reads_as_never_written
    if not backing.realm:
        assert_only_page_fails(backing, content, page)
        return
    f = backing.open(read_only=True)
    got = f.read(page * P, P)
    expected = bytearray(content[page * P:(page + 1) * P])
    expected[bit // 8] ^= 1 << (bit % 8)
    assert got == bytes(expected)
    assert pages_that_fail(f) == {}


@pytest.mark.parametrize("page", [0, 3, 65, 66])
def test_cleared_counter_reads_as_never_written(written, page):
    """Documents a limit of the format in BOTH layouts: iv1 = 0 means 'never written' and is
    decided before any MAC, and never-written pages inside the size are legitimate (holes,
    a crash between the data and the entry of a first write). So an attacker who zeroes a
    counter (one bit flip for a page written once) makes the page read as zeros, silently.
    See docs/threat-model.md."""
    backing, content = written
    backing.poke(backing.entry_at(page), bytes(4))
    f = backing.open(read_only=True)
    assert f.read(page * P, P) == bytes(P)
    assert pages_that_fail(f) == {}


@pytest.mark.parametrize("page", [3, 66])
@pytest.mark.parametrize("field_byte", [32, 36, 63], ids=["iv2", "mac2-first", "mac2-last"])
def test_bit_flip_in_slot2_of_a_live_page_is_harmless(written, page, field_byte):
    """Slot 2 is only consulted when slot 1 fails; damage there costs nothing until then."""
    backing, content = written
    backing.flip(backing.entry_at(page) + field_byte)
    f = backing.open(read_only=True)
    assert pages_that_fail(f) == {}
    assert f.read(0, f.size) == content


@pytest.mark.parametrize("byte", [0, 7, 8, 20, 40, 60, 75, 100, 2048, 2050, 2100, 4095])
def test_bit_flip_in_header_page(tmp_path, byte):
    backing = Backing(tmp_path / "f.bin", realm=False)
    backing.f.write(0, pattern(3 * P, 1))
    backing.close()
    backing.flip(byte, bit=byte % 8)
    with pytest.raises(IntegrityError) as caught:
        backing.open()
    assert caught.value.page is None and "header" in str(caught.value)
    with pytest.raises(IntegrityError):
        backing.open(key_checked=True, read_only=True)


def test_header_and_pages_are_bound_to_the_file(tmp_path):
    """Header layout: a page moved to another position, or copied with its entry from
    another file with the same key, fails; in a .realm file the same moves verify."""
    key = os.urandom(64)
    files = {}
    for name, realm in (("a.bin", False), ("b.bin", False), ("a.realm", True), ("b.realm", True)):
        files[name] = Backing(tmp_path / name, realm, key)
        files[name].f.write(0, pattern(4 * P, len(files)))
        files[name].close()
    for a, b in (("a.bin", "b.bin"), ("a.realm", "b.realm")):
        src, dst = files[a], files[b]
        raw = src.raw()
        dst.poke(dst.entry_at(2), raw[src.entry_at(2):src.entry_at(2) + ENTRY_SIZE])
        dst.poke(dst.page_at(2), raw[src.page_at(2):src.page_at(2) + P])
        f = dst.open(read_only=True)
        if dst.realm:
            assert f.read(2 * P, P) == src.open(read_only=True).read(2 * P, P)
        else:
            with pytest.raises(IntegrityError):
                f.read(2 * P, P)
        # swap pages 0 and 1 (with their entries) inside the file
        raw = dst.raw()
        e0, e1 = raw[dst.entry_at(0):dst.entry_at(0) + ENTRY_SIZE], raw[dst.entry_at(1):dst.entry_at(1) + ENTRY_SIZE]
        p0, p1 = raw[dst.page_at(0):dst.page_at(0) + P], raw[dst.page_at(1):dst.page_at(1) + P]
        dst.poke(dst.entry_at(0), e1 + e0)
        dst.poke(dst.page_at(0), p1 + p0)
        f = dst.open(read_only=True)
        if dst.realm:
            # verifies; bytes 4..11 are off by pos0 XOR pos1 (realm-format.md §10)
            assert f.read(P + 16, P - 16) == pattern(4 * P, 4)[16:P]
        else:
            with pytest.raises(IntegrityError):
                f.read(0, P)
            with pytest.raises(IntegrityError):
                f.read(P, P)
        src.close()
        dst.close()


# ----------------------------------------------------------------------------- keys
def test_wrong_key(written):
    backing, _ = written
    backing.cipher = PageCipher(os.urandom(64))
    for options in ({}, {"read_only": True}):
        with pytest.raises(WrongKey) as caught:
            backing.open(**options)
        assert "\n" not in str(caught.value) and "wrong key" in str(caught.value)
        assert backing.fd is None


def test_wrong_key_when_key_was_checked_is_damage(written):
    """A mount proves the key against its config first; then a failing file is damage."""
    backing, _ = written
    backing.cipher = PageCipher(os.urandom(64))
    with pytest.raises(IntegrityError):
        f = backing.open(key_checked=True, read_only=True)
        f.read(0, P)


def test_wrong_key_on_once_written_realm_pages_is_not_zeros(tmp_path):
    """Realm Core's write view reads once-written pages under a wrong key as zeros
    (interrupted first write); realmfs calls it a wrong key at open."""
    backing = Backing(tmp_path / "f.realm", realm=True)
    backing.f.write(0, pattern(3 * P, 1))
    backing.close()
    backing.cipher = PageCipher(os.urandom(64))
    with pytest.raises(WrongKey):
        backing.open()
    f = backing.open(key_checked=True)
    with pytest.raises(IntegrityError):
        f.read(0, 1)


def test_only_the_mac_half_is_checked_by_pages(written):
    """Documents the format: the two key halves are independent, and pages (and the
    header) authenticate with the HMAC half alone. A key with the right HMAC half and a
    wrong AES half opens the file and decrypts to garbage -- the mount's key check must
    cover all 64 bytes."""
    backing, content = written
    backing.cipher = PageCipher(os.urandom(32) + backing.key[32:])
    f = backing.open(read_only=True)
    got = f.read(0, f.size)
    assert len(got) == len(content) and got != content


# ----------------------------------------------------------------------------- foreign / cut files
def plain_realm_bytes(pages: int) -> bytes:
    header = (4096).to_bytes(8, "little") + bytes(8) + b"T-DB" + bytes([24, 24, 0, 0])
    return header + bytes(pages * P - len(header))


@pytest.mark.parametrize("pages", [1, 2, 70])
@pytest.mark.parametrize("realm", LAYOUTS, ids=LAYOUT_IDS)
def test_plain_realm_file_is_not_encrypted(tmp_path, realm, pages):
    path = tmp_path / ("plain.realm" if realm else "plain.bin")
    path.write_bytes(plain_realm_bytes(pages))
    for options in ({}, {"read_only": True}, {"key_checked": True}):
        with pytest.raises(NotEncrypted) as caught:
            Backing(path, realm, **options)
        assert "realmfs encrypt" in str(caught.value)
    assert path.read_bytes() == plain_realm_bytes(pages)     # untouched


def test_header_file_without_header_is_damaged(tmp_path):
    path = tmp_path / "junk.bin"
    path.write_bytes(os.urandom(3 * P))
    with pytest.raises(Damaged, match="no realmfs header"):
        Backing(path, realm=False)


@pytest.mark.parametrize("cut", [1, 100, P - 1, P, P + 1])
def test_cut_backing_file(written, cut):
    backing, content = written
    realm = backing.realm
    with open(backing.path, "r+b") as handle:
        handle.truncate(os.path.getsize(backing.path) - cut)
    if cut % P:
        for options in ({}, {"read_only": True}, {"key_checked": True}):
            with pytest.raises(Damaged) as caught:
                backing.open(**options)
            assert "not a whole number" in str(caught.value)
        f = backing.open(salvage=True)           # salvage reads what is left
        assert f.read(0, 60 * P) == content[:60 * P]
    elif realm:
        # a cut at a page boundary is undetectable in Realm's layout: the file is just shorter
        f = backing.open()
        assert f.size == (PAGES - 1) * P and f.read(0, f.size) == content[:f.size]
    else:
        with pytest.raises(Damaged, match="cut short"):
            backing.open()


# ----------------------------------------------------------------------------- stale zero pages
def stale_zero(backing: Backing, page: int) -> None:
    """Write ``page`` twice, then replace its ciphertext by zeros (Realm Core's shrink +
    regrow leaves exactly this; so can an attacker)."""
    backing.f.write(page * P, pattern(P, 7))
    backing.f.write(page * P, pattern(P, 8))
    backing.close()
    backing.poke(backing.page_at(page), bytes(P))


def test_stale_zero_page_in_realm_file_reads_as_zeros_with_a_warning(tmp_path, caplog):
    backing = Backing(tmp_path / "f.realm", realm=True)
    backing.f.write(0, pattern(4 * P, 1))
    stale_zero(backing, 2)
    with caplog.at_level(logging.WARNING, logger="realmfs.storage.pagefile"):
        f = backing.open(read_only=True)
        assert f.read(0, f.size) == pattern(4 * P, 1)[:2 * P] + bytes(P) + pattern(4 * P, 1)[3 * P:]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "page 2" in warnings[0].getMessage() and "stale" in warnings[0].getMessage()
    backing.close()


def test_stale_zero_page_in_header_file_is_an_integrity_error(tmp_path):
    backing = Backing(tmp_path / "f.bin", realm=False)
    backing.f.write(0, pattern(4 * P, 1))
    stale_zero(backing, 2)
    f = backing.open(read_only=True)
    with pytest.raises(IntegrityError) as caught:
        f.read(2 * P, 1)
    assert caught.value.page == 2
    assert f.read(3 * P, P) == pattern(4 * P, 1)[3 * P:]
    backing.close()


@pytest.mark.parametrize("realm", LAYOUTS, ids=LAYOUT_IDS)
def test_zeroed_once_written_page(tmp_path, realm):
    """Once-written page zeroed: Realm layout accepts it as an interrupted first write (a
    crash or Realm's own shrink leaves it), reading zeros; the header layout refuses it."""
    backing = Backing(tmp_path / ("f.realm" if realm else "f.bin"), realm)
    backing.f.write(0, pattern(3 * P, 1))
    backing.close()
    backing.poke(backing.page_at(1), bytes(P))
    f = backing.open(read_only=True)
    if realm:
        assert f.read(P, P) == bytes(P)
    else:
        with pytest.raises(IntegrityError):
            f.read(P, P)
    backing.close()


def test_salvage_reads_damaged_pages_as_zeros(written, caplog):
    backing, content = written
    backing.flip(backing.page_at(5) + 9)
    with caplog.at_level(logging.ERROR, logger="realmfs.storage.pagefile"):
        f = backing.open(salvage=True)
        got = f.read(0, f.size)
    assert got == content[:5 * P] + bytes(P) + content[6 * P:]
    assert any("page 5" in r.getMessage() for r in caplog.records)
    assert f.read_only
