#!/usr/bin/python3
"""On Citus, a request goes to its main account's shard only: for every GET
route of /openapi.json whose path names at most an account, called with an
API key and with a session token, and for writes (a voice resource's, and an
account's: create, change, keys, sub-users, invitations, deactivation), each
remote command the coordinator sends (citus.log_remote_commands, the
gateway's own backends) names only shards co-located with the main
account's (or reference tables'). A request that fanned out to every shard
would name the others.

(GET /v1/me/sessions lists a user's sessions, which may be in several main
accounts: each session's account is read on its own shard, here the one.)

Usage (tests/citus/30_gateway.sh): GWLIB_CITUS="SOCKET_DIR PORT"
gateway_routing.py WORKDIR, from the repository root."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.getcwd(), "tests", "gateway"))
from gwlib import Gateway, case, finish  # noqa: E402

SHARD_NAME = re.compile(r"\btenancy\.[a-z_]+_(\d{6,})\b")
PID = re.compile(r"\[(\d+)\]")

gw = Gateway(sys.argv[1], "routing")
server_log = os.path.join(gw.cluster, "server.log")


def remote_commands(method, path, token, headers=None, body=None):
    """Calls the route and returns (response, the remote commands issued
    meanwhile, as (backend pid, line)). A GET is called once before, to
    warm plans and connections."""
    if method == "GET":
        gw.call(method, path, token=token, headers=headers)
    # A backend writes each line before it sends the command, and the
    # answer comes after the commit (the server log is the backends' own
    # stderr): the request's lines are all there when it is answered.
    time.sleep(0.05)
    start = os.path.getsize(server_log)
    r = gw.call(method, path, token=token, headers=headers, body=body)
    time.sleep(0.05)
    with open(server_log, errors="replace") as f:
        f.seek(start)
        lines = [((PID.search(line) or [None, None])[1], line)
                 for line in f.read().splitlines() if "issuing" in line]
    return r, lines


def gateway_backends():
    """The pids of the gateway's connections (its pool keeps them open)."""
    return set(gw.sql("SELECT pid FROM pg_stat_activity WHERE usename = '%s'" % gw.role).split())


try:
    main, session = gw.main_account("Routing Agency", "owner-%d@routing.test" % os.getpid(),
                                    "routing pass 1")
    key = gw.api_key(main)
    made = gw.call("POST", "/v1/accounts", token=key, body={"name": "Routing Child", "parent": main})
    assert made.status == 201, made
    child = made.json["id"]
    main_id = gw.sql("SELECT main_id FROM tenancy.accounts WHERE public_id = '%s'" % main)
    # The main account's shard group and the reference tables' shards.
    allowed = set(gw.sql("""
        SELECT s.shardid FROM pg_dist_shard s JOIN pg_dist_partition p USING (logicalrelid)
        WHERE p.partmethod = 'n'
           OR (p.colocationid = (SELECT colocationid FROM pg_dist_partition
                                 WHERE logicalrelid = 'tenancy.accounts'::regclass)
               AND s.shardminvalue = (SELECT shardminvalue FROM pg_dist_shard WHERE shardid =
                       get_shard_id_for_distribution_column('tenancy.accounts', %s)))""" %
                         main_id).split())
    shards = gw.sql("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'tenancy.accounts'::regclass")
    assert int(shards) > 1, "the accounts table has one shard: nothing to tell apart"
    gets = sorted(p for p, item in gw.call("GET", "/openapi.json").json["paths"].items()
                  if "get" in item and set(re.findall(r"\{(\w+)\}", p)) <= {"id"})
    assert "/v1/accounts" in gets and "/v1/me" in gets, gets
    gw.sql("ALTER SYSTEM SET citus.log_remote_commands = on")
    gw.sql("ALTER SYSTEM SET log_min_messages = notice")
    gw.sql("SELECT pg_reload_conf()")
    time.sleep(1)

    def check(calls, token, account_header):
        """calls: (method, path, body) in order; a callable path takes the
        answers so far (a write names what the one before made)."""
        seen = 0
        stray = []
        answers = []
        issued = []
        headers = {"Tenancy-Account": child} if account_header else None
        for method, path, body in calls:
            if callable(path):
                path = path(answers)
            r, lines = remote_commands(method, path, token, headers, body)
            assert r.status < 500, (path, r)
            answers.append(r)
            issued.append((method, path, r, lines))
        backends = gateway_backends()
        for method, path, r, lines in issued:
            for pid, line in lines:
                if pid not in backends:
                    continue
                for shard in SHARD_NAME.findall(line):
                    seen += 1
                    if shard not in allowed:
                        stray.append("%s %s (%d): shard %s: %s" % (
                            method, path, r.status, shard, line.split("issuing ", 1)[-1][:160]))
        routes = sorted(set(line.split(" (")[0] for line in stray))
        assert not stray, "%d commands on other shards, by %s; first: %s" % (
            len(stray), ", ".join(routes), stray[0])
        assert seen > 0, "no remote command named a shard: the log shows nothing"
        return [r.status for r in answers]

    reads = [("GET", template.replace("{id}", target or ""), None) for template in gets
             for target in ([main, child] if "{id}" in template else [None])]

    def agent(answers):
        return "/v1/agents/" + answers[0].json["id"]

    writes = [("POST", "/v1/agents", {"name": "Routing agent"}), ("GET", agent, None),
              ("PATCH", agent, {"name": "Routing agent 2"}), ("DELETE", agent, None)]

    def made(answers):
        return "/v1/accounts/" + answers[0].json["id"]

    account_writes = [
        ("POST", "/v1/accounts", {"name": "Routing team", "parent": child}),
        ("PATCH", made, {"name": "Routing team 2"}),
        ("POST", lambda a: made(a) + "/api-keys", {"name": "routing key", "role": "admin"}),
        ("DELETE", lambda a: made(a) + "/api-keys/" + a[2].json["id"], None),
        ("POST", "/v1/accounts/%s/sub-users" % main,  # managed in the main account
         {"email": "sub-%d@routing.test" % os.getpid(), "name": "Sub", "surname": "User",
          "password": "sub temp pass 1"}),
        ("POST", lambda a: made(a) + "/invitations",
         {"email": "invited-%d@routing.test" % os.getpid(), "role": "member"}),
        ("POST", lambda a: made(a) + "/deactivate", None),
        ("POST", lambda a: made(a) + "/reactivate", None),
    ]

    @case("api_key_requests_go_to_the_main_accounts_shard_only")
    def _():
        check(reads, key, False)

    @case("session_requests_go_to_the_main_accounts_shard_only")
    def _():
        check(reads, session, False)

    @case("session_requests_acting_in_a_child_go_to_one_shard")
    def _():
        check(reads, session, True)

    @case("voice_writes_go_to_the_main_accounts_shard_only")
    def _():
        for token, acting in [(key, False), (session, True)]:
            statuses = check(writes, token, acting)
            assert statuses == [201, 200, 200, 204], statuses

    @case("account_writes_go_to_the_main_accounts_shard_only")
    def _():
        statuses = check(account_writes, session, False)
        assert statuses == [201, 200, 201, 204, 201, 201, 200, 200], statuses
finally:
    try:
        gw.sql("ALTER SYSTEM RESET citus.log_remote_commands")
        gw.sql("ALTER SYSTEM RESET log_min_messages")
        gw.sql("SELECT pg_reload_conf()")
    finally:
        gw.stop()
sys.exit(finish())
