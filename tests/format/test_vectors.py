"""Realm Core's own encrypted files: realmfs must read them exactly and write them byte for byte."""

from __future__ import annotations

import shutil

import pytest

from realmfs.errors import Damaged, IntegrityError, NotEncrypted, WrongKey
from realmfs.format.layout import ENTRY_SIZE, PAGE_SIZE, entry_offset, page_offset
from realmfs.format.pagecipher import Entry, PageCipher, ReadResult
from realmfs.storage.pagefile import open_backing
from tests.vectors import load_vectors, vector_path

VECTORS = load_vectors()
BY_ID = {v["id"]: v for v in VECTORS}
REALM_RESULT = {
    "Success": {ReadResult.SUCCESS, ReadResult.FALLBACK},
    "Uninitialized": {ReadResult.UNINITIALIZED},
    "InterruptedFirstWrite": {ReadResult.INTERRUPTED_FIRST_WRITE},
    "StaleHmac": {ReadResult.STALE_ZERO},
    "Failed": {ReadResult.FAILED},
    "Eof": {ReadResult.EOF},
}
# realmfs refuses to return these as data, where Realm Core's writer view returns zeros
REFUSED = {"tampered": IntegrityError, "tampered_once": IntegrityError, "cut_tail": Damaged,
           "wrongkey_p65": WrongKey, "wrongkey_rewrites": WrongKey, "plain_realm_with_key": NotEncrypted}


def cipher_of(vector) -> PageCipher:
    return PageCipher(bytes.fromhex(vector["key_hex"]))


def read_all(vector, **kwargs) -> bytes:
    f = open_backing(str(vector_path(vector["encrypted"])), cipher_of(vector), realm_layout=True,
                     read_only=True, **kwargs)
    try:
        assert f.size == vector["logical_size"]
        return f.read(0, f.size)
    finally:
        f.close()


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["id"])
def test_every_page_is_classified_as_realm_core_does(vector):
    raw = vector_path(vector["encrypted"]).read_bytes()
    assert len(raw) == vector["physical_size"]
    cipher = cipher_of(vector)
    for page, realm_result, iv1, iv2 in vector["pages"]:
        entry = Entry.unpack(raw[entry_offset(page):entry_offset(page) + ENTRY_SIZE])
        assert (entry.iv1, entry.iv2) == (iv1, iv2)
        ciphertext = raw[page_offset(page):page_offset(page) + PAGE_SIZE]
        result, _ = cipher.classify(entry, ciphertext, page, None)
        assert result in REALM_RESULT[realm_result], (page, realm_result, result)


@pytest.mark.parametrize("vector", [v for v in VECTORS if v.get("plaintext") and v["id"] not in REFUSED],
                         ids=lambda v: v["id"])
def test_decrypts_byte_for_byte(vector):
    assert read_all(vector) == vector_path(vector["plaintext"]).read_bytes()


@pytest.mark.parametrize("vector_id", sorted(REFUSED))
def test_damaged_and_foreign_files_are_refused(vector_id):
    vector = BY_ID[vector_id]
    with pytest.raises(REFUSED[vector_id]):
        read_all(vector)


@pytest.mark.parametrize("vector_id", ["tampered_once", "cut_tail"])
def test_salvage_reads_what_realm_core_returns(vector_id):
    """Salvage mode (decrypt --skip-damaged) gives Realm Core's lenient bytes: bad pages as zeros."""
    vector = BY_ID[vector_id]
    assert read_all(vector, salvage=True) == vector_path(vector["plaintext"]).read_bytes()


def test_tampered_page_is_named_and_others_still_read():
    vector = BY_ID["tampered"]
    f = open_backing(str(vector_path(vector["encrypted"])), cipher_of(vector), realm_layout=True, read_only=True)
    try:
        assert len(f.read(0, PAGE_SIZE)) == PAGE_SIZE
        assert len(f.read(2 * PAGE_SIZE, PAGE_SIZE)) == PAGE_SIZE
        with pytest.raises(IntegrityError) as caught:
            f.read(PAGE_SIZE, 10)
        assert caught.value.page == 1 and "tampered.enc" in str(caught.value)
    finally:
        f.close()


@pytest.mark.parametrize("vector", [v for v in VECTORS if v.get("fresh_single_write")], ids=lambda v: v["id"])
def test_fresh_write_reproduces_realm_core_ciphertext(vector, tmp_path):
    plaintext = vector_path(vector["plaintext"]).read_bytes()[:vector["input_len"]]
    target = tmp_path / "out.realm"
    f = open_backing(str(target), cipher_of(vector), realm_layout=True, create=True)
    try:
        f.write(0, plaintext)
        f.fsync()
    finally:
        f.close()
    expected = vector_path(vector["encrypted"]).read_bytes()
    if not plaintext:
        # Realm Core's resize(0) leaves one empty metadata page, which Realm Core itself then
        # refuses as "unencrypted"; realmfs keeps an empty .realm file empty (0 bytes).
        assert expected == bytes(PAGE_SIZE) and target.read_bytes() == b""
    else:
        assert target.read_bytes() == expected


def test_rewrite_of_torn_page_skips_the_lost_counter(tmp_path):
    """torn_write: slot 1 (counter 2) never landed. Realm Core's next write would reuse
    counter 2; realmfs continues at 3 and keeps the verified slot 2."""
    vector = BY_ID["torn_write"]
    target = tmp_path / "torn.realm"
    shutil.copy(vector_path(vector["encrypted"]), target)
    f = open_backing(str(target), cipher_of(vector), realm_layout=True)
    try:
        old = f.read(PAGE_SIZE, PAGE_SIZE)
        assert old == vector_path(vector["plaintext"]).read_bytes()[PAGE_SIZE:2 * PAGE_SIZE]
        f.write(PAGE_SIZE, b"x")
        raw = target.read_bytes()
        entry = Entry.unpack(raw[entry_offset(1):entry_offset(1) + ENTRY_SIZE])
        assert (entry.iv1, entry.iv2) == (3, 1)
        assert f.read(PAGE_SIZE, PAGE_SIZE) == b"x" + old[1:]
    finally:
        f.close()


def test_counter_wraps_from_max_to_one(tmp_path):
    """iv_wrap: a page at counter 0xFFFFFFFF is next written with counter 1 (0 means never)."""
    vector = BY_ID["iv_wrap"]
    target = tmp_path / "wrap.realm"
    shutil.copy(vector_path(vector["encrypted"]), target)
    f = open_backing(str(target), cipher_of(vector), realm_layout=True)
    try:
        f.write(PAGE_SIZE, b"y" * PAGE_SIZE)  # page 1 is at 0xFFFFFFFF
        raw = target.read_bytes()
        entry = Entry.unpack(raw[entry_offset(1):entry_offset(1) + ENTRY_SIZE])
        assert (entry.iv1, entry.iv2) == (1, 0xFFFFFFFF)
        assert f.read(PAGE_SIZE, PAGE_SIZE) == b"y" * PAGE_SIZE
    finally:
        f.close()
