"""Re-encrypt one backing file into a new one: another layout (rename on the mount) or
another key (``realmfs rekey``).

* ``write_copy``: the plaintext of a backing file, copied in CHUNK-sized pieces through
  two file objects of the given kinds (EncryptedFile, or PlainFile for a plain-pattern
  file) into a new backing file, fsynced; returns the SHA-256 of the plaintext read.
* ``check_read_back``: reopen a written file and compare its plaintext's SHA-256.
* ``convert_for_rename``: the mount's rename between names of two kinds (realm, header,
  plain; see docs/mount.md): temp file in the target's directory, copy, fsync, owner,
  mode and times, rename over the target, fsync the directory, unlink the source.

Invariants
* The source is only ever read; a failure before the final rename removes the temporary
  and leaves source and target exactly as they were.
* The new name appears only once its file is whole and fsynced, and the source is removed
  only after the directory holding the new name was fsynced: a crash leaves the old state,
  or both names (never neither).
* Temporaries are named ``RENAME_TEMP_PREFIX...TOOL_TEMP_SUFFIX``: hidden and reserved on
  the mount, skipped by every offline tool, swept at the next mount.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets

from ..keys.config import RENAME_TEMP_PREFIX, TOOL_TEMP_SUFFIX
from ..durable import fsync_dir, keep_metadata
from ..errors import Damaged
from ..format.layout import PAGE_SIZE
from ..format.pagecipher import PageCipher
from .pagefile import EncryptedFile, open_backing
from .plainfile import open_path

CHUNK = 256 * PAGE_SIZE   # 1 MiB per read/write: whole pages, a few metadata blocks


def plain_digest(ef: EncryptedFile, progress=None) -> str:
    """SHA-256 of the whole plaintext of an open EncryptedFile (strict reads)."""
    digest = hashlib.sha256()
    for offset in range(0, ef.size, CHUNK):
        chunk = ef.read(offset, CHUNK)
        digest.update(chunk)
        if progress:
            progress.advance(len(chunk))
    return digest.hexdigest()


def write_copy(src_path: str, src_cipher: PageCipher, src_kind: str,
               dst_path: str, dst_cipher: PageCipher, dst_kind: str, progress=None) -> str:
    """Copy the plaintext of ``src_path`` (a file of ``src_kind``, config.KIND_*) into the
    new file ``dst_path`` of ``dst_kind`` and fsync it.

    The size follows the destination's layout: a header-layout or plain source of 5000
    bytes becomes a .realm file of 8192 (whole pages, zero tail); a .realm source keeps
    its whole-page size. Returns the SHA-256 of the plaintext read from the source.
    ``progress`` (optional) is told every chunk's plaintext bytes as they are written.
    """
    src = open_path(src_path, src_cipher, src_kind, read_only=True, key_checked=True)
    try:
        dst = open_path(dst_path, dst_cipher, dst_kind, create=True)
        try:
            digest = hashlib.sha256()
            for offset in range(0, src.size, CHUNK):
                chunk = src.read(offset, CHUNK)
                dst.write(offset, chunk)
                digest.update(chunk)
                if progress:
                    progress.advance(len(chunk))
            dst.fsync()
        finally:
            dst.close()
    finally:
        src.close()
    return digest.hexdigest()


def check_read_back(path: str, cipher: PageCipher, realm_layout: bool, expected: str, failure: str) -> None:
    """Decrypt ``path`` again and raise Damaged(``failure``) unless its SHA-256 is ``expected``."""
    check = open_backing(path, cipher, realm_layout=realm_layout, read_only=True, key_checked=True)
    try:
        if plain_digest(check) != expected:
            raise Damaged(failure)
    finally:
        check.close()


def rename_temp_name(directory: str) -> str:
    return os.path.join(directory, f"{RENAME_TEMP_PREFIX}{secrets.token_hex(8)}{TOOL_TEMP_SUFFIX}")


def is_rename_temp(name: str) -> bool:
    """A leftover of convert_for_rename (both markers: a user's file is never swept by one)."""
    return name.startswith(RENAME_TEMP_PREFIX) and name.endswith(TOOL_TEMP_SUFFIX)


def convert_for_rename(real_old: str, real_new: str, cipher: PageCipher, old_kind: str,
                       new_kind: str, st: os.stat_result) -> None:
    """Rename ``real_old`` to ``real_new`` re-encoding it from ``old_kind`` into ``new_kind``
    (config.KIND_*: encrypting, decrypting or changing the layout).

    ``st`` is the source's lstat; the caller guarantees nobody has the source open
    (the mount's open-file table) for the whole call.
    """
    _replace_converted(real_old, real_new, cipher, old_kind, new_kind, st)
    os.unlink(real_old)


def convert_in_place(path: str, cipher: PageCipher, old_kind: str, new_kind: str,
                     st: os.stat_result) -> None:
    """Re-encode ``path`` from ``old_kind`` into ``new_kind`` under the same name: old or
    new, never half (a temporary renamed over it); nobody may have it open."""
    _replace_converted(path, path, cipher, old_kind, new_kind, st)


def _replace_converted(real_old: str, real_new: str, cipher: PageCipher, old_kind: str,
                       new_kind: str, st: os.stat_result) -> None:
    """Write ``real_old`` re-encoded into a temporary beside ``real_new``, fsync it, give it
    ``st``'s owner, mode and times, rename it over ``real_new`` and fsync the directory:
    the new name is durable before the caller removes any other copy."""
    directory = os.path.dirname(real_new)
    temp = rename_temp_name(directory)
    try:
        write_copy(real_old, cipher, old_kind, temp, cipher, new_kind)
        keep_metadata(temp, st)
        os.rename(temp, real_new)                  # atomically replaces an existing target
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(directory)
