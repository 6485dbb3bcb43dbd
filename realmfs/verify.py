"""Offline check of every page of every backing file, and the explicit repair.

``scan_file`` reads a backing file raw (never through a mount) and classifies
its header, its size and every data page with ``PageCipher.classify`` -- the same
decision EncryptedFile makes -- into ``Problem``s of four severities:

* DAMAGE       data that cannot be read: authentication failure, interrupted first
               write with data, page cut off, header or file unusable
* RECOVERABLE  a torn write (slot 2 still verifies) or one bad header slot
* WARNING      states Realm Core itself reads as zeros in a ``.realm`` file (stale
               entry over a zero page; interrupted first write over a zero page)
* INFO         never-written pages (they read as zeros)

``verify_path`` checks a backing directory (against its config's key check) or a
single file, and tells a wrong key from damage: without a config the key is wrong
when not one written page or header in any file authenticates.

Repairs live in repair.py.

Invariants: nothing here writes; every page of every file is classified exactly once,
with the decision PageCipher.classify makes for EncryptedFile.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass, field

from . import config as configmod
from . import fileheader
from .backinglock import is_locked
from .errors import BadPath, RekeyInProgress, WrongKey
from .fileheader import MAGIC, SLOT_OFFSETS, SLOT_SIZE, HeaderProblem
from .keys import Key
from .layout import (
    COUNTER_MAX,
    ENTRY_SIZE,
    HEADER_SIZE,
    PAGE_SIZE,
    ZERO_PAGE,
    block_of,
    body_size_is_valid,
    body_to_data_size,
    contiguous_page_groups,
    entry_start,
    layout_base,
    meta_offset,
    page_offset,
    pages_for,
)
from .pagecipher import EMPTY_ENTRY, Entry, PageCipher, ReadResult
from .pagefile import looks_like_plain_realm
from .progress import disabled

log = logging.getLogger(__name__)

# Counters in a file Realm Core or realmfs wrote are small; random or text bytes taken
# as IV entries almost never are (ASCII text never: its u32s are >= 0x20202020).
PLAUSIBLE_COUNTER = 1 << 20
PLAIN_NAME = "a plain-pattern name: Realm Core's auxiliary file, kept unencrypted"


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    RECOVERABLE = 2
    DAMAGE = 3


class Kind(enum.Enum):
    TORN = "torn write, previous version recoverable from the old slot"
    AUTH_FAILED = "authentication failed (corrupted or tampered)"
    INTERRUPTED = ("interrupted first write: data does not authenticate and there is no old slot "
                   "(corrupted, tampered, or a first write cut short)")
    STALE_ZERO = "all-zero page under a stale IV entry (reads as zeros)"
    ZERO_INTERRUPTED = "zero page under an unfinished first write (reads as zeros)"
    NEVER_WRITTEN = "never written (reads as zeros)"
    ERASED_COUNTER = "counter is 0 (never written) but the entry holds a MAC: counter erased?"
    ODD_OLD_SLOT = "old slot inconsistent (a MAC without a counter, or the current counter reused)"
    TRUNCATED = "page missing or cut short (file truncated)"
    HEADER = "header does not authenticate"
    HEADER_SLOT = "one header slot damaged, the other is good"
    SIZE = "unexpected file size"
    NOT_ENCRYPTED = "an unencrypted Realm file"
    NOT_RECOGNIZED = "not an encrypted file (no realmfs header, no Realm IV table)"


@dataclass(frozen=True)
class Problem:
    file: str
    page: int | None          # None: the file as a whole or its header
    kind: Kind
    severity: Severity
    detail: str = ""

    def __str__(self) -> str:
        where = f"page {self.page}" if self.page is not None else "file"
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.file}: {where}: {self.severity.name.lower()}: {self.kind.value}{extra}"


@dataclass
class FileReport:
    path: str                 # backing path
    name: str                 # as shown to the user (relative to the backing directory)
    realm_layout: bool
    physical: int = 0
    size: int = 0             # logical size (header's, or derived from the physical size)
    pages: int = 0
    written: int = 0          # pages whose entry says written
    authenticated: int = 0    # pages (and the header) that verify under the key
    problems: list = field(default_factory=list)
    header: fileheader.Header | None = None

    def add(self, page, kind: Kind, severity: Severity, detail: str = "") -> None:
        self.problems.append(Problem(self.name, page, kind, severity, detail))

    @property
    def worst(self) -> Severity | None:
        return max((p.severity for p in self.problems), default=None)

    @property
    def damaged(self) -> bool:
        return any(p.severity >= Severity.RECOVERABLE for p in self.problems)

    @property
    def key_evidence(self) -> bool:
        """True if the file says anything about the key (it has written pages or a header)."""
        return (self.written > 0 or self.header is not None or self._header_failed) and not self.unrecognized

    @property
    def _header_failed(self) -> bool:
        return any(p.kind is Kind.HEADER for p in self.problems)

    @property
    def unrecognized(self) -> bool:
        return any(p.kind in (Kind.NOT_RECOGNIZED, Kind.NOT_ENCRYPTED) for p in self.problems)

    @property
    def key_fails(self) -> bool:
        """Nothing in this file authenticates although something was written."""
        return self.key_evidence and self.authenticated == 0


@dataclass
class VerifyReport:
    target: str
    files: list
    key_checked: bool

    @property
    def problems(self) -> list:
        return [p for f in self.files for p in f.problems]

    @property
    def damaged(self) -> bool:
        return any(f.damaged for f in self.files)


# ---------------------------------------------------------------------- detection
def has_realmfs_header(first: bytes) -> bool:
    return any(first[o:o + len(MAGIC)] == MAGIC for o in SLOT_OFFSETS)


def _iv_table_entries(path: str) -> list | None:
    """The entries of the file's first page if it could be Realm Core's IV table (some entry
    with a plausible counter, see PLAUSIBLE_COUNTER, and no plain Realm header), else None."""
    with open(path, "rb") as f:
        meta = f.read(PAGE_SIZE)
    if len(meta) < ENTRY_SIZE or looks_like_plain_realm(meta):
        return None
    whole = len(meta) - len(meta) % ENTRY_SIZE
    entries = [Entry.unpack(meta[i:i + ENTRY_SIZE]) for i in range(0, whole, ENTRY_SIZE)]
    return entries if any(0 < e.iv1 < PLAUSIBLE_COUNTER for e in entries) else None


def has_realm_iv_table(path: str) -> bool:
    return _iv_table_entries(path) is not None


def looks_like_realm_ciphertext(path: str) -> bool:
    """Realm Core's encrypted shape, strictly (encrypt refuses such a source): whole pages,
    a valid body size, and a first IV table in which most written entries have plausible
    counters and every empty slot 2 is all zero. Random bytes pass with negligible odds."""
    size = os.path.getsize(path)
    if size < 2 * PAGE_SIZE or not body_size_is_valid(size):
        return False
    entries = _iv_table_entries(path)
    if entries is None:
        return False
    written = [e for e in entries if e.iv1]
    plausible = [e for e in written if _plausible(e.iv1) and _plausible(e.iv2)]
    slot2_consistent = all(e.iv2 or not any(e.mac2) for e in entries)
    unwritten_empty = all(e.iv1 or e == EMPTY_ENTRY or e.iv2 for e in entries)
    # at least half: one odd counter in two (a tampered IV, Realm Core's iv_malleable)
    # still counts; random bytes would need 32 of 64 entries with both counters plausible
    return bool(written) and slot2_consistent and unwritten_empty and 2 * len(plausible) >= len(written)


def _plausible(counter: int) -> bool:
    """Small, or just below 2**32: Realm Core's counters wrap from 0xFFFFFFFF to 1."""
    return counter < PLAUSIBLE_COUNTER or counter > COUNTER_MAX - PLAUSIBLE_COUNTER


