"""The one errno decision (RealmfsOps.__call__), exercised without a mount."""

from __future__ import annotations

import errno
import logging
import os
import stat

import pytest
from realmfs.fs.fusebinding import FuseOSError

from realmfs.errors import IntegrityError, NotEncrypted, WrongKey
from realmfs.fs.fuseops import RealmfsOps
from realmfs.keys.key import Key
from realmfs.format.pagecipher import PageCipher


@pytest.fixture
def ops(tmp_path):
    return RealmfsOps(str(tmp_path), PageCipher(Key.generate().raw), lambda name: name.endswith(".realm"),
                      {".realmfs.conf"})


def _raise(exc):
    def op(*_args):
        raise exc
    return op


@pytest.mark.parametrize("exc, expected", [
    (IntegrityError("/f.bin", 7, "tampered"), errno.EIO),
    (WrongKey("nope"), errno.EACCES),
    (NotEncrypted("plain"), errno.EIO),
    (OSError(errno.ENOSPC, "full"), errno.ENOSPC),
    (FileNotFoundError(errno.ENOENT, "gone"), errno.ENOENT),
    (ValueError("bug"), errno.EIO),
    (KeyError("bug"), errno.EIO),
])
def test_exceptions_become_errno(ops, exc, expected, caplog):
    ops.read = _raise(exc)
    with caplog.at_level(logging.ERROR, logger="realmfs.fs.fuseops"):
        with pytest.raises(FuseOSError) as info:
            ops("read", "/f.bin", 10, 0, None)
    assert info.value.errno == expected
    if isinstance(exc, IntegrityError):
        assert [r.getMessage() for r in caplog.records] == [
            "integrity failure: page 7 of /f.bin: tampered (returned EIO to read)"]
    if isinstance(exc, (ValueError, KeyError)):
        assert caplog.records and caplog.records[0].exc_info      # traceback in the log


def test_unknown_operation_is_enosys_not_einval(ops):
    with pytest.raises(FuseOSError) as info:
        ops("no_such_op", "/")
    assert info.value.errno == errno.ENOSYS


def test_reserved_names_are_invisible(ops, tmp_path):
    (tmp_path / ".realmfs.conf").write_text("{}")
    with pytest.raises(FuseOSError) as info:
        ops("getattr", "/.realmfs.conf", None)
    assert info.value.errno == errno.ENOENT
    number = ops("opendir", "/")
    names = [entry if isinstance(entry, str) else entry[0] for entry in ops("readdir", None, number)]
    assert ".realmfs.conf" not in names and "." in names
    os.mkdir(tmp_path / "d")
    assert stat.S_ISDIR(ops("getattr", "/d", None)["st_mode"])


def test_mfusepy_callbacks_go_through_the_errno_decision(ops):
    """mfusepy calls methods by name, not ``__call__``: the binding's adapter must still route
    every callback through RealmfsOps.__call__ (else a bug would reach the application as
    mfusepy's EINVAL and never be logged)."""
    from realmfs.fs.fusebinding import _Dispatched
    ops.read = _raise(ValueError("bug"))
    seen = _Dispatched(ops)
    with pytest.raises(FuseOSError) as info:
        seen.read("/f.bin", 10, 0, None)
    assert info.value.errno == errno.EIO
    assert seen.use_ns is True and seen.ioctl is None      # attributes pass as they are
