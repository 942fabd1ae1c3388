#!/usr/bin/python3
"""Gateway request latency on one node and through a Citus coordinator.

Usage (from the repository root, PG_CONFIG exported, the extension installed):
    bench/citus/gateway_latency.py WORKDIR COORD_SOCKET_DIR COORD_PORT [requests]
The Citus cluster must be running with tenancy distributed, e.g. kept by
    KEEP_TEST_DIR=1 CITUS_KEEP_RUNNING=1 tests/run-all 60_citus
(which prints the coordinator's directory and port). The baseline is a
single-node cluster that tests/gateway/gwlib.py makes in WORKDIR.

Both get the same data: a main account with 40 subaccounts (and 2 below
each), an owner API key and the owner's session token. Then the same
requests, sequential, one client, with each credential: GET /v1/me,
GET /v1/accounts?limit=50 (rows fetched: 50), GET /v1/accounts/{id}.
Prints the median and p95 in ms per request kind and place, and the ratio.
GATEWAY=path runs another build of the gateway (an older one, to compare).
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.getcwd(), "tests", "gateway"))
import gwlib  # noqa: E402

gwlib.GATEWAY = os.environ.get("GATEWAY", gwlib.GATEWAY)

work, coord_dir, coord_port = sys.argv[1], sys.argv[2], sys.argv[3]
requests = int(sys.argv[4]) if len(sys.argv) > 4 else 300


def setup(gw, tag):
    email = "bench-%s-%d@example.test" % (tag, os.getpid())
    main, session = gw.main_account("Bench " + tag, email, "a long enough password", "enterprise")
    key = gw.api_key(main)
    gw.sql("BEGIN; SELECT tenancy.authenticate('%s'); "
           "SELECT tenancy.create_account('%s', 'Team ' || i) FROM generate_series(1, 40) i; COMMIT"
           % (key, main))
    gw.sql("BEGIN; SELECT tenancy.authenticate('%s'); "
           "WITH t AS MATERIALIZED (SELECT public_id FROM tenancy.accounts WHERE name LIKE 'Team %%' "
           "AND main_id = (SELECT main_id FROM tenancy.accounts WHERE public_id = '%s')) "
           "SELECT tenancy.create_account(t.public_id, 'Sub ' || i) FROM generate_series(1, 2) i, t; COMMIT"
           % (key, main))
    return main, key, session


def measure(gw, main, key, session):
    paths = {"me": "/v1/me", "list50": "/v1/accounts?limit=50", "get": "/v1/accounts/" + main}
    out = {}
    for kind, token in [("key", key), ("session", session)]:
        for name, path in paths.items():
            for _ in range(20):  # warm the pool's connections and plans
                gw.call("GET", path, token=token)
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                r = gw.call("GET", path, token=token)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status == 200, r
            times.sort()
            out[kind + " " + name] = (statistics.median(times), times[int(len(times) * 0.95) - 1])
    return out


results = {}
os.environ.pop("GWLIB_CITUS", None)
single = gwlib.Gateway(work, "bench-single")
try:
    results["one node"] = measure(single, *setup(single, "single"))
finally:
    single.stop()
os.environ["GWLIB_CITUS"] = "%s %s" % (coord_dir, coord_port)
citus = gwlib.Gateway(work, "bench-citus-%d" % os.getpid())
try:
    results["citus"] = measure(citus, *setup(citus, "citus"))
finally:
    citus.stop()

print("%-14s %18s %18s %8s" % ("request", "one node med/p95", "citus med/p95", "ratio"))
for name in results["one node"]:
    (a, ap), (b, bp) = results["one node"][name], results["citus"][name]
    print("%-14s %8.2f / %7.2f %8.2f / %7.2f %7.1fx" % (name, a, ap, b, bp, b / a))
