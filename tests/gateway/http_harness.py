"""Shared helpers of the gateway HTTP-layer tests (tests/gateway/http_*.py):
a database with the extension in the run's cluster (PGHOST/PGPORT/PGUSER, as
tests/run-all sets them) or a throw-away cluster of its own, the real gateway
binary, raw HTTP/1.1 over sockets, and PASS/FAIL lines.
"""
import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.getcwd()
# HTTP_TEST_GATEWAY: another binary to run the same tests against.
GATEWAY = os.environ.get("HTTP_TEST_GATEWAY") or os.path.join(ROOT, "gateway", "tenancy-gateway")
GW_ROLE = "gw_http"  # the gateways' own database login role

failures = 0
started = []  # gateway processes to kill on the way out


def kill_started():
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


# Also when a script dies before finish() (e.g. its output pipe closed).
atexit.register(kill_started)


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


def note(text):
    """A measurement: printed, never asserted."""
    print("# " + text, flush=True)


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
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.1)
    raise AssertionError("%s not reached within %s s (last: %r)" % (what, bound_s, last))


class Cluster:
    """A cluster to run psql against: the run's own (host/port from the
    environment) or a throw-away one in dir (which tests may stop)."""

    def __init__(self, host, port, own_dir=None):
        self.host, self.port, self.own_dir = host, port, own_dir

    @classmethod
    def of_run(cls):
        return cls(os.environ["PGHOST"], int(os.environ["PGPORT"]))

    @classmethod
    def own(cls, directory):
        port = free_port()
        c = cls(directory, port, directory)
        c.op("cluster_init", port)
        c.op("cluster_start")
        return c

    def op(self, name, *args):
        subprocess.run(["bash", "-c", '. tests/lib/cluster.sh; "$@"', "_", name, self.own_dir] +
                       [str(a) for a in args], check=True, timeout=120)

    def running(self):
        return subprocess.run(["bash", "-c", '. tests/lib/cluster.sh; cluster_running "$1"', "_",
                               self.own_dir], timeout=60).returncode == 0

    def psql(self, sql, db="postgres"):
        return subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.host,
                               "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
                              check=True, capture_output=True, text=True, timeout=60).stdout.strip()

    def api_database(self, db):
        """Creates db with the extension, the gateway role (once per cluster)
        and a main account; returns (conninfo for the gateway, API key)."""
        self.psql("CREATE DATABASE %s" % db)
        self.psql("CREATE EXTENSION tenancy", db)
        if self.psql("SELECT count(*) FROM pg_roles WHERE rolname = '%s'" % GW_ROLE, db) == "0":
            self.psql("SELECT tenancy.create_client('%s', NULL, gateway => true)" % GW_ROLE, db)
        main = self.psql("SELECT tenancy.create_main_account('Http %s', 'owner@%s.test', "
                         "'http-pass-1')" % (db, db), db)
        key = self.psql("SELECT tenancy.admin_create_api_key('%s', 'http test key')" % main, db)
        return "host=%s port=%d dbname=%s user=%s" % (self.host, self.port, db, GW_ROLE), key


def start_gateway(work, name, args):
    """Starts the gateway on a free loopback port; returns (process, port)
    once /healthz answers (over TLS when args name a certificate)."""
    port = free_port()
    proc = subprocess.Popen([GATEWAY, "--listen", "127.0.0.1", "--port", str(port)] + args,
                            stdout=open(os.path.join(work, name + ".log"), "ab"),
                            stderr=open(os.path.join(work, name + ".err"), "ab"))
    started.append(proc)
    tls = "--tls-cert" in args

    def up():
        if proc.poll() is not None:
            raise AssertionError("gateway exited with %s: %s" % (
                proc.returncode, open(os.path.join(work, name + ".err")).read()[-500:]))
        if tls:
            return subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
                                   "https://127.0.0.1:%d/healthz" % port],
                                  capture_output=True, text=True, timeout=10).stdout == "200"
        return exchange(connect(port), "GET", "/healthz")[0] == 200
    poll(up, 20, "gateway %s up" % name)
    return proc, port


def stop_gateway(proc, bound_s=30):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=bound_s)


def connect(port, source="127.0.0.1", timeout=10):
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def send_request(sock, method, path, headers=None, body=b""):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: %d" % len(body))
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def read_response(sock):
    """(status, headers dict with lower-case names, body bytes); status 0
    when the server closed before answering."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            if not data:
                return 0, {}, b""
            raise AssertionError("closed inside the headers: %r" % data[:200])
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("closed inside the body")
        body += chunk
    return status, headers, body


def exchange(sock, method, path, headers=None, body=b""):
    send_request(sock, method, path, headers, body)
    return read_response(sock)


def problem(status, headers, body, code):
    assert headers.get("content-type", "").startswith("application/problem+json"), headers
    j = json.loads(body)
    assert j["status"] == status and j["code"] == code, j
    return j


def percentile(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def finish():
    kill_started()
    sys.exit(1 if failures else 0)
