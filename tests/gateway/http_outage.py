#!/usr/bin/python3
"""A database outage under load: a few clients call /v1/me and /readyz while
the gateway's own cluster is stopped and started again, then frozen (every
server process SIGSTOPped: no answer at all) and thawed. Every answer is 200
or a 503 problem with Retry-After, no request hangs (each is bounded by the
pool timeout plus the statement timeout), /healthz keeps answering, and the
gateway recovers by itself.

Usage: http_outage.py WORKDIR   (from the repository root, PG_CONFIG exported)
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_harness import (Cluster, case, connect, exchange, finish, note, poll,  # noqa: E402
                          report, start_gateway, stop_gateway)

WORK = sys.argv[1]
CLIENTS = 4
POOL_TIMEOUT_MS = 1000
STATEMENT_TIMEOUT_MS = 2000
# Far beyond what a request may take (a pool wait, or a fresh connection:
# libpq's connect_timeout of 2 s, then setup statements bounded by the
# statement timeout + 1 s; measured at most ~5 s here): only a hang reaches
# it. The freeze lasts longer, so a request that waited for the database to
# come back would be caught.
HANG_S = (POOL_TIMEOUT_MS + STATEMENT_TIMEOUT_MS) / 1000.0 + 9
FREEZE_S = float(os.environ.get("HTTP_OUTAGE_FREEZE_S", str(HANG_S + 2)))


def cluster_pids(cluster):
    """The postmaster and its children (this test's own cluster)."""
    with open(os.path.join(cluster.own_dir, "data", "postmaster.pid")) as f:
        postmaster = int(f.readline())
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True,
                              timeout=10).stdout.split()
    return [postmaster] + [int(c) for c in children]


def signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def main():
    cluster = Cluster.own(os.path.join(WORK, "gw-outage-pg"))
    try:
        run(cluster)
    finally:
        if cluster.running():
            cluster.op("cluster_stop")


def run(cluster):
    conninfo, key = cluster.api_database("http_outage")
    gw, port = start_gateway(WORK, "gw-outage", [
        "--database-url", conninfo, "--pool-size", "4", "--pool-timeout-ms", str(POOL_TIMEOUT_MS),
        "--statement-timeout-ms", str(STATEMENT_TIMEOUT_MS)])
    auth = {"Authorization": "Bearer " + key}
    answers = []  # (phase, path, status, retry-after, code, seconds)
    phase = {"now": "before"}
    stop = threading.Event()
    lock = threading.Lock()

    def client(i):
        path, headers = ("/readyz", {}) if i == 0 else ("/v1/me", auth)
        s = None
        while not stop.is_set():
            try:
                if s is None:
                    s = connect(port, timeout=HANG_S)
                t0 = time.monotonic()
                status, h, body = exchange(s, "GET", path, headers)
                took = time.monotonic() - t0
                code = json.loads(body).get("code") if status != 200 else None
                with lock:
                    answers.append((phase["now"], path, status, h.get("retry-after"), code, took))
                if status == 0 or h.get("connection") == "close":
                    s.close()
                    s = None
            except Exception as e:  # a hang (socket timeout) or a broken answer
                with lock:
                    answers.append((phase["now"], path, "error", None, repr(e), None))
                if s is not None:
                    s.close()
                s = None
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    healthz = []
    try:
        time.sleep(1)
        phase["now"] = "down"
        cluster.op("cluster_stop")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            s = connect(port)
            healthz.append(exchange(s, "GET", "/healthz")[0])
            s.close()
            time.sleep(0.1)
        phase["now"] = "restarted"
        cluster.op("cluster_start")

        def recovered_after(name):
            def check():
                with lock:
                    tail = [a for a in answers if a[0] == name][-2 * CLIENTS:]
                return len(tail) == 2 * CLIENTS and all(a[2] == 200 for a in tail)
            return check
        poll(recovered_after("restarted"), 30, "every client answered 200 again")
        # A hung database: every server process of the cluster stopped
        # (SIGSTOP), so statements and new connections get no answer at all.
        phase["now"] = "frozen"
        pids = cluster_pids(cluster)
        signal_all(pids, signal.SIGSTOP)
        try:
            time.sleep(FREEZE_S)
        finally:
            phase["now"] = "thawed"
            signal_all(pids, signal.SIGCONT)
        poll(recovered_after("thawed"), 30, "every client answered 200 after the freeze")
        phase["now"] = "after"
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(HANG_S + 5)

    by_phase = {}
    for a in answers:
        by_phase.setdefault((a[0], a[2]), 0)
        by_phase[(a[0], a[2])] += 1
    note("answers by phase and status: %s" % sorted(by_phase.items(), key=str))
    for a in answers:
        if a[5] is not None and a[5] > 2.5:
            note("slow answer: %r" % (a,))
    for path in ("/v1/me", "/readyz"):
        slowest = max((a for a in answers if a[1] == path and a[5] is not None),
                      key=lambda a: a[5], default=None)
        note("slowest %s answer: %r (pool timeout %.1f s, statement timeout %.1f s)"
             % (path, slowest, POOL_TIMEOUT_MS / 1000.0, STATEMENT_TIMEOUT_MS / 1000.0))

    @case("outage_every_answer_is_200_or_503_with_retry_after")
    def _():
        bad = [a for a in answers if a[2] != 200 and not (
            a[2] == 503 and a[3] == "1" and a[4] in ("database_unavailable", "database_timeout"))]
        assert not bad, bad[:5]
        for name in ("down", "frozen"):
            during = [a for a in answers if a[0] == name]
            assert any(a[2] == 503 for a in during), "no 503 while %s: %r" % (name, during[:5])

    @case("outage_no_request_hangs")
    def _():
        errors = [a for a in answers if a[2] == "error"]
        assert not errors, errors[:5]

    @case("outage_healthz_answers_while_the_database_is_down")
    def _():
        assert healthz and all(s == 200 for s in healthz), healthz

    @case("outage_recovers_by_itself")
    def _():
        after = [a for a in answers if a[0] == "after"]
        assert after and all(a[2] == 200 for a in after), after[:5]
        assert stop_gateway(gw) == 0


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        report(False, "setup", "%s: %s" % (type(e).__name__, e))
    finish()
