"""A real pgbouncer (the Debian package) for tests: its own ini and userlist
in a directory of its own, run as the postgres user on loopback, in
transaction pooling mode unless told otherwise.

    pgb = Pgbouncer(dir, {"alias": "host=... port=... dbname=... pool_size=1"},
                    {"role": "password"}, reset_always=False)
    pgb.start(); ... pgb.conninfo("alias", "role"); ... pgb.stop()
"""
import os
import shutil
import signal
import socket
import subprocess
import time

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(argv):
    """argv run as the postgres user when we are root (as tests/lib/cluster.sh does)."""
    return (["runuser", "-u", "postgres", "--"] + argv) if os.getuid() == 0 else argv


class Pgbouncer:
    def __init__(self, directory, databases, users, pool_mode="transaction", pool_size=2,
                 reset_always=False):
        """databases: alias -> libpq-style target ("host=... port=... dbname=...",
        pgbouncer's per-database options such as pool_size may follow).
        users: role -> clear password, written to the auth file; clients
        authenticate to pgbouncer with SCRAM-SHA-256."""
        self.dir = directory
        self.port = free_port()
        self.ini = os.path.join(directory, "pgbouncer.ini")
        self.pidfile = os.path.join(directory, "pgbouncer.pid")
        self.log = os.path.join(directory, "pgbouncer.log")
        self.users = dict(users)
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o755)
        with open(os.path.join(directory, "userlist.txt"), "w") as f:
            for role, password in self.users.items():
                f.write('"%s" "%s"\n' % (role, password))
        with open(self.ini, "w") as f:
            f.write("[databases]\n")
            for alias, target in databases.items():
                f.write("%s = %s\n" % (alias, target))
            f.write("\n[pgbouncer]\n")
            f.write("listen_addr = 127.0.0.1\nlisten_port = %d\n" % self.port)
            f.write("unix_socket_dir = %s\n" % directory)
            f.write("auth_type = scram-sha-256\nauth_file = %s\n" % os.path.join(directory, "userlist.txt"))
            f.write("pool_mode = %s\ndefault_pool_size = %d\n" % (pool_mode, pool_size))
            f.write("min_pool_size = 0\nreserve_pool_size = 0\nmax_client_conn = 200\n")
            f.write("server_reset_query = DISCARD ALL\n")
            f.write("server_reset_query_always = %d\n" % (1 if reset_always else 0))
            f.write("ignore_startup_parameters = extra_float_digits\n")
            f.write("logfile = %s\npidfile = %s\n" % (self.log, self.pidfile))
        if os.getuid() == 0:
            shutil.chown(directory, "postgres")
            for name in os.listdir(directory):
                shutil.chown(os.path.join(directory, name), "postgres")

    def start(self):
        subprocess.run(_as_postgres([PGBOUNCER, "-d", "-q", self.ini]), check=True, timeout=30,
                       capture_output=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("pgbouncer did not listen on %d (see %s)" % (self.port, self.log))

    def pid(self):
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)  # immediate shutdown
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def conninfo(self, alias, role):
        return "host=127.0.0.1 port=%d dbname=%s user=%s password=%s" % (
            self.port, alias, role, self.users[role])
