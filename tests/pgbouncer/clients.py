#!/usr/bin/python3
"""Request contexts behind a real pgbouncer in transaction pooling mode, in
front of the run's cluster (PGHOST/PGPORT, as tests/run-all sets them).
Clients log in through pgbouncer as their own roles (tenancy.create_client).

1. Eight clients of two roles share two server connections per role and
   run many transactions each, every one with its own API key: before
   authenticating each transaction sees no context; after, exactly its
   tenant's rows.
2. Session scope behind the pooler (pool size 1, so the next client gets the
   same server connection): what an unguarded role leaks (the hazard), the
   refusal with tenancy.allow_session_scope = off on the role, and the reset
   with server_reset_query_always = 1.
3. The real gateway with its database URL pointing at the same pgbouncer:
   eight HTTP clients log in, read /v1/me and their accounts, create
   accounts, each answer exactly its own tenant's, with
   --prepared-statements off; and what named prepared statements do there.

Usage: clients.py WORKDIR (from the repository root). Prints one
"PASS name" / "FAIL name: why" line per case, "# ..." lines as notes.
"""
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgbouncer import Pgbouncer, free_port  # noqa: E402

GATEWAY = os.path.join(os.getcwd(), "gateway", "tenancy-gateway")
PASSWORD = "a long enough password"  # every tenant owner's

WORK = os.path.join(sys.argv[1], "pgbouncer")
DB = "pgb_test"
PGHOST = os.environ["PGHOST"]
PGPORT = os.environ["PGPORT"]
APP_ROLES = ["pgb_app1", "pgb_app2"]  # guarded, as docs/operations/pooling.md recommends
OPEN_ROLE = "pgb_open"  # no guard: shows what a session context does behind the pooler
GUARDED_ROLE = "pgb_guarded"
GATEWAY_ROLE = "pgb_gateway"
ROLES = APP_ROLES + [OPEN_ROLE, GUARDED_ROLE, GATEWAY_ROLE]
PASSWORDS = {r: "pw-" + r.replace("_", "-") for r in ROLES}
CLIENTS = 8
TRANSACTIONS = int(os.environ.get("PGB_TRANSACTIONS", "100"))

failures = 0


def report(ok, name, why=""):
    global failures
    if ok:
        print("PASS " + name, flush=True)
    else:
        failures += 1
        print("FAIL %s: %s" % (name, str(why).replace("\n", " ")[:600]), flush=True)


def note(text):
    print("# " + text, flush=True)


def case(name):
    def wrap(fn):
        try:
            fn()
            report(True, name)
        except Exception as e:  # an assertion or an unexpected error
            report(False, name, "%s: %s" % (type(e).__name__, e))
        return fn
    return wrap


def dba(db=DB):
    c = psycopg2.connect(host=PGHOST, port=PGPORT, user="postgres", dbname=db)
    c.autocommit = True
    return c


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def sqlstate_of(conn, sql, args=None):
    """The SQLSTATE sql raises (None when it succeeds); the transaction is rolled back."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
        return None
    except psycopg2.Error as e:
        if not conn.autocommit:
            conn.rollback()
        return e.pgcode


# ---- setup (DBA, directly) -------------------------------------------------
def setup():
    c = dba("postgres")
    c.cursor().execute("DROP DATABASE IF EXISTS %s" % DB)
    for r in ROLES:
        c.cursor().execute("DROP ROLE IF EXISTS %s" % r)
    c.cursor().execute("CREATE DATABASE %s" % DB)
    c.close()
    c = dba()
    cur = c.cursor()
    cur.execute("CREATE EXTENSION tenancy")
    for r in ROLES:
        cur.execute("SELECT tenancy.create_client(%s, %s, gateway => %s)",
                    (r, PASSWORDS[r], r == GATEWAY_ROLE))
    for r in APP_ROLES + [GUARDED_ROLE, GATEWAY_ROLE]:
        cur.execute("ALTER ROLE %s SET tenancy.allow_session_scope = off" % r)
    cur.execute("CREATE TABLE public.pgb_notes (id bigserial PRIMARY KEY, body text NOT NULL)")
    cur.execute("SELECT tenancy.protect('public.pgb_notes', 'agents')")
    cur.execute("GRANT SELECT ON public.pgb_notes TO tenancy_app")
    tenants = []
    for i in range(CLIENTS):
        main = one(c, "SELECT tenancy.create_main_account(%s, %s, %s)",
                   ("Tenant %d" % i, "owner%d@pgb.test" % i, PASSWORD))[0]
        main_key = one(c, "SELECT tenancy.admin_create_api_key(%s, 'main key')", (main,))[0]
        c.autocommit = False
        one(c, "SELECT tenancy.authenticate(%s)", (main_key,))
        child = one(c, "SELECT tenancy.create_account(%s, 'child')", (main,))[0]
        grandchild = one(c, "SELECT tenancy.create_account(%s, 'grandchild')", (child,))[0]
        c.commit()
        c.autocommit = True
        child_key = one(c, "SELECT tenancy.admin_create_api_key(%s, 'child key', 'admin')", (child,))[0]
        for acc in (main, child, grandchild):
            cur.execute("INSERT INTO public.pgb_notes (account_path, body) "
                        "SELECT path, public_id FROM tenancy.accounts WHERE public_id = %s", (acc,))
        tenants.append({
            "email": "owner%d@pgb.test" % i, "main": main, "child": child, "grandchild": grandchild,
            "keys": [(main_key, main, sorted([main, child, grandchild])),
                     (child_key, child, sorted([child, grandchild]))],
        })
    c.close()
    return tenants


def key_principal(key):
    """whoami()'s principal id of an API key tnc_<main>_<key>_<secret>."""
    parts = key.split("_")
    return "key_%s_%s" % (parts[1], parts[2])


