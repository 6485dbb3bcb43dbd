"""The damage rulebook: what a page, a header or a backing size that is not plainly good
means, for the read path and for ``realmfs verify`` alike.

* ``judge_page``: from what authenticated (``PageCipher.classify``'s ReadResult), the
  page's IV-table entry, its ciphertext and the layout to a Verdict: the finding's
  kind, its severity for verify, and what a read gets (the data, the previous version,
  zeros, or an error), and whether the read path logs it;
* ``judge_header``: the same for a header page that ``fileheader.unpack_page`` refused;
* ``judge_size``: the same for the backing file's length.

PageStore/EncryptedFile (the read path) and verify.py both call these and nothing else
decides, so a page verify calls readable always reads, and one it calls damaged never
returns data. ``Kind`` is the one table of messages; ``read_error`` and ``open_error``
turn a verdict into the exception a read or an open raises.

Pure: no I/O, no logging; the callers log.
"""

from __future__ import annotations

import enum
import logging
from typing import NamedTuple

from .detect import looks_like_plain_realm
from ..errors import Damaged, IntegrityError, NotEncrypted, RealmfsError, WrongKey
from .fileheader import HeaderProblem, has_header_magic
from .layout import HEADER_SIZE, PAGE_SIZE, ZERO_PAGE, body_size_is_valid, body_to_data_size, pages_for
from .pagecipher import Entry, ReadResult


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    RECOVERABLE = 2
    DAMAGE = 3


class Kind(enum.Enum):
    """Every finding, with its one message."""

    TORN = "torn write, previous version recoverable from the old slot"
    AUTH_FAILED = "authentication failed (corrupted or tampered)"
    INTERRUPTED = ("interrupted first write: data does not authenticate and there is no old slot "
                   "(corrupted, tampered, or a first write cut short)")
    STALE_ZERO = "all-zero page under a stale IV entry"
    ZERO_INTERRUPTED = "zero page under an unfinished first write"
    NEVER_WRITTEN = "never written"
    ERASED_COUNTER = "counter is 0 (never written) but the entry holds a MAC: counter erased?"
    ODD_OLD_SLOT = "old slot inconsistent (a MAC without a counter, or the current counter reused)"
    TRUNCATED = "page missing or cut short (file truncated)"
    HEADER = "header does not authenticate"
    HEADER_SLOT = "one header slot damaged, the other is good"
    SIZE = "unexpected file size"
    NOT_ENCRYPTED = "an unencrypted Realm file"
    NOT_RECOGNIZED = "not an encrypted file (no realmfs header, no Realm IV table)"


class Outcome(enum.Enum):
    """What a read of the page (or an open of the file) gets."""

    DATA = "data"               # slot 1 authenticates
    PREVIOUS = "previous"       # slot 2 authenticates: the version before a torn write
    ZEROS = "zeros"
    FAILS = "fails"             # an error, or zeros in salvage mode (with an error logged)


class Verdict(NamedTuple):
    kind: Kind | None           # None: nothing to report
    severity: Severity | None
    outcome: Outcome
    log_level: int | None = None   # the read path logs a page read as zeros at this level
    detail: str = ""

    @property
    def fails(self) -> bool:
        return self.outcome is Outcome.FAILS


_GOOD = Verdict(None, None, Outcome.DATA)
_TORN = Verdict(Kind.TORN, Severity.RECOVERABLE, Outcome.PREVIOUS)
_NEVER_WRITTEN = Verdict(Kind.NEVER_WRITTEN, Severity.INFO, Outcome.ZEROS)
# nothing writes a MAC with counter 0; but iv1 = 0 is "never written" to Realm Core too
_ERASED_COUNTER = Verdict(Kind.ERASED_COUNTER, Severity.DAMAGE, Outcome.ZEROS)
_TRUNCATED = Verdict(Kind.TRUNCATED, Severity.DAMAGE, Outcome.FAILS)
# Realm Core's shrink keeps IV entries and regrows zero pages; it and a crash before a
# first data write leave exactly this. realmfs never leaves it itself.
_ZERO_INTERRUPTED = Verdict(Kind.ZERO_INTERRUPTED, Severity.WARNING, Outcome.ZEROS)
_INTERRUPTED = Verdict(Kind.INTERRUPTED, Severity.DAMAGE, Outcome.FAILS)
# Realm Core reads it as zeros silently; realmfs does too in a .realm file, with a warning
_STALE_ZERO_REALM = Verdict(Kind.STALE_ZERO, Severity.WARNING, Outcome.ZEROS, logging.WARNING)
_STALE_ZERO = Verdict(Kind.STALE_ZERO, Severity.DAMAGE, Outcome.FAILS)
_AUTH_FAILED = Verdict(Kind.AUTH_FAILED, Severity.DAMAGE, Outcome.FAILS)
NOT_ENCRYPTED = Verdict(Kind.NOT_ENCRYPTED, Severity.DAMAGE, Outcome.FAILS,
                        detail="encrypt it with 'realmfs encrypt'")


