"""Talks to `faultline serve` with python-binary-memcached, a real client of
the memcached binary protocol, and prints one line per check.

Usage: python bmemcached_check.py HOST:PORT
"""
import sys

import bmemcached

address = sys.argv[1]
client = bmemcached.Client((address,))

def check(name, got, want):
    status = "ok" if got == want else "MISMATCH"
    print(f"{status} {name}: got {got!r:.60} want {want!r:.60}")
    return got == want

good = True
good &= check("set", client.set("greeting", "hello"), True)
good &= check("get", client.get("greeting"), "hello")
good &= check("replace", client.replace("greeting", "bonjour"), True)
good &= check("get after replace", client.get("greeting"), "bonjour")
good &= check("add existing", client.add("greeting", "hi"), False)
good &= check("delete", client.delete("greeting"), True)
good &= check("get deleted", client.get("greeting"), None)
client.set("counter", 10)
good &= check("incr", client.incr("counter", 5), 15)
good &= check("decr", client.decr("counter", 20), 0)
big = bytes((i % 251 for i in range(500 * 1024)))
good &= check("set 500 KiB", client.set("big", big), True)
got = client.get("big")
good &= check("get 500 KiB", (len(got), got == big), (len(big), True))
multi = {f"k{i}": f"v{i}" for i in range(20)}
# set_multi answers the keys it could not store.
good &= check("set_multi failures", list(client.set_multi(multi)), [])
good &= check("get_multi", client.get_multi(list(multi)), multi)
stats = client.stats()
server_stats = next(iter(stats.values()))
good &= check("stats has version", "version" in server_stats, True)
print("all checks passed" if good else "some checks failed")
sys.exit(0 if good else 1)