def unrecognized_files(backing: str, config: configmod.Config) -> list[str]:
    """Encrypted-kind files under ``backing`` that are not empty and carry neither a realmfs
    header nor Realm Core's IV table (nor a plain Realm header, which NotEncrypted reports):
    files nobody encrypted, which a mount could only answer with EIO."""
    found = []
    for path in configmod.backing_files(backing, config):
        with open(path, "rb") as f:
            first = f.read(HEADER_SIZE)
        if not first or has_realmfs_header(first) or looks_like_plain_realm(first):
            continue
        if config.kind_of(os.path.relpath(path, backing)) == configmod.KIND_REALM and not any(first):
            continue    # Realm layout with no page written yet: reads as zeros, holds nothing
        if not has_realm_iv_table(path):
            found.append(path)
    return found


def detect_realm_layout(path: str) -> bool:
    """Layout of a lone file: realmfs header in front, or Realm Core's bare layout."""
    with open(path, "rb") as f:
        first = f.read(HEADER_SIZE)
    return not has_realmfs_header(first)


# ---------------------------------------------------------------------- scanning
def _single_slot_header(page: bytes, mac) -> fileheader.Header | None:
    """The header from whichever single slot authenticates."""
    for offset in SLOT_OFFSETS:
        slot = page[offset:offset + SLOT_SIZE]
        if not slot.startswith(MAGIC):
            continue
        try:
            header = fileheader.unpack_slot(slot, mac)
        except HeaderProblem:
            continue
        if header is not None:
            return header
    return None


