"""Passphrases and key slots: create, unlock, passwd (data untouched), recovery keys, rekey with slots."""

from __future__ import annotations

import json
import os
import sys

import pytest

from realmfs.keys import config as configmod
from realmfs.keys import keyslots
from realmfs.tools import offline
from realmfs.tools import rekey as rekeymod
from realmfs.cli import keyargs
from realmfs.errors import Damaged, ExitCode, WrongPassphrase
from realmfs.keys.key import Key, write_key_file
from tests.offline.conftest import read_tree, write_tree

TREE = {"a.realm": os.urandom(5 * 4096), "b/c.bin": os.urandom(12345)}


def passfile(tmp_path, name: str, secret: str):
    path = tmp_path / name
    path.write_text(secret + "\n")
    return path


@pytest.fixture
def vault(run, tmp_path):
    """A backing directory made by `encrypt --passphrase-file`: (backing, passphrase file)."""
    write_tree(tmp_path / "src", TREE)
    pw = passfile(tmp_path, "pw", "correct horse")
    result = run("encrypt", tmp_path / "src", tmp_path / "v", "--passphrase-file", pw)
    assert result.code == 0, result
    return tmp_path / "v", pw


def backing_bytes(backing) -> dict:
    return {rel: data for rel, data in read_tree(backing).items() if rel != configmod.CONFIG_NAME}


def test_passphrase_setup_stores_only_a_wrapped_random_master_key(vault):
    backing, _ = vault
    document = json.loads((backing / configmod.CONFIG_NAME).read_text())
    [slot] = document["keyslots"]
    assert slot["type"] == "passphrase" and slot["kdf"] == {"name": "scrypt", "n": 1024, "r": 8, "p": 1}
    assert len(bytes.fromhex(slot["salt"])) == 16 and len(bytes.fromhex(slot["nonce"])) == 12
    assert len(bytes.fromhex(slot["wrapped"])) == 64 + 16     # key + GCM tag


def test_unlock_by_file_extpass_and_wrong_passphrase(run, vault, tmp_path):
    backing, pw = vault
    assert run("decrypt", backing, tmp_path / "o1", "--passphrase-file", pw).code == 0
    assert read_tree(tmp_path / "o1") == TREE
    extpass = f"{sys.executable} -c \"print('correct horse')\""
    assert run("verify", backing, "--extpass", extpass).code == 0
    bad = passfile(tmp_path, "bad", "wrong horse")
    result = run("verify", backing, "--passphrase-file", bad)
    assert result.code == ExitCode.WRONG_PASSPHRASE and "wrong passphrase" in result.err
    assert run("verify", backing, "--extpass", f"{sys.executable} -c 'import sys; sys.exit(3)'").code \
        == ExitCode.BAD_KEY


def test_no_terminal_and_no_passphrase_option_is_one_line(run, vault, monkeypatch):
    backing, _ = vault
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    result = run("verify", backing)
    assert result.code == ExitCode.BAD_KEY and "--passphrase-file" in result.err


def test_prompt_without_echo(run, vault, monkeypatch):
    backing, _ = vault
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    asked = []
    monkeypatch.setattr(keyargs.getpass, "getpass", lambda prompt: asked.append(prompt) or "correct horse")
    assert run("verify", backing).code == 0
    assert asked == [f"Passphrase for {backing}: "]


def test_passwd_changes_only_the_slot(run, vault, tmp_path):
    backing, old_pw = vault
    before = backing_bytes(backing)
    master = keyargs.unlock_from_args(type("A", (), {"passphrase_file": str(old_pw)})(), backing=str(backing)).master
    new_pw = passfile(tmp_path, "new", "battery staple")
    result = run("passwd", backing, "--passphrase-file", old_pw, "--new-passphrase-file", new_pw)
    assert result.code == 0, result
    assert "master key is unchanged" in result.out and "rekey" in result.out
    assert backing_bytes(backing) == before                     # every data byte identical
    assert run("verify", backing, "--passphrase-file", old_pw).code == ExitCode.WRONG_PASSPHRASE
    assert run("verify", backing, "--passphrase-file", new_pw).code == 0
    config = configmod.load(str(backing))
    configmod.unlock(config, master)                            # same master key, config still authentic
    assert len(config.keyslots) == 1


def test_recovery_key_slot_and_raw_master_key(run, vault, tmp_path):
    backing, pw = vault
    rk = tmp_path / "recovery.key"
    result = run("passwd", backing, "--passphrase-file", pw, "--add-recovery-key", rk)
    assert result.code == 0, result
    assert oct(os.stat(rk).st_mode & 0o777) == "0o600"
    assert run("decrypt", backing, tmp_path / "o", "--key-file", rk).code == 0   # recovery key unlocks
    assert read_tree(tmp_path / "o") == TREE
    # the raw master key (as a Realm app would hold it) keeps working too
    master = keyslots.unlock(configmod.load(str(backing)).keyslots, b"correct horse", keyslots.PASSPHRASE).master
    write_key_file(str(tmp_path / "master.key"), master)
    assert run("verify", backing, "--key-file", tmp_path / "master.key").code == 0
    write_key_file(str(tmp_path / "random.key"), Key.generate())
    assert run("verify", backing, "--key-file", tmp_path / "random.key").code == ExitCode.WRONG_KEY


