"""Realm app directories laid out byte for byte as Realm Core leaves them, for the mount tests.

Realm Core (realm-core v14, src/realm/db.cpp) keeps beside a database ``X.realm``:

* ``X.realm``             the database, in Realm Core's encrypted page layout when a key is set;
* ``X.realm.lock``        the shared-info file (``DB::SharedInfo``, 1,728 bytes on Linux x86-64),
                          mmapped by every process and locked with flock; never encrypted;
* ``X.realm.management/`` the coordination directory: empty on Linux, FIFOs and files of the
                          lock/mutex emulation (``lock.fifo``, ``access_control.*.mx``/``.cv``)
                          on Apple platforms and Android;
* ``X.realm.note``        the object store's notification FIFO (only when the object store
                          opened the file, not for a bare ``DB::create``).

``shared_info`` packs a lock file from the ``SharedInfo`` layout (offsets in realm-core's
comments; glibc's pthread types); a test proves it against the shared vector directory
made by Realm Core itself.
"""

from __future__ import annotations

import os
import shutil
import struct

from realmfs.storage.pagefile import open_backing
from tests.vectors import vector_path

APP_VECTOR_DIR = "realm_app_dir"
KEY_A = bytes(range(64))             # the key the vector directory was written with

SHARED_INFO_SIZE = 1728              # sizeof(DB::SharedInfo): 432 bytes + VersionList
SHARED_INFO_VERSION = 14             # g_shared_info_version
FILE_FORMAT_VERSION = 24
MUTEX_SIZE, CONDVAR_SIZE = 40, 48    # sizeof(pthread_mutex_t), sizeof(pthread_cond_t)
MUTEXES_AT = 48                      # shared_writemutex, shared_controlmutex, shared_versionlist_mutex
MUTEX_KIND_AT = 16                   # pthread_mutex_t.__kind: PTHREAD_MUTEX_ROBUST | PSHARED = 0x90
MUTEX_COUNT_AT = 4                   # pthread_mutex_t.__count: 1 as glibc leaves the two that
USED_MUTEXES = (1, 2)                # a commit used: controlmutex, versionlist mutex
CONDVARS_AT = MUTEXES_AT + 3 * MUTEX_SIZE
CONDVAR_WREFS_AT = 36                # pthread_cond_t.__wrefs: bit 0 = process-shared
INITIALISED_CONDVARS = (3, 4)        # new_commit_available, pick_next_writer (init_shared_part)
VERSION_LIST_AT = 432                # entries u32, allocating u32, newest u32, pad, ReadCount[32]
READERS = 32
READ_COUNT = struct.Struct("<QQQIII4x")   # version, filesize, current_top, live, frozen, full


def shared_info(latest_version: int, initiator_pid: int, file_size: int, top_ref: int) -> bytes:
    """The bytes of ``X.realm.lock`` after one process committed ``latest_version`` and closed."""
    info = bytearray(SHARED_INFO_SIZE)
    struct.pack_into("<BBBBBbHHHIQQQ", info, 0, 1, MUTEX_SIZE, CONDVAR_SIZE, 0, FILE_FORMAT_VERSION, 0,
                     SHARED_INFO_VERSION, 0, 0, 0, latest_version, initiator_pid, 1)
    for i in range(3):
        info[MUTEXES_AT + i * MUTEX_SIZE + MUTEX_KIND_AT] = 0x90
        info[MUTEXES_AT + i * MUTEX_SIZE + MUTEX_COUNT_AT] = 1 if i in USED_MUTEXES else 0
    for i in INITIALISED_CONDVARS:
        info[CONDVARS_AT + i * CONDVAR_SIZE + CONDVAR_WREFS_AT] = 1
    struct.pack_into("<III", info, VERSION_LIST_AT, READERS, 0, 0)
    READ_COUNT.pack_into(info, VERSION_LIST_AT + 16, latest_version, file_size, top_ref, 0, 0, 0)
    return bytes(info)


def write_realm(path: str, cipher, plaintext: bytes) -> None:
    """``path`` in Realm Core's encrypted layout holding ``plaintext`` (whole pages)."""
    f = open_backing(path, cipher, realm_layout=True, create=True)
    try:
        f.write(0, plaintext)
        f.fsync()
    finally:
        f.close()


def copy_vector_dir(backing: str) -> dict:
    """The shared vector directory (Realm Core's own bytes) into ``backing``; returns
    {name: bytes} of what Realm Core wrote, plus the plaintext under 'plain'."""
    source = vector_path(APP_VECTOR_DIR)
    names = ("default.realm", "default.realm.lock")
    for name in names:
        shutil.copyfile(source / name, os.path.join(backing, name))
    os.mkdir(os.path.join(backing, "default.realm.management"))   # git keeps no empty directory
    files = {name: (source / name).read_bytes() for name in names}
    files["plain"] = (source / "default.realm.plain").read_bytes()
    return files


def build_app_dir(backing: str, cipher, name: str, plaintext: bytes, *, apple: bool = False,
                  note: bool = True, pid: int = 4242) -> dict:
    """A database ``name`` with its auxiliary files as Realm Core leaves them after a
    commit and close; ``apple``: the management directory of the lock emulation.
    Returns {relative path: bytes} of the regular files written ('' for FIFOs)."""
    path = os.path.join(backing, name)
    write_realm(path, cipher, plaintext)
    files = {name: None}                      # ciphertext: check by decryption
    lock = shared_info(latest_version=3, initiator_pid=pid, file_size=len(plaintext), top_ref=0x3780)
    with open(path + ".lock", "wb") as f:
        f.write(lock)
    files[name + ".lock"] = lock
    management = path + ".management"
    os.mkdir(management)
    if apple:
        os.mkfifo(os.path.join(management, "lock.fifo"))
        files[name + ".management/lock.fifo"] = ""
        for mutex in ("write", "control", "versions"):
            mx = f"access_control.{mutex}.mx"
            open(os.path.join(management, mx), "wb").close()
            files[f"{name}.management/{mx}"] = b""
        for condvar in ("new_commit", "pick_writer"):
            cv = f"access_control.{condvar}.cv"
            os.mkfifo(os.path.join(management, cv))
            files[f"{name}.management/{cv}"] = ""
    if note:
        os.mkfifo(path + ".note")
        files[name + ".note"] = ""
    return files