def _scan_header(fd: int, report: FileReport, cipher: PageCipher) -> bool:
    """Read the header of a header-layout file; False if the pages cannot be checked."""
    page = os.pread(fd, HEADER_SIZE, 0)
    try:
        if not has_realmfs_header(page):    # also when shorter than a header: nobody encrypted it
            raise HeaderProblem("foreign", "no realmfs header")
        report.header = fileheader.unpack_page(page, cipher.mac_message)
    except HeaderProblem as problem:
        if problem.kind == "foreign":
            if looks_like_plain_realm(page):
                report.add(None, Kind.NOT_ENCRYPTED, Severity.DAMAGE, "encrypt it with 'realmfs encrypt'")
            else:
                report.add(None, Kind.NOT_RECOGNIZED, Severity.DAMAGE)
            return False
        if problem.kind == "key":
            report.add(None, Kind.HEADER, Severity.DAMAGE, str(problem))
            return False
        report.header = _single_slot_header(page, cipher.mac_message)
        if report.header is None:
            report.add(None, Kind.HEADER, Severity.DAMAGE, str(problem))
            return False
        report.add(None, Kind.HEADER_SLOT, Severity.RECOVERABLE, str(problem))
    report.authenticated += 1
    report.size = report.header.size
    report.pages = pages_for(report.size)
    body = report.physical - HEADER_SIZE
    if body % PAGE_SIZE:
        report.add(None, Kind.SIZE, Severity.DAMAGE, f"backing size {report.physical} is not whole pages")
    elif body_to_data_size(body) < report.pages * PAGE_SIZE:
        report.add(None, Kind.SIZE, Severity.DAMAGE,
                   f"header says {report.size} bytes, only {max(0, body_to_data_size(body))} stored")
    return True


def _classify_page(report: FileReport, page: int, entry: Entry, result: ReadResult, ciphertext) -> None:
    realm = report.realm_layout
    if len(ciphertext) < PAGE_SIZE:
        # missing whatever the entry says: a metadata page that is cut off reads as zeros
        result = ReadResult.EOF
    if result is ReadResult.UNINITIALIZED:
        if any(entry.mac1):
            # nothing writes a MAC with counter 0: a damaged entry would read as zeros silently
            report.add(page, Kind.ERASED_COUNTER, Severity.DAMAGE)
        else:
            report.add(page, Kind.NEVER_WRITTEN, Severity.INFO)
        return
    if (entry.iv2 == 0 and any(entry.mac2)) or entry.iv1 == entry.iv2:
        report.add(page, Kind.ODD_OLD_SLOT, Severity.WARNING)
    report.written += 1
    if result is ReadResult.SUCCESS:
        report.authenticated += 1
    elif result is ReadResult.FALLBACK:
        report.authenticated += 1
        report.add(page, Kind.TORN, Severity.RECOVERABLE)
    elif result is ReadResult.EOF:
        report.add(page, Kind.TRUNCATED, Severity.DAMAGE, f"{len(ciphertext)} of {PAGE_SIZE} bytes present")
    elif result is ReadResult.INTERRUPTED_FIRST_WRITE:
        if realm and ciphertext == ZERO_PAGE:
            report.add(page, Kind.ZERO_INTERRUPTED, Severity.WARNING)
        else:
            report.add(page, Kind.INTERRUPTED, Severity.DAMAGE)
    elif result is ReadResult.STALE_ZERO:
        report.add(page, Kind.STALE_ZERO, Severity.WARNING if realm else Severity.DAMAGE)
    else:
        report.add(page, Kind.AUTH_FAILED, Severity.DAMAGE)


