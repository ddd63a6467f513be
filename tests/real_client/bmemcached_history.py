"""Records a concurrent history against a memcached server with
python-binary-memcached and writes it as JSON lines, one operation a line,
in the format `faultline check-history` reads.

Usage: python bmemcached_history.py HOST:PORT OUT.jsonl [THREADS] [OPS]

Each thread is a client with its own connection; they share a few keys and
one counter. Times are microseconds of one monotonic clock. The operations
are those whose answers this client library tells apart: GET (`gets`, with
the CAS), SET, ADD, REPLACE and CAS (with `get_cas=True`: the new CAS), and
INCR (the new value; the library does not return its CAS). DELETE is left
out: the library answers True both when it deleted and when the key was
missing. Keys are created before the threads start and never deleted, so a
refused CAS means "exists" and a refused ADD too.
"""
import json
import random
import sys
import threading
import time

import bmemcached

address = sys.argv[1]
out_path = sys.argv[2]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 4
ops = int(sys.argv[4]) if len(sys.argv) > 4 else 150

KEYS = ["history:k0", "history:k1", "history:k2"]
COUNTER = "history:n0"

lines = []
lines_lock = threading.Lock()


def now_us():
    return time.monotonic_ns() // 1000


def record(process, key, op, args, result, invoke, complete):
    line = {
        "process": process,
        "key": key,
        "op": op,
        "args": args,
        "result": result,
        "invoke": invoke,
        "complete": complete,
    }
    with lines_lock:
        lines.append(line)


def stored(success_and_cas, refusal):
    success, cas = success_and_cas
    return {"cas": cas} if success else refusal


def setup(client):
    for key in KEYS:
        invoke = now_us()
        result = client.set(key, "initial", get_cas=True)
        record(0, key, "set", {"value": "initial"}, stored(result, None), invoke, now_us())


def run(process, seed):
    client = bmemcached.Client((address,))
    rng = random.Random(seed)
    seen = {}
    for n in range(ops):
        key = rng.choice(KEYS)
        value = f"p{process}-{n}"
        roll = rng.randrange(100)
        invoke = now_us()
        if roll < 35:
            got, cas = client.gets(key)
            complete = now_us()
            seen[key] = cas
            result = "not_found" if got is None else {"value": got, "cas": cas}
            record(process, key, "get", {}, result, invoke, complete)
        elif roll < 55:
            result = stored(client.set(key, value, get_cas=True), None)
            record(process, key, "set", {"value": value}, result, invoke, now_us())
        elif roll < 75 and key in seen:
            cas = seen[key]
            result = stored(client.cas(key, value, cas, get_cas=True), "exists")
            record(process, key, "cas", {"value": value, "cas": cas}, result, invoke, now_us())
        elif roll < 82:
            result = stored(client.add(key, value, get_cas=True), "exists")
            record(process, key, "add", {"value": value}, result, invoke, now_us())
        elif roll < 88:
            result = stored(client.replace(key, value, get_cas=True), "not_found")
            record(process, key, "replace", {"value": value}, result, invoke, now_us())
        else:
            got = client.incr(COUNTER, 1, default=0)
            complete = now_us()
            args = {"delta": 1, "initial": 0}
            record(process, COUNTER, "incr", args, {"value": got}, invoke, complete)
    client.disconnect_all()


setup(bmemcached.Client((address,)))
workers = [threading.Thread(target=run, args=(p, p)) for p in range(1, threads + 1)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
lines.sort(key=lambda line: line["invoke"])
with open(out_path, "w") as out:
    for line in lines:
        out.write(json.dumps(line) + "\n")
print(f"recorded {len(lines)} operations from {threads} clients")
