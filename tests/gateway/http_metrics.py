#!/usr/bin/python3
"""GET /metrics: Prometheus text format 0.0.4, unauthenticated; every answer
(404, 405, 408, 413 and refusals included) is counted under its route
template or "unmatched", never under its raw path; the latency histogram is
consistent; the database pool's and the connections' gauges are there.

Usage: http_metrics.py WORKDIR   (from the repository root, in tests/run-all's
environment)
"""
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_harness import (Cluster, case, connect, exchange, finish, poll,  # noqa: E402
                          read_response, report, start_gateway, stop_gateway)

WORK = sys.argv[1]

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABELS = r'\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)?\}'
SAMPLE = re.compile(r"^(%s)(%s)? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$" % (NAME, LABELS))
HELP = re.compile(r"^# HELP (%s) .+$" % NAME)
TYPE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % NAME)


def parse(text):
    """Checks the text format strictly; returns ({series: value}, {family: type})."""
    samples, types, helped, seen_families = {}, {}, set(), []
    current = None
    assert text.endswith("\n"), "no final newline"
    for line in text.splitlines():
        m = HELP.match(line)
        if m:
            assert m.group(1) not in helped, "second HELP for " + m.group(1)
            helped.add(m.group(1))
            continue
        m = TYPE.match(line)
        if m:
            family = m.group(1)
            assert family not in types, "second TYPE for " + family
            assert family in helped, "TYPE before HELP for " + family
            types[family] = m.group(2)
            seen_families.append(family)
            current = family
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name = m.group(1)
        family = name
        if types.get(current) == "histogram" and re.match(re.escape(current) + r"_(bucket|sum|count)$", name):
            family = current
        assert family == current, "sample %s outside its family block (%s)" % (name, current)
        series = name + (m.group(2) or "")
        assert series not in samples, "duplicate series " + series
        samples[series] = float(m.group(3))
    return samples, types


def get_metrics(port):
    s = connect(port)
    status, headers, body = exchange(s, "GET", "/metrics")
    s.close()
    assert status == 200, (status, body[:300])
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8", headers
    return parse(body.decode())


def one(port, method, path, headers=None, body=b""):
    s = connect(port)
    status = exchange(s, method, path, headers, body)[0]
    s.close()
    return status


def main():
    cluster = Cluster.of_run()
    conninfo, key = cluster.api_database("http_metrics")
    gw, port = start_gateway(WORK, "gw-metrics", [
        "--database-url", conninfo, "--pool-size", "3", "--request-read-timeout-ms", "500",
        "--max-connections-per-peer", "4"])
    auth = {"Authorization": "Bearer " + key}
    # A request is counted just after its answer is written: let the start
    # probe's count land first.
    time.sleep(0.3)
    before, _ = get_metrics(port)

    def count(samples, route, method, status):
        return samples.get('tenancy_http_requests_total{route="%s",method="%s",status="%d"}'
                           % (route, method, status), 0)

    # The traffic counted below.
    expected = [("/healthz", "GET", 200, 3), ("/v1/me", "GET", 200, 2), ("/v1/me", "GET", 401, 1),
                ("unmatched", "GET", 404, 2), ("unmatched", "POST", 405, 1),
                ("/v1/me", "GET", 408, 1), ("unmatched", "POST", 413, 1)]
    for _ in range(3):
        assert one(port, "GET", "/healthz") == 200
    for _ in range(2):
        assert one(port, "GET", "/v1/me", auth) == 200
    assert one(port, "GET", "/v1/me") == 401
    assert one(port, "GET", "/no/such/route") == 404
    assert one(port, "GET", "/v1/accounts/acc_secret_id_123/nothing") == 404
    assert one(port, "POST", "/healthz") == 405
    # 408: headers that never end within the 0.5 s deadline.
    s = connect(port)
    s.sendall(b"GET /v1/me HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.1)
    s.sendall(b"X-Slow: 1\r\n")
    assert read_response(s)[0] == 408
    s.close()
    # 413: a body over the 1 MiB limit (cpp-httplib reads and discards it).
    s = connect(port)
    body = b"x" * 1100000
    s.sendall(b"POST /v1/me HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert read_response(s)[0] == 413
    s.close()
    # A refusal over the per-peer cap (4) is a connection metric, not a
    # request (from 127.0.0.2, so 127.0.0.1 keeps its own four).
    held = [connect(port, "127.0.0.2") for _ in range(4)]
    time.sleep(0.2)
    extra = connect(port, "127.0.0.2")
    refused = read_response(extra)[0]
    extra.close()
    for h in held:
        h.close()

    @case("metrics_unauthenticated_prometheus_text")
    def _():
        get_metrics(port)  # no Authorization header, strict format check inside

    @case("metrics_requests_counted_by_route_template_and_status")
    def _():
        def all_counted():
            after, types = get_metrics(port)
            done = all(count(after, r, m, st) - count(before, r, m, st) >= n
                       for r, m, st, n in expected)
            return (after, types) if done else None
        after, types = poll(all_counted, 10, "every request counted")
        assert types["tenancy_http_requests_total"] == "counter", types
        for route, method, status, n in expected:
            got = count(after, route, method, status) - count(before, route, method, status)
            assert got == n, (route, method, status, "expected", n, "got", got)
        assert not [s for s in after if "acc_secret_id_123" in s or "/no/such" in s], \
            "a raw path became a label"

    @case("metrics_latency_histogram_consistent")
    def _():
        after, types = get_metrics(port)
        assert types["tenancy_http_request_duration_seconds"] == "histogram", types
        prefix = "tenancy_http_request_duration_seconds"
        labels = 'route="/v1/me",method="GET"'
        buckets = [(k, v) for k, v in after.items()
                   if k.startswith(prefix + "_bucket{" + labels + ",")]
        assert len(buckets) >= 10, buckets
        values = [v for _, v in buckets]
        assert values == sorted(values), "buckets not cumulative: %r" % buckets
        assert buckets[-1][0].endswith('le="+Inf"}'), buckets[-1]
        assert buckets[-1][1] == after[prefix + "_count{" + labels + "}"] >= 4
        assert 0 < after[prefix + "_sum{" + labels + "}"]

    @case("metrics_pool_and_connection_gauges")
    def _():
        after, types = get_metrics(port)
        assert after["tenancy_db_pool_size"] == 3, after.get("tenancy_db_pool_size")
        for g in ("tenancy_db_pool_open", "tenancy_db_pool_in_use", "tenancy_db_pool_idle",
                  "tenancy_db_pool_waiting", "tenancy_http_connections_open",
                  "tenancy_http_worker_threads", "tenancy_http_worker_threads_busy"):
            assert types.get(g) == "gauge" and after[g] >= 0, (g, types.get(g), after.get(g))
        assert after["tenancy_db_pool_open"] >= 1 and after["tenancy_http_connections_open"] >= 1
        assert types["tenancy_http_connections_refused_total"] == "counter"
        assert refused == 429
        assert after['tenancy_http_connections_refused_total{reason="peer"}'] >= 1, after
        assert after["tenancy_http_connections_admitted_total"] >= 12, after

    @case("metrics_gateway_stops_cleanly")
    def _():
        assert stop_gateway(gw) == 0


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        import traceback
        traceback.print_exc()
        report(False, "setup", "%s: %s" % (type(e).__name__, e))
    finish()