def judge_page(result: ReadResult, entry: Entry, ciphertext, realm_layout: bool) -> Verdict:
    """The verdict on one page; ``ciphertext`` is what the backing file holds for it
    (shorter than a page when the file ends inside it)."""
    if len(ciphertext) < PAGE_SIZE:     # missing, whatever the entry says
        return _TRUNCATED._replace(detail=f"{len(ciphertext)} of {PAGE_SIZE} bytes present")
    if result is ReadResult.SUCCESS:
        return _GOOD
    if result is ReadResult.FALLBACK:
        return _TORN
    if result is ReadResult.UNINITIALIZED:
        return _ERASED_COUNTER if any(entry.mac1) else _NEVER_WRITTEN
    if result is ReadResult.INTERRUPTED_FIRST_WRITE:
        return _ZERO_INTERRUPTED if realm_layout and ciphertext == ZERO_PAGE else _INTERRUPTED
    if result is ReadResult.STALE_ZERO:
        return _STALE_ZERO_REALM if realm_layout else _STALE_ZERO
    return _AUTH_FAILED


def odd_old_slot(entry: Entry) -> bool:
    """A written entry whose slot 2 nothing could have written (a warning only: reads
    go by slot 1 first)."""
    return (entry.iv2 == 0 and any(entry.mac2)) or entry.iv1 == entry.iv2


def read_error(verdict: Verdict, name: str, page: int) -> RealmfsError:
    """The exception a read of a failing page raises."""
    if verdict.kind is Kind.TRUNCATED:
        return Damaged(f"{name}: page {page}: {verdict.kind.value}; see 'realmfs verify'")
    return IntegrityError(name, page, verdict.kind.value)


# ---------------------------------------------------------------------- headers and sizes
def judge_header(page: bytes, problem: HeaderProblem | None, single_slot_ok: bool = False) -> Verdict:
    """The verdict on a header page ``fileheader.unpack_page`` refused with ``problem``
    (None: it did not get that far because there is no header magic).
    ``single_slot_ok``: one slot authenticates on its own (``fileheader.unpack_any_slot``)."""
    if problem is None or problem.kind == "foreign" or not has_header_magic(page):
        if looks_like_plain_realm(page):
            return NOT_ENCRYPTED
        return Verdict(Kind.NOT_RECOGNIZED, Severity.DAMAGE, Outcome.FAILS)
    if problem.kind == "damaged" and single_slot_ok:
        # the file does not open, but 'realmfs repair' rewrites the page from the good slot
        return Verdict(Kind.HEADER_SLOT, Severity.RECOVERABLE, Outcome.FAILS, detail=str(problem))
    return Verdict(Kind.HEADER, Severity.DAMAGE, Outcome.FAILS, detail=str(problem))


def judge_size(physical: int, realm_layout: bool, header_size: int | None = None) -> Verdict | None:
    """The verdict on a backing length of ``physical`` bytes (``header_size``: the size
    the header states, header layout), or None when it is a shape realmfs expects."""
    body = physical if realm_layout else physical - HEADER_SIZE
    if body % PAGE_SIZE:
        return Verdict(Kind.SIZE, Severity.DAMAGE, Outcome.FAILS,
                       detail=f"backing size {physical} is not a whole number of {PAGE_SIZE}-byte "
                              "pages (file cut short?)")
    if realm_layout:
        if not body_size_is_valid(physical):
            return Verdict(Kind.SIZE, Severity.WARNING, Outcome.DATA,
                           detail=f"backing size {physical} is not a shape Realm Core writes")
        return None
    stored = max(0, body_to_data_size(body))
    if stored < pages_for(header_size) * PAGE_SIZE:
        return Verdict(Kind.SIZE, Severity.DAMAGE, Outcome.FAILS,
                       detail=f"header says {header_size} bytes but only {stored} are stored "
                              "(file cut short?)")
    return None


def open_error(verdict: Verdict, name: str, problem: HeaderProblem | None = None,
               key_checked: bool = False) -> RealmfsError:
    """The exception an open raises for a failing header or size verdict. A header no
    slot of which authenticates is a wrong key unless the key was proven already."""
    if verdict.kind is Kind.NOT_ENCRYPTED:
        return NotEncrypted(f"{name} is {Kind.NOT_ENCRYPTED.value}; encrypt it first with 'realmfs encrypt'")
    if verdict.kind is Kind.NOT_RECOGNIZED:
        return Damaged(f"{name}: {Kind.NOT_RECOGNIZED.value}; not a file realmfs wrote?")
    if verdict.kind is Kind.SIZE:
        return Damaged(f"{name}: {verdict.detail}; see 'realmfs verify'")
    if problem is not None and problem.kind == "key" and not key_checked:
        return WrongKey(f"the key does not open {name}: wrong key?")
    return IntegrityError(name, None, verdict.detail)