def scan_file(path: str, cipher: PageCipher, *, realm_layout: bool, name: str | None = None,
              progress=None) -> FileReport:
    """Classify the header, the size and every page of one backing file; never writes."""
    progress = progress or disabled()
    report = FileReport(path, name or path, realm_layout)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        report.physical = os.fstat(fd).st_size
        if report.physical == 0:
            return report
        base = layout_base(realm_layout)
        if realm_layout:
            if looks_like_plain_realm(os.pread(fd, 24, 0)):
                report.add(None, Kind.NOT_ENCRYPTED, Severity.DAMAGE, "encrypt it with 'realmfs encrypt'")
                return report
            report.size = body_to_data_size(report.physical)
            report.pages = pages_for(report.size)
            if report.physical % PAGE_SIZE:
                report.add(None, Kind.SIZE, Severity.DAMAGE,
                           f"backing size {report.physical} is not whole pages (file cut short?)")
            elif not body_size_is_valid(report.physical):
                report.add(None, Kind.SIZE, Severity.WARNING,
                           f"backing size {report.physical} is not a shape Realm Core writes")
        elif not _scan_header(fd, report, cipher):
            return report
        binding_id = None if realm_layout else report.header.file_id
        for first, last in (contiguous_page_groups(0, report.pages - 1) if report.pages else ()):
            meta = os.pread(fd, PAGE_SIZE, meta_offset(block_of(first), base)).ljust(PAGE_SIZE, b"\0")
            count = last - first + 1
            data = memoryview(os.pread(fd, count * PAGE_SIZE, page_offset(first, base)))
            for index in range(count):
                page = first + index
                start = entry_start(page)
                entry = Entry.unpack(meta[start:start + ENTRY_SIZE])
                ciphertext = data[index * PAGE_SIZE:(index + 1) * PAGE_SIZE]
                result, _ = cipher.classify(entry, ciphertext, page, binding_id)
                _classify_page(report, page, entry, result, ciphertext)
            progress.advance(count * PAGE_SIZE)
    finally:
        os.close(fd)
    if realm_layout and report.key_fails and not has_realm_iv_table(path):
        report.problems = []
        report.add(None, Kind.NOT_RECOGNIZED, Severity.DAMAGE)
    return report


# ---------------------------------------------------------------------- whole targets
def _targets(path: str, key: Key, realm_pattern: str | None, realm_layout: bool | None):
    """(backing path, display name, realm layout) of every file to check, and whether
    the key was proven by a config."""
    if not os.path.exists(path):
        raise BadPath(f"{path} does not exist")
    if os.path.isdir(path):
        config = configmod.load(path)
        if config is not None:
            if config.rekey is not None:
                raise RekeyInProgress(f"a rekey of {path} was interrupted; finish it with 'realmfs rekey {path}'")
            configmod.unlock(config, key)
        else:
            config = configmod.Config(realm_pattern=realm_pattern or configmod.DEFAULT_REALM_PATTERN)
        files = [(f, os.path.relpath(f, path),
                  config.is_realm_file(f) if realm_layout is None else realm_layout)
                 for f in configmod.backing_files(path)]
        return files, bool(config.key_check)
    if not os.path.isfile(path):
        raise BadPath(f"{path} is not a regular file or directory")
    names = configmod.Config(realm_pattern=realm_pattern or configmod.DEFAULT_REALM_PATTERN)
    if realm_layout is None and names.kind_of(os.path.basename(path)) == configmod.KIND_PLAIN:
        with open(path, "rb") as f:
            if not has_realmfs_header(f.read(HEADER_SIZE)):
                return [(path, path, None)], False      # None: a plain file, see verify_path
    layout = detect_realm_layout(path) if realm_layout is None else realm_layout
    return [(path, path, layout)], False


