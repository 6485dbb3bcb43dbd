"""Every error realmfs reports, with its errno and its command-line exit code.

This module is the one table of both: the FUSE layer asks an exception for
``errno`` and the CLI asks it for ``exit_code``; nobody else decides either.
Messages are one line and, where the user can act, say what to do next.
"""

from __future__ import annotations

import errno as _errno


class ExitCode:
    """Named exit codes of the ``realmfs`` command; tests assert these."""

    OK = 0
    ERROR = 1            # anything not listed below
    USAGE = 2            # bad command line (argparse uses 2 as well)
    WRONG_KEY = 3
    NOT_ENCRYPTED = 4    # a plain, unencrypted Realm file where ciphertext was expected
    DAMAGED = 5          # integrity failure or a file the format cannot describe
    LOCKED = 6           # backing directory already mounted / in use
    BAD_PATH = 7         # missing path, not a directory, mountpoint not empty
    BUSY = 8             # unmount refused: files are still open
    MOUNT_FAILED = 9     # FUSE itself failed (no /dev/fuse, no libfuse, ...)
    EXISTS = 10          # refusing to overwrite an existing file or directory
    BAD_KEY = 11         # key material in the wrong form (length, hex, empty)
    ALREADY_ENCRYPTED = 12   # encrypt: the source is already ciphertext / a backing directory
    REKEY_IN_PROGRESS = 13   # a rekey was interrupted: re-run 'realmfs rekey' to finish it
    WRONG_PASSPHRASE = 14    # no key slot opens with this passphrase / recovery key
    NOT_RECOGNIZED = 15      # neither a plain file realmfs wrote nor a Realm/realmfs ciphertext
    KEYRING = 16             # the secret store is unavailable or has no such key
    INTERRUPTED = 130        # Ctrl-C (SIGINT), as shells report it: 128 + 2


# What each exit code means, for `realmfs --help` (README.md has the same table; a test compares).
EXIT_CODE_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "other error",
    ExitCode.USAGE: "bad command line",
    ExitCode.WRONG_KEY: "wrong key",
    ExitCode.NOT_ENCRYPTED: "an unencrypted Realm file where ciphertext was expected",
    ExitCode.DAMAGED: "damaged or tampered data",
    ExitCode.LOCKED: "backing directory already mounted or in use",
    ExitCode.BAD_PATH: "missing path, not a directory, or mountpoint not empty",
    ExitCode.BUSY: "unmount refused: files still open",
    ExitCode.MOUNT_FAILED: "FUSE could not mount",
    ExitCode.EXISTS: "destination exists",
    ExitCode.BAD_KEY: "key material in the wrong form",
    ExitCode.ALREADY_ENCRYPTED: "encrypt: the source is already encrypted",
    ExitCode.REKEY_IN_PROGRESS: "a rekey was interrupted: run it again",
    ExitCode.WRONG_PASSPHRASE: "wrong passphrase or recovery key",
    ExitCode.NOT_RECOGNIZED: "not an encrypted file",
    ExitCode.KEYRING: "the secret store is unusable or has no such key",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


class RealmfsError(Exception):
    """Base class: a one-line message, an errno for FUSE, an exit code for the CLI."""

    errno: int = _errno.EIO
    exit_code: int = ExitCode.ERROR


class KeyFormatError(RealmfsError, ValueError):
    """Key material that is not 64 bytes / 128 hex digits."""

    errno = _errno.EINVAL
    exit_code = ExitCode.BAD_KEY


class WrongKey(RealmfsError):
    """The key does not authenticate the config, a header or any written page."""

    errno = _errno.EACCES
    exit_code = ExitCode.WRONG_KEY


class NotEncrypted(RealmfsError):
    """A plain Realm file (``T-DB`` in clear) found where ciphertext was expected."""

    errno = _errno.EIO
    exit_code = ExitCode.NOT_ENCRYPTED


class Damaged(RealmfsError):
    """A backing file whose shape is impossible for the format (e.g. a partial page)."""

    errno = _errno.EIO
    exit_code = ExitCode.DAMAGED


class IntegrityError(Damaged):
    """A page or header that fails authentication in every slot: never returned as data."""

    def __init__(self, file: str, page: int | None, reason: str):
        self.file = file
        self.page = page
        self.reason = reason
        where = f"page {page} of {file}" if page is not None else f"header of {file}"
        super().__init__(f"{where}: {reason}")


class BackingLocked(RealmfsError):
    """The backing directory is already mounted by a live realmfs process."""

    errno = _errno.EBUSY
    exit_code = ExitCode.LOCKED


class BadPath(RealmfsError):
    """A path that is missing, of the wrong kind, or not empty where it must be."""

    errno = _errno.ENOENT
    exit_code = ExitCode.BAD_PATH


class Busy(RealmfsError):
    """An unmount refused because processes still hold files open."""

    errno = _errno.EBUSY
    exit_code = ExitCode.BUSY


class MountFailed(RealmfsError):
    """FUSE could not mount (no /dev/fuse, no libfuse, daemon died early)."""

    exit_code = ExitCode.MOUNT_FAILED


class AlreadyExists(RealmfsError):
    """A destination that exists and would be overwritten."""

    errno = _errno.EEXIST
    exit_code = ExitCode.EXISTS


class ReadOnly(RealmfsError):
    """A write to a file or mount opened read-only."""

    errno = _errno.EROFS


class AlreadyEncrypted(RealmfsError):
    """``realmfs encrypt`` given ciphertext (a backing directory or an encrypted file)."""

    errno = _errno.EINVAL
    exit_code = ExitCode.ALREADY_ENCRYPTED


class RekeyInProgress(RealmfsError):
    """The backing directory is half-way through a rekey: only 'realmfs rekey' may touch it."""

    errno = _errno.EBUSY
    exit_code = ExitCode.REKEY_IN_PROGRESS


class WrongPassphrase(WrongKey):
    """No key slot of the config opens with the given passphrase or recovery key."""

    exit_code = ExitCode.WRONG_PASSPHRASE


class NotRecognized(Damaged):
    """A file that is neither a realmfs/Realm ciphertext nor a plain Realm file (garbage)."""

    exit_code = ExitCode.NOT_RECOGNIZED


class Interrupted(RealmfsError):
    """Ctrl-C, with what the interrupted command leaves behind and how to go on."""

    errno = _errno.EINTR
    exit_code = ExitCode.INTERRUPTED


class KeyringError(RealmfsError):
    """The platform secret store is not usable, or holds no key of that name."""

    errno = _errno.ENOKEY
    exit_code = ExitCode.KEYRING
