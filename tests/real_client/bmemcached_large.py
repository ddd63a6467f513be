"""Moves large values through `faultline proxy` with python-binary-memcached
and checks, with the proxy's STAT `spliced_bytes`, whether their bytes went
through splice(); prints one line per check.

Usage: python bmemcached_large.py HOST:PORT [MODE]

MODE is one of
  --expect-splice (the default): each large GET adds at least 800000
      bytes to `spliced_bytes`, the first on a backend connection and the
      later ones, whose bytes are in the socket before the proxy reads;
  --expect-no-splice (a proxy started with --no-splice): `spliced_bytes`
      never moves.
Every value is checked byte for byte in every mode.
"""
import random
import sys

import bmemcached

address = sys.argv[1]
mode = sys.argv[2] if len(sys.argv) > 2 else "--expect-splice"
MODES = ("--expect-splice", "--expect-no-splice")
if mode not in MODES:
    sys.exit(f"unknown mode {mode!r}, expected one of {MODES}")
expect_splice = mode != "--expect-no-splice"

client = bmemcached.Client((address,))

def check(name, got, want):
    status = "ok" if got == want else "MISMATCH"
    print(f"{status} {name}: got {got!r:.60} want {want!r:.60}")
    return got == want

def spliced_bytes():
    """The proxy's STAT spliced_bytes, or None when it is missing."""
    stats = client.stats()
    server_stats = next(iter(stats.values()))
    value = server_stats.get("spliced_bytes")
    return None if value is None else int(value)

def splice_check(name, before, after, min_growth):
    """Checks the growth of spliced_bytes for the mode."""
    grew = after - before
    if not expect_splice:
        return check(name, grew, 0)
    return check(f"{name} (grew {grew})", grew >= min_growth, True)

def pattern(seed, size):
    # Pseudo-random bytes: no repetition for zlib (or a proxy bug that
    # repeats a chunk) to hide behind.
    return random.Random(seed).randbytes(size)

good = True
start = spliced_bytes()
good &= check("stats has spliced_bytes", start is not None, True)
start = start or 0

def check_get(name, key, want):
    """GETs `key` and checks the value byte for byte (its length shown)."""
    got = client.get(key)
    return check(name, (len(got or b""), got == want), (len(want), True))

big = pattern(1, 900 * 1024)
# compress_level=0: the value travels as it is, every byte of it.
good &= check("set 900 KiB", client.set("big", big, compress_level=0), True)
after_set = spliced_bytes()
good &= check_get("get 900 KiB", "big", big)
after_get = spliced_bytes()
good &= splice_check("spliced_bytes after get 900 KiB", after_set, after_get, 800_000)

# A different large value, then the first again on the same connection:
# each response starts where the previous one ended.
other = pattern(2, 1000 * 1024)
good &= check("set 1000 KiB", client.set("other", other, compress_level=0), True)
before = spliced_bytes()
good &= check_get("get 1000 KiB", "other", other)
good &= check_get("get 900 KiB again", "big", big)
after = spliced_bytes()
good &= splice_check(
    "spliced_bytes after both gets",
    before,
    after,
    2 * 800_000,
)

# A small value after the large ones.
good &= check("set small", client.set("small", "tiny"), True)
good &= check("get small", client.get("small"), "tiny")
end = spliced_bytes()
print(f"spliced_bytes: {start} at start, {end} at the end")
if not expect_splice:
    good &= check("spliced_bytes over the whole run", end - start, 0)
print("all checks passed" if good else "some checks failed")
sys.exit(0 if good else 1)