# ---- 1. concurrent clients, transaction-scoped contexts --------------------
def client_run(pgb, index, tenant, log, violations, rng):
    role = APP_ROLES[index % len(APP_ROLES)]
    conninfo = pgb.conninfo("conc", role)
    conn = psycopg2.connect(conninfo)

    def bad(what):
        violations.append("client %d (%s): %s" % (index, role, what))

    for t in range(TRANSACTIONS):
        key, account, visible = rng.choice(tenant["keys"])
        try:
            if t % 17 == 5:
                # Autocommit: a context set by one statement is gone at the next.
                conn.autocommit = True
                got = one(conn, "SELECT tenancy.authenticate(%s)", (key,))[0]
                if got != account:
                    bad("autocommit authenticate returned %r" % got)
                left = one(conn, "SELECT tenancy.whoami(), (SELECT count(*) FROM tenancy.accounts), "
                                 "pg_backend_pid(), clock_timestamp()")
                log.append((role, left[2], left[3], index))
                if left[0] is not None or left[1] != 0:
                    bad("context outlived its autocommit statement: %r" % (left[:2],))
                conn.autocommit = False
                continue
            # Before authenticating: no context, whatever ran on this server
            # connection before (another client's transaction, most likely).
            pre = one(conn, "SELECT tenancy.whoami(), tenancy.current_account(), "
                            "(SELECT count(*) FROM tenancy.accounts), "
                            "(SELECT count(*) FROM public.pgb_notes), pg_backend_pid(), clock_timestamp()")
            log.append((role, pre[4], pre[5], index))
            if pre[:4] != (None, None, 0, 0):
                bad("context seen before authenticating (pid %s): %r" % (pre[4], pre[:4]))
            got = one(conn, "SELECT tenancy.authenticate(%s)", (key,))[0]
            if got != account:
                bad("authenticate returned %r, expected %r" % (got, account))
            who = one(conn, "SELECT tenancy.whoami()->>'account', tenancy.whoami()->'principal'->>'id', "
                            "(SELECT array_agg(public_id::text ORDER BY public_id) FROM tenancy.accounts), "
                            "(SELECT array_agg(body ORDER BY body) FROM public.pgb_notes)")
            if who != (account, key_principal(key), visible, visible):
                bad("in context saw %r, expected %r" % (who, (account, key_principal(key), visible, visible)))
            ending = t % 10
            if ending == 7 and account == tenant["main"]:
                # act_as moves this transaction's context, never the next one's.
                one(conn, "SELECT tenancy.act_as(%s)", (tenant["child"],))
                rows = one(conn, "SELECT array_agg(public_id::text ORDER BY public_id) FROM tenancy.accounts")[0]
                if rows != sorted([tenant["child"], tenant["grandchild"]]):
                    bad("after act_as saw %r" % rows)
                conn.commit()
            elif ending in (3, 8):
                conn.rollback()
            elif ending == 4:
                try:
                    one(conn, "SELECT 1 / 0")
                    bad("division by zero succeeded")
                except psycopg2.DataError:
                    conn.rollback()
            elif t % 37 == 11:
                # Gone in the middle of a transaction, context set: pgbouncer
                # must not hand that server session on as it is.
                conn.close()
                conn = psycopg2.connect(conninfo)
            else:
                conn.commit()
        except psycopg2.Error as e:
            bad("transaction %d failed: %s %s" % (t, e.pgcode, str(e).strip()))
            try:
                conn.close()
            except psycopg2.Error:
                pass
            conn = psycopg2.connect(conninfo)
    conn.close()


