#!/usr/bin/python3
"""Voice-AI data over HTTP (routes_voice.cpp, extension/sql/50_voice.sql): an
agency's clients cannot see each other's agents, contacts or conversations;
the role matrix for representative cells; three support agents claiming one
escalation at once (exactly one 200, the others 409); availability; an
integration's secret never in any answer and only ciphertext for the DBA.

Run by tests/suites/31_gateway_routes.sh. Prints one PASS/FAIL line per case.
"""
import json
import subprocess
import sys
import threading

from gwlib import Gateway, case, finish

SECRET = "sk-live-TOPSECRET-4242-abcd9876"
answers = []  # every answer's text, to look for the secret in


def lit(s):
    return "'" + str(s).replace("'", "''") + "'"


def call(method, path, key, body=None, headers=None):
    r = gw.call(method, path, token=key, body=body, headers=headers)
    answers.append(r.text)
    return r


def same_404(a, b, a_id, b_id):
    """Two 404 problems alike but for the request id and the id each names."""
    a.problem(404, "not_found")
    b.problem(404, "not_found")
    ja, jb = dict(a.json), dict(b.json)
    ja.pop("request_id", None)
    jb.pop("request_id", None)
    ja = json.loads(json.dumps(ja).replace(a_id, "<id>"))
    jb = json.loads(json.dumps(jb).replace(b_id, "<id>"))
    assert ja == jb, (ja, jb)


