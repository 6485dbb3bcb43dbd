"""An internal error that reaches the application is logged, and strict mode catches it
(issue 10, item 2); errnos that answer what the application asked stay silent.

The internal error is real: the daemon of the first test runs with the read-ahead bug
of issue 10 item 1 put back (a ``sitecustomize`` on its PYTHONPATH), whose
``posix_fadvise`` with a negative length made reads fail with EINVAL and no log line.
"""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from tests.conftest import daemon_records, undeclared

from .conftest import slurp, spit

PAGE = 4096
# the old line of EncryptedFile._prefetch (before a8763b2): a negative length after a jump back
OLD_PREFETCH = '''
import os
from realmfs.storage import pagefile

def _prefetch(self, start):
    ahead = self._prefetched_to - start
    if pagefile.SEQUENTIAL_PREFETCH // 2 <= ahead <= pagefile.SEQUENTIAL_PREFETCH:
        return
    begin = self._prefetched_to if 0 < ahead else start
    self._prefetched_to = start + pagefile.SEQUENTIAL_PREFETCH
    os.posix_fadvise(self.fd, begin, self._prefetched_to - begin, os.POSIX_FADV_WILLNEED)

pagefile.EncryptedFile._prefetch = _prefetch
'''
DECLARED = r"read of /victim at offset \d+ returned EINVAL"


@pytest.mark.daemon_warnings(DECLARED)
def test_an_injected_internal_error_is_logged_once_and_caught_by_strict_mode(env, tmp_path, monkeypatch,
                                                                             strict_daemons):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(OLD_PREFETCH)
    monkeypatch.setenv("PYTHONPATH", f"{inject}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    start = os.path.getsize(strict_daemons)
    env.mount()
    data = os.urandom(1600 * PAGE)
    spit(env.m("victim"), data)
    fd = os.open(env.m("victim"), os.O_RDONLY | os.O_DIRECT)
    buffer = mmap.mmap(-1, PAGE)        # page-aligned, as O_DIRECT wants

    def read(page):
        assert os.preadv(fd, [buffer], page * PAGE) == PAGE
        assert buffer[:] == data[page * PAGE:(page + 1) * PAGE]

    try:
        for jump in range(6):           # the reported EINVAL (pages 8, 9, 2, 3), again and again
            ahead = 8 + 300 * jump      # far enough past the last advice to be advised afresh
            read(ahead)
            read(ahead + 1)
            read(ahead - 6)
            with pytest.raises(OSError) as failure:
                read(ahead - 5)
            assert failure.value.errno == errno.EINVAL
    finally:
        os.close(fd)
        buffer.close()
    env.unmount()
    lines = [line for line in slurp(env.log_file).decode().splitlines() if "returned EINVAL" in line]
    assert 1 <= len(lines) <= 5, lines             # rate-limited: not one per failed read
    assert "read of /victim at offset 12288" in lines[0] and "_prefetch" in lines[0], lines[0]
    records = daemon_records(strict_daemons, start)
    assert undeclared(records, []), "strict mode recorded nothing"      # would fail the test
    assert not undeclared(records, [DECLARED]), records


def test_errnos_that_answer_the_application_stay_silent(mnt):
    """ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, EISDIR: no log line (strict mode checks too)."""
    os.mkdir(mnt.m("d"))
    spit(mnt.m("d", "f"), b"x")
    cases = [
        (errno.ENOENT, lambda: os.open(mnt.m("missing"), os.O_RDONLY)),
        (errno.EEXIST, lambda: os.mkdir(mnt.m("d"))),
        (errno.EEXIST, lambda: os.open(mnt.m("d", "f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
        (errno.ENOTEMPTY, lambda: os.rmdir(mnt.m("d"))),
        (errno.ENOTDIR, lambda: os.listdir(mnt.m("d", "f"))),
        (errno.EISDIR, lambda: os.open(mnt.m("d"), os.O_WRONLY)),
        (errno.ENOENT, lambda: os.rename(mnt.m("missing"), mnt.m("other"))),
    ]
    for code, call in cases:
        with pytest.raises(OSError) as failure:
            call()
        assert failure.value.errno == code
    assert slurp(mnt.m("d", "f")) == b"x"
    mnt.unmount()
    logged = [line for line in slurp(mnt.log_file).decode().splitlines()
              if "ERROR" in line or "WARNING" in line]
    assert logged == []
