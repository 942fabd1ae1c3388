#!/usr/bin/python3
"""End-to-end test of the real tenancy-gateway binary against its own
throw-away PostgreSQL cluster (so it can stop and restart it).

Usage: e2e.py WORKDIR   (run from the repository root, PG_CONFIG exported)
Prints one "PASS name" / "FAIL name: why" line per case.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.getcwd()
GATEWAY = os.path.join(ROOT, "gateway", "tenancy-gateway")
WORK = sys.argv[1]
CLUSTER = os.path.join(WORK, "gw-e2e-pg")
LOG = os.path.join(WORK, "gw-e2e-gateway.log")
ERR = os.path.join(WORK, "gw-e2e-gateway.err")

failures = 0
started = []  # gateway processes to kill on the way out


def report(ok, name, why=""):
    global failures
    if ok:
        print("PASS " + name, flush=True)
    else:
        failures += 1
        print("FAIL %s: %s" % (name, why), flush=True)


def case(name):
    """Runs the decorated function at once as one test case."""
    def wrap(fn):
        try:
            fn()
            report(True, name)
        except Exception as e:  # an assertion or an unexpected error
            report(False, name, "%s: %s" % (type(e).__name__, e))
        return fn
    return wrap


def cluster(op, *args):
    subprocess.run(["bash", "-c", '. tests/lib/cluster.sh; "$@"', "_", op, CLUSTER] +
                   [str(a) for a in args], check=True, timeout=120)


def cluster_running():
    return subprocess.run(["bash", "-c", '. tests/lib/cluster.sh; cluster_running "$1"', "_",
                           CLUSTER], timeout=60).returncode == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, path, method="GET", headers=None, body=None, timeout=10):
    """Returns (status, headers, body text); HTTP errors are answers too."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def poll(fn, bound_s, what):
    deadline = time.monotonic() + bound_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.1)
    raise AssertionError("%s not reached within %s s (last: %r)" % (what, bound_s, last))


def start_gateway(args, env_extra=None, log=LOG, err=ERR):
    env = dict(os.environ)
    env.update(env_extra or {})
    proc = subprocess.Popen([GATEWAY] + args, stdout=open(log, "ab"), stderr=open(err, "ab"),
                            env=env)
    started.append(proc)
    return proc


def problem(status, headers, body, code):
    assert headers.get("Content-Type", "").startswith("application/problem+json"), headers
    j = json.loads(body)
    assert j["status"] == status, j
    assert j["code"] == code, j
    assert j["title"] and j["detail"], j
    assert j.get("request_id") == headers.get("Request-Id"), (j, headers.get("Request-Id"))
    return j


