"""rekey: everything ends under the new key; kill -9 at any moment loses nothing and a re-run finishes."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from realmfs.keys import config as configmod
from realmfs.storage import backingscan
from realmfs.tools import offline
from realmfs.tools import rekey as rekeymod
from realmfs.errors import AlreadyExists, ExitCode, RekeyInProgress, WrongKey
from realmfs.keys.key import Key, read_key_file, write_key_file
from realmfs.format.pagecipher import PageCipher
from realmfs.storage.pagefile import open_backing
from tests.offline.conftest import read_tree, write_tree
from tests.vectors import REPO

KILL_SEEDS = 40


def plain_tree(seed: int = 0, files: int = 10, scale: int = 40000) -> dict:
    rnd = random.Random(seed)
    tree = {}
    for i in range(files):
        size = rnd.randrange(0, scale * (i + 1))
        tree[f"d{i % 3}/f{i}.bin"] = rnd.randbytes(size)
        tree[f"r{i}.realm"] = rnd.randbytes(-(-size // 4096) * 4096)
    tree["empty.bin"] = b""
    tree["empty.realm"] = b""
    return tree


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A backing directory made by encrypt, its key file and its plaintext."""
    root = tmp_path_factory.mktemp("pristine")
    tree = plain_tree()
    write_tree(root / "src", tree)
    key = Key.generate()
    write_key_file(str(root / "old.key"), key)
    offline.encrypt(str(root / "src"), str(root / "backing"), key)
    return root, key, tree


def readable_under(path: str, layout: bool, keys: list) -> bytes:
    """The plaintext of one backing file under whichever of ``keys`` opens it."""
    for key in keys:
        cipher = PageCipher(key.raw)
        if rekeymod.key_state(path, layout, cipher, cipher) != "old":
            continue
        f = open_backing(path, cipher, realm_layout=layout, read_only=True, key_checked=True)
        try:
            return f.read(0, f.size)
        finally:
            f.close()
    raise AssertionError(f"{path} opens under no key")


def assert_every_file_intact(backing, tree: dict, keys: list) -> None:
    config = configmod.Config()
    found = {}
    for path in backingscan.backing_files(str(backing)):
        rel = os.path.relpath(path, backing)
        found[rel] = readable_under(path, config.is_realm_file(rel), keys)
    assert found == tree


def rekey_cli(backing, old_key_file, new_key_file):
    return [sys.executable, "-m", "realmfs", "rekey", str(backing),
            "--key-file", str(old_key_file), "--new-key-file", str(new_key_file)]


def test_rekey_round_trip_and_old_key_stops_working(run, pristine, tmp_path):
    root, old_key, tree = pristine
    shutil.copytree(root / "backing", tmp_path / "b")
    result = run("rekey", tmp_path / "b", "--key-file", root / "old.key", "--new-key-file", tmp_path / "new.key")
    assert result.code == 0, result
    assert str(tmp_path / "new.key") in result.out
    assert oct(os.stat(tmp_path / "new.key").st_mode & 0o777) == "0o600"
    new_key = read_key_file(str(tmp_path / "new.key"))
    assert new_key != old_key
    assert run("verify", tmp_path / "b", "--key-file", root / "old.key").code == ExitCode.WRONG_KEY
    assert run("verify", tmp_path / "b", "--key-file", tmp_path / "new.key").code == ExitCode.OK
    offline.decrypt(str(tmp_path / "b"), str(tmp_path / "out"), new_key)
    assert read_tree(tmp_path / "out") == tree


def test_rekey_refuses_to_overwrite_the_new_key_file_and_needs_one(run, pristine, tmp_path):
    root, _, _ = pristine
    shutil.copytree(root / "backing", tmp_path / "b")
    (tmp_path / "exists.key").write_bytes(b"x")
    before = (tmp_path / "b" / ".realmfs.conf").read_bytes()
    assert run("rekey", tmp_path / "b", "--key-file", root / "old.key", "--new-key-file",
               tmp_path / "exists.key").code == ExitCode.EXISTS
    assert run("rekey", tmp_path / "b", "--key-file", root / "old.key").code == ExitCode.USAGE
    assert (tmp_path / "b" / ".realmfs.conf").read_bytes() == before


