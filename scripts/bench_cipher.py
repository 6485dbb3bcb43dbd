#!/usr/bin/env python3
"""Page-cipher benchmark: realmfs's crypto, pure and through EncryptedFile, beside OpenSSL.

    python3 scripts/bench_cipher.py            # about 40 s
    python3 scripts/bench_cipher.py --quick    # about 10 s

Measures, in one run on this machine:

* pure layer (realmfs/format/pagecipher.py): PageCipher.seal_page (AES-256-CBC encrypt + HMAC-SHA224
  of one 4 KiB page), and verify+decrypt (classify + decrypt_pages, 32 pages a batch);
  then the batch forms EncryptedFile uses, 32 pages a call: seal_pages, and
  slot1_ivs + decrypt_in_place;
* EncryptedFile on a temporary file (page cache, no fsync): sequential 128 KiB writes and
  reads, random 4 KiB rewrites and reads; the same I/O on a plain file beside it;
* ``openssl speed -evp aes-256-cbc`` (encrypt and decrypt) and ``-evp sha224`` at 16384-byte
  blocks, the C ceiling for the same primitives.

Prints MB/s (10^6 bytes of plaintext per second) and ratios: to OpenSSL's AES-256-CBC, to
OpenSSL's "AES then SHA-224 over the same bytes" (1 / (1/aes + 1/sha)), and for file I/O to
the plain file. A benchmark, not a test: no thresholds.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realmfs.format.layout import PAGE_SIZE  # noqa: E402
from realmfs.format.pagecipher import EMPTY_ENTRY, PageCipher, ReadResult, page_iv  # noqa: E402
from realmfs.storage.pagefile import EncryptedFile  # noqa: E402

MB = 1e6
BATCH = 32


def openssl_speed(algorithm: str, seconds: int, decrypt: bool = False) -> float | None:
    """Bytes per second of ``openssl speed -evp ALG`` at 16384-byte blocks, or None."""
    command = ["openssl", "speed", "-mr", "-elapsed", "-seconds", str(seconds), "-bytes", "16384"]
    if decrypt:
        command.append("-decrypt")
    command += ["-evp", algorithm]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    sizes: list[str] = []
    for line in output.splitlines():
        if line.startswith("+H:"):
            sizes = line[3:].split(":")
        elif line.startswith("+F:") and sizes:
            values = line.split(":")[3:]
            if "16384" in sizes and len(values) == len(sizes):
                return float(values[sizes.index("16384")])
    return None


def timed(run, budget: float) -> tuple[float, int]:
    """Call ``run()`` (returns bytes done) until ``budget`` seconds pass; (seconds, bytes)."""
    done = 0
    start = time.perf_counter()
    while True:
        done += run()
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return elapsed, done


def rate(budget: float, run) -> float:
    elapsed, done = timed(run, budget)
    return done / elapsed


def bench_pure(budget: float) -> dict[str, float]:
    cipher = PageCipher(os.urandom(64))
    plain = [os.urandom(PAGE_SIZE) for _ in range(BATCH)]
    results = {}

    def seal():
        for page, data in enumerate(plain):
            cipher.seal_page(data, EMPTY_ENTRY, page, None)
        return BATCH * PAGE_SIZE
    results["seal_page (encrypt+MAC)"] = rate(budget, seal)

    sealed = [cipher.seal_page(data, EMPTY_ENTRY, page, None) for page, data in enumerate(plain)]
    joined = b"".join(c for c, _ in sealed)
    view = memoryview(joined)

    def open_batch():
        ivs = []
        for page, (_, entry) in enumerate(sealed):
            result, counter = cipher.classify(entry, view[page * PAGE_SIZE:(page + 1) * PAGE_SIZE], page, None)
            assert result is ReadResult.SUCCESS
            ivs.append(page_iv(counter, page))
        cipher.decrypt_pages(view, ivs)
        return BATCH * PAGE_SIZE
    results["classify+decrypt_pages x32 (verify+decrypt)"] = rate(budget, open_batch)

    # the batch forms EncryptedFile uses: one call per group of 32 pages
    joined_plain = b"".join(plain)
    meta = bytearray(BATCH * 64)

    def seal_batch():
        cipher.seal_pages(joined_plain, meta, 0, None)
        return BATCH * PAGE_SIZE
    results["seal_pages x32 (encrypt+MAC)"] = rate(budget, seal_batch)

    batch_ciphertext, sealed_meta, _ = cipher.seal_pages(joined_plain, meta, 0, None)
    batch_ciphertext = bytes(batch_ciphertext)
    work = bytearray(len(batch_ciphertext))

    def open_pages():
        work[:] = batch_ciphertext
        ivs = cipher.slot1_ivs(work, sealed_meta, 0, 0, BATCH, None)
        cipher.decrypt_in_place(work, ivs)
        return BATCH * PAGE_SIZE
    results["check+decrypt_in_place x32 (verify+decrypt)"] = rate(budget, open_pages)
    assert bytes(work) == joined_plain
    assert cipher.decrypt_pages(view, [page_iv(e.iv1, p) for p, (_, e) in enumerate(sealed)]) == b"".join(plain)
    return results


def bench_files(directory: str, budget: float, file_size: int) -> dict[str, tuple[float, float]]:
    """(realmfs MB/s, plain MB/s) for each file workload."""
    cipher = PageCipher(os.urandom(64))
    results = {}
    chunk = 128 * 1024
    data = os.urandom(chunk)
    small = os.urandom(PAGE_SIZE)
    rnd = random.Random(1)
    pages = file_size // PAGE_SIZE

    def workloads(write, read):
        def seq_write():
            for offset in range(0, file_size, chunk):
                write(offset, data)
            return file_size

        def seq_read():
            for offset in range(0, file_size, chunk):
                read(offset, chunk)
            return file_size

        def rand_write():
            for _ in range(256):
                write(rnd.randrange(pages) * PAGE_SIZE, small)
            return 256 * PAGE_SIZE

        def rand_read():
            for _ in range(256):
                read(rnd.randrange(pages) * PAGE_SIZE, PAGE_SIZE)
            return 256 * PAGE_SIZE
        return {"sequential 128 KiB write": seq_write, "sequential 128 KiB read": seq_read,
                "random 4 KiB write": rand_write, "random 4 KiB read": rand_read}

    for realm in (False, True):
        path = os.path.join(directory, "bench.realm" if realm else "bench.bin")
        plain_path = os.path.join(directory, "plain.bin")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        plain_fd = os.open(plain_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            f = EncryptedFile(fd, cipher, realm_layout=realm, name=path)
            encrypted = workloads(f.write, f.read)
            plain = workloads(lambda o, d: os.pwrite(plain_fd, d, o), lambda o, n: os.pread(plain_fd, n, o))
            layout = ".realm" if realm else "header"
            for name in encrypted:
                results[f"{layout}: {name}"] = (rate(budget, encrypted[name]), rate(budget, plain[name]))
            f.close()
        finally:
            os.close(fd)
            os.close(plain_fd)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 10 s instead of about 40 s")
    parser.add_argument("--dir", default=None, help="directory for the temporary files (default: $TMPDIR)")
    args = parser.parse_args()
    budget = 0.4 if args.quick else 1.5
    seconds = 1 if args.quick else 3
    file_size = (8 if args.quick else 32) * 1024 * 1024
    started = time.perf_counter()

    aes = openssl_speed("aes-256-cbc", seconds)
    aes_dec = openssl_speed("aes-256-cbc", seconds, decrypt=True)
    sha = openssl_speed("sha224", seconds)
    both = 1 / (1 / aes + 1 / sha) if aes and sha else None
    both_dec = 1 / (1 / aes_dec + 1 / sha) if aes_dec and sha else None

    def show(value):
        return f"{value / MB:9.1f}" if value else "      n/a"

    print(f"openssl speed, 16384-byte blocks ({seconds} s each):")
    print(f"  aes-256-cbc encrypt {show(aes)} MB/s   decrypt {show(aes_dec)} MB/s   sha224 {show(sha)} MB/s")
    print(f"  aes-256-cbc then sha224 over the same bytes: encrypt+MAC {show(both)} MB/s, "
          f"verify+decrypt {show(both_dec)} MB/s")
    print()

    def ratio(value, reference):
        return f"{value / reference:6.2f}" if reference else "   n/a"

    pure = bench_pure(budget)
    print(f"{'pure layer (4 KiB pages)':46} {'MB/s':>9} {'/aes':>6} {'/aes+sha':>8}")
    for name, value in pure.items():
        decrypting = "decrypt" in name.split("(")[-1]
        reference = aes_dec if decrypting and "verify" in name else aes
        combined = both_dec if "verify" in name else both
        print(f"  {name:44} {show(value)} {ratio(value, reference)} {ratio(value, combined):>8}")
    print()

    directory = tempfile.mkdtemp(prefix="realmfs-bench-", dir=args.dir)
    try:
        files = bench_files(directory, budget, file_size)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"{'EncryptedFile (page cache, no fsync)':46} {'MB/s':>9} {'/aes':>6} {'/aes+sha':>8} "
          f"{'plain MB/s':>10} {'/plain':>7}")
    for name, (value, plain) in files.items():
        reading = name.endswith("read")
        print(f"  {name:44} {show(value)} {ratio(value, aes_dec if reading else aes)} "
              f"{ratio(value, both_dec if reading else both):>8} {show(plain):>10} {ratio(value, plain):>7}")
    print()
    print(f"({time.perf_counter() - started:.0f} s; ratios are realmfs / reference, higher is better; "
          "decrypt ratios use openssl's decrypt figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
