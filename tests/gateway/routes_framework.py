#!/usr/bin/python3
"""The route table's promises, over HTTP: /openapi.json is a valid OpenAPI 3.1
document, every operation in it answers as it says (a walker calls each
one), bodies and query parameters are validated before anything runs,
cursors are sealed, GETs run read-only and are recorded in batches, and
Idempotency-Key replays a POST's first answer.

Usage: routes_framework.py WORKDIR (from the repository root)."""
import json
import re
import sys
import time

import jsonschema  # Debian's python3-jsonschema (scripts/deps)

from gwlib import Gateway, case, finish, poll

gw = Gateway(sys.argv[1], "framework")
try:
    account, owner = gw.main_account("Walker Agency", "owner@walker.test", "walker pass 1")
    doc = gw.call("GET", "/openapi.json").json

    @case("openapi_document_is_valid_openapi_3_1")
    def _():
        # A real validator: Python's openapi-spec-validator (the suite runs
        # this file with a python3 that has it; the case fails without it).
        from openapi_spec_validator import validate
        assert doc["openapi"] == "3.1.0", doc.get("openapi")
        validate(doc)  # raises on an invalid document
        ops = [(p, m) for p, item in doc["paths"].items() for m in item]
        assert ("/v1/me", "get") in ops, ops
        ids = [doc["paths"][p][m]["operationId"] for p, m in ops]
        assert len(ids) == len(set(ids)), "operationIds repeat"

    def example(schema):
        """A value of the schema's type (the walker's body for required fields)."""
        t = schema.get("type")
        if isinstance(t, list):
            t = [x for x in t if x != "null"][0]
        if "enum" in schema:
            return schema["enum"][0]
        if schema.get("format") == "date-time":
            return "2099-01-01T00:00:00Z"
        return {"string": "walker", "integer": 1, "boolean": True, "object": {},
                "array": []}.get(t, "walker")

    def check_against(op, r):
        responses = op["responses"]
        assert str(r.status) in responses, (op["operationId"], r.status, list(responses), r)
        if r.status >= 400:
            assert r.headers.get("Content-Type", "").startswith("application/problem+json"), r
            assert isinstance(r.json.get("code"), str), r
        elif r.status != 204:
            schema = responses[str(r.status)]["content"]["application/json"]["schema"]
            jsonschema.validate(r.json, schema)

    @case("every_operation_answers_as_documented")
    def _():
        walked = 0
        for path, item in doc["paths"].items():
            if not path.startswith("/v1/"):
                continue
            for method, op in item.items():
                # GETs on the walker's own account; anything else on an id that
                # does not exist, so the walk changes nothing that matters.
                ids = {"id": account if method == "get" else "acc_nonexistent"}
                concrete = re.sub(r"\{([a-z_]+)\}", lambda m: ids.get(m.group(1), "nonexistent"),
                                  path)
                body = None
                if "requestBody" in op:
                    schema = op["requestBody"]["content"]["application/json"]["schema"]
                    body = {k: example(schema["properties"][k]) for k in schema.get("required", [])}
                secured = bool(op.get("security"))
                token = owner if secured else None
                if path == "/v1/auth/logout":  # would end the walker's own session
                    token = gw.sql("SELECT tenancy.login('owner@walker.test', 'walker pass 1')")
                if secured:
                    r = gw.call(method.upper(), concrete, body=body)
                    r.problem(401, "unauthenticated")
                    check_against(op, r)
                r = gw.call(method.upper(), concrete, token=token, body=body)
                check_against(op, r)
                assert r.status != 401 or not secured, (path, method, r)
                if "requestBody" in op:
                    r = gw.call(method.upper(), concrete, token=token,
                                body={"walker_unknown_field": 1})
                    assert r.status in (401, 403, 404, 422), (path, method, r)
                    check_against(op, r)
                walked += 1
        assert walked >= 3, walked

    # Another tenant, to aim at.
    stranger, stranger_owner = gw.main_account("Stranger Agency", "owner@stranger.test",
                                               "stranger pass 1")

    def operations():
        for path, item in doc["paths"].items():
            if path.startswith("/v1/"):
                for method, op in item.items():
                    yield path, method.upper(), op

    @case("hostile_bodies_every_route_422_naming_the_field_nothing_changed")
    def _():
        checked = 0
        for path, method, op in operations():
            if "requestBody" not in op:
                continue
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            concrete = re.sub(r"\{([a-z_]+)\}", lambda m: account if m.group(1) == "id"
                              else "nonexistent", path)
            valid = {k: example(schema["properties"][k]) for k in schema.get("required", [])}
            token = owner if op.get("security") else None
            before = gw.sql("SELECT (SELECT count(*) FROM tenancy.accounts) || '/' || "
                            "(SELECT count(*) FROM tenancy.api_keys) || '/' || "
                            "(SELECT count(*) FROM tenancy.memberships)")
            for name, prop in schema["properties"].items():
                t = prop.get("type")
                t = [x for x in t if x != "null"][0] if isinstance(t, list) else t
                wrong = 12345 if t != "integer" else "12345"
                bodies = [dict(valid, **{name: wrong})]
                if name in schema.get("required", []):
                    bodies.append({k: v for k, v in valid.items() if k != name})
                if t == "string" and "maxLength" in prop:
                    bodies.append(dict(valid, **{name: "x" * (prop["maxLength"] + 1)}))
                for body in bodies:
                    r = gw.call(method, concrete, token=token, body=body)
                    p = r.problem(422, "invalid_field")
                    assert p.get("field") == name, (method, path, body, p)
                    checked += 1
            r = gw.call(method, concrete, token=token, raw_body=b'{"oops":')
            r.problem(400, "invalid_json")
            after = gw.sql("SELECT (SELECT count(*) FROM tenancy.accounts) || '/' || "
                           "(SELECT count(*) FROM tenancy.api_keys) || '/' || "
                           "(SELECT count(*) FROM tenancy.memberships)")
            assert before == after, (method, path, before, after)
        assert checked >= 3, checked

    @case("another_tenants_id_answers_exactly_like_a_missing_one")
    def _():
        checked = 0
        missing = "acc_999999_0123456789ab"
        for path, method, op in operations():
            if "{id}" not in path or not op.get("security"):
                continue
            body = None
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                body = {k: example(schema["properties"][k]) for k in schema.get("required", [])}
            answers = []
            for target in (stranger, missing):
                concrete = re.sub(r"\{([a-z_]+)\}", lambda m: target if m.group(1) == "id"
                                  else "nonexistent", path)
                r = gw.call(method, concrete, token=owner, body=body)
                assert r.status == 404, (method, path, target, r)
                j = dict(r.json)
                j.pop("request_id", None)
                j["detail"] = j["detail"].replace(target, "<id>")
                answers.append(j)
            assert answers[0] == answers[1], (method, path, answers)
            checked += 1
        assert checked >= 2, checked

    @case("body_validation_400_bad_json_422_naming_the_field")
    def _():
        before = gw.sql("SELECT count(*) FROM tenancy.accounts")
        r = gw.call("POST", "/v1/accounts", token=owner, raw_body=b'{"parent": ')
        r.problem(400, "invalid_json")
        for body, field in (({"name": "x"}, "parent"),
                            ({"parent": account, "name": 5}, "name"),
                            ({"parent": account, "name": "x", "colour": "red"}, "colour"),
                            ({"parent": account, "name": "x" * 5000}, "name")):
            p = gw.call("POST", "/v1/accounts", token=owner, body=body).problem(422, "invalid_field")
            assert p["field"] == field, (body, p)
        gw.call("POST", "/v1/accounts", token=owner, raw_body=b'[1]').problem(422, "invalid_field")
        assert gw.sql("SELECT count(*) FROM tenancy.accounts") == before

    @case("idempotency_key_replays_the_first_answer_once")
    def _():
        before = int(gw.sql("SELECT count(*) FROM tenancy.accounts"))
        h = {"Idempotency-Key": "walker-create-1"}
        body = {"parent": account, "name": "Idempotent Child"}
        first = gw.call("POST", "/v1/accounts", token=owner, body=body, headers=h)
        assert first.status == 201, first
        again = gw.call("POST", "/v1/accounts", token=owner, body=body, headers=h)
        assert again.status == 201 and again.json == first.json, (first, again)
        assert again.headers.get("Idempotency-Replayed") == "true", dict(again.headers)
        assert int(gw.sql("SELECT count(*) FROM tenancy.accounts")) == before + 1
        other = gw.call("POST", "/v1/accounts", token=owner, headers=h,
                        body={"parent": account, "name": "Another Child"})
        other.problem(422, "idempotency_key_reused")
        assert int(gw.sql("SELECT count(*) FROM tenancy.accounts")) == before + 1
        # Another caller's identical key is its own.
        key = gw.api_key(account)
        third = gw.call("POST", "/v1/accounts", token=key, body=body, headers=h)
        assert third.status == 201 and third.json["id"] != first.json["id"], third
        stored = gw.sql("SELECT count(*) FROM tenancy.idempotency_keys "
                        "WHERE position(convert_to('Idempotent Child', 'UTF8') in response) > 0")
        assert stored == "0", "a stored answer is readable in clear"

    @case("query_parameters_validated_422_naming_them")
    def _():
        base = "/v1/accounts/%s/audit-log" % account
        for q, field in (("limit=0", "limit"), ("limit=501", "limit"), ("limit=x", "limit"),
                         ("from=yesterday", "from"), ("limit=1&limit=2", "limit")):
            p = gw.call("GET", base + "?" + q, token=owner).problem(422, "invalid_field")
            assert p["field"] == field, (q, p)

    @case("bad_credential_401_before_bad_input_422")
    def _():
        r = gw.call("GET", "/v1/accounts/%s/audit-log?limit=0" % account, token="tns_bogus")
        r.problem(401, "unauthenticated")

    @case("cursors_sealed_bound_to_caller_and_list")
    def _():
        # Make entries to page through (each GET /v1/me is recorded).
        for _ in range(4):
            assert gw.call("GET", "/v1/me", token=owner).status == 200
        base = "/v1/accounts/%s/audit-log" % account

        def first_page():
            r = gw.call("GET", base + "?limit=2", token=owner)
            return r if r.status == 200 and r.json["next_cursor"] else None
        r = poll(first_page, 15, "a first page with a next cursor")
        cursor = r.json["next_cursor"]
        page2 = gw.call("GET", base + "?limit=2&cursor=" + cursor, token=owner)
        assert page2.status == 200, page2
        first = [e["position"] for e in r.json["data"]]
        second = [e["position"] for e in page2.json["data"]]
        assert second and max(second) < min(first), (first, second)
        # One character changed, a forged one, or a cursor from another caller.
        altered = cursor[:-1] + ("A" if cursor[-1] != "A" else "B")
        for bad in (altered, "eyJwb3MiOjF9.AAAAAAAAAAAAAAAAAAAAAA", "123"):
            p = gw.call("GET", base + "?limit=2&cursor=" + bad, token=owner).problem(422, "invalid_cursor")
            assert p["field"] == "cursor", p
        key = gw.api_key(account)
        gw.call("GET", base + "?limit=2&cursor=" + cursor, token=key).problem(422, "invalid_cursor")
        # The same cursor on another list of the same caller.
        gw.call("GET", base + "/verify?cursor=" + cursor, token=owner)  # takes no cursor: ignored
        other, other_owner = gw.main_account("Other Agency", "owner@other.test", "other pass 1")
        r = gw.call("GET", "/v1/accounts/%s/audit-log?cursor=%s" % (other, cursor), token=other_owner)
        r.problem(422, "invalid_cursor")

    @case("get_runs_read_only_and_is_recorded_in_batches")
    def _():
        rid = "framework-read-%d" % time.time_ns()
        r = gw.call("GET", "/v1/me", token=owner, headers={"X-Request-Id": rid})
        assert r.status == 200, r
        q = ("SELECT count(*) FROM tenancy.audit_entries() WHERE action = 'api.request' "
             "AND change->>'request_id' = '%s' AND actor_kind = 'user'" % rid)
        poll(lambda: gw.sql(q) == "1", 10, "the GET's record written by the read log")
        # The transaction of a GET is READ ONLY: no xid was assigned for it.
        # (pg_stat_database's xact_commit counts it; the audit entry came
        # from the gateway's batch, so it carries the batch's detail.at.)
        at = gw.sql("SELECT change->>'at' FROM tenancy.audit_entries() WHERE change->>'request_id' = '%s'" % rid)
        assert at.endswith("Z"), at

    @case("refused_get_recorded_with_its_status")
    def _():
        rid = "framework-refused-%d" % time.time_ns()
        r = gw.call("GET", "/v1/accounts/acc_nope/audit-log", token=owner,
                    headers={"X-Request-Id": rid})
        r.problem(404, "not_found")
        q = ("SELECT change->>'status' FROM tenancy.audit_entries() WHERE action = 'api.request' "
             "AND change->>'request_id' = '%s'" % rid)
        poll(lambda: gw.sql(q) == "404", 10, "the refused GET's record")
finally:
    gw.stop()
sys.exit(finish())
