#!/usr/bin/python3
"""GETs on a hot standby (--replica-url): served there while it keeps up,
from the primary when it lags more than --replica-max-lag-ms or is down; the
audit records of GETs still land on the primary.

Usage: routes_replica.py WORKDIR (from the repository root)."""
import sys
import time

from gwlib import Gateway, case, finish, poll

gw = Gateway(sys.argv[1], "replica", gateway_args=["--replica-max-lag-ms", "500"], replica=True)
try:
    account, owner = gw.main_account("Replica Agency", "owner@replica.test", "replica pass 1")
    key = gw.api_key(account)
    # The standby has the account once it replayed it.
    poll(lambda: gw.standby_sql("SELECT count(*) FROM tenancy.accounts") != "0", 15,
         "the standby replays the account")

    # A second gateway on the same primary and standby that tolerates any
    # lag: what it answers comes from the standby.
    import subprocess
    from gwlib import GATEWAY, free_port
    port2 = free_port()
    gw2 = subprocess.Popen([GATEWAY, "--port", str(port2), "--database-url", gw.conninfo,
                            "--replica-url", "host=%s port=%d dbname=postgres user=%s" % (
                                gw.standby, gw.standby_port, gw.role),
                            "--replica-max-lag-ms", "3600000"],
                           stdout=open(gw.log + ".2", "ab"), stderr=subprocess.STDOUT)

    def call2(path, rid=None):
        saved = gw.port
        gw.port = port2
        try:
            return gw.call("GET", path, token=key, headers={"X-Request-Id": rid} if rid else None)
        finally:
            gw.port = saved
    poll(lambda: call2("/v1/me").status == 200, 20, "second gateway up")

    def listed(caller, rid):
        r = caller("/v1/accounts/%s/audit-log?action=api.request&limit=500" % account)
        assert r.status == 200, r
        return any(e["change"].get("request_id") == rid for e in r.json["data"])

    def via_gw1(path):
        return gw.call("GET", path, token=key)

    @case("get_records_land_on_the_primary")
    def _():
        rid = "replica-read-%d" % time.time_ns()
        assert call2("/v1/me", rid).status == 200
        poll(lambda: gw.sql("SELECT count(*) FROM tenancy.audit_log WHERE action = 'api.request' "
                            "AND change->>'request_id' = '%s'" % rid) == "1", 10,
             "the GET recorded on the primary")

    @case("gets_served_by_the_standby_and_by_the_primary_past_the_lag_bound")
    def _():
        gw.standby_sql("SELECT pg_wal_replay_pause()")
        try:
            # An entry the paused standby cannot have: recorded and sealed on
            # the primary only.
            rid = "replica-paused-%d" % time.time_ns()
            assert via_gw1("/v1/me").status == 200
            assert gw.call("GET", "/v1/me", token=key, headers={"X-Request-Id": rid}).status == 200
            # The gateway bounding the lag at 500 ms reads the primary now.
            poll(lambda: listed(via_gw1, rid), 15, "the fresh entry listed through gateway 1")
            # The one that tolerates any lag still reads the paused standby.
            for _ in range(3):
                assert not listed(call2, rid), "gateway 2 did not read the standby"
        finally:
            gw.standby_sql("SELECT pg_wal_replay_resume()")
        poll(lambda: listed(call2, rid), 15, "the standby caught up")

    @case("standby_down_gets_answered_by_the_primary")
    def _():
        gw.standby_ctl("cluster_stop")
        try:
            for _ in range(10):
                r = gw.call("GET", "/v1/me", token=key)
                assert r.status == 200, r
        finally:
            gw.standby_ctl("cluster_start")
        poll(lambda: gw.call("GET", "/v1/me", token=key).status == 200, 15, "answers after restart")

    @case("writes_never_go_to_the_standby")
    def _():
        r = gw.call("GET", "/v1/accounts/%s/audit-log" % account, token=owner)
        assert r.status == 200, r
        # A mutating route (any POST) runs on the primary: the standby would
        # refuse it (25006) and the answer would be 500.
        r = gw.call("POST", "/v1/accounts", token=owner, body={"parent": account, "name": "W"})
        assert r.status == 201, r
finally:
    try:
        gw2.terminate()
        gw2.wait(timeout=30)
    except Exception:
        pass
    gw.stop()
sys.exit(finish())
