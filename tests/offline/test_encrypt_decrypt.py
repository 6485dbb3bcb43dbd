"""encrypt / decrypt: round trips over sizes and layouts, Realm Core's vectors, bad input."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realmfs.keys import config as configmod
from realmfs.tools import offline
from realmfs.errors import (AlreadyEncrypted, AlreadyExists, BadPath, ExitCode, IntegrityError,
                            NotEncrypted, NotRecognized, WrongKey)
from realmfs.keys.key import Key
from realmfs.format.layout import BLOCK_DATA_BYTES, PAGE_SIZE
from tests.offline.conftest import read_tree, write_hex_key, write_tree
from tests.vectors import load_vectors, vector_path

VECTORS = load_vectors()
BY_ID = {v["id"]: v for v in VECTORS}
SIZES = {"empty": 0, "tiny": 1, "small": 100, "page": PAGE_SIZE, "two_pages": 2 * PAGE_SIZE,
         "block_plus_one": BLOCK_DATA_BYTES + 1, "multi_block": 2 * BLOCK_DATA_BYTES + 3 * PAGE_SIZE,
         "large": 5 * 1024 * 1024 + 77}


def data_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def realm_size(size: int) -> int:
    return -(-size // PAGE_SIZE) * PAGE_SIZE


@pytest.mark.parametrize("name", sorted(SIZES))
@pytest.mark.parametrize("suffix", [".bin", ".realm"])
def test_single_file_round_trip(tmp_path, name, suffix):
    size = SIZES[name]
    key = Key.generate()
    src, enc, out = tmp_path / f"src{suffix}", tmp_path / f"enc{suffix}", tmp_path / f"out{suffix}"
    plain = data_of(size)
    src.write_bytes(plain)
    offline.encrypt(str(src), str(enc), key)
    assert size < 64 or plain[:64] not in enc.read_bytes()
    offline.decrypt(str(enc), str(out), key)
    got = out.read_bytes()
    if suffix == ".realm":     # Realm's layout keeps whole pages: the tail comes back as zeros
        assert got == plain + bytes(realm_size(size) - size)
    else:
        assert got == plain
    assert not list(tmp_path.glob("*.realmfs-tmp"))


def test_tree_round_trip_with_config(tmp_path):
    key = Key.generate()
    files = {f"{name}.bin": data_of(size, i) for i, (name, size) in enumerate(SIZES.items())}
    files.update({"db/a.realm": data_of(3 * PAGE_SIZE, 9), "db/empty.realm": b"", "deep/er/x.txt": b"x"})
    write_tree(tmp_path / "src", files)
    os.makedirs(tmp_path / "src" / "emptydir")
    result = offline.encrypt(str(tmp_path / "src"), str(tmp_path / "backing"), key)
    assert sorted(result.files) == sorted(files)
    config = configmod.load(str(tmp_path / "backing"))
    configmod.unlock(config, key)
    assert os.path.isdir(tmp_path / "backing" / "emptydir")
    offline.decrypt(str(tmp_path / "backing"), str(tmp_path / "out"), key)
    assert read_tree(tmp_path / "out") == files
    assert os.path.isdir(tmp_path / "out" / "emptydir")


def test_reserved_names_of_the_source_are_not_encrypted(tmp_path):
    key = Key.generate()
    write_tree(tmp_path / "src", {"a.bin": b"a", configmod.LOCK_NAME: b"pid"})
    result = offline.encrypt(str(tmp_path / "src"), str(tmp_path / "backing"), key)
    assert result.files == ["a.bin"]
    assert not (tmp_path / "backing" / configmod.LOCK_NAME).exists()


@pytest.mark.parametrize("vector", [v for v in VECTORS if v.get("fresh_single_write") and v["input_len"]],
                         ids=lambda v: v["id"])
def test_encrypt_is_byte_compatible_with_realm_core(tmp_path, vector):
    src = tmp_path / "plain.realm"
    src.write_bytes(vector_path(vector["plaintext"]).read_bytes()[:vector["input_len"]])
    offline.encrypt(str(src), str(tmp_path / "enc.realm"), Key(bytes.fromhex(vector["key_hex"])))
    assert (tmp_path / "enc.realm").read_bytes() == vector_path(vector["encrypted"]).read_bytes()


READABLE = [v for v in VECTORS if v.get("plaintext") and v["id"] not in
            ("tampered_once", "cut_tail", "plain_realm_with_key")]


@pytest.mark.parametrize("vector", READABLE, ids=lambda v: v["id"])
def test_vectors_decrypt_with_the_cli(run, tmp_path, vector):
    write_hex_key(tmp_path / "k", vector["key_hex"])
    out = tmp_path / "out.realm"
    result = run("decrypt", vector_path(vector["encrypted"]), out, "--key-file", tmp_path / "k")
    assert result.code == 0, result
    assert out.read_bytes() == vector_path(vector["plaintext"]).read_bytes()


@pytest.mark.parametrize("vector_id", ["tampered_once", "cut_tail"])
def test_damaged_vector_stops_naming_the_page_unless_skip_damaged(run, tmp_path, vector_id):
    vector = BY_ID[vector_id]
    write_hex_key(tmp_path / "k", vector["key_hex"])
    enc = vector_path(vector["encrypted"])
    stopped = run("decrypt", enc, tmp_path / "out", "--key-file", tmp_path / "k")
    assert stopped.code == ExitCode.DAMAGED
    assert "page 2" in stopped.err and enc.name in stopped.err and len(stopped.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("*.realmfs-tmp"))
    skipped = run("decrypt", enc, tmp_path / "out", "--key-file", tmp_path / "k", "--skip-damaged")
    assert skipped.code == 0, skipped
    assert "page 2" in skipped.out
    assert (tmp_path / "out").read_bytes() == vector_path(vector["plaintext"]).read_bytes()


def test_damaged_page_in_a_backing_directory_is_named(tmp_path):
    key = Key.generate()
    write_tree(tmp_path / "src", {"a.bin": data_of(3 * PAGE_SIZE), "b.realm": data_of(3 * PAGE_SIZE, 2)})
    offline.encrypt(str(tmp_path / "src"), str(tmp_path / "backing"), key)
    path = tmp_path / "backing" / "b.realm"
    raw = bytearray(path.read_bytes())
    raw[3 * PAGE_SIZE + 100] ^= 1           # data page 2
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as caught:
        offline.decrypt(str(tmp_path / "backing"), str(tmp_path / "out"), key)
    assert caught.value.page == 2 and caught.value.file == "b.realm"
    result = offline.decrypt(str(tmp_path / "backing"), str(tmp_path / "out"), key, skip_damaged=True)
    assert [(p.file, p.page) for p in result.zeroed] == [("b.realm", 2)]
    out = (tmp_path / "out" / "b.realm").read_bytes()
    assert out[2 * PAGE_SIZE:] == bytes(PAGE_SIZE) and out[:2 * PAGE_SIZE] == data_of(3 * PAGE_SIZE, 2)[:2 * PAGE_SIZE]


# ---------------------------------------------------------------------- bad input
def test_bad_input_gives_one_line_and_distinct_codes(run, tmp_path, key_file):
    k, key = key_file()
    k2, _ = key_file("k2.key")
    write_tree(tmp_path / "src", {"a.realm": data_of(2 * PAGE_SIZE), "b.bin": b"hello"})
    assert run("encrypt", tmp_path / "src", tmp_path / "backing", "--key-file", k).code == 0
    garbage = tmp_path / "garbage.realm"
    garbage.write_bytes(b"this is not a Realm file at all. " * 500)
    plain = tmp_path / "plain.realm"
    plain.write_bytes(vector_path("realm_db.plain").read_bytes())
    cases = [
        (("decrypt", tmp_path / "backing", tmp_path / "o1", "--key-file", k2), ExitCode.WRONG_KEY),
        (("decrypt", tmp_path / "backing" / "a.realm", tmp_path / "o2", "--key-file", k2), ExitCode.WRONG_KEY),
        (("decrypt", tmp_path / "backing" / "b.bin", tmp_path / "o3", "--key-file", k2), ExitCode.WRONG_KEY),
        (("decrypt", tmp_path / "missing", tmp_path / "o4", "--key-file", k), ExitCode.BAD_PATH),
        (("encrypt", tmp_path / "missing", tmp_path / "o5", "--key-file", k), ExitCode.BAD_PATH),
        (("encrypt", tmp_path / "src", tmp_path / "backing", "--key-file", k), ExitCode.EXISTS),
        (("decrypt", tmp_path / "backing", tmp_path / "src", "--key-file", k), ExitCode.EXISTS),
        (("encrypt", tmp_path / "backing", tmp_path / "o6", "--key-file", k), ExitCode.ALREADY_ENCRYPTED),
        (("encrypt", tmp_path / "backing" / "a.realm", tmp_path / "o7.realm", "--key-file", k),
         ExitCode.ALREADY_ENCRYPTED),
        (("encrypt", tmp_path / "backing" / "b.bin", tmp_path / "o8", "--key-file", k), ExitCode.ALREADY_ENCRYPTED),
        (("decrypt", plain, tmp_path / "o9", "--key-file", k), ExitCode.NOT_ENCRYPTED),
        (("decrypt", garbage, tmp_path / "o10", "--key-file", k), ExitCode.NOT_RECOGNIZED),
        (("verify", garbage, "--key-file", k), ExitCode.NOT_RECOGNIZED),
        (("verify", plain, "--key-file", k), ExitCode.NOT_ENCRYPTED),
        (("verify", tmp_path / "missing", "--key-file", k), ExitCode.BAD_PATH),
        (("decrypt", tmp_path / "backing", tmp_path / "o11"), ExitCode.BAD_KEY),
    ]
    for argv, code in cases:
        result = run(*argv)
        assert result.code == code, (argv, result)
        assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err, (argv, result)
    assert not [p for p in os.listdir(tmp_path) if p.startswith("o") or p.endswith(".realmfs-tmp")]


def test_python_api_raises_the_same_errors(tmp_path):
    key = Key.generate()
    (tmp_path / "p.realm").write_bytes(vector_path("realm_db.plain").read_bytes())
    with pytest.raises(NotEncrypted):
        offline.decrypt(str(tmp_path / "p.realm"), str(tmp_path / "o"), key)
    with pytest.raises(BadPath):
        offline.encrypt(str(tmp_path / "nope"), str(tmp_path / "o"), key)
    offline.encrypt(str(tmp_path / "p.realm"), str(tmp_path / "e.realm"), key)
    with pytest.raises(AlreadyExists):
        offline.encrypt(str(tmp_path / "p.realm"), str(tmp_path / "e.realm"), key)
    with pytest.raises(AlreadyEncrypted):
        offline.encrypt(str(tmp_path / "e.realm"), str(tmp_path / "e2.realm"), key)
    with pytest.raises(WrongKey):
        offline.decrypt(str(tmp_path / "e.realm"), str(tmp_path / "o"), Key.generate())
    (tmp_path / "g").write_bytes(os.urandom(10))
    with pytest.raises(NotRecognized):
        offline.decrypt(str(tmp_path / "g"), str(tmp_path / "o"), key)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 3 * BLOCK_DATA_BYTES), realm=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_round_trip_property(tmp_path_factory, size, realm, seed):
    tmp = tmp_path_factory.mktemp("prop")
    key = Key.generate()
    suffix = ".realm" if realm else ".dat"
    plain = data_of(size, seed)
    (tmp / f"p{suffix}").write_bytes(plain)
    offline.encrypt(str(tmp / f"p{suffix}"), str(tmp / f"e{suffix}"), key)
    offline.decrypt(str(tmp / f"e{suffix}"), str(tmp / f"o{suffix}"), key)
    expected = plain + bytes(realm_size(size) - size) if realm else plain
    assert (tmp / f"o{suffix}").read_bytes() == expected


def test_directory_of_realm_core_files_without_config_decrypts(run, tmp_path):
    """A directory Realm Core wrote (no realmfs config): the key is checked against the files."""
    os.mkdir(tmp_path / "app")
    for vid in ("p65", "rewrites", "realm_db"):
        (tmp_path / "app" / f"{vid}.realm").write_bytes(vector_path(BY_ID[vid]["encrypted"]).read_bytes())
    k = write_hex_key(tmp_path / "k", BY_ID["p65"]["key_hex"])
    result = run("decrypt", tmp_path / "app", tmp_path / "out", "--key-file", k)
    assert result.code == 0, result
    for vid in ("p65", "rewrites", "realm_db"):
        assert (tmp_path / "out" / f"{vid}.realm").read_bytes() == vector_path(BY_ID[vid]["plaintext"]).read_bytes()
    wrong = write_hex_key(tmp_path / "k2", BY_ID["key2"]["key_hex"])
    assert run("decrypt", tmp_path / "app", tmp_path / "out2", "--key-file", wrong).code == ExitCode.WRONG_KEY


CIPHERTEXTS = sorted({v["encrypted"] for v in VECTORS if v["id"] != "plain_realm_with_key"}
                     - {"empty.enc", "cut_tail.enc"})


@pytest.mark.parametrize("name", CIPHERTEXTS)
def test_encrypt_refuses_every_realm_core_ciphertext(tmp_path, name):
    """Encrypting an encrypted Realm file twice is refused, whatever its counters (wrapped,
    tampered) -- every vector but the lone empty IV table and the one cut mid-page."""
    source = tmp_path / "already.realm"
    source.write_bytes(vector_path(name).read_bytes())
    with pytest.raises(AlreadyEncrypted):
        offline.encrypt(str(source), str(tmp_path / "twice.realm"), Key.generate())


def test_random_and_plain_sources_are_not_taken_for_ciphertext(tmp_path):
    rng = random.Random(7)
    sources = [rng.randbytes(rng.choice([2, 3, 17]) * PAGE_SIZE) for _ in range(200)]
    sources += [vector_path(v["plaintext"]).read_bytes() for v in VECTORS if v.get("plaintext")]
    for number, data in enumerate(sources):
        source = tmp_path / f"s{number}.realm"
        source.write_bytes(data)
        offline.encrypt(str(source), str(tmp_path / f"e{number}.realm"), Key.generate())