def concurrent_clients(pgb, tenants):
    log, violations, threads, errors = [], [], [], []

    def run(i):
        try:
            client_run(pgb, i, tenants[i], log, violations, random.Random(1000 + i))
        except Exception as e:  # connection refused, ...
            errors.append("client %d: %s: %s" % (i, type(e).__name__, e))

    for i in range(CLIENTS):
        th = threading.Thread(target=run, args=(i,))
        th.start()
        threads.append(th)
    for th in threads:
        th.join(timeout=300)

    @case("clients-ran-every-transaction")
    def _():
        assert not errors, errors[:3]
        assert not any(th.is_alive() for th in threads), "a client did not finish"
        assert len(log) == CLIENTS * TRANSACTIONS, (len(log), CLIENTS * TRANSACTIONS)

    # The setup shares server connections between clients, or the test
    # below proves nothing: count the hand-overs, in server order.
    handovers = 0
    per_pid = {}
    for role, pid, at, client in log:
        per_pid.setdefault((role, pid), []).append((at, client))
    for seq in per_pid.values():
        seq.sort()
        handovers += sum(1 for a, b in zip(seq, seq[1:]) if a[1] != b[1])
    note("%d transactions on %d server connections, %d handed from one client to another"
         % (len(log), len(per_pid), handovers))

    @case("server-connections-are-shared-between-clients")
    def _():
        shared = [k for k, seq in per_pid.items() if len({c for _, c in seq}) > 1]
        assert shared and handovers > 0, per_pid.keys()
        for role in APP_ROLES:
            assert any(k[0] == role for k in shared), role

    @case("no-client-ever-sees-another-clients-context")
    def _():
        assert not violations, "%d violations: %s" % (len(violations), violations[:5])


# ---- 2. session scope behind the pooler ------------------------------------
def connect(pgb, role, alias="one"):
    c = psycopg2.connect(pgb.conninfo(alias, role))
    c.autocommit = True
    return c


