"""Shared harness for the gateway's route tests (tests/gateway/routes_*.py).

Each test file makes one Gateway: a throw-away PostgreSQL cluster with the
extension installed (shared_preload_libraries = tenancy, so the background
sealer and login writer run), a gateway login role made by
tenancy.create_client(..., gateway => true), and the real tenancy-gateway
binary on a free loopback port. Tests talk to it over HTTP only; gw.sql() is
the DBA in psql, for setting up and for checking what the database holds.

Usage (run from the repository root with PG_CONFIG exported):
    gw = Gateway(sys.argv[1], "accounts")
    try:
        @case("name")
        def _(): ...
    finally:
        gw.stop()
    sys.exit(finish())
Prints one "PASS name" / "FAIL name: why" line per case.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.getcwd()
GATEWAY = os.path.join(ROOT, "gateway", "tenancy-gateway")

_failures = 0


def report(ok, name, why=""):
    global _failures
    if ok:
        print("PASS " + name, flush=True)
    else:
        _failures += 1
        print("FAIL %s: %s" % (name, why.replace("\n", " ")[:600]), flush=True)


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


def finish():
    """The exit status: 0 when every case passed."""
    return 1 if _failures else 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(fn, bound_s, what):
    deadline = time.monotonic() + bound_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # not there yet
            last = e
        time.sleep(0.1)
    raise AssertionError("%s not reached within %s s (last: %r)" % (what, bound_s, last))


class Response:
    """status, headers, text and (when JSON) json of one answer."""

    def __init__(self, status, headers, text):
        self.status = status
        self.headers = headers
        self.text = text
        try:
            self.json = json.loads(text) if text else None
        except ValueError:
            self.json = None

    def __iter__(self):  # status, headers, body = gw.call(...)
        return iter((self.status, self.headers, self.json if self.json is not None else self.text))

    def __repr__(self):
        return "<%d %s>" % (self.status, self.text[:300])

    def problem(self, status, code):
        """Asserts a problem+json answer with this status and code; returns it."""
        assert self.status == status, (status, self)
        ctype = self.headers.get("Content-Type", "")
        assert ctype.startswith("application/problem+json"), (ctype, self)
        assert self.json["status"] == status and self.json["code"] == code, (code, self)
        assert self.json.get("title") and self.json.get("detail"), self
        return self.json


class Gateway:
    def __init__(self, work_dir, name, gateway_args=None, replica=False):
        """replica: also build a streaming hot standby of the cluster
        (self.standby, self.standby_port) and start the gateway with
        --replica-url pointing at it."""
        self.cluster = os.path.join(work_dir, "gw-%s-pg" % name)
        self.log = os.path.join(work_dir, "gw-%s.log" % name)
        self.err = os.path.join(work_dir, "gw-%s.err" % name)
        self.pg_port = free_port()
        self.port = free_port()
        self.role = "gw_%s" % name.replace("-", "_")
        self.citus = os.environ.get("GWLIB_CITUS")
        if self.citus:
            self._use_coordinator(args=gateway_args)
            return
        if os.path.isdir(self.cluster):  # left by an earlier run
            subprocess.run(["bash", "-c", '. tests/lib/cluster.sh; cluster_running "$1" && '
                            'cluster_stop "$1"; rm -rf "$1"', "_", self.cluster], timeout=120)
        self._cluster("cluster_init", self.pg_port)
        with open(os.path.join(self.cluster, "data", "postgresql.conf"), "a") as conf:
            conf.write("shared_preload_libraries = 'tenancy'\n"
                       "tenancy.audit_databases = 'postgres'\n")
            if replica:
                conf.write("wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n")
        if replica:
            with open(os.path.join(self.cluster, "data", "pg_hba.conf"), "a") as hba:
                hba.write("local replication all trust\n")
        self._cluster("cluster_start")
        self.sql("CREATE EXTENSION tenancy")
        self.sql("SELECT tenancy.create_client('%s', NULL, gateway => true)" % self.role)
        self.conninfo = "host=%s port=%d dbname=postgres user=%s" % (
            self.cluster, self.pg_port, self.role)
        self.standby = None
        args = list(gateway_args or [])
        self.pgbouncer = None
        if os.environ.get("GWLIB_PGBOUNCER"):
            # tests/suites/35_pgbouncer.sh: the gateway reaches the cluster
            # through a real pgbouncer in transaction mode, one server
            # connection for all of its own (docs/operations/pooling.md).
            sys.path.insert(0, os.path.join(ROOT, "tests", "pgbouncer"))
            from pgbouncer import Pgbouncer
            self.pgbouncer = Pgbouncer(
                os.path.join(work_dir, "gw-%s-pgbouncer" % name),
                {"postgres": "host=%s port=%d dbname=postgres" % (self.cluster, self.pg_port)},
                {self.role: "pw-" + self.role}, pool_size=1).start()
            self.conninfo = self.pgbouncer.conninfo("postgres", self.role)
        if replica:
            self._make_standby(work_dir, name)
            args += ["--replica-url", "host=%s port=%d dbname=postgres user=%s" % (
                self.standby, self.standby_port, self.role)]
        self.proc = None
        self.start(args)

    def _use_coordinator(self, args):
        """GWLIB_CITUS="SOCKET_DIR PORT" (tests/citus/30_gateway.sh): the gateway
        runs against an existing Citus coordinator where tenancy is distributed.
        Its login role needs a password on the workers too, held by the
        coordinator (pg_dist_authinfo), as Citus connects to them as that role
        for the gateway's own statements."""
        self.cluster, port = self.citus.split()
        self.pg_port = int(port)
        self.standby = None
        self.pgbouncer = None
        password = "worker-" + self.role
        self.sql("SELECT tenancy.create_client('%s', NULL, gateway => true)" % self.role)
        self.sql("ALTER ROLE %s PASSWORD '%s'" % (self.role, password))
        self.sql("INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) "
                 "VALUES (0, '%s', 'password=%s')" % (self.role, password))
        self.conninfo = "host=%s port=%d dbname=postgres user=%s" % (
            self.cluster, self.pg_port, self.role)
        self.proc = None
        self.start(list(args or []))

    def _make_standby(self, work_dir, name):
        self.standby = os.path.join(work_dir, "gw-%s-standby-pg" % name)
        self.standby_port = free_port()
        subprocess.run(["bash", "-c", """
            . tests/lib/cluster.sh
            if [ -d "$1" ]; then cluster_running "$1" && cluster_stop "$1"; rm -rf "$1"; fi
            mkdir -p "$1" && chmod 0755 "$1"
            [ "$(id -u)" = 0 ] && chown postgres: "$1"
            as_postgres "$PG_BINDIR/pg_basebackup" -h "$2" -p "$3" -U postgres -D "$1/data" -R -X stream
            printf "port = %s\nunix_socket_directories = '%s'\n" "$4" "$1" |
                as_postgres tee -a "$1/data/postgresql.conf" >/dev/null
            cluster_start "$1"
            """, "_", self.standby, self.cluster, str(self.pg_port), str(self.standby_port)],
            check=True, timeout=180, capture_output=True)

    def standby_sql(self, query):
        """Runs query on the standby as the DBA."""
        r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.standby,
                            "-p", str(self.standby_port), "-U", "postgres", "-d", "postgres",
                            "-c", query], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("psql (standby) failed: %s" % r.stderr.strip())
        return r.stdout.strip()

    def standby_ctl(self, op):
        """cluster_start / cluster_stop on the standby."""
        subprocess.run(["bash", "-c", '. tests/lib/cluster.sh; "$@"', "_", op, self.standby],
                       check=True, timeout=120, capture_output=True)

    def _cluster(self, op, *args):
        subprocess.run(["bash", "-c", '. tests/lib/cluster.sh; "$@"', "_", op, self.cluster] +
                       [str(a) for a in args], check=True, timeout=120, capture_output=True)

    def start(self, extra_args):
        if self.pgbouncer:  # pgbouncer 1.18 keeps no prepared statement across transactions
            extra_args = ["--prepared-statements", "off"] + list(extra_args)
        self.proc = subprocess.Popen(
            [GATEWAY, "--listen", "127.0.0.1", "--port", str(self.port), "--database-url",
             self.conninfo, "--pool-size", "4"] + list(extra_args),
            stdout=open(self.log, "ab"), stderr=open(self.err, "ab"))
        poll(lambda: self.raw("GET", "/readyz").status == 200, 20, "gateway ready")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.pgbouncer:
            self.pgbouncer.stop()
        if self.standby:
            try:
                self.standby_ctl("cluster_stop")
            except Exception:
                pass
        if self.citus:  # the suite's cluster, not ours
            return
        try:
            self._cluster("cluster_stop")
        except Exception:
            pass

    def sql(self, query, db="postgres"):
        """Runs query in psql as the DBA (postgres); returns its unaligned output."""
        r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.cluster,
                            "-p", str(self.pg_port), "-U", "postgres", "-d", db, "-c", query],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("psql failed: %s" % r.stderr.strip())
        return r.stdout.strip()

    def raw(self, method, path, headers=None, data=None, timeout=15):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), method=method,
                                     headers=headers or {}, data=data)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, r.headers, r.read().decode())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read().decode())

    def call(self, method, path, token=None, body=None, headers=None, raw_body=None):
        """One request; body is sent as JSON, raw_body as given (bytes)."""
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        elif method in ("POST", "PUT", "PATCH", "DELETE"):
            data = b""
        return self.raw(method, path, h, data)

    def main_account(self, name, email, password, plan="standard"):
        """Creates a main account as the DBA; returns (account id, owner's session token)."""
        account = self.sql("SELECT tenancy.create_main_account('%s', '%s', '%s', '%s')" % (
            name.replace("'", "''"), email, password.replace("'", "''"), plan))
        token = self.sql("SELECT tenancy.login('%s', '%s', '%s')" % (
            email, password.replace("'", "''"), account))
        return account, token

    def api_key(self, account, role="owner", name="test key"):
        """A bootstrap API key for account (DBA)."""
        return self.sql("SELECT tenancy.admin_create_api_key('%s', '%s', '%s')" % (
            account, name, role))
