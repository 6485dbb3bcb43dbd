"""One damage rulebook (realmfs/format/damage.py, issue 14 item 4): the read path and verify judge
every page alike. Over every Realm Core vector, and over files of both layouts damaged
here in every way the rulebook knows, each page reads as verify says -- the data, zeros
or an error (zeros in salvage mode) -- and each file opens, or fails, as verify says."""

from __future__ import annotations

import os

import pytest

from realmfs.tools import verify
from realmfs.format.damage import Kind, Outcome, Severity
from realmfs.errors import Damaged, RealmfsError
from realmfs.format.layout import ENTRY_SIZE, HEADER_BASE, PAGE_SIZE, REALM_BASE, entry_offset, page_offset, pages_for
from realmfs.format.pagecipher import PageCipher
from realmfs.storage.pagefile import open_backing
from tests.vectors import load_vectors, vector_path

P = PAGE_SIZE
VECTORS = load_vectors()


def verdicts(report: verify.FileReport) -> dict[int, Outcome]:
    """Page -> what verify says a read gets (pages it has no finding on: the data)."""
    found = {page: Outcome.DATA for page in range(report.pages)}
    for problem in report.problems:
        if problem.page is not None and problem.outcome is not None:
            found[problem.page] = problem.outcome
    return found


def check_agreement(path: str, cipher: PageCipher, realm: bool) -> dict[int, Outcome]:
    """Assert that reads agree with verify, strict and salvaging; returns verify's verdicts."""
    report = verify.scan_file(path, cipher, realm_layout=realm)
    refused = [p for p in report.problems if p.page is None and p.severity is Severity.DAMAGE]
    expected = verdicts(report)
    for salvage in (False, True):
        try:
            f = open_backing(path, cipher, realm_layout=realm, read_only=True, salvage=salvage)
        except RealmfsError as error:
            assert refused or report.key_fails, (salvage, error, report.problems)
            continue
        with f:
            assert salvage or not refused, report.problems
            assert pages_for(f.size) == report.pages
            for page, outcome in expected.items():
                context = (os.path.basename(path), page, outcome, salvage)
                if outcome is Outcome.FAILS and not salvage:
                    with pytest.raises(Damaged):        # IntegrityError is a Damaged
                        f.read(page * P, P)
                    continue
                data = f.read(page * P, P)
                if outcome in (Outcome.ZEROS, Outcome.FAILS):
                    assert data == bytes(len(data)), context
    return expected


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["id"])
def test_reads_and_verify_agree_on_every_vector_page(vector):
    cipher = PageCipher(bytes.fromhex(vector["key_hex"]))
    check_agreement(str(vector_path(vector["encrypted"])), cipher, realm=True)


def test_the_vectors_reach_every_page_verdict():
    """The vectors above are not all alike: between them every page outcome occurs."""
    seen = set()
    for vector in VECTORS:
        path = str(vector_path(vector["encrypted"]))
        report = verify.scan_file(path, PageCipher(bytes.fromhex(vector["key_hex"])), realm_layout=True)
        seen |= {(p.kind, p.outcome) for p in report.problems if p.page is not None}
        seen |= {(None, o) for o in verdicts(report).values()}
    assert {o for _, o in seen} == set(Outcome), seen
    assert {(Kind.STALE_ZERO, Outcome.ZEROS), (Kind.TORN, Outcome.PREVIOUS),
            (Kind.AUTH_FAILED, Outcome.FAILS)} <= seen, seen


# ---------------------------------------------------------------------- damaged here
def _poke(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _peek(path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _flip(path, offset: int) -> None:
    _poke(path, offset, bytes([_peek(path, offset, 1)[0] ^ 0x01]))


@pytest.mark.parametrize("realm", [True, False], ids=["realm", "header"])
def test_reads_and_verify_agree_on_every_kind_of_damage(tmp_path, realm):
    path = str(tmp_path / ("f.realm" if realm else "f.bin"))
    cipher = PageCipher(os.urandom(64))
    base = REALM_BASE if realm else HEADER_BASE
    with open_backing(path, cipher, realm_layout=realm, create=True) as f:
        f.write(0, os.urandom(12 * P))
        f.write(0, os.urandom(8 * P))          # pages 0..7 written twice: slot 2 populated
    torn_old = _peek(path, page_offset(4, base), P)
    with open_backing(path, cipher, realm_layout=realm) as f:
        f.write(4 * P, os.urandom(P))
    _poke(path, page_offset(4, base), torn_old)                 # 4: torn (entry landed, data not)
    _flip(path, page_offset(2, base) + 100)                     # 2: authentication fails
    _poke(path, page_offset(3, base), bytes(P))                 # 3: stale entry over a zero page
    _poke(path, entry_offset(6, base), bytes(4))                # 6: counter erased, MAC left
    _flip(path, page_offset(9, base) + 7)                       # 9: written once, fails
    _poke(path, page_offset(10, base), bytes(P))                # 10: written once, zeroed
    found = check_agreement(path, cipher, realm)
    assert found[4] is Outcome.PREVIOUS and found[2] is Outcome.FAILS and found[9] is Outcome.FAILS
    assert found[6] is Outcome.ZEROS
    # Realm Core's own states read as zeros in a .realm file, fail in a header-layout file
    assert found[3] is found[10] is (Outcome.ZEROS if realm else Outcome.FAILS)
    assert [found[page] for page in (0, 1, 5, 7, 8, 11)] == [Outcome.DATA] * 6
    assert _peek(path, entry_offset(6, base), ENTRY_SIZE)[4:32] != bytes(28)
