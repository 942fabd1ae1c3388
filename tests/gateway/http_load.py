#!/usr/bin/python3
"""The gateway under many connections: 1,000 idle keep-alive connections
plus 32 busy ones are all served, fresh requests keep being answered, a
connection beyond --max-connections gets 503 at once, idle connections
close after --keep-alive-timeout-ms and at shutdown.

All connections come from 127.0.0.1, so the per-peer cap is raised with
--max-connections-per-peer (it exists against one abusive address; e2e.py
tests it). Latencies are printed ("# ..." lines), never asserted.

Usage: http_load.py WORKDIR   (from the repository root, in tests/run-all's
environment: PGHOST/PGPORT name the run's cluster)
"""
import multiprocessing
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_harness import (Cluster, case, connect, exchange, finish, note, percentile,  # noqa: E402
                          problem, read_response, report, start_gateway, stop_gateway)

WORK = sys.argv[1]
IDLE = 1000
BUSY = 32
LIMIT = 1100
PROBES = 150
# Busy clients call /v1/me (database work, like the wrk run); with
# HTTP_LOAD_BUSY_HEALTHZ_EVERY=N every Nth hammers /healthz instead (which
# saturates the CPU: a measurement of the scheduler more than of the gateway).
BUSY_HEALTHZ_EVERY = int(os.environ.get("HTTP_LOAD_BUSY_HEALTHZ_EVERY", "0"))


def busy_path(i):
    return "/healthz" if BUSY_HEALTHZ_EVERY and i % BUSY_HEALTHZ_EVERY == 0 else "/v1/me"