def session_cases(plain, reset, tenants):
    key, account, visible = tenants[0]["keys"][0]

    @case("unguarded-session-context-reaches-the-next-client-(the-hazard)")
    def _():
        # What happens without the guard and with pgbouncer's defaults: the
        # context stays on the server session and the next client to get it
        # acts as the first one. Shown here so the cases below can fail.
        a = connect(plain, OPEN_ROLE)
        assert one(a, "SELECT tenancy.authenticate(%s, session => true)", (key,))[0] == account
        pid = one(a, "SELECT pg_backend_pid()")[0]
        a.close()
        b = connect(plain, OPEN_ROLE)
        try:
            got = one(b, "SELECT pg_backend_pid(), tenancy.whoami()->>'account', "
                         "(SELECT count(*) FROM tenancy.accounts)")
            assert got[0] == pid, "not the same server connection: %r vs %r" % (got[0], pid)
            assert got[1:] == (account, len(visible)), got
        finally:
            one(b, "SELECT tenancy.reset()")
            b.close()

    @case("guard-is-on-for-the-pooled-role")
    def _():
        c = connect(plain, GUARDED_ROLE)
        assert one(c, "SHOW tenancy.allow_session_scope")[0] == "off"
        c.close()

    @case("guarded-role-session-scope-refused-0A000")
    def _():
        a = connect(plain, GUARDED_ROLE)
        pid = one(a, "SELECT pg_backend_pid()")[0]
        try:
            one(a, "SELECT tenancy.authenticate(%s, session => true)", (key,))
            raise AssertionError("session => true was accepted")
        except psycopg2.Error as e:
            assert e.pgcode == "0A000", (e.pgcode, str(e))
            assert "allow_session_scope" in (e.diag.message_detail or ""), e.diag.message_detail
        left = one(a, "SELECT pg_backend_pid(), tenancy.whoami(), (SELECT count(*) FROM tenancy.accounts)")
        assert left == (pid, None, 0), left
        a.close()
        b = connect(plain, GUARDED_ROLE)
        got = one(b, "SELECT pg_backend_pid(), tenancy.whoami(), (SELECT count(*) FROM tenancy.accounts)")
        assert got == (pid, None, 0), (got, pid)
        b.close()

    @case("guarded-role-transaction-scope-works")
    def _():
        c = connect(plain, GUARDED_ROLE)
        c.autocommit = False
        assert one(c, "SELECT tenancy.authenticate(%s)", (key,))[0] == account
        rows = one(c, "SELECT array_agg(public_id::text ORDER BY public_id) FROM tenancy.accounts")[0]
        assert rows == visible, rows
        c.commit()
        assert one(c, "SELECT tenancy.whoami()")[0] is None
        c.close()

    @case("pooled-role-cannot-turn-the-guard-off")
    def _():
        c = connect(plain, GUARDED_ROLE)
        for sql in ("SET tenancy.allow_session_scope = on",
                    "SELECT set_config('tenancy.allow_session_scope', 'on', false)",
                    "ALTER ROLE %s SET tenancy.allow_session_scope = on" % GUARDED_ROLE,
                    "ALTER ROLE %s RESET tenancy.allow_session_scope" % GUARDED_ROLE):
            state = sqlstate_of(c, sql)
            assert state == "42501", (sql, state)
        assert one(c, "SHOW tenancy.allow_session_scope")[0] == "off"
        c.close()
        d = dba("postgres")
        setting = one(d, "SELECT array_to_string(s.setconfig, ',') FROM pg_db_role_setting s "
                         "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s", (GUARDED_ROLE,))
        d.close()
        assert setting == ("tenancy.allow_session_scope=off",), setting

    @case("reset-query-always-clears-a-session-context")
    def _():
        # pgbouncer with server_reset_query = DISCARD ALL and
        # server_reset_query_always = 1, unguarded role: the session context
        # lives in the backend's memory; DISCARD ALL must end it there too.
        a = connect(reset, OPEN_ROLE)
        assert one(a, "SELECT tenancy.authenticate(%s, session => true)", (key,))[0] == account
        pid = one(a, "SELECT pg_backend_pid()")[0]
        # Its own next transaction already runs after the reset.
        assert one(a, "SELECT pg_backend_pid(), tenancy.whoami()") == (pid, None)
        one(a, "SELECT tenancy.authenticate(%s, session => true)", (key,))
        a.close()
        b = connect(reset, OPEN_ROLE)
        got = one(b, "SELECT pg_backend_pid(), tenancy.whoami(), (SELECT count(*) FROM tenancy.accounts)")
        assert got == (pid, None, 0), (got, pid)
        b.close()

    @case("session-context-ends-when-the-guard-turns-off")
    def _():
        # A superuser's session (only one may change the setting): a session
        # context opened while allowed is not resumed once it is off.
        c = dba()
        one(c, "SELECT tenancy.authenticate(%s, session => true)", (key,))
        assert one(c, "SELECT tenancy.whoami()->>'account'")[0] == account
        c.cursor().execute("SET tenancy.allow_session_scope = off")
        assert one(c, "SELECT tenancy.whoami()") == (None,)
        c.cursor().execute("SET tenancy.allow_session_scope = on")
        assert one(c, "SELECT tenancy.whoami()") == (None,)
        c.close()

    for stmt in ("DISCARD ALL", "RESET ALL"):
        @case("%s-ends-the-session-context-in-backend-memory" % stmt.lower().replace(" ", "-"))
        def _():
            c = psycopg2.connect(host=PGHOST, port=PGPORT, user=OPEN_ROLE, dbname=DB)
            c.autocommit = True
            one(c, "SELECT tenancy.authenticate(%s, session => true)", (key,))
            assert one(c, "SELECT tenancy.whoami()->>'scope'")[0] == "session"
            c.cursor().execute(stmt)
            # Two more transactions: a record left in memory would be resumed.
            for _ in range(2):
                assert one(c, "SELECT tenancy.whoami(), (SELECT count(*) FROM tenancy.accounts)") == (None, 0)
            c.close()


# ---- 3. the gateway through pgbouncer --------------------------------------
def http(port, method, path, token=None, body=None):
    headers = {"Authorization": "Bearer " + token} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif method == "POST":
        data = b""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 headers=headers, data=data)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read().decode() or "null")
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text


