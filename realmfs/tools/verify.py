"""Offline check of every page of every backing file, and the explicit repair.

``scan_file`` reads a backing file raw (never through a mount) and judges its header,
its size and every data page with the damage rulebook (damage.py) -- the verdicts the
read path of EncryptedFile acts on -- into ``Problem``s of four severities:

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

Invariants: nothing here writes; every page of every file is judged exactly once, by
PageCipher.classify and damage.judge_page as a read through EncryptedFile judges it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..keys import config as configmod
from ..storage import backingscan
from ..format import fileheader
from ..storage.backinglock import is_locked
from ..format.damage import NOT_ENCRYPTED, Kind, Outcome, Severity, judge_header, judge_page, judge_size, odd_old_slot
from ..format.detect import PLAIN_REALM_PROBE, detect_realm_layout, first_page, has_realm_iv_table, has_realmfs_header, \
    looks_like_plain_realm
from ..errors import BadPath, RekeyInProgress, WrongKey
from ..format.fileheader import HeaderProblem
from ..keys.key import Key
from ..format.layout import (
    ENTRY_SIZE,
    HEADER_SIZE,
    PAGE_SIZE,
    block_of,
    body_to_data_size,
    contiguous_page_groups,
    entry_start,
    layout_base,
    meta_offset,
    page_offset,
    pages_for,
)
from ..format.pagecipher import Entry, PageCipher
from .progress import disabled

log = logging.getLogger(__name__)

PLAIN_NAME = "a plain-pattern name: Realm Core's auxiliary file, kept unencrypted"


@dataclass(frozen=True)
class Problem:
    file: str
    page: int | None          # None: the file as a whole or its header
    kind: Kind
    severity: Severity
    detail: str = ""
    outcome: Outcome | None = None      # what a read gets, for a page (damage.Verdict)

    @property
    def finding(self) -> str:
        zeros = " (reads as zeros)" if self.outcome is Outcome.ZEROS else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.severity.name.lower()}: {self.kind.value}{zeros}{extra}"

    def __str__(self) -> str:
        where = f"page {self.page}" if self.page is not None else "file"
        return f"{self.file}: {where}: {self.finding}"


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

    def add(self, page, kind: Kind, severity: Severity, detail: str = "", outcome: Outcome | None = None) -> None:
        self.problems.append(Problem(self.name, page, kind, severity, detail, outcome))

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


# ---------------------------------------------------------------------- scanning
def _scan_header(fd: int, report: FileReport, cipher: PageCipher) -> bool:
    """Read the header of a header-layout file; False if the pages cannot be checked."""
    page = os.pread(fd, HEADER_SIZE, 0)
    try:
        report.header = fileheader.unpack_page(page, cipher.mac_message)
    except HeaderProblem as problem:
        single = fileheader.unpack_any_slot(page, cipher.mac_message) if problem.kind == "damaged" else None
        verdict = judge_header(page, problem, single is not None)
        report.add(None, verdict.kind, verdict.severity, verdict.detail)
        if single is None:
            return False
        report.header = single
    report.authenticated += 1
    report.size = report.header.size
    report.pages = pages_for(report.size)
    _judge_size(report)
    return True


def _judge_size(report: FileReport) -> None:
    verdict = judge_size(report.physical, report.realm_layout, report.size)
    if verdict is not None:
        report.add(None, verdict.kind, verdict.severity, verdict.detail)


def _judge_page(report: FileReport, page: int, entry: Entry, result, ciphertext) -> None:
    verdict = judge_page(result, entry, ciphertext, report.realm_layout)
    if verdict.kind in (Kind.NEVER_WRITTEN, Kind.ERASED_COUNTER):
        report.add(page, verdict.kind, verdict.severity, outcome=verdict.outcome)
        return
    if odd_old_slot(entry):
        report.add(page, Kind.ODD_OLD_SLOT, Severity.WARNING)
    report.written += 1
    if verdict.outcome in (Outcome.DATA, Outcome.PREVIOUS):
        report.authenticated += 1
    if verdict.kind is not None:
        report.add(page, verdict.kind, verdict.severity, verdict.detail, verdict.outcome)


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
            if looks_like_plain_realm(os.pread(fd, PLAIN_REALM_PROBE, 0)):
                report.add(None, NOT_ENCRYPTED.kind, NOT_ENCRYPTED.severity, NOT_ENCRYPTED.detail)
                return report
            report.size = body_to_data_size(report.physical)
            report.pages = pages_for(report.size)
            _judge_size(report)
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
                _judge_page(report, page, entry, result, ciphertext)
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
                 for f in backingscan.backing_files(path)]
        return files, bool(config.key_check)
    if not os.path.isfile(path):
        raise BadPath(f"{path} is not a regular file or directory")
    names = configmod.Config(realm_pattern=realm_pattern or configmod.DEFAULT_REALM_PATTERN)
    if realm_layout is None and names.kind_of(os.path.basename(path)) == configmod.KIND_PLAIN:
        if not has_realmfs_header(first_page(path)):
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
            lines.append(f"{first.file}: pages {run[0].page}-{run[-1].page}: {first.finding}")
        run.clear()

    for problem in problems:
        if run and not (problem.page is not None and run[-1].page is not None
                        and problem.page == run[-1].page + 1 and problem.file == run[-1].file
                        and problem.finding == run[-1].finding):
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