def verify_path(path: str, key: Key, *, realm_pattern: str | None = None,
                realm_layout: bool | None = None, progress=None) -> VerifyReport:
    """Check every file under ``path`` (a backing directory or one file).

    Raises WrongKey when the config's key check fails or, without a config, when no
    written page or header in any file authenticates under ``key``.
    """
    progress = progress or disabled()
    files, key_checked = _targets(path, key, realm_pattern, realm_layout)
    if os.path.isdir(path) and is_locked(path):
        log.warning("%s is mounted: pages being written now may show as torn or failed; unmount "
                    "it for an exact result", path)
    cipher = PageCipher(key.raw)
    progress.files = len(files)
    progress.total = sum(os.path.getsize(f) for f, _, _ in files)
    reports = []
    for backing, name, layout in files:
        progress.file(name)
        if layout is None:
            report = FileReport(backing, name, False, physical=os.path.getsize(backing))
            report.add(None, Kind.NOT_RECOGNIZED, Severity.DAMAGE, PLAIN_NAME)
            reports.append(report)
            continue
        reports.append(scan_file(backing, cipher, realm_layout=layout, name=name, progress=progress))
    if not key_checked:
        evidence = [r for r in reports if r.key_evidence]
        if evidence and all(r.key_fails for r in evidence):
            raise WrongKey(f"wrong key for {path}: not one written page or header authenticates "
                           f"in {len(evidence)} file(s)")
    return VerifyReport(path, reports, key_checked)


def _page_ranges(pages: list) -> str:
    """'3-7, 9' for [3, 4, 5, 6, 7, 9]."""
    spans, start, prev = [], None, None
    for page in sorted(pages):
        if start is None:
            start = prev = page
        elif page == prev + 1:
            prev = page
        else:
            spans.append((start, prev))
            start = prev = page
    if start is not None:
        spans.append((start, prev))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def format_problems(problems: list) -> list[str]:
    """One line per problem, runs of consecutive pages with the same finding in one line."""
    lines, run = [], []

    def flush():
        if not run:
            return
        first = run[0]
        if len(run) == 1:
            lines.append(str(first))
        else:
            extra = f" ({first.detail})" if first.detail else ""
            lines.append(f"{first.file}: pages {run[0].page}-{run[-1].page}: {first.severity.name.lower()}: "
                         f"{first.kind.value}{extra}")
        run.clear()

    for problem in problems:
        if run and not (problem.page is not None and run[-1].page is not None
                        and problem.page == run[-1].page + 1 and problem.file == run[-1].file
                        and (problem.kind, problem.severity, problem.detail)
                        == (run[-1].kind, run[-1].severity, run[-1].detail)):
            flush()
        run.append(problem)
    flush()
    return lines


def format_report(report: VerifyReport, verbose: bool = False) -> list[str]:
    """Human-readable lines: a summary per file, then every problem (INFO pages in ranges)."""
    lines = []
    for f in report.files:
        state = "ok" if f.worst is None or f.worst <= Severity.INFO else f.worst.name.lower()
        layout = "realm" if f.realm_layout else "header"
        never = [p.page for p in f.problems if p.kind is Kind.NEVER_WRITTEN]
        note = f", {len(never)} never written" if never else ""
        lines.append(f"{f.name}: {state} ({layout} layout, {f.size} bytes, {f.pages} pages, "
                     f"{f.authenticated} authenticated{note})")
        lines += [f"  {line}" for line in format_problems([p for p in f.problems if p.severity > Severity.INFO])]
        if never and verbose:
            lines.append(f"  never written: pages {_page_ranges(never)}")
    bad = [f for f in report.files if f.damaged]
    warned = [f for f in report.files if f.worst == Severity.WARNING]
    lines.append(f"{len(report.files)} file(s) checked, {len(bad)} damaged, {len(warned)} with warnings")
    return lines