gw = Gateway(sys.argv[1], "voice")
try:
    agency, _ = gw.main_account("Voice Agency", "owner@voice-agency.test", "a long enough password")
    agency_key = gw.api_key(agency, "owner", "agency owner")
    clinic = gw.sql("SELECT tenancy.create_account(%s, 'Clinic') FROM (SELECT tenancy.authenticate(%s)) x"
                    % (lit(agency), lit(agency_key)))
    dental = gw.sql("SELECT tenancy.create_account(%s, 'Dental') FROM (SELECT tenancy.authenticate(%s)) x"
                    % (lit(agency), lit(agency_key)))
    keys = {role: gw.api_key(clinic, role, "clinic " + role)
            for role in ("owner", "admin", "member", "support_agent", "viewer", "sub_user")}
    support = [keys["support_agent"]] + [gw.api_key(clinic, "support_agent", "support %d" % i) for i in (2, 3)]
    dental_key = gw.api_key(dental, "owner", "dental owner")
    dental_support = gw.api_key(dental, "support_agent", "dental support")
    other, _ = gw.main_account("Other Platform", "owner@voice-other.test", "a long enough password")
    other_key = gw.api_key(other, "owner", "other owner")
    ids = {}

    @case("each_client_writes_its_own_agents_contacts_conversations")
    def _():
        r = call("POST", "/v1/agents", keys["owner"], {
            "name": "Clinic receptionist", "prompt": "Answer politely.", "voice": "alloy",
            "language": "en-US", "model": {"model": "gpt-4o", "temperature": 0.2},
            "tools": {"book": {"url": "https://clinic.test/book"}}})
        assert r.status == 201, r
        assert r.json["id"].startswith("agt_") and r.json["account"] == clinic, r.json
        assert r.json["tools"] == {"book": {"url": "https://clinic.test/book"}}, r.json
        ids["clinic_agent"] = r.json["id"]
        r = call("POST", "/v1/contacts", keys["owner"], {"name": "Ann", "phone": "+15551230000",
                                                         "email": "ann@example.test", "attributes": {"vip": True}})
        assert r.status == 201, r
        ids["clinic_contact"] = r.json["id"]
        r = call("POST", "/v1/conversations", keys["owner"], {
            "agent": ids["clinic_agent"], "contact": ids["clinic_contact"], "direction": "inbound",
            "started_at": "2026-01-01T10:00:00Z", "ended_at": "2026-01-01T10:01:30Z", "status": "completed",
            "transcript": {"turns": [{"speaker": "caller", "text": "I need an appointment"},
                                     {"speaker": "agent", "text": "Tuesday at 10?"}]}})
        assert r.status == 201, r
        j = r.json
        assert j["agent"] == ids["clinic_agent"] and j["contact"] == ids["clinic_contact"], j
        assert j["duration_s"] == 90 and j["transcript"]["turns"][1]["text"] == "Tuesday at 10?", j
        ids["clinic_conv"] = j["id"]
        # The agency writes into a client's account by naming it.
        r = call("POST", "/v1/agents", agency_key, {"name": "Dental receptionist", "account": dental})
        assert r.status == 201 and r.json["account"] == dental, r
        ids["dental_agent"] = r.json["id"]
        r = call("POST", "/v1/contacts", dental_key, {"name": "Bob"})
        assert r.status == 201, r
        ids["dental_contact"] = r.json["id"]
        r = call("POST", "/v1/conversations", dental_key, {"direction": "outbound", "agent": ids["dental_agent"]})
        assert r.status == 201, r
        ids["dental_conv"] = r.json["id"]

    @case("clients_see_only_their_own_rows_the_agency_sees_both")
    def _():
        for plural, c_id, d_id in (("agents", "clinic_agent", "dental_agent"),
                                   ("contacts", "clinic_contact", "dental_contact"),
                                   ("conversations", "clinic_conv", "dental_conv")):
            seen = {k: [x["id"] for x in call("GET", "/v1/" + plural, key).json["data"]]
                    for k, key in (("clinic", keys["owner"]), ("dental", dental_key), ("agency", agency_key),
                                   ("other", other_key))}
            assert seen["clinic"] == [ids[c_id]], (plural, seen)
            assert seen["dental"] == [ids[d_id]], (plural, seen)
            assert sorted(seen["agency"]) == sorted([ids[c_id], ids[d_id]]), (plural, seen)
            assert seen["other"] == [], (plural, seen)

    @case("another_clients_rid_answers_exactly_like_a_missing_one")
    def _():
        before = gw.sql("SELECT string_agg(name || updated_at, ',' ORDER BY id) FROM tenancy.agents")
        for plural, rid in (("agents", ids["clinic_agent"]), ("contacts", ids["clinic_contact"]),
                            ("conversations", ids["clinic_conv"])):
            missing = rid[:-4] + ("0000" if not rid.endswith("0000") else "1111")
            for method, body in (("GET", None), ("PATCH", {}), ("DELETE", None)):
                for key in (dental_key, other_key):
                    a = call(method, "/v1/%s/%s" % (plural, rid), key, body)
                    b = call(method, "/v1/%s/%s" % (plural, missing), key, body)
                    same_404(a, b, rid, missing)
        assert gw.sql("SELECT string_agg(name || updated_at, ',' ORDER BY id) FROM tenancy.agents") == before
        assert call("GET", "/v1/conversations/" + ids["clinic_conv"], keys["owner"]).status == 200

    @case("references_to_another_clients_rows_are_not_found")
    def _():
        n = gw.sql("SELECT count(*) FROM tenancy.conversations")
        a = call("POST", "/v1/conversations", keys["owner"], {"direction": "inbound", "agent": ids["dental_agent"]})
        b = call("POST", "/v1/conversations", keys["owner"], {"direction": "inbound", "agent": "agt_1_1_0000000000"})
        same_404(a, b, ids["dental_agent"], "agt_1_1_0000000000")
        a = call("POST", "/v1/agents", keys["owner"], {"name": "x", "account": dental})
        b = call("POST", "/v1/agents", keys["owner"], {"name": "x", "account": "acc_1_000000000000"})
        same_404(a, b, dental, "acc_1_000000000000")
        assert gw.sql("SELECT count(*) FROM tenancy.conversations") == n

    @case("role_matrix_representative_cells")
    def _():
        agent = "/v1/agents/" + ids["clinic_agent"]
        conv = "/v1/conversations/" + ids["clinic_conv"]
        cells = [
            # a member reads call history but changes no agent
            ("member", "GET", "/v1/conversations", None, 200),
            ("member", "PATCH", agent, {"name": "renamed"}, 403),
            ("member", "POST", "/v1/agents", {"name": "x"}, 403),
            # a viewer changes nothing
            ("viewer", "GET", agent, None, 200),
            ("viewer", "POST", "/v1/contacts", {"name": "x"}, 403),
            ("viewer", "PATCH", conv, {"status": "failed"}, 403),
            ("viewer", "DELETE", "/v1/contacts/" + ids["clinic_contact"], None, 403),
            # a support agent writes conversations, not agents
            ("support_agent", "PATCH", conv, {"ended_at": "2026-12-01T10:05:00Z"}, 200),
            ("support_agent", "POST", "/v1/agents", {"name": "x"}, 403),
            # a sub-user edits agents and their tools, not conversations
            ("sub_user", "PATCH", agent, {"tools": {"book": {"url": "https://clinic.test/v2"}}}, 200),
            ("sub_user", "POST", "/v1/conversations", {"direction": "inbound"}, 403),
            ("sub_user", "DELETE", conv, None, 403),
            # an admin configures agents
            ("admin", "PATCH", agent, {"prompt": "Be brief."}, 200),
        ]
        for role, method, path, body, status in cells:
            r = call(method, path, keys[role], body)
            assert r.status == status, (role, method, path, r)
            if status == 403:
                r.problem(403, "forbidden")
        j = call("GET", agent, keys["owner"]).json
        assert j["name"] == "Clinic receptionist" and j["prompt"] == "Be brief.", j
        assert j["tools"] == {"book": {"url": "https://clinic.test/v2"}}, j

    @case("bad_bodies_422_naming_the_field_nothing_changed")
    def _():
        n = gw.sql("SELECT count(*) FROM tenancy.agents")
        for body, field in (({}, "name"), ({"name": 5}, "name"), ({"name": "x", "colour": "red"}, "colour"),
                            ({"name": "x", "model": []}, "model"), ({"name": "x" * 201}, "name")):
            r = call("POST", "/v1/agents", keys["owner"], body)
            assert r.problem(422, "invalid_field").get("field") == field, (body, r)
        r = call("POST", "/v1/conversations", keys["owner"], {"direction": "sideways"})
        assert r.problem(422, "invalid_field").get("field") == "direction", r
        r = call("POST", "/v1/conversations", keys["owner"],
                 {"direction": "inbound", "transcript": {"turns": [{"speaker": "agent"}]}})
        assert r.status == 422 and r.headers.get("Content-Type", "").startswith("application/problem+json"), r
        r = call("PATCH", "/v1/agents/" + ids["clinic_agent"], keys["owner"], {"name": None})
        assert r.status == 422, r
        assert gw.sql("SELECT count(*) FROM tenancy.agents") == n

    @case("lists_page_with_sealed_cursors")
    def _():
        for i in range(3):
            assert call("POST", "/v1/contacts", keys["owner"], {"name": "page %d" % i}).status == 201
        seen, cursor = [], None
        while True:
            r = call("GET", "/v1/contacts?limit=2" + ("&cursor=" + cursor if cursor else ""), keys["owner"])
            assert r.status == 200, r
            seen += [x["id"] for x in r.json["data"]]
            cursor = r.json["next_cursor"]
            if not cursor:
                break
        assert len(seen) == 4 and len(set(seen)) == 4, seen
        r = call("GET", "/v1/contacts?limit=2", keys["owner"])
        r = call("GET", "/v1/contacts?limit=2&cursor=" + r.json["next_cursor"], dental_key)
        r.problem(422, "invalid_cursor")

    @case("escalation_queue_visible_only_in_the_subtree")
    def _():
        r = call("PATCH", "/v1/conversations/" + ids["clinic_conv"], keys["owner"],
                 {"escalation_state": "queued", "status": "escalated"})
        assert r.status == 200 and r.json["escalation_state"] == "queued", r
        q = call("GET", "/v1/escalations", support[0])
        assert [x["id"] for x in q.json["data"]] == [ids["clinic_conv"]], q
        assert call("GET", "/v1/escalations", dental_support).json["data"] == []
        assert call("GET", "/v1/escalations", agency_key).json["data"][0]["id"] == ids["clinic_conv"]
        call("GET", "/v1/escalations", keys["viewer"]).problem(403, "forbidden")
        a = call("POST", "/v1/conversations/%s/claim" % ids["clinic_conv"], dental_support)
        b = call("POST", "/v1/conversations/conv_1_1_0000000000/claim", dental_support)
        same_404(a, b, ids["clinic_conv"], "conv_1_1_0000000000")
        call("POST", "/v1/conversations/%s/claim" % ids["clinic_conv"], keys["member"]).problem(403, "forbidden")
        call("POST", "/v1/conversations/%s/claim" % ids["dental_conv"], dental_support).problem(409, "conflict")

    @case("three_support_agents_claim_at_once_exactly_one_wins")
    def _():
        for round_no in range(3):
            r = call("POST", "/v1/conversations", keys["owner"], {"direction": "inbound", "status": "escalated",
                                                                  "escalation_state": "queued"})
            rid = r.json["id"]
            barrier = threading.Barrier(3)
            results = [None] * 3

            def claim(i):
                barrier.wait()
                results[i] = call("POST", "/v1/conversations/%s/claim" % rid, support[i])
            threads = [threading.Thread(target=claim, args=(i,)) for i in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            statuses = sorted(x.status for x in results)
            assert statuses == [200, 409, 409], (round_no, results)
            winner = [x for x in results if x.status == 200][0].json
            for x in results:
                if x.status == 409:
                    x.problem(409, "conflict")
            stored = gw.sql("SELECT escalation_state || ' ' || claimed_by FROM tenancy.conversations "
                            "WHERE public_id = %s" % lit(rid))
            assert stored == "claimed " + winner["claimed_by"], (stored, winner)
            assert winner["claimed_by"].startswith("api_key:key_"), winner

    @case("availability_of_support_agents")
    def _():
        r = call("PUT", "/v1/me/availability", support[0], {"status": "online"})
        assert r.status == 200 and r.json["status"] == "online" and r.json["account"] == clinic, r
        r = call("PUT", "/v1/me/availability", support[0], {"status": "away"})
        assert r.status == 200 and r.json["status"] == "away", r
        assert gw.sql("SELECT count(*) FROM tenancy.support_availability") == "1"
        call("PUT", "/v1/me/availability", keys["viewer"], {"status": "online"}).problem(403, "forbidden")
        r = call("PUT", "/v1/me/availability", support[0], {"status": "busy"})
        assert r.problem(422, "invalid_field").get("field") == "status", r
        assert gw.sql("SELECT status FROM tenancy.support_availability") == "away"

    @case("integration_secret_never_answered_and_ciphertext_for_the_dba")
    def _():
        gw.sql("SELECT tenancy.authenticate(%s); INSERT INTO tenancy.integrations (provider, name, secret) "
               "VALUES ('twilio', 'Clinic Twilio', %s)" % (lit(keys["owner"]), lit(SECRET)))
        # What the DBA reads: ciphertext, a hint, no clear column.
        row = gw.sql("SELECT coalesce(secret, '<null>') || ' ' || secret_hint || ' ' || encode(secret_sealed, 'hex') "
                     "FROM tenancy.integrations")
        assert SECRET not in row and SECRET.encode().hex() not in row, row
        assert row.startswith("<null> ...9876 "), row
        dump = subprocess.run(["pg_dump", "-h", gw.cluster, "-p", str(gw.pg_port), "-U", "postgres", "-a",
                               "-t", "tenancy.integrations", "-t", "tenancy.audit_log", "postgres"],
                              capture_output=True, text=True, timeout=120)
        assert dump.returncode == 0, dump.stderr
        assert "Clinic Twilio" in dump.stdout and SECRET not in dump.stdout, "secret in dump"
        # Nothing a client reads holds it: the audit log over REST, every answer so far.
        r = call("GET", "/v1/accounts/%s/audit-log?limit=500" % clinic, keys["owner"])
        assert r.status == 200, r
        everything = "\n".join(answers)
        assert SECRET not in everything and "TOPSECRET" not in everything, "secret in an answer"
        assert gw.sql("SELECT count(*) FROM tenancy.audit_entries() WHERE change::text LIKE '%TOPSECRET%'") == "0"

    @case("delete_keeps_call_history")
    def _():
        r = call("DELETE", "/v1/agents/" + ids["clinic_agent"], keys["owner"])
        assert r.status == 204, r
        call("GET", "/v1/agents/" + ids["clinic_agent"], keys["owner"]).problem(404, "not_found")
        j = call("GET", "/v1/conversations/" + ids["clinic_conv"], keys["owner"]).json
        assert j["agent"] is None and j["contact"] == ids["clinic_contact"], j
finally:
    gw.stop()
sys.exit(finish())
