#!/usr/bin/python3
"""CPU time of one backend per audited row (less sensitive to a shared
machine than throughput): 3 x 20,000-row INSERT and UPDATE statements per
variant, best of 3, minus the same without audit; and the sealer's CPU per
entry. Connects with PGHOST/PGPORT/PGUSER to database `bench` (setup.sql).
The background sealer is paused (tenancy.audit_databases = '') meanwhile."""
import os
import time

import psycopg2

conn = psycopg2.connect(dbname="bench")
conn.autocommit = True
cur = conn.cursor()
cur.execute("SELECT pg_backend_pid()")
pid = cur.fetchone()[0]
tick = os.sysconf("SC_CLK_TCK")


def cpu_ms():
    fields = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / tick


def timed(sql):
    t0 = cpu_ms()
    cur.execute(sql)
    return cpu_ms() - t0


TRIGGERS = {"ours": "tenancy_audit", "plpgsql": "audit_plain", "chain": "audit_chain"}


def use(variant):
    for name in TRIGGERS.values():
        cur.execute(f"ALTER TABLE bench.items DISABLE TRIGGER {name}")
    if variant in TRIGGERS:
        cur.execute(f"ALTER TABLE bench.items ENABLE TRIGGER {TRIGGERS[variant]}")


ROWS = 20000
INSERT = (f"INSERT INTO bench.items (account_path, name, val, note) SELECT (1 + g % 100)::text::tenancy.account_path,"
          f" 'cpu', g, 'n' FROM generate_series(1, {ROWS}) g")
UPDATE = f"UPDATE bench.items SET val = val + 1, note = 'cpu' WHERE id <= {ROWS}"

cur.execute("ALTER SYSTEM SET tenancy.audit_databases = ''")
cur.execute("SELECT pg_reload_conf()")
time.sleep(4)  # the running sealer finishes its lifetime
try:
    cur.execute("SELECT tenancy.audit_seal()")
    best = {}
    for op, sql in (("insert", INSERT), ("update", UPDATE)):
        for _ in range(3):
            for variant in ("none", "ours", "plpgsql", "chain"):
                use(variant)
                ms = timed(sql)
                key = (op, variant)
                best[key] = min(best.get(key, ms), ms)
    use("none")
    for op in ("insert", "update"):
        base = best[(op, "none")]
        line = f"{op}: none {base * 1000 / ROWS:.1f} us/row"
        for variant in ("ours", "plpgsql", "chain"):
            line += f"; {variant} +{(best[(op, variant)] - base) * 1000 / ROWS:.1f}"
        print(line)
    cur.execute("SELECT (SELECT count(*) FROM tenancy.audit_log)"
                " - (SELECT coalesce(sum(n), 0) FROM tenancy.audit_chain)")
    pending = cur.fetchone()[0]
    ms = timed("SELECT tenancy.audit_seal()")
    print(f"sealer: {pending} entries in {ms:.0f} ms CPU = {ms * 1000 / max(pending, 1):.1f} us/entry")
finally:
    cur.execute("ALTER SYSTEM RESET tenancy.audit_databases")
    cur.execute("SELECT pg_reload_conf()")