def start_gateway(pgb, prepared):
    port = free_port()
    log = open(os.path.join(WORK, "gateway-prepared-%s.log" % prepared), "ab")
    proc = subprocess.Popen(
        [GATEWAY, "--listen", "127.0.0.1", "--port", str(port), "--database-url",
         pgb.conninfo("gw", GATEWAY_ROLE), "--pool-size", "6", "--max-connections-per-peer", "64",
         "--prepared-statements", prepared], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if http(port, "GET", "/readyz")[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("gateway not ready (prepared statements %s)" % prepared)


def gateway_load(port, tenants, rounds=12):
    """Eight HTTP clients at once, each its own tenant; returns (answers, wrong):
    how many requests were answered and which answers were not the client's own."""
    wrong, counted = [], []

    def run(i):
        rng = random.Random(2000 + i)
        t = tenants[i]
        created, n = t.setdefault("made", []), 0  # accounts made so far, by any run
        try:
            status, j = http(port, "POST", "/v1/auth/login", body={"email": t["email"], "password": PASSWORD})
            n += 1
            if status != 200 or j.get("account") != t["main"]:
                wrong.append("client %d login: %s %s" % (i, status, j))
                return
            session = j["token"]
            for r in range(rounds):
                key, account, visible = rng.choice(t["keys"])
                status, me = http(port, "GET", "/v1/me", token=key)
                n += 1
                if status != 200 or me.get("account") != account or me.get("principal", {}).get("kind") != "api_key":
                    wrong.append("client %d /v1/me: %s %s" % (i, status, me))
                status, me = http(port, "GET", "/v1/me", token=session)
                n += 1
                if status != 200 or me.get("account") != t["main"] or me.get("principal", {}).get("kind") != "user":
                    wrong.append("client %d /v1/me (session): %s %s" % (i, status, me))
                status, lst = http(port, "GET", "/v1/accounts?limit=100", token=key)
                n += 1
                expect = sorted(visible + created)
                if status != 200 or sorted(a["id"] for a in lst["data"]) != expect:
                    wrong.append("client %d /v1/accounts: %s %s, expected %s" % (i, status, lst, expect))
                if r % 4 == 1:
                    status, acc = http(port, "POST", "/v1/accounts", token=session,
                                       body={"parent": t["child"], "name": "made %d" % r})
                    n += 1
                    if status != 201:
                        wrong.append("client %d POST /v1/accounts: %s %s" % (i, status, acc))
                    else:
                        created.append(acc["id"])
        except Exception as e:  # a refused connection, a non-JSON answer
            wrong.append("client %d: %s: %s" % (i, type(e).__name__, e))
        finally:
            counted.append(n)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    return sum(counted), wrong


def gateway_cases(pgb, tenants):
    @case("gateway-through-pgbouncer-answers-each-client-its-own-tenant")
    def _():
        proc, port = start_gateway(pgb, "off")
        try:
            answered, wrong = gateway_load(port, tenants)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        note("gateway, prepared statements off: %d requests, %d wrong" % (answered, len(wrong)))
        assert not wrong, "%d wrong: %s" % (len(wrong), wrong[:4])
        assert answered >= CLIENTS * 12 * 3, answered

    @case("gateway-named-prepared-statements-fail-behind-pgbouncer-1.18-(the-hazard)")
    def _():
        # Why --prepared-statements off: with them on, a name prepared on one
        # server connection is missing, or taken, on the next.
        proc, port = start_gateway(pgb, "on")
        try:
            answered, wrong = gateway_load(port, tenants, rounds=4)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        note("gateway, prepared statements on: %d requests, %d wrong" % (answered, len(wrong)))
        assert wrong, "every answer was right with prepared statements on"
        with open(os.path.join(WORK, "gateway-prepared-on.log")) as f:
            log = f.read()
        assert "prepared statement" in log, "no prepared-statement error in the gateway's log"


def main():
    os.makedirs(WORK, exist_ok=True)
    tenants = setup()
    target = "host=%s port=%s dbname=%s" % (PGHOST, PGPORT, DB)
    plain = Pgbouncer(os.path.join(WORK, "plain"),
                      {"conc": target + " pool_size=2", "one": target + " pool_size=1",
                       "gw": target + " pool_size=2"},
                      PASSWORDS)
    reset = Pgbouncer(os.path.join(WORK, "reset"), {"one": target + " pool_size=1"}, PASSWORDS,
                      reset_always=True)
    try:
        plain.start()
        reset.start()
        ver = os.popen("pgbouncer --version").readline().strip()
        note("%s, pool_mode = transaction, pool_size 2 per role (1 for the session cases)" % ver)
        concurrent_clients(plain, tenants)
        session_cases(plain, reset, tenants)
        gateway_cases(plain, tenants)
    finally:
        plain.stop()
        reset.stop()
        try:
            c = dba("postgres")
            c.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % DB)
            for r in ROLES:
                c.cursor().execute("DROP ROLE IF EXISTS %s" % r)
            c.close()
        except psycopg2.Error as e:
            note("cleanup: %s" % e)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