def test_slots_are_covered_by_the_config_mac_and_gcm(vault):
    backing, _ = vault
    path = backing / configmod.CONFIG_NAME
    master = keyslots.unlock(configmod.load(str(backing)).keyslots, b"correct horse", keyslots.PASSPHRASE).master
    document = json.loads(path.read_text())
    # a change that leaves the key-encryption key as it was: only GCM's associated data
    # (the slot's own description) can refuse it
    document["keyslots"][0]["kdf"]["added"] = 1
    path.write_text(json.dumps(document))
    with pytest.raises(WrongPassphrase):
        keyslots.unlock(document["keyslots"], b"correct horse", keyslots.PASSPHRASE)
    with pytest.raises(Damaged):         # and the config's MAC under the master key
        configmod.unlock(configmod.load(str(backing)), master)


@pytest.mark.parametrize("damage", [lambda slot: slot.pop("salt"), lambda slot: slot["kdf"].update(n="x")])
def test_a_malformed_slot_is_damage_not_an_internal_error(vault, damage):
    backing, _ = vault
    document = json.loads((backing / configmod.CONFIG_NAME).read_text())
    damage(document["keyslots"][0])
    with pytest.raises(Damaged):
        keyslots.unlock(document["keyslots"], b"correct horse", keyslots.PASSPHRASE)


def test_rekey_with_passphrase_keeps_the_passphrase_and_rotates_the_master(run, vault, tmp_path):
    backing, pw = vault
    old_master = keyslots.unlock(configmod.load(str(backing)).keyslots, b"correct horse", keyslots.PASSPHRASE).master
    result = run("rekey", backing, "--passphrase-file", pw)
    assert result.code == 0, result
    assert "key slot" in result.out
    new_master = keyslots.unlock(configmod.load(str(backing)).keyslots, b"correct horse", keyslots.PASSPHRASE).master
    assert new_master != old_master
    assert run("decrypt", backing, tmp_path / "o", "--passphrase-file", pw).code == 0
    assert read_tree(tmp_path / "o") == TREE


def test_rekey_with_passphrase_resumes_from_the_journal_slot(vault, tmp_path, monkeypatch):
    backing, pw = vault
    args = type("A", (), {"passphrase_file": str(pw)})()
    unlocked = keyargs.unlock_from_args(args, backing=str(backing))
    monkeypatch.setattr(rekeymod, "_rekey_file", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        rekeymod.rekey(str(backing), unlocked.master, unlocked=unlocked)
    monkeypatch.undo()
    unlocked = keyargs.unlock_from_args(args, backing=str(backing))     # old slot still opens the old key
    rekeymod.rekey(str(backing), unlocked.master, unlocked=unlocked)
    offline.decrypt(str(backing), str(tmp_path / "o"), keyargs.key_from_args(args, backing=str(backing)))
    assert read_tree(tmp_path / "o") == TREE


def test_argon2id_slot(tmp_path):
    master = Key.generate()
    kdf = dict(keyslots.default_kdf("argon2id"), memory_cost=1024, iterations=1)
    slot = keyslots.make_slot(keyslots.PASSPHRASE, b"pw", master, kdf)
    assert keyslots.unlock([slot], b"pw", keyslots.PASSPHRASE).master == master
    with pytest.raises(WrongPassphrase):
        keyslots.unlock([slot], b"pW", keyslots.PASSPHRASE)


def test_passphrase_with_a_single_file_is_a_usage_error(run, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    pw = passfile(tmp_path, "pw", "p")
    assert run("encrypt", tmp_path / "f", tmp_path / "g", "--passphrase-file", pw).code == ExitCode.USAGE


def test_passwd_adds_a_passphrase_to_a_raw_key_directory(run, tmp_path, key_file):
    k, key = key_file()
    write_tree(tmp_path / "src", TREE)
    assert run("encrypt", tmp_path / "src", tmp_path / "b", "--key-file", k).code == 0
    pw = passfile(tmp_path, "pw", "now with a passphrase")
    result = run("passwd", tmp_path / "b", "--key-file", k, "--new-passphrase-file", pw)
    assert result.code == 0 and "added" in result.out, result
    assert run("verify", tmp_path / "b", "--passphrase-file", pw).code == 0
    assert run("verify", tmp_path / "b", "--key-file", k).code == 0


def test_rekey_drops_slots_it_cannot_rewrap_and_says_so(run, vault, tmp_path):
    backing, pw = vault
    assert run("passwd", backing, "--passphrase-file", pw, "--add-recovery-key", tmp_path / "rk").code == 0
    result = run("rekey", backing, "--passphrase-file", pw)
    assert result.code == 0 and "slot 1 (keyfile) was removed" in result.out, result
    assert run("verify", backing, "--key-file", tmp_path / "rk").code == ExitCode.WRONG_KEY
    assert run("verify", backing, "--passphrase-file", pw).code == 0