def metrics(port):
    """/metrics as {"name{labels}": value}."""
    s = connect(port)
    status, headers, body = exchange(s, "GET", "/metrics")
    s.close()
    assert status == 200, status
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def busy_process(port, auth, indexes, stop, results):
    """Keep-alive clients hammering busy_path(i) until stop; puts
    ([(i, requests answered)], [errors]) on results."""
    counts = {i: 0 for i in indexes}
    errors = []

    def busy(i):
        path = busy_path(i)
        headers = auth if path == "/v1/me" else {}
        s = None
        try:
            while not stop.is_set():
                if s is None:
                    s = connect(port, timeout=30)
                status, answer_headers, body = exchange(s, "GET", path, headers)
                if status != 200:
                    errors.append((path, status, body[:200]))
                    return
                counts[i] += 1
                if answer_headers.get("connection") == "close":  # keep-alive max count
                    s.close()
                    s = None
        except Exception as e:
            errors.append(repr(e))
    threads = [threading.Thread(target=busy, args=(i,)) for i in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((list(counts.items()), errors))


def main():
    cluster = Cluster.of_run()
    conninfo, key = cluster.api_database("http_load")
    gw, port = start_gateway(WORK, "gw-load", [
        "--database-url", conninfo, "--pool-size", "8", "--max-connections", str(LIMIT),
        "--max-connections-per-peer", "5000", "--keep-alive-timeout-ms", "120000"])
    auth = {"Authorization": "Bearer " + key}
    idle = []

    @case("load_1000_idle_keep_alive_connections_open_at_once")
    def _():
        t0 = time.monotonic()
        for _ in range(IDLE):
            s = connect(port)
            status, _, body = exchange(s, "GET", "/healthz")
            assert status == 200, (status, body)
            idle.append(s)
        note("opened %d keep-alive connections (one request each) in %.2f s"
             % (IDLE, time.monotonic() - t0))
        m = metrics(port)
        assert m["tenancy_http_connections_open"] >= IDLE, m["tenancy_http_connections_open"]
        with open("/proc/%d/status" % gw.pid) as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        note("worker threads: %d; gateway resident memory %s, address space %s" % (
            m["tenancy_http_worker_threads"], status["VmRSS"].strip(), status["VmSize"].strip()))

    @case("load_fresh_requests_answered_while_32_connections_are_busy")
    def _():
        # The busy clients run in two other processes, so the probes here do
        # not wait for Python's interpreter lock behind them.
        ctx = multiprocessing.get_context("fork")
        stop = ctx.Event()
        results = ctx.Queue()
        procs = [ctx.Process(target=busy_process, args=(port, auth, range(k, BUSY, 2), stop, results))
                 for k in range(2)]
        for p in procs:
            p.start()
        time.sleep(0.5)
        lat = {"/healthz": [], "/v1/me": []}
        statuses = []
        t0 = time.monotonic()
        for i in range(PROBES):
            path, headers = ("/v1/me", auth) if i % 3 == 2 else ("/healthz", {})
            start = time.monotonic()
            s = connect(port)
            status, _, body = exchange(s, "GET", path, headers)
            lat[path].append(time.monotonic() - start)
            s.close()
            statuses.append((path, status))
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        stop.set()
        busy_counts, busy_errors = [], []
        for _ in procs:
            counts, errors = results.get(timeout=60)
            busy_counts += counts
            busy_errors += errors
        for p in procs:
            p.join(60)
        for path, values in lat.items():
            note("fresh %s on a new connection, %d probes beside %d idle + %d busy connections: "
                 "p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (
                     path, len(values), IDLE, BUSY, 1000 * percentile(values, 50),
                     1000 * percentile(values, 99), 1000 * max(values)))
        me = [n for i, n in busy_counts if busy_path(i) == "/v1/me"]
        note("busy connections answered %d requests in %.1f s; the %d on /v1/me %d (%.0f/s, "
             "%.1f ms each on average)" % (
                 sum(n for _, n in busy_counts), elapsed, len(me), sum(me),
                 sum(me) / elapsed, 1000 * len(me) * elapsed / max(1, sum(me))))
        busy_counts = [n for _, n in busy_counts]
        assert not busy_errors, busy_errors[:3]
        assert all(status == 200 for _, status in statuses), \
            [x for x in statuses if x[1] != 200][:5]
        assert len(busy_counts) == BUSY and all(n > 0 for n in busy_counts), busy_counts

    @case("load_idle_connections_still_served_afterwards")
    def _():
        for s in idle:
            status, _, _ = exchange(s, "GET", "/healthz")
            assert status == 200, status

    extra = []

    @case("limit_503_at_once_beyond_max_connections")
    def _():
        # Fill up to the limit; the next connection is answered before it
        # sends anything (never queued), with 503 and Retry-After, then closed.
        refused = None
        for _ in range(LIMIT + 50):
            s = connect(port)
            s.settimeout(0.05)
            try:
                refused = read_response(s)  # nothing sent: only a refusal answers
                s.close()
                break
            except socket.timeout:  # no answer yet: admitted, waiting for our request
                pass
            s.settimeout(10)
            try:
                answer = exchange(s, "GET", "/healthz")
            except (ConnectionResetError, BrokenPipeError):
                # A refusal slower than 50 ms: the server closed with our
                # request unread, so its answer may be lost to the reset.
                refused = "reset"
                s.close()
                break
            if answer[0] != 200:
                refused = answer
                s.close()
                break
            extra.append(s)
        assert refused, "no connection was refused up to %d" % (LIMIT + 50)
        note("open connections when refused: %d (limit %d)" % (len(idle) + len(extra), LIMIT))
        assert len(idle) + len(extra) <= LIMIT
        if refused != "reset":
            assert refused[0] == 503, refused
        # Every further connection is answered before it sends anything
        # (never queued): 503 problem with Retry-After, then closed.
        for _ in range(5):
            s = connect(port)
            t0 = time.monotonic()
            status, headers, body = read_response(s)
            note("refusal answered after %.1f ms" % (1000 * (time.monotonic() - t0)))
            assert status == 503, (status, body)
            problem(503, headers, body, "too_many_connections")
            assert headers.get("retry-after") == "1", headers
            assert headers.get("connection") == "close", headers
            assert s.recv(100) == b"", "a refused connection stayed open"
            s.close()

    @case("limit_admits_again_once_connections_close")
    def _():
        for s in idle[:20]:
            s.close()
        del idle[:20]

        def admitted():
            s = connect(port)
            status, _, _ = exchange(s, "GET", "/healthz")
            s.close()
            return status == 200
        from http_harness import poll
        poll(admitted, 20, "a connection admitted again")
        m = metrics(port)
        assert m['tenancy_http_connections_refused_total{reason="limit"}'] >= 6, m
        assert m['tenancy_http_requests_total{route="/healthz",method="GET",status="200"}'] >= IDLE

    @case("sigterm_closes_idle_connections_and_exits_0")
    def _():
        t0 = time.monotonic()
        code = stop_gateway(gw, 60)
        note("stopped with %d idle connections open in %.2f s" % (len(idle) + len(extra),
                                                                  time.monotonic() - t0))
        assert code == 0, code
        for s in idle[:50] + extra[:50]:
            s.settimeout(10)
            assert s.recv(100) == b"", "an idle connection was not closed"
        for s in idle + extra:
            s.close()

    @case("keep_alive_idle_timeout_closes_an_idle_connection")
    def _():
        proc, p2 = start_gateway(WORK, "gw-idle", ["--database-url", conninfo,
                                                   "--keep-alive-timeout-ms", "300"])
        s = connect(p2)
        status, headers, _ = exchange(s, "GET", "/healthz")
        assert status == 200, status
        s.settimeout(30)
        t0 = time.monotonic()
        assert s.recv(100) == b"", "data instead of a close"
        note("idle connection closed after %.2f s (timeout 0.3 s)" % (time.monotonic() - t0))
        s.close()
        assert stop_gateway(proc) == 0


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        report(False, "setup", "%s: %s" % (type(e).__name__, e))
    finish()