def test_interrupted_rekey_blocks_other_tools_until_rerun(run, pristine, tmp_path, monkeypatch):
    root, old_key, tree = pristine
    backing = tmp_path / "b"
    shutil.copytree(root / "backing", backing)
    calls = []
    real = rekeymod._rekey_file

    def dies_after_three(*args):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args[0])
        real(*args)

    monkeypatch.setattr(rekeymod, "_rekey_file", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        rekeymod.rekey(str(backing), old_key, new_key_file=str(tmp_path / "new.key"))
    monkeypatch.setattr(rekeymod, "_rekey_file", real)
    new_key = read_key_file(str(tmp_path / "new.key"))
    assert_every_file_intact(backing, tree, [old_key, new_key])
    with pytest.raises(RekeyInProgress):
        backingscan.open_backing_dir(str(backing), old_key)
    assert run("decrypt", backing, tmp_path / "o", "--key-file", root / "old.key").code == ExitCode.REKEY_IN_PROGRESS
    assert run("verify", backing, "--key-file", tmp_path / "new.key").code == ExitCode.REKEY_IN_PROGRESS
    with pytest.raises(WrongKey):     # a re-run with the wrong new key file is refused
        other = tmp_path / "other.key"
        write_key_file(str(other), Key.generate())
        rekeymod.rekey(str(backing), old_key, new_key_file=str(other))
    result = run("rekey", backing, "--key-file", root / "old.key", "--new-key-file", tmp_path / "new.key")
    assert result.code == 0 and "finished the interrupted" in result.out, result
    offline.decrypt(str(backing), str(tmp_path / "out"), new_key)
    assert read_tree(tmp_path / "out") == tree


def interrupted_rekey(pristine, tmp_path, monkeypatch, inside: str):
    """A copy of the pristine backing whose rekey (new key file ``new.key``) was interrupted
    by KeyboardInterrupt in ``rekeymod.<inside>``; returns (backing, old key, tree)."""
    root, old_key, tree = pristine
    backing = tmp_path / "b"
    shutil.copytree(root / "backing", backing)
    monkeypatch.setattr(rekeymod, inside, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        rekeymod.rekey(str(backing), old_key, new_key_file=str(tmp_path / "new.key"))
    monkeypatch.undo()
    return backing, old_key, tree


def assert_decrypts_under_new_key(backing, tmp_path, tree: dict) -> None:
    offline.decrypt(str(backing), str(tmp_path / "out"), read_key_file(str(tmp_path / "new.key")))
    assert read_tree(tmp_path / "out") == tree


def test_rerun_without_the_new_key_file_option_finds_it_in_the_journal(pristine, tmp_path, monkeypatch):
    backing, old_key, tree = interrupted_rekey(pristine, tmp_path, monkeypatch, "_rekey_file")
    rekeymod.rekey(str(backing), old_key)
    assert_decrypts_under_new_key(backing, tmp_path, tree)


def seeds_until(base: int, covered):
    """Seeds 0..base-1, then more (up to 4x base) while ``covered()`` is false: on a loaded
    machine fewer random kills land mid-rekey, and the coverage check below needs some."""
    for seed in itertools.count():
        if seed >= base and (covered() or seed >= 4 * base):
            return
        yield seed


def test_kill_9_at_random_moments_never_loses_a_file(pristine, tmp_path):
    """SIGKILL a `realmfs rekey` subprocess at random delays; after every kill each file opens
    under the old or the new key with its exact content; re-runs (killed again sometimes) finish."""
    root, old_key, tree = pristine
    env = dict(os.environ, PYTHONPATH=str(REPO))
    shutil.copytree(root / "backing", tmp_path / "timing")
    started = time.monotonic()
    subprocess.run(rekey_cli(tmp_path / "timing", root / "old.key", tmp_path / "timing.key"), env=env,
                   check=True, capture_output=True)
    full = time.monotonic() - started
    outcomes = {"killed": 0, "finished_before_kill": 0, "mid_rekey": 0}
    for seed in seeds_until(KILL_SEEDS, lambda: outcomes["killed"] >= KILL_SEEDS // 4
                            and outcomes["mid_rekey"] >= 3):
        rnd = random.Random(seed)
        backing, new_key_file = tmp_path / f"b{seed}", tmp_path / f"new{seed}.key"
        shutil.copytree(root / "backing", backing)
        for attempt in range(3):
            proc = subprocess.Popen(rekey_cli(backing, root / "old.key", new_key_file), env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rnd.uniform(0, full))
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate()
            if proc.returncode == 0:
                outcomes["finished_before_kill"] += 1
                break
            assert proc.returncode == -signal.SIGKILL, err
            outcomes["killed"] += 1
            keys = [old_key] + ([read_key_file(str(new_key_file))] if new_key_file.exists() else [])
            assert_every_file_intact(backing, tree, keys)
            outcomes["mid_rekey"] += configmod.load(str(backing)).rekey is not None
            if rnd.random() < 0.5:
                break
        finish = subprocess.run(rekey_cli(backing, root / "old.key", new_key_file), env=env,
                                capture_output=True, text=True)
        assert finish.returncode == 0, finish.stderr      # also when the killed run had finished
        new_key = read_key_file(str(new_key_file))
        config = backingscan.open_backing_dir(str(backing), new_key)
        assert config.rekey is None
        assert_every_file_intact(backing, tree, [new_key])
        assert not [n for n in os.listdir(backing) if n.endswith(configmod.TOOL_TEMP_SUFFIX)]
        shutil.rmtree(backing)
    # timing varies with machine load: only insist that kills really landed mid-run
    print("kill outcomes:", outcomes)
    assert outcomes["killed"] >= KILL_SEEDS // 4 and outcomes["mid_rekey"] >= 3, outcomes


def test_key_file_is_created_whole_or_not_at_all(pristine, tmp_path, monkeypatch):
    """Killed after the rekey was recorded but before its key file existed: the re-run starts afresh."""
    backing, old_key, tree = interrupted_rekey(pristine, tmp_path, monkeypatch, "_write_key_file_whole")
    assert configmod.load(str(backing)).rekey is not None and not (tmp_path / "new.key").exists()
    rekeymod.rekey(str(backing), old_key, new_key_file=str(tmp_path / "new.key"))
    assert_decrypts_under_new_key(backing, tmp_path, tree)


def test_existing_key_file_is_refused_before_anything_changes(pristine, tmp_path):
    root, old_key, _ = pristine
    shutil.copytree(root / "backing", tmp_path / "b")
    write_key_file(str(tmp_path / "taken.key"), Key.generate())
    with pytest.raises(AlreadyExists):
        rekeymod.rekey(str(tmp_path / "b"), old_key, new_key_file=str(tmp_path / "taken.key"))
    assert configmod.load(str(tmp_path / "b")).rekey is None


PASSPHRASE_SEEDS = 12


def masters_of(backing, secret: bytes) -> list:
    """Every master key the passphrase reaches now: the config's, and a pending rekey's."""
    from realmfs.keys import keyslots
    config = configmod.load(str(backing))
    unlocked = keyslots.unlock(config.keyslots, secret, keyslots.PASSPHRASE)
    keys = [unlocked.master]
    for slot in (config.rekey or {}).get("keyslots", []):
        pending = keyslots.open_with_kek(slot, unlocked.kek)
        if pending is not None:
            keys.append(pending)
    return keys


def test_kill_9_with_a_passphrase_setup(tmp_path, run):
    """The new master key lives in the rekey record's slot: kills never lose it or a file."""
    tree = plain_tree(seed=7, files=8, scale=120000)
    write_tree(tmp_path / "src", tree)
    (tmp_path / "pw").write_text("kill me softly\n")
    assert run("encrypt", tmp_path / "src", tmp_path / "pristine", "--passphrase-file", tmp_path / "pw").code == 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = lambda b: [sys.executable, "-m", "realmfs", "rekey", str(b),   # noqa: E731
                         "--passphrase-file", str(tmp_path / "pw")]
    shutil.copytree(tmp_path / "pristine", tmp_path / "timing")
    started = time.monotonic()
    subprocess.run(command(tmp_path / "timing"), env=env, check=True, capture_output=True)
    full = time.monotonic() - started
    mid_rekey = 0
    for seed in seeds_until(PASSPHRASE_SEEDS, lambda: mid_rekey >= 2):
        rnd = random.Random(seed)
        backing = tmp_path / f"b{seed}"
        shutil.copytree(tmp_path / "pristine", backing)
        proc = subprocess.Popen(command(backing), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rnd.uniform(0, full))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err
        assert_every_file_intact(backing, tree, masters_of(backing, b"kill me softly"))
        mid_rekey += configmod.load(str(backing)).rekey is not None
        finish = subprocess.run(command(backing), env=env, capture_output=True, text=True)
        assert finish.returncode == 0, finish.stderr
        [master] = masters_of(backing, b"kill me softly")
        assert_every_file_intact(backing, tree, [master])
        shutil.rmtree(backing)
    assert mid_rekey >= 2, mid_rekey      # some kills landed with files half-way between keys


class RecordingProgress:
    """A progress sink that keeps every call: (file, name) and (advance, bytes done)."""

    def __init__(self):
        self.files, self.total, self.done, self.calls = 0, 0, 0, []

    def file(self, name):
        self.calls.append(("file", name))

    def advance(self, nbytes):
        self.done += nbytes
        self.calls.append(("advance", self.done))


def test_rekey_reports_bytes_as_they_go(tmp_path):
    big = os.urandom(5 * 1024 * 1024 + 123)      # > 5 chunks of transcode.CHUNK
    write_tree(tmp_path / "src", {"big.bin": big, "small.realm": os.urandom(8192)})
    key = Key.generate()
    offline.encrypt(str(tmp_path / "src"), str(tmp_path / "b"), key)
    progress = RecordingProgress()
    rekeymod.rekey(str(tmp_path / "b"), key, new_key_file=str(tmp_path / "new.key"), progress=progress)
    big_file = progress.calls.index(("file", "big.bin"))
    during_big = []
    for kind, value in progress.calls[big_file + 1:]:
        if kind == "file":
            break
        during_big.append(value)
    assert len(during_big) >= 5, progress.calls          # not one jump at the end of the file
    assert during_big == sorted(during_big) and during_big[0] < len(big)
    assert progress.done == progress.total == sum(os.path.getsize(p) for p in
                                                   backingscan.backing_files(str(tmp_path / "b")))


def test_ctrl_c_during_rekey_exits_130_and_says_how_to_finish(run, pristine, tmp_path, monkeypatch):
    root, old_key, tree = pristine
    backing = tmp_path / "b"
    shutil.copytree(root / "backing", backing)
    from realmfs.tools import progress as progressmod
    calls = itertools.count()

    def interrupt_mid_run(self, nbytes):       # Ctrl-C after a few chunks, inside a file
        if next(calls) == 6:
            raise KeyboardInterrupt
    monkeypatch.setattr(progressmod.Progress, "advance", interrupt_mid_run)
    args = ("rekey", backing, "--key-file", root / "old.key", "--new-key-file", tmp_path / "new.key")
    result = run(*args)
    assert result.code == ExitCode.INTERRUPTED == 130, result
    assert result.err.startswith("realmfs: interrupted") and "run the same 'realmfs rekey'" in result.err
    assert configmod.load(str(backing)).rekey is not None
    assert run("verify", backing, "--key-file", root / "old.key").code == ExitCode.REKEY_IN_PROGRESS
    monkeypatch.undo()
    assert run(*args).code == 0
    assert_every_file_intact(backing, tree, [read_key_file(str(tmp_path / "new.key"))])


def test_ctrl_c_of_any_command_exits_130(tmp_path):
    """A real SIGINT: `encrypt - DST` waits on its standard input, Ctrl-C ends it."""
    key = tmp_path / "k.key"
    write_key_file(str(key), Key.generate())
    proc = subprocess.Popen([sys.executable, "-m", "realmfs", "encrypt", "-", str(tmp_path / "out.bin"),
                             "--key-file", str(key)], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    proc.stdin.write(os.urandom(10000))      # past the first 4096 bytes it checks, then nothing more
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not any(n.startswith("out.bin") for n in os.listdir(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.02)                 # the temporary output exists: it is reading stdin
    assert proc.poll() is None and any(n.startswith("out.bin") for n in os.listdir(tmp_path))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    message = err.decode().strip()
    assert proc.returncode == 130 and message.startswith("realmfs: interrupted: "), err
    assert "out.bin was not created" in message and "run the command again" in message, message
    assert len(message.splitlines()) == 1, message
    assert not os.path.exists(tmp_path / "out.bin")
