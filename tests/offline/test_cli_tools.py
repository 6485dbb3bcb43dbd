"""Smaller commands and forms: info, '-' for stdin/stdout, keygen --from-file, the exit-code
table, bounded daemon logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from realmfs import cli
from realmfs.fs import logfiles
from realmfs.keys import config as configmod
from realmfs.errors import EXIT_CODE_MEANINGS, ExitCode
from realmfs.keys.key import Key, read_key_file
from tests.offline.conftest import write_tree
from tests.offline.test_keyring_progress import keyring_name, needs_keyctl  # noqa: F401 (fixture)
from tests.vectors import REPO, load_vectors, vector_path


def realmfs_proc(*args, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("REALMFS_KEY", None)
    return subprocess.run([sys.executable, "-m", "realmfs", *map(str, args)], input=input,
                          capture_output=True, env=env, timeout=120)


# ---------------------------------------------------------------------- exit codes
def test_every_exit_code_is_in_the_readme_and_in_help():
    readme = (REPO / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", readme, re.M))
    codes = {v for k, v in vars(ExitCode).items() if k.isupper()}
    assert set(map(int, table)) == codes == set(EXIT_CODE_MEANINGS)
    help_text = " ".join(cli.build_parser().format_help().split())
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"{code} {meaning}" in help_text
    assert ExitCode.INTERRUPTED == 130


# ---------------------------------------------------------------------- info
def test_info_shows_layout_patterns_kdf_and_slots_without_a_key(run, tmp_path):
    write_tree(tmp_path / "src", {"a.realm": os.urandom(8192), "d/b.txt": b"hello"})
    (tmp_path / "pw").write_text("info please\n")
    assert run("encrypt", tmp_path / "src", tmp_path / "b", "--passphrase-file", tmp_path / "pw").code == 0
    assert run("passwd", tmp_path / "b", "--passphrase-file", tmp_path / "pw",
               "--add-recovery-key", tmp_path / "rec.key").code == 0
    result = run("info", tmp_path / "b")
    assert result.code == 0, result
    out = result.out
    assert "format version 1" in out and "realm pattern: *.realm" in out
    assert "slot 0: passphrase, KDF scrypt (n=1024, r=8, p=1)" in out
    assert "slot 1: recovery key file, KDF hkdf-sha256" in out
    assert "1 realm (" in out and "1 header (" in out and "mounted: no" in out
    config = json.loads((tmp_path / "b" / configmod.CONFIG_NAME).read_text())
    for slot in config["keyslots"]:           # nothing secret or key-derived is printed
        for secret in (slot["salt"], slot["wrapped"], config["key_check"], config["mac"]):
            assert secret not in out


def test_info_reads_a_plain_pattern_when_the_config_has_one(run, tmp_path, key_file):
    k, key = key_file()
    os.mkdir(tmp_path / "b")
    configmod.create(str(tmp_path / "b"), key)
    result = run("info", tmp_path / "b")
    assert result.code == 0, result
    if hasattr(configmod.Config(), "plain_globs"):
        assert "plain patterns:" in result.out


def test_info_on_a_directory_realm_core_wrote_and_on_nothing(run, tmp_path):
    app_dir = vector_path("realm_app_dir")
    result = run("info", app_dir)
    assert result.code == 0 and "config: none" in result.out and "(default)" in result.out
    assert "1 realm (20480 bytes)" in result.out
    if hasattr(configmod.Config(), "kind_of"):       # the lock file is Realm Core's, kept plain
        assert "1 plain (1728 bytes)" in result.out
    assert run("info", tmp_path / "missing").code == ExitCode.BAD_PATH


def test_info_says_a_rekey_is_pending(run, tmp_path, key_file):
    k, key = key_file()
    os.mkdir(tmp_path / "b")
    config = configmod.create(str(tmp_path / "b"), key)
    config.rekey = {"new_key_check": "00", "keyslots": [], "key_file": None, "dropped": []}
    configmod.save(str(tmp_path / "b"), config, key)
    assert "rekey: INTERRUPTED" in run("info", tmp_path / "b").out


# ---------------------------------------------------------------------- '-': stdin / stdout
@pytest.mark.parametrize("name, size", [("x.bin", 0), ("x.bin", 3 * 1024 * 1024 + 17), ("x.realm", 5 * 4096)])
def test_encrypt_from_stdin_decrypt_to_stdout(tmp_path, key_file, name, size):
    k, _ = key_file()
    data = os.urandom(size)
    enc = realmfs_proc("encrypt", "-", tmp_path / name, "--key-file", k, input=data)
    assert enc.returncode == 0, enc.stderr
    assert f"{size} bytes from standard input" in enc.stdout.decode()
    assert data not in (tmp_path / name).read_bytes() or size == 0
    dec = realmfs_proc("decrypt", tmp_path / name, "-", "--key-file", k)
    assert dec.returncode == 0 and dec.stderr == b"", dec.stderr
    assert dec.stdout == data
    files = realmfs_proc("decrypt", tmp_path / name, tmp_path / "out", "--key-file", k)
    assert files.returncode == 0 and (tmp_path / "out").read_bytes() == data


def test_decrypt_a_realm_core_vector_to_stdout(tmp_path):
    vector = next(v for v in load_vectors() if v["id"] == "realm_db")
    (tmp_path / "k.key").write_text(vector["key_hex"] + "\n")
    os.chmod(tmp_path / "k.key", 0o600)
    dec = realmfs_proc("decrypt", vector_path(vector["encrypted"]), "-", "--key-file", tmp_path / "k.key")
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == vector_path(vector["plaintext"]).read_bytes()


def test_stdout_stops_at_a_damaged_page_and_skip_damaged_zeros_it(tmp_path, key_file):
    k, _ = key_file()
    data = os.urandom(6 * 4096)
    assert realmfs_proc("encrypt", "-", tmp_path / "x.realm", "--key-file", k, input=data).returncode == 0
    raw = bytearray((tmp_path / "x.realm").read_bytes())
    raw[4096 * 4 + 100] ^= 1              # data page 3 (page 0 of the file is the IV table)
    (tmp_path / "x.realm").write_bytes(bytes(raw))
    dec = realmfs_proc("decrypt", tmp_path / "x.realm", "-", "--key-file", k)
    assert dec.returncode == ExitCode.DAMAGED and "page 3" in dec.stderr.decode()
    assert data.startswith(dec.stdout) and len(dec.stdout) < len(data)
    dec = realmfs_proc("decrypt", tmp_path / "x.realm", "-", "--key-file", k, "--skip-damaged")
    assert dec.returncode == 0 and "1 damaged page(s)" in dec.stderr.decode()
    assert dec.stdout == data[:3 * 4096] + bytes(4096) + data[4 * 4096:]


def test_stdin_stdout_refusals(tmp_path, key_file):
    k, key = key_file()
    assert realmfs_proc("encrypt", "-", tmp_path / "a", "--key-stdin",
                        input=key.hex().encode()).returncode == ExitCode.USAGE
    assert realmfs_proc("encrypt", "-", tmp_path / "a", "--key-file", k, input=b"a").returncode == 0
    again = realmfs_proc("encrypt", "-", tmp_path / "a", "--key-file", k, input=b"b")
    assert again.returncode == ExitCode.EXISTS
    twice = realmfs_proc("encrypt", "-", tmp_path / "b", "--key-file", k, input=(tmp_path / "a").read_bytes())
    assert twice.returncode == ExitCode.ALREADY_ENCRYPTED
    os.mkdir(tmp_path / "dir")
    tree = realmfs_proc("decrypt", tmp_path / "dir", "-", "--key-file", k)
    assert tree.returncode == ExitCode.BAD_PATH and "standard output" in tree.stderr.decode()
    wrong = realmfs_proc("decrypt", tmp_path / "a", "-", "--key-file", key_file("other.key")[0])
    assert wrong.returncode == ExitCode.WRONG_KEY and wrong.stdout == b""


def test_decrypt_to_a_closed_pipe_prints_no_error(tmp_path, key_file):
    k, _ = key_file()
    assert realmfs_proc("encrypt", "-", tmp_path / "big", "--key-file", k,
                        input=os.urandom(4 * 1024 * 1024)).returncode == 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "realmfs", "decrypt", str(tmp_path / "big"), "-",
                             "--key-file", k], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()                     # what `| head -c 10` does
    err = proc.stderr.read()
    proc.wait(timeout=60)
    proc.stderr.close()
    assert err == b"", err


# ---------------------------------------------------------------------- keygen --from-file
@needs_keyctl
def test_an_existing_key_file_goes_into_the_keyring(run, keyring_name, tmp_path, key_file):  # noqa: F811
    k, key = key_file()
    write_tree(tmp_path / "src", {"x.realm": os.urandom(8192)})
    assert run("encrypt", tmp_path / "src", tmp_path / "b", "--key-file", k).code == 0
    result = run("keygen", "--keyring", keyring_name, "--from-file", k)
    assert result.code == 0 and "--key-from-keyring" in result.out, result
    assert run("verify", tmp_path / "b", "--key-from-keyring", keyring_name).code == 0
    assert read_key_file(k) == key                                   # the file is left as it was
    assert run("keygen", "--keyring", keyring_name, "--from-file", k).code == ExitCode.EXISTS


def test_keygen_from_file_refusals(run, tmp_path, key_file):
    k, _ = key_file()
    assert run("keygen", "--from-file", k).code == ExitCode.USAGE             # no --keyring
    assert run("keygen", tmp_path / "copy.key", "--keyring", "x", "--from-file", k).code == ExitCode.USAGE
    (tmp_path / "bad.key").write_text("not a key\n")
    os.chmod(tmp_path / "bad.key", 0o600)
    assert run("keygen", "--keyring", "x", "--from-file", tmp_path / "bad.key").code == ExitCode.BAD_KEY
    assert not (tmp_path / "copy.key").exists()


# ---------------------------------------------------------------------- daemon logs
def _log(directory, backing: str, age_days: float, head: bool = True, rotated: int = 0) -> str:
    path = os.path.join(directory, logfiles.log_name(backing))
    if head:
        logfiles.write_head(path, backing)
    else:
        open(path, "w").close()
    paths = [path] + [f"{path}.{n}" for n in range(1, rotated + 1)]
    when = time.time() - age_days * 86400
    for p in paths:
        if not os.path.exists(p):
            open(p, "w").close()
        os.utime(p, (when, when))
    return path


def test_logs_of_gone_backing_dirs_and_old_logs_are_pruned(tmp_path):
    logs = tmp_path / "run"
    os.mkdir(logs)
    live = tmp_path / "live"
    os.mkdir(live)
    kept = _log(logs, str(live), 1)
    gone = _log(logs, str(tmp_path / "removed"), 1, rotated=2)
    old = _log(logs, str(live) + "2", logfiles.MAX_AGE_DAYS + 1, head=False)
    mounted_old = _log(logs, str(tmp_path / "still-mounted"), logfiles.MAX_AGE_DAYS + 5)
    (logs / "unrelated.txt").write_text("not ours")
    removed = logfiles.prune(str(logs), keep={mounted_old})
    assert sorted(removed) == sorted([gone, gone + ".1", gone + ".2", old])
    assert sorted(os.listdir(logs)) == sorted([os.path.basename(kept), os.path.basename(mounted_old),
                                               "unrelated.txt"])


def test_logs_are_bounded_by_count(tmp_path):
    logs = tmp_path / "run"
    os.mkdir(logs)
    backings = []
    for i in range(logfiles.MAX_LOGS + 5):
        backing = tmp_path / f"b{i}"
        os.mkdir(backing)
        backings.append(_log(logs, str(backing), age_days=(logfiles.MAX_LOGS + 5 - i) / 100))
    logfiles.prune(str(logs), keep={backings[0]})              # the oldest, but kept
    left = {os.path.join(logs, n) for n in os.listdir(logs)}
    assert len(left) == logfiles.MAX_LOGS
    assert backings[0] in left and set(backings[-(logfiles.MAX_LOGS - 1):]) <= left
    assert logfiles.prune(str(logs)) == []
