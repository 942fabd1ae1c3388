#!/usr/bin/python3
"""End-to-end test of the real tenancy-gateway binary against its own
throw-away PostgreSQL cluster (so it can stop and restart it).

Usage: e2e.py WORKDIR   (run from the repository root, PG_CONFIG exported)
Prints one "PASS name" / "FAIL name: why" line per case.

With GWLIB_CITUS="SOCKET_DIR PORT" (tests/citus/30_gateway.sh, as for the
route test files) the cluster is an existing Citus coordinator where tenancy
is distributed: the same cases run against it, the /v1 cases in its
distributed database; stopping and restarting the cluster stops and restarts
the coordinator.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.getcwd()
GATEWAY = os.path.join(ROOT, "gateway", "tenancy-gateway")
WORK = sys.argv[1]
CLUSTER = os.path.join(WORK, "gw-e2e-pg")
CITUS = os.environ.get("GWLIB_CITUS")
if CITUS:
    CLUSTER = CITUS.split()[0]
API_DB = "postgres" if CITUS else "api_e2e"  # the database of the /v1 cases
LOG = os.path.join(WORK, "gw-e2e-gateway.log")
ERR = os.path.join(WORK, "gw-e2e-gateway.err")
GW_ROLE = "gw_e2e"  # the gateways' own database login role

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
    pg_port = int(CITUS.split()[1]) if CITUS else free_port()
    http_port = free_port()
    # Every gateway here logs in as its own client role, a member of
    # tenancy_gateway (tenancy.create_client(..., gateway => true)), never
    # as a superuser; psql below is the DBA (postgres).
    setup = ["SELECT tenancy.create_client('%s', NULL, gateway => true)" % GW_ROLE]
    if CITUS:
        # Citus connects to the workers as the gateway's role too: a password
        # there, held by the coordinator (as tests/gateway/gwlib.py does).
        setup += ["ALTER ROLE %s PASSWORD 'worker-%s'" % (GW_ROLE, GW_ROLE),
                  "INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) "
                  "VALUES (0, '%s', 'password=worker-%s')" % (GW_ROLE, GW_ROLE)]
    else:
        cluster("cluster_init", pg_port)
        cluster("cluster_start")
        setup.insert(0, "CREATE EXTENSION tenancy")
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", CLUSTER, "-p", str(pg_port),
                    "-U", "postgres", "-d", "postgres"] + [a for c in setup for a in ("-c", c)],
                   check=True, capture_output=True, timeout=60)
    conninfo = "host=%s port=%d dbname=postgres user=%s" % (CLUSTER, pg_port, GW_ROLE)
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

    @case("gateway_logs_in_as_its_own_client_role")
    def _():
        def dba(sql):
            return subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", CLUSTER,
                                   "-p", str(pg_port), "-U", "postgres", "-d", "postgres", "-c", sql],
                                  check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        assert request(http_port, "/readyz")[0] == 200
        users = dba("SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity "
                    "WHERE application_name = 'tenancy-gateway'")
        assert users == GW_ROLE, users
        assert dba("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = '%s'" % GW_ROLE) == "f"
        assert dba("SELECT gateway FROM tenancy.clients WHERE name = '%s'" % GW_ROLE) == "t"

    @case("second_gateway_on_a_used_port_exits_1")
    def _():
        # Without SO_REUSEPORT the bind fails: exit 1 with one clear line,
        # and the first gateway keeps the port.
        r = subprocess.run([GATEWAY, "--port", str(http_port), "--database-url", conninfo],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert "cannot listen on 127.0.0.1:%d" % http_port in r.stderr, r.stderr
        assert "in use" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        for _ in range(4):
            assert request(http_port, "/healthz")[0] == 200

    def read_until_closed(conn, bound_s):
        """Everything the server sends until it closes (a reset counts as closed)."""
        conn.settimeout(bound_s)
        got = b""
        try:
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    return got
                got += chunk
        except ConnectionResetError:
            return got

    slow = {}

    def slow_gateway():
        if "port" not in slow:
            slow["port"] = free_port()
            start_gateway(["--port", str(slow["port"]), "--database-url", conninfo, "--threads", "16",
                           "--request-read-timeout-ms", "2000", "--max-connections-per-peer", "8"],
                          log=LOG + ".slow", err=ERR + ".slow")
            poll(lambda: request(slow["port"], "/healthz")[0] == 200, 15, "gateway up")
        return slow["port"]

    @case("slow_request_cut_off_after_its_deadline")
    def _():
        # Each line arrives well within the per-read timeout; only a total
        # deadline over headers and body ends these requests.
        port = slow_gateway()
        for first, drip in ((b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n"),
                            (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"a")):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.sendall(first)
            got = b""
            conn.settimeout(0.3)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30:
                try:
                    conn.sendall(drip)
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                except socket.timeout:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            conn.close()
            assert time.monotonic() - t0 < 30, "the slow request was never cut off"
            assert got.startswith(b"HTTP/1.1 408 "), got[:200]
            assert b"Connection: close" in got, got
            head, _, body = got.partition(b"\r\n\r\n")
            assert json.loads(body)["code"] == "request_timeout", body

    @case("slow_clients_cannot_starve_healthz")
    def _():
        # 20 connections from another address (127.0.0.2), each sending a
        # header line every 0.3 s, against 16 worker threads: the peer cap
        # refuses all but 8 (429), the deadline ends those (408), and
        # /healthz from 127.0.0.1 keeps answering throughout.
        port = slow_gateway()
        attackers = []
        for _ in range(20):
            conn = socket.socket()
            conn.bind(("127.0.0.2", 0))
            conn.settimeout(10)
            conn.connect(("127.0.0.1", port))
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            attackers.append(conn)
        answers = [None] * len(attackers)

        def trickle():
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and any(a is None for a in answers):
                for i, conn in enumerate(attackers):
                    if answers[i] is not None:
                        continue
                    try:
                        conn.settimeout(0.02)
                        answers[i] = conn.recv(4096)  # an answer, or b"" when closed
                        continue
                    except socket.timeout:
                        pass
                    except ConnectionResetError:
                        answers[i] = b""
                        continue
                    try:
                        conn.sendall(b"X-Slow: 1\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        answers[i] = read_until_closed(conn, 1)
                time.sleep(0.3)
        dripper = threading.Thread(target=trickle)
        dripper.start()
        try:
            for _ in range(5):
                status, _, body = request(port, "/healthz", timeout=5)
                assert status == 200, (status, body)
                time.sleep(0.2)
        finally:
            dripper.join()
            for conn in attackers:
                conn.close()
        assert all(a is not None for a in answers), "some slow connections were never ended"
        codes = sorted(a[:12].decode() for a in answers if a)
        assert "HTTP/1.1 429" in codes, codes
        assert "HTTP/1.1 408" in codes, codes

    # ---- /v1: authenticated requests, each recorded in the audit log ----
    def psql(sql, db=API_DB):
        return subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", CLUSTER,
                               "-p", str(pg_port), "-U", "postgres", "-d", db, "-c", sql],
                              check=True, capture_output=True, text=True, timeout=60).stdout.strip()

    api = {}

    def call(path, credential=None, headers=None, **kw):
        h = dict(headers or {})
        if credential:
            h["Authorization"] = "Bearer " + credential
        return request(api["port"], path, headers=h, **kw)

    def api_entry(request_id):
        """The api.request entry of a request id (as the DBA sees it), once written."""
        out = psql("SELECT row_to_json(l)::text FROM tenancy.audit_entries() l "
                   "WHERE l.action = 'api.request' AND l.change->>'request_id' = '%s'" % request_id)
        return json.loads(out) if out else None

    @case("api_me_with_an_api_key")
    def _():
        if not CITUS:
            psql("CREATE DATABASE api_e2e", db="postgres")
            psql("CREATE EXTENSION tenancy")
        main = psql("SELECT tenancy.create_main_account('Api E2E', 'owner@api.test', 'api-pass-1')")
        key = psql("SELECT tenancy.admin_create_api_key('%s', 'e2e key')" % main)
        child = psql("BEGIN; SELECT tenancy.authenticate('%s'); "
                     "SELECT tenancy.create_account('%s', 'Api Child'); COMMIT" % (key, main)).splitlines()[-1]
        child_key = psql("SELECT tenancy.admin_create_api_key('%s', 'child key')" % child)
        api.update(main=main, key=key, child=child, child_key=child_key,
                   main_id=psql("SELECT main_id FROM tenancy.accounts WHERE public_id = '%s'" % main),
                   main_path=psql("SELECT path::text FROM tenancy.accounts WHERE public_id = '%s'" % main),
                   child_path=psql("SELECT path::text FROM tenancy.accounts WHERE public_id = '%s'" % child))
        api["port"] = free_port()
        # No background sealer in this cluster: the gateway seals.
        start_gateway(["--port", str(api["port"]), "--audit-seal-interval-ms", "100", "--pool-size", "4",
                       "--database-url", conninfo.replace("dbname=postgres", "dbname=" + API_DB)],
                      log=LOG + ".api", err=ERR + ".api")
        poll(lambda: request(api["port"], "/readyz")[0] == 200, 15, "api gateway ready")
        status, headers, body = call("/v1/me", key)
        assert status == 200, (status, body)
        me = json.loads(body)
        assert me["account"] == main and me["principal"]["kind"] == "api_key", me
        assert me["role"] == "owner" and me["memberships"] == [], me
        # A user's session: its memberships too.
        token = psql("SELECT tenancy.login('owner@api.test', 'api-pass-1')")
        status, _, body = call("/v1/me", token)
        me = json.loads(body)
        assert status == 200 and me["principal"]["kind"] == "user", (status, body)
        assert me["memberships"] == [{"account": main, "role": "owner"}], me

    @case("api_401_without_a_valid_credential")
    def _():
        for h in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"},
                  {"Authorization": "Bearer not-a-key"}, {"Authorization": "Bearer " + api["key"][:-4] + "AAAA"}):
            status, headers, body = call("/v1/me", headers=h)
            assert status == 401, (h, status, body)
            problem(401, headers, body, "unauthenticated")
            assert headers.get("WWW-Authenticate") == "Bearer", headers
        status, headers, body = call("/v1/accounts/%s/audit-log" % api["main"])
        assert status == 401, status

    @case("api_request_recorded_in_the_audit_log")
    def _():
        status, headers, _ = call("/v1/me", api["key"], {"X-Request-Id": "api-e2e-me-1"})
        assert status == 200 and headers["Request-Id"] == "api-e2e-me-1"
        # A GET is recorded by the gateway's read log, in a batch written
        # within ~100 ms; its change also says when the GET was served.
        e = poll(lambda: api_entry("api-e2e-me-1"), 10, "the GET's api.request entry")
        at = e["change"].pop("at", None)
        assert at and at.endswith("Z"), e
        assert e["change"] == {"method": "GET", "route": "GET /v1/me", "status": 200,
                               "request_id": "api-e2e-me-1"}, e
        assert e["target"] == "GET /v1/me" and e["actor_kind"] == "api_key", e
        assert e["account_path"] == api["main_path"], e

    @case("api_refused_request_recorded_too")
    def _():
        status, headers, body = call("/v1/accounts/acc_nosuchaccount/audit-log", api["key"],
                                     {"X-Request-Id": "api-e2e-404"})
        assert status == 404, (status, body)
        problem(404, headers, body, "not_found")
        e = poll(lambda: api_entry("api-e2e-404"), 10, "the refused GET's entry")
        assert e["change"]["status"] == 404, e
        assert e["target"] == "GET /v1/accounts/{id}/audit-log", e
        # A refused credential has no account to be recorded in.
        call("/v1/me", "tnc_bad", {"X-Request-Id": "api-e2e-401"})
        assert api_entry("api-e2e-401") is None

    @case("api_tenancy_account_header_acts_downward_only")
    def _():
        status, _, body = call("/v1/me", api["key"], {"Tenancy-Account": api["child"],
                                                      "X-Request-Id": "api-e2e-down"})
        assert status == 200 and json.loads(body)["account"] == api["child"], (status, body)
        # GET records are written by the read log in batches (~100 ms): wait for it.
        e = poll(lambda: api_entry("api-e2e-down"), 10, "the GET's entry")
        assert e["account_path"] == api["child_path"], e
        status, headers, body = call("/v1/me", api["child_key"], {"Tenancy-Account": api["main"],
                                                                 "X-Request-Id": "api-e2e-up"})
        assert status == 404, (status, body)
        problem(404, headers, body, "not_found")
        # Recorded in the credential's own account: switching failed.
        e = poll(lambda: api_entry("api-e2e-up"), 10, "the refused GET's entry")
        assert e["account_path"] == api["child_path"] and e["change"]["status"] == 404, e

    @case("api_audit_log_newest_first_with_filters_and_cursor")
    def _():
        path = "/v1/accounts/%s/audit-log" % api["main"]

        def listed():
            status, _, body = call(path + "?limit=500", api["key"])
            assert status == 200, (status, body)
            data = json.loads(body)["data"]
            ids = {e["change"].get("request_id") for e in data if e["action"] == "api.request"}
            return data if "api-e2e-up" in ids else None  # sealed by now
        data = poll(listed, 15, "sealed entries listed")
        positions = [e["position"] for e in data]
        assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions), \
            [(e["position"], e["action"], e["target"]) for e in data]
        assert all(len(e["digest"]) == 64 for e in data), data[0]
        assert any(e["action"] == "insert" and e["target"] == "tenancy.accounts" for e in data), \
            [(e["position"], e["action"], e["target"]) for e in data]
        status, _, body = call(path + "?action=api.request", api["key"])
        only = json.loads(body)["data"]
        assert only and all(e["action"] == "api.request" for e in only), only
        first = json.loads(call(path + "?limit=2", api["key"])[2])
        assert len(first["data"]) == 2 and first["next_cursor"], first
        second = json.loads(call(path + "?limit=2&cursor=" + first["next_cursor"], api["key"])[2])
        assert second["data"] and second["data"][0]["position"] < first["data"][-1]["position"], second
        # Each call adds an entry the sealer may link meanwhile: compare the
        # pages with a later full listing, from the first page's top down
        # (positions only grow, so nothing below it changes).
        paged = [e["position"] for e in first["data"] + second["data"]]
        later = [e["position"] for e in json.loads(call(path + "?limit=500", api["key"])[2])["data"]]
        below = [p for p in later if p <= paged[0]]
        assert paged == below[:len(paged)], (paged, below[:len(paged)], positions[:len(paged)])
        for bad, code in (("?limit=0", "invalid_field"), ("?limit=501", "invalid_field"),
                          ("?cursor=abc", "invalid_cursor"), ("?from=not-a-time", "invalid_field")):
            status, headers, body = call(path + bad, api["key"])
            assert status == 422, (bad, status, body)
            problem(422, headers, body, code)

    @case("api_audit_log_child_never_reads_parent")
    def _():
        status, headers, body = call("/v1/accounts/%s/audit-log" % api["main"], api["child_key"])
        assert status == 404, (status, body)
        problem(404, headers, body, "not_found")
        status, _, body = call("/v1/accounts/%s/audit-log?limit=500" % api["child"], api["child_key"])
        assert status == 200, (status, body)
        data = json.loads(body)["data"]
        assert data and all(e["account_path"].startswith(api["child_path"]) for e in data), data

    @case("api_audit_log_403_for_a_role_that_may_not_read_it")
    def _():
        member_key = psql("SELECT tenancy.admin_create_api_key('%s', 'member key', 'member')" % api["main"])
        for suffix in ("", "/verify"):
            status, headers, body = call("/v1/accounts/%s/audit-log%s" % (api["main"], suffix), member_key)
            assert status == 403, (suffix, status, body)
            problem(403, headers, body, "forbidden")

    @case("api_500_when_the_gateway_user_cannot_become_tenancy_app")
    def _():
        psql("CREATE ROLE gw_no_app LOGIN")
        port = free_port()
        log = os.path.join(WORK, "gw-e2e-norole.log")
        p = start_gateway(["--port", str(port), "--database-url",
                           conninfo.replace("dbname=postgres", "dbname=" + API_DB).replace("user=" + GW_ROLE, "user=gw_no_app")],
                          log=log, err=ERR + ".norole")
        poll(lambda: request(port, "/readyz")[0] == 200, 15, "gateway ready")
        status, headers, body = request(port, "/v1/me", headers={"Authorization": "Bearer " + api["key"]})
        assert status == 500, (status, body)
        problem(500, headers, body, "internal_error")
        poll(lambda: "cannot SET ROLE tenancy_app" in open(log).read(), 5, "the cause logged")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0

    @case("api_audit_verify_detects_a_tampered_entry")
    def _():
        path = "/v1/accounts/%s/audit-log/verify" % api["main"]
        status, _, body = call(path, api["key"])
        v = json.loads(body)
        assert status == 200 and v["ok"] is True and v["entries"] > 0 and v["first_bad"] is None, v
        listed = json.loads(call("/v1/accounts/%s/audit-log?action=api.request&limit=1" % api["main"],
                                 api["key"])[2])["data"][0]
        # The superuser of the node holding the chain (on Citus a worker:
        # the entry's id is that node's, main_id picks the node).
        tamper = ("UPDATE tenancy.audit_log SET change = change || '{\"status\": 200}', "
                  "actor_id = 'someone else' WHERE main_id = %s AND id = %d" % (api["main_id"], listed["id"]))
        if CITUS:
            tamper = "SELECT bool_and(success) FROM run_command_on_workers($t$%s$t$)" % tamper
        psql(tamper)
        v = json.loads(call(path, api["key"])[2])
        assert v["ok"] is False and v["first_bad"] == listed["position"], (v, listed["position"])
        assert v["reason"], v

    @case("api_control_characters_400_invalid_request")
    def _():
        # cpp-httplib percent-decodes these; libpq would cut a parameter at
        # the NUL and act in acc_x for "acc_x%00anything".
        main = api["main"]
        ok_status = call("/v1/me", api["key"], {"Tenancy-Account": main})[0]
        assert ok_status == 200, ok_status
        for path, headers in (
                ("/v1/me", {"Tenancy-Account": main + "%00"}),
                ("/v1/me", {"Tenancy-Account": main + "%00" + "x" * 5}),
                ("/v1/me", {"Tenancy-Account": main + "%0aX-Evil: 1"}),
                ("/v1/accounts/%s%%00/audit-log" % main, {}),
                ("/v1/accounts/%s%%1f/audit-log/verify" % main, {}),
                ("/v1/accounts/%s/audit-log?action=api.request%%00" % main, {}),
                ("/v1/accounts/%s/audit-log?act%%00ion=x" % main, {}),
                ("/v1/accounts/%s/audit-log?actor=%%7f" % main, {})):
            status, h, body = call(path, api["key"], dict(headers, **{"X-Request-Id": "ctl-1"}))
            assert status == 400, (path, headers, status, body)
            j = problem(400, h, body, "invalid_request")
            assert "control character" in j["detail"], j
        # Refused before any transaction: nothing recorded.
        assert api_entry("ctl-1") is None

    @case("api_answers_are_no_store_and_nosniff")
    def _():
        main = api["main"]
        for path, credential, expect in (("/v1/me", api["key"], 200),
                                          ("/v1/me", None, 401),
                                          ("/v1/accounts/acc_nosuch/audit-log", api["key"], 404),
                                          ("/v1/accounts/%s/audit-log?limit=0" % main, api["key"], 422),
                                          ("/v1/me?x=%00", api["key"], 400),
                                          ("/v1/nothing-here", api["key"], 404)):
            status, headers, body = call(path, credential)
            assert status == expect, (path, status, body)
            assert headers.get("Cache-Control") == "no-store", (path, dict(headers))
            assert headers.get("X-Content-Type-Options") == "nosniff", (path, dict(headers))
        status, headers, _ = call("/v1/me", api["key"], method="POST", body=b"")
        assert status == 405 and headers.get("X-Content-Type-Options") == "nosniff", dict(headers)

    @case("api_mfa_pending_session_401_mfa_required_and_audited")
    def _():
        psql("SELECT tenancy.create_main_account('Mfa E2E', 'mfa@api.test', 'mfa-pass-1')")
        uri = psql("BEGIN; SELECT tenancy.login('mfa@api.test', 'mfa-pass-1') IS NOT NULL; "
                   "SELECT tenancy.enroll_mfa(); COMMIT").splitlines()[-1]
        secret = uri.split("secret=")[1].split("&")[0]
        codes = psql("BEGIN; SELECT tenancy.login('mfa@api.test', 'mfa-pass-1') IS NOT NULL; "
                     "SELECT array_length(tenancy.confirm_mfa(tenancy.totp('%s')), 1); COMMIT" % secret)
        assert codes.splitlines()[-1] == "10" or int(codes.splitlines()[-1]) > 0, codes
        pending = psql("SELECT tenancy.login('mfa@api.test', 'mfa-pass-1')")
        assert pending.startswith("tns_"), pending
        api["mfa_pending"] = pending
        for path in ("/v1/me", "/v1/accounts/%s/audit-log" % api["main"]):
            status, headers, body = call(path, pending, {"X-Request-Id": "mfa-pending-%d" % len(path)})
            assert status == 401, (path, status, body)
            problem(401, headers, body, "mfa_required")
        # A restricted session cannot act elsewhere either, and says why.
        status, headers, body = call("/v1/me", pending, {"Tenancy-Account": api["main"]})
        assert status == 401, (status, body)
        problem(401, headers, body, "mfa_required")

    @case("api_password_change_session_403_password_change_required_and_audited")
    def _():
        owner = "BEGIN; SELECT tenancy.login('owner@api.test', 'api-pass-1') IS NOT NULL; %s; COMMIT"
        sub = psql(owner % "SELECT tenancy.create_sub_user('sub@api.test', 'Sub', 'User', 'sub-temp-pass-1')"
                   ).splitlines()[-1]
        psql(owner % ("SELECT tenancy.activate_sub_user('%s')" % sub))
        temp = psql("SELECT substring(body from 'temporary password: (\\S+)') FROM tenancy.outbox "
                    "WHERE recipient = 'sub@api.test' ORDER BY id DESC LIMIT 1")
        token = psql("SELECT tenancy.login_sub_user('owner@api.test', 'sub@api.test', '%s')" % temp)
        assert token.startswith("tns_"), token
        status, headers, body = call("/v1/me", token, {"X-Request-Id": "pw-change-1"})
        assert status == 403, (status, body)
        problem(403, headers, body, "password_change_required")

    @case("api_restricted_session_refusals_are_audited")
    def _():
        # Recorded like any refused request, in a transaction of its own
        # under the restricted context (the database must accept the
        # gateway's api.request entry there).
        for rid, status, kind in (("mfa-pending-6", 401, "user"), ("pw-change-1", 403, "sub_user")):
            e = api_entry(rid)
            assert e, "no api.request entry for %s (see the gateway log)" % rid
            assert e["change"]["status"] == status and e["actor_kind"] == kind, e

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
            if not CITUS and os.path.isdir(os.path.join(CLUSTER, "data")) and cluster_running():
                cluster("cluster_stop")
        except Exception as e:
            report(False, "cleanup", str(e))
    sys.exit(1 if failures else 0)
