"""``realmfs rekey``: every file of a backing directory re-encrypted under a new master key.

Crash safety (kill -9 at any moment; a re-run with the same options finishes):

1. The config records the rekey first, under the old key: the new key's check
   value, the new key slots (the new key wrapped under the slot that unlocked, if
   any) and the new key file's path. From then on mounts and the other tools refuse
   the directory (RekeyInProgress) and only ``rekey`` continues.
2. The new key file is created whole or not at all (written to a temporary name,
   then hard-linked: never overwriting). A run killed before it exists restarts with
   a fresh key: no file can use a key that was never stored.
3. Each file is rewritten under the new key to a temporary name, fsynced, read back
   and renamed over the original: every file is wholly under the old or the new key
   at every moment. A re-run tells the two apart per file (header MAC / first page
   that authenticates) and skips the done ones.
4. Only when every file is done does the config switch to the new key (new key
   check, new slots, no rekey record): one atomic replace.

The backing directory is locked like a mount for the whole run, so a rekey and a
mount never overlap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..keys import config as configmod
from ..storage import backingscan
from ..keys import keyslots
from ..storage.backinglock import BackingLock
from ..keys.config import KIND_HEADER, KIND_REALM, TOOL_TEMP_SUFFIX
from ..durable import fsync_dir, keep_metadata
from ..errors import AlreadyExists, BadPath, Damaged, IntegrityError, NotEncrypted, WrongKey
from ..keys.key import Key, read_key_file, write_key_file
from .offline import directory_stats, temp_for
from ..format.pagecipher import PageCipher
from ..storage.pagefile import open_backing
from .progress import disabled
from ..storage.transcode import check_read_back, write_copy


@dataclass
class RekeyResult:
    backing: str
    key_file: str | None
    slots_kept: int
    slots_dropped: list = field(default_factory=list)   # descriptions of slots not carried over
    rekeyed: list = field(default_factory=list)
    resumed: bool = False


def key_state(path: str, realm_layout: bool, old: PageCipher, new: PageCipher) -> str:
    """Which key a backing file is under: 'old', 'new', or 'neither' (damaged beyond telling).

    EncryptedFile's own key probe decides (header MAC; the first written pages of a
    ``.realm`` file). A file with nothing written opens under either and counts as
    'old': rewriting it under the new key is harmless.
    """
    for name, cipher in (("old", old), ("new", new)):
        try:
            f = open_backing(path, cipher, realm_layout=realm_layout, read_only=True)
        except WrongKey:
            continue
        except (Damaged, NotEncrypted):
            return "neither"
        f.close()
        return name
    return "neither"


def _rekey_file(path: str, realm_layout: bool, old: PageCipher, new: PageCipher,
                st: os.stat_result, progress) -> None:
    """Rewrite one file under the new key: temp file, fsync, read back, rename over;
    owner, mode and times from ``st``; ``progress`` hears the bytes as they are copied."""
    temp = temp_for(path)
    kind = KIND_REALM if realm_layout else KIND_HEADER
    digest = write_copy(path, old, kind, temp, new, kind, progress)
    check_read_back(temp, new, realm_layout, digest,
                    f"read-back of the rekeyed {path} does not match; the original is untouched")
    keep_metadata(temp, st)
    os.replace(temp, path)
    fsync_dir(os.path.dirname(path))


def start_rekey(backing: str, old_key: Key, *, unlocked: keyslots.Unlocked | None = None,
                new_key_file: str | None = None) -> tuple[configmod.Config, Key]:
    """Record a new rekey in the config (or find the one in progress); returns (config, new key).

    The new master key is kept, before any file changes, where a re-run finds it:
    wrapped in the slot that unlocked the old key (saved with the rekey record) and/or
    in ``new_key_file`` (mode 0600, created whole or not at all, right after the record).
    """
    config = configmod.load(backing)
    if config is None:
        raise BadPath(f"{backing} has no realmfs config; run 'realmfs init {backing}' first")
    configmod.unlock(config, old_key)
    if config.rekey is not None:
        key = _pending_key(config, unlocked, new_key_file)
        if key is not None:
            return config, key
        # Killed between recording the rekey and creating the key file: no file can use
        # the lost key (files are rewritten only after the file exists). Start afresh.
        _require_all_old(backing, config, old_key)
        new_key_file = new_key_file or config.rekey.get("key_file")
    elif new_key_file and os.path.lexists(new_key_file):
        raise AlreadyExists(f"{new_key_file} already exists; refusing to overwrite a key, choose another name")
    slot = None
    if unlocked is not None and unlocked.index is not None and unlocked.kek is not None:
        slot = config.keyslots[unlocked.index]
    if slot is None and not new_key_file:
        raise BadPath("say where the new key goes: --new-key-file F (the directory is not "
                      "unlocked by a passphrase slot that could hold it)")
    new_key = Key.generate()
    new_slots = [keyslots.rewrap(slot, unlocked.kek, new_key)] if slot is not None else []
    dropped = [f"slot {i} ({s.get('type')})" for i, s in enumerate(config.keyslots) if s is not slot]
    config.rekey = {"new_key_check": configmod.key_check_value(new_key), "keyslots": new_slots,
                    "key_file": os.path.abspath(new_key_file) if new_key_file else None,
                    "dropped": dropped}
    configmod.save(backing, config, old_key)
    if new_key_file:
        _write_key_file_whole(new_key_file, new_key)
    return config, new_key


def _write_key_file_whole(path: str, key: Key) -> None:
    """keys.write_key_file, but ``path`` appears complete or not at all (link, no overwrite)."""
    temp = temp_for(path)
    write_key_file(temp, key)
    try:
        os.link(temp, path)
    except FileExistsError:
        raise AlreadyExists(f"{path} already exists; refusing to overwrite a key") from None
    finally:
        os.unlink(temp)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _require_all_old(backing: str, config: configmod.Config, old_key: Key) -> None:
    old = PageCipher(old_key.raw)
    for path in backingscan.backing_files(backing):
        if key_state(path, config.is_realm_file(os.path.relpath(path, backing)), old, old) == "neither":
            raise WrongKey(f"the new key of the interrupted rekey is lost (its key file is missing) "
                           f"and {path} is not under the old key")


def _pending_key(config: configmod.Config, unlocked, new_key_file: str | None) -> Key | None:
    """The new key of an interrupted rekey, from its slot or its key file; None if the
    key file was never created."""
    journal = config.rekey
    if unlocked is not None and unlocked.kek is not None:
        for slot in journal.get("keyslots", []):
            key = keyslots.open_with_kek(slot, unlocked.kek)
            if key is not None:
                return key
    paths = [p for p in (new_key_file, journal.get("key_file")) if p]
    if not paths:
        raise WrongKey("the interrupted rekey keeps its new key in a key slot: unlock with the same "
                       "passphrase (or recovery key) as the first run")
    existing = [p for p in paths if os.path.exists(p)]
    if not existing:
        return None
    key = read_key_file(existing[0])
    if configmod.key_check_value(key) != journal["new_key_check"]:
        raise WrongKey(f"{existing[0]} is not the new key of the interrupted rekey")
    return key


def rekey(backing: str, old_key: Key, *, unlocked: keyslots.Unlocked | None = None,
          new_key_file: str | None = None, progress=None) -> RekeyResult:
    """Re-encrypt every file of ``backing`` under a new master key (see the module docstring)."""
    configmod.require_directory(backing)
    # held for the whole run: no mount can start (nor be running) while files change key;
    # after a kill -9 the flock is gone with the process and the re-run takes it over
    with BackingLock(backing, "(realmfs rekey running)"):
        return _rekey_locked(backing, old_key, unlocked, new_key_file, progress or disabled())


def _rekey_locked(backing: str, old_key: Key, unlocked, new_key_file, progress) -> RekeyResult:
    current = configmod.load(backing)
    if current is not None and _already_done(current, old_key, new_key_file):
        return RekeyResult(backing, os.path.abspath(new_key_file), len(current.keyslots), resumed=True)
    resumed = current is not None and current.rekey is not None
    config, new_key = start_rekey(backing, old_key, unlocked=unlocked, new_key_file=new_key_file)
    journal = config.rekey
    old, new = PageCipher(old_key.raw), PageCipher(new_key.raw)
    result = RekeyResult(backing, journal.get("key_file"), len(journal.get("keyslots", [])),
                         list(journal.get("dropped", [])), resumed=resumed)
    directories = directory_stats(backing)      # before any listing moves their atimes
    directories[""] = os.stat(backing)
    _remove_tool_temps(backing)
    files = [(p, os.path.relpath(p, backing)) for p in backingscan.backing_files(backing)]
    progress.files, progress.total = len(files), sum(os.path.getsize(p) for p, _ in files)
    for path, rel in files:
        progress.file(rel)
        done_before = progress.done
        layout = config.is_realm_file(rel)
        before = os.stat(path)      # owner, mode and times to keep, before any read moves atime
        state = key_state(path, layout, old, new)
        if state == "neither":
            raise Damaged(f"rekey stopped: {rel} authenticates under neither key; run 'realmfs verify' "
                          "(with the old key), repair or remove it, then re-run 'realmfs rekey'")
        if state == "old":
            try:
                _rekey_file(path, layout, old, new, before, progress)
            except IntegrityError as error:
                raise IntegrityError(rel, error.page, f"{error.reason}; rekey stopped, the file is "
                                     "unchanged: run 'realmfs verify --repair', then re-run 'realmfs rekey'") from None
            result.rekeyed.append(rel)
        # the total counts backing (physical) bytes, the copy plaintext: catch up to the file's end
        progress.advance(done_before + before.st_size - progress.done)
    config.key_check = journal["new_key_check"]
    config.keyslots = journal.get("keyslots", [])
    config.rekey = None
    configmod.save(backing, config, new_key)    # the one atomic switch to the new key
    # replacing files by their rekeyed copies is no change the mount should show
    for rel, st in sorted(directories.items(), reverse=True):
        os.utime(os.path.join(backing, rel), ns=(st.st_atime_ns, st.st_mtime_ns))
    return result


def _already_done(config: configmod.Config, old_key: Key, new_key_file: str | None) -> bool:
    """A re-run after the rekey switched the config (killed before it could say so):
    the config is under the new key, which the new key file holds."""
    if config.rekey is not None or configmod.key_check_value(old_key) == config.key_check:
        return False
    if not new_key_file or not os.path.exists(new_key_file):
        return False
    new_key = read_key_file(new_key_file)
    if configmod.key_check_value(new_key) != config.key_check:
        return False
    configmod.unlock(config, new_key)     # and the config is intact under it
    return True


def _remove_tool_temps(backing: str) -> None:
    for root, _, files in os.walk(backing):
        for name in files:
            if name.endswith(TOOL_TEMP_SUFFIX):
                os.unlink(os.path.join(root, name))