def main():
    pg_port = free_port()
    http_port = free_port()
    cluster("cluster_init", pg_port)
    cluster("cluster_start")
    conninfo = "host=%s port=%d dbname=postgres user=postgres" % (CLUSTER, pg_port)
    gw = start_gateway(["--listen", "127.0.0.1", "--port", str(http_port), "--database-url",
                        conninfo, "--pool-size", "4"])
    poll(lambda: request(http_port, "/healthz")[0] == 200, 15, "gateway up")

    @case("healthz_200")
    def _():
        status, headers, body = request(http_port, "/healthz")
        assert status == 200, status
        assert json.loads(body) == {"status": "ok"}, body
        assert headers.get("Content-Type", "").startswith("application/json"), headers
        assert len(headers.get("Request-Id", "")) == 32, headers

    @case("readyz_200")
    def _():
        status, _, body = request(http_port, "/readyz")
        assert status == 200, (status, body)
        assert json.loads(body)["status"] == "ok", body

    @case("audit_sealer_seals_without_the_background_worker")
    def _():
        # This cluster does not preload tenancy: no background sealer runs,
        # entries stay outside the chain until a gateway started with
        # --audit-seal-interval-ms seals them.
        def psql(sql, db="sealer_e2e"):
            return subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", CLUSTER,
                                   "-p", str(pg_port), "-U", "postgres", "-d", db, "-c", sql],
                                  check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        unsealed_sql = ("SELECT count(*) FROM tenancy.audit_log l WHERE NOT EXISTS ("
                        "SELECT FROM tenancy.audit_chain c, unnest(c.entry_xids, c.entry_ids) u(xid, id) "
                        "WHERE c.main_id = l.main_id AND u.xid = l.xid AND u.id = l.id)")
        psql("CREATE DATABASE sealer_e2e", db="postgres")
        psql("CREATE EXTENSION tenancy")
        psql("SELECT tenancy.create_main_account('Sealer E2E', 'owner@sealer.test', 'sealer-pass-1')")
        time.sleep(0.5)
        assert int(psql(unsealed_sql)) > 0, "entries were sealed without any sealer"
        port = free_port()
        log = os.path.join(WORK, "gw-e2e-sealer.log")
        sealer_gw = start_gateway(["--port", str(port), "--audit-seal-interval-ms", "100",
                                   "--database-url", conninfo.replace("dbname=postgres", "dbname=sealer_e2e")],
                                  log=log)
        poll(lambda: psql(unsealed_sql) == "0", 10, "every entry sealed")
        psql("SELECT tenancy.create_main_account('Sealer E2E 2', 'owner2@sealer.test', 'sealer-pass-2')")
        poll(lambda: psql(unsealed_sql) == "0", 10, "new entries sealed")
        assert psql("SELECT bool_and(ok) FROM tenancy.audit_verify()") == "t"
        sealer_gw.send_signal(signal.SIGTERM)
        assert sealer_gw.wait(timeout=30) == 0
        events = [json.loads(l) for l in open(log).read().splitlines()]
        stopped = [e for e in events if e.get("msg") == "audit sealer stopped"]
        assert stopped and stopped[0].get("sealed", 0) > 0, events[-5:]

    @case("unknown_route_404_problem")
    def _():
        status, headers, body = request(http_port, "/no/such/route")
        assert status == 404, status
        problem(404, headers, body, "not_found")

    @case("wrong_method_405_problem")
    def _():
        status, headers, body = request(http_port, "/healthz", method="POST", body=b"")
        assert status == 405, status
        assert "GET" in headers.get("Allow", ""), headers
        problem(405, headers, body, "method_not_allowed")
        status, _, _ = request(http_port, "/readyz", method="DELETE")
        assert status == 405, status

    @case("request_id_echoed_or_generated")
    def _():
        _, headers, _ = request(http_port, "/healthz", headers={"X-Request-Id": "client-id.42"})
        assert headers["Request-Id"] == "client-id.42", headers
        _, headers, _ = request(http_port, "/healthz", headers={"X-Request-Id": "bad id\"{}"})
        assert headers["Request-Id"] != "bad id\"{}" and len(headers["Request-Id"]) == 32
        _, headers, body = request(http_port, "/nope", headers={"X-Request-Id": "nf-1"})
        assert headers["Request-Id"] == "nf-1" and json.loads(body)["request_id"] == "nf-1"

    @case("one_json_log_line_per_request")
    def _():
        secret = "Bearer tk_secret_never_logged_123"
        ids = ["log-case-%d" % i for i in range(5)]
        for i, rid in enumerate(ids):
            path = ["/healthz", "/readyz", "/nope", "/healthz", "/healthz"][i]
            request(http_port, path, method="GET",
                    headers={"X-Request-Id": rid, "Authorization": secret})
        request(http_port, "/healthz", method="POST", body=b'{"password":"body_secret_456"}',
                headers={"X-Request-Id": "log-case-post", "Content-Type": "application/json"})
        ids.append("log-case-post")

        def lines_for():
            with open(LOG) as f:
                text = f.read()
            found = [l for l in text.splitlines() if any(('"%s"' % r) in l for r in ids)]
            return (text, found) if len(found) >= len(ids) else None
        text, found = poll(lines_for, 10, "log lines")
        assert "tk_secret_never_logged_123" not in text, "Authorization header logged"
        assert "body_secret_456" not in text, "request body logged"
        for rid in ids:
            mine = [json.loads(l) for l in found if json.loads(l).get("request_id") == rid]
            assert len(mine) == 1, (rid, mine)
            e = mine[0]
            for key in ("time", "request_id", "method", "path", "status", "duration_ms", "remote"):
                assert key in e, (key, e)
            assert isinstance(e["duration_ms"], (int, float)) and e["duration_ms"] >= 0, e
            assert e["remote"].startswith("127.0.0.1:"), e
        by_id = {json.loads(l)["request_id"]: json.loads(l) for l in found}
        assert by_id["log-case-2"]["status"] == 404 and by_id["log-case-2"]["path"] == "/nope"
        assert by_id["log-case-post"]["method"] == "POST"
        assert by_id["log-case-post"]["status"] == 405

    @case("bad_flag_exits_2")
    def _():
        for args, needle in ((["--bogus"], "unknown option"),
                             (["--database-url", conninfo, "--port", "http"], "--port"),
                             (["--database-url", conninfo, "--port"], "needs a value"),
                             ([], "database is required"),
                             (["--database-url", "not a conninfo"], "invalid database URL")):
            env = {k: v for k, v in os.environ.items() if not k.startswith("TENANCY_")}
            r = subprocess.run([GATEWAY] + args, capture_output=True, text=True, timeout=30,
                               env=env)
            assert r.returncode == 2, (args, r.returncode, r.stderr)
            assert needle in r.stderr, (args, r.stderr)
            assert r.stderr.count("\n") <= 3, r.stderr

    @case("unreachable_database_at_start_exits")
    def _():
        dead = free_port()  # nothing listens there
        t0 = time.monotonic()
        r = subprocess.run([GATEWAY, "--port", str(free_port()), "--database-url",
                            "host=127.0.0.1 port=%d dbname=postgres user=postgres" % dead],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode not in (0, 2), (r.returncode, r.stderr)
        assert "database is unreachable" in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1, "expected one line: %r" % r.stderr
        assert time.monotonic() - t0 < 60

    @case("config_from_environment")
    def _():
        port = free_port()
        p = start_gateway([], {"TENANCY_PORT": str(port), "TENANCY_DATABASE_URL": conninfo,
                               "TENANCY_POOL_SIZE": "1"},
                          log=LOG + ".env", err=ERR + ".env")
        poll(lambda: request(port, "/readyz")[0] == 200, 15, "env-configured gateway ready")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0

    @case("readyz_503_when_database_stopped")
    def _():
        cluster("cluster_stop")
        status, headers, body = poll(
            lambda: (lambda r: r if r[0] == 503 else None)(request(http_port, "/readyz")),
            30, "/readyz 503")
        problem(503, headers, body, "database_unavailable")
        status, _, _ = request(http_port, "/healthz")
        assert status == 200, status

    @case("readyz_200_after_database_restart")
    def _():
        cluster("cluster_start")
        poll(lambda: request(http_port, "/readyz")[0] == 200, 30, "/readyz 200 again")
        # Every pooled connection was stale; they all recover.
        for _ in range(8):
            assert request(http_port, "/readyz")[0] == 200

    @case("sigterm_finishes_in_flight_request_and_exits_0")
    def _():
        # One keep-alive connection: a first request proves it is being
        # served; the second request's body is still missing when SIGTERM
        # arrives, so that request is in flight and must still be answered.
        conn = socket.create_connection(("127.0.0.1", http_port), timeout=20)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.endswith(b"}\n"):
            chunk = conn.recv(4096)
            assert chunk, first
            first += chunk
        assert b"200 OK" in first, first
        conn.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"X-Request-Id: in-flight\r\n\r\n")
        time.sleep(0.3)
        gw.send_signal(signal.SIGTERM)
        poll(lambda: "shutdown requested" in open(LOG).read(), 10, "shutdown logged")
        assert gw.poll() is None, "exited before finishing the in-flight request"
        conn.sendall(b"hello")
        answer = b""
        while b"\r\n\r\n" not in answer or b"}" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
        conn.close()
        assert answer.startswith(b"HTTP/1.1 405"), answer
        assert b"Request-Id: in-flight" in answer, answer
        code = gw.wait(timeout=30)
        assert code == 0, code
        with open(LOG) as f:
            tail = [json.loads(l) for l in f.read().splitlines()[-3:]]
        assert any(e.get("msg") == "stopped" for e in tail), tail


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        report(False, "setup", "%s: %s" % (type(e).__name__, e))
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait()
        try:
            if os.path.isdir(os.path.join(CLUSTER, "data")) and cluster_running():
                cluster("cluster_stop")
        except Exception as e:
            report(False, "cleanup", str(e))
    sys.exit(1 if failures else 0)
