#!/usr/bin/python3
"""Usage and effective-settings routes over HTTP (routes_usage.cpp): a
platform records its clients' usage with its API key, reads the totals per
account and per subtree (billing rolls up to the main account), a child
cannot read its parent's usage (404, as for a missing account), settings and
branding inherited and overridden down a reseller's tree, hostile input.

Run by tests/suites/31_gateway_routes.sh (gwlib starts the cluster and the
real gateway). Prints one PASS/FAIL line per case.
"""
import atexit
import json
import sys

from gwlib import Gateway, case, finish

OCT = "from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z"


def lit(s):
    """A SQL string literal."""
    return "'" + str(s).replace("'", "''") + "'"


def problem(answer, status, code, field=None):
    j = answer.problem(status, code)
    if field is not None:
        assert j.get("field") == field, j
    return j


def same_problem(a, b, a_id, b_id):
    """Two problem bodies alike but for the request id and the id each names."""
    a = dict(a)
    b = dict(b)
    a.pop("request_id", None)
    b.pop("request_id", None)
    a = json.loads(json.dumps(a).replace(a_id, "<id>"))
    b = json.loads(json.dumps(b).replace(b_id, "<id>"))
    assert a == b, (a, b)


def records():
    return int(gw.sql("SELECT count(*) FROM tenancy.usage_records"))


def record(token, body, headers=None):
    return gw.call("POST", "/v1/usage", token=token, body=body, headers=headers)


def totals(answer, part):
    """{kind: quantity} of a usage answer's `own` or `subtree`."""
    return {t["kind"]: t["quantity"] for t in answer.json[part]}


gw = Gateway(sys.argv[1], "usage")
atexit.register(gw.stop)  # also when a setup step below raises

platform, owner_tok = gw.main_account("Voice Platform", "owner@usage-rt.test", "owner-pass-1")
other, other_tok = gw.main_account("Other Platform", "owner@other-rt.test", "other-pass-1")
key = gw.api_key(platform, "owner", "platform meter")


def sub(parent, name):
    return gw.sql("SELECT tenancy.create_account(%s, %s) FROM (SELECT tenancy.authenticate(%s) OFFSET 0) a"
                  % (lit(parent), lit(name), lit(key)))


reseller = sub(platform, "Reseller")
clinic = sub(reseller, "Clinic")
bakery = sub(platform, "Bakery")
clinic_key = gw.api_key(clinic, "owner", "clinic key")
viewer_key = gw.api_key(platform, "viewer", "viewer key")
support_key = gw.api_key(platform, "support_agent", "support key")
admin_key = gw.api_key(platform, "admin", "admin key")


@case("record_usage_over_rest")
def _():
    before = records()
    r = record(key, {"account": clinic, "kind": "call_minutes", "quantity": "4.25",
                     "at": "2026-10-05T10:00:00Z", "ref": "call-1"})
    assert r.status == 201, r
    assert r.json["account"] == clinic and r.json["kind"] == "call_minutes", r
    assert r.json["quantity"] == "4.25" and r.json["ref"] == "call-1", r
    assert r.json["id"].startswith("usg_"), r
    assert r.json["at"].startswith("2026-10-05T10:00:00"), r
    assert records() == before + 1
    # a retry of the same call (same ref): the same record, nothing new
    again = record(key, {"account": clinic, "kind": "call_minutes", "quantity": "4.25", "ref": "call-1"})
    assert again.status == 201 and again.json["id"] == r.json["id"], again
    assert again.json["at"] == r.json["at"], again
    assert records() == before + 1
    # the same ref with another quantity names another record: 409
    problem(record(key, {"account": clinic, "kind": "call_minutes", "quantity": "5", "ref": "call-1"}),
            409, "conflict")
    assert records() == before + 1
    for body in ({"account": reseller, "kind": "call_minutes", "quantity": "2.5", "at": "2026-10-06T00:00:00Z"},
                 {"account": reseller, "kind": "llm_tokens", "quantity": "1500", "at": "2026-10-31T23:59:59Z"},
                 {"account": bakery, "kind": "llm_tokens", "quantity": "700", "at": "2026-10-20T12:00:00Z"},
                 {"kind": "call_minutes", "quantity": "10", "at": "2026-10-01T00:00:00Z"},  # the acting account
                 {"account": clinic, "kind": "llm_tokens", "quantity": "999", "at": "2026-11-01T00:00:00Z"}):
        r = record(key, body)
        assert r.status == 201, (body, r)
    # admin keys record too (the platform's key may hold admin)
    r = record(admin_key, {"account": bakery, "kind": "sms_messages", "quantity": "3",
                           "at": "2026-10-21T08:00:00Z"})
    assert r.status == 201, r
    # acting in a descendant: the account defaults to it
    r = record(key, {"kind": "stt_minutes", "quantity": "1.5", "at": "2026-10-07T00:00:00Z"},
               headers={"Tenancy-Account": clinic})
    assert r.status == 201 and r.json["account"] == clinic, r


@case("totals_per_account_and_subtree")
def _():
    r = gw.call("GET", "/v1/accounts/%s/usage?%s" % (platform, OCT), token=key)
    assert r.status == 200, r
    assert r.json["account"] == platform, r
    assert r.json["from"].startswith("2026-10-01T00:00:00") and r.json["to"].startswith("2026-11-01T00:00:00"), r
    assert totals(r, "own") == {"call_minutes": "10"}, r
    assert totals(r, "subtree") == {"call_minutes": "16.75", "llm_tokens": "2200", "sms_messages": "3",
                                    "stt_minutes": "1.5"}, r
    assert {t["kind"]: t["unit"] for t in r.json["subtree"]}["call_minutes"] == "minute", r
    r = gw.call("GET", "/v1/accounts/%s/usage?%s" % (reseller, OCT), token=key)
    assert totals(r, "own") == {"call_minutes": "2.5", "llm_tokens": "1500"}, r
    assert totals(r, "subtree") == {"call_minutes": "6.75", "llm_tokens": "1500", "stt_minutes": "1.5"}, r
    # a ragged range: 2026-10-31 23:59:59 is in, 2026-11-01 00:00 is out, then in
    r = gw.call("GET", "/v1/accounts/%s/usage?from=2026-10-31T12:00:00Z&to=2026-11-01T00:00:00.5Z" % platform,
                token=key)
    assert totals(r, "subtree") == {"llm_tokens": "2499"}, r
    # the default range is the current UTC month: nothing recorded there
    r = gw.call("GET", "/v1/accounts/%s/usage" % platform, token=viewer_key)
    assert r.status == 200 and r.json["subtree"] == [] and r.json["own"] == [], r


@case("child_cannot_read_parent_usage")
def _():
    r = gw.call("GET", "/v1/accounts/%s/usage?%s" % (clinic, OCT), token=clinic_key)
    assert r.status == 200 and totals(r, "subtree") == {"call_minutes": "4.25", "stt_minutes": "1.5"}, r
    missing = "acc_%s_000000000000" % platform.split("_")[1]
    gone = problem(gw.call("GET", "/v1/accounts/%s/usage?%s" % (missing, OCT), token=clinic_key), 404, "not_found")
    for up in (reseller, platform, bakery):
        a = problem(gw.call("GET", "/v1/accounts/%s/usage?%s" % (up, OCT), token=clinic_key), 404, "not_found")
        same_problem(a, gone, up, missing)
    # another tenant, from the platform's own key
    a = problem(gw.call("GET", "/v1/accounts/%s/usage?%s" % (other, OCT), token=key), 404, "not_found")
    b = problem(gw.call("GET", "/v1/accounts/%s/usage?%s" % (missing, OCT), token=key), 404, "not_found")
    same_problem(a, b, other, missing)
    # recording up the tree or in another tenant: 404 too, nothing recorded
    before = records()
    for target, tok in ((reseller, clinic_key), (other, key)):
        problem(record(tok, {"account": target, "kind": "llm_tokens", "quantity": "1"}), 404, "not_found")
    assert records() == before


@case("roles_that_may_not")
def _():
    before = records()
    problem(record(viewer_key, {"kind": "llm_tokens", "quantity": "1"}), 403, "forbidden")
    problem(gw.call("GET", "/v1/accounts/%s/usage?%s" % (platform, OCT), token=support_key), 403, "forbidden")
    r = gw.call("GET", "/v1/accounts/%s/usage?%s" % (platform, OCT), token=viewer_key)
    assert r.status == 200 and totals(r, "own") == {"call_minutes": "10"}, r
    assert records() == before
    assert gw.call("GET", "/v1/accounts/%s/usage" % platform).status == 401


@case("usage_hostile_inputs")
def _():
    before = records()
    ok = {"account": clinic, "kind": "llm_tokens", "quantity": "1"}
    problem(gw.call("POST", "/v1/usage", token=key, raw_body=b'{"kind": '), 400, "invalid_json")
    problem(record(key, [1, 2]), 422, "invalid_field")
    for name in ("kind", "quantity"):
        partial = {k: v for k, v in ok.items() if k != name}
        problem(record(key, partial), 422, "invalid_field", name)
    for name, value in (("kind", 5), ("quantity", 12.5), ("account", True), ("at", "yesterday"),
                        ("at", "2026-02-30T00:00:00Z"), ("ref", 7), ("kind", "x" * 5000)):
        bad = dict(ok)
        bad[name] = value
        problem(record(key, bad), 422, "invalid_field", name)
    problem(record(key, dict(ok, admin=True)), 422, "invalid_field", "admin")
    for value in ("-1", "1e3", "NaN", "1.0000001", "12,5", " 1", "", "10000000000000"):
        problem(record(key, dict(ok, quantity=value)), 422, "invalid_field", "quantity")
    for value in ("call_seconds", "LLM_TOKENS", "", "llm_tokens'; --"):
        j = problem(record(key, dict(ok, kind=value)), 422, "invalid_field", "kind")
        assert "unknown usage kind" in j["detail"], j
    problem(record(key, dict(ok, at="2099-01-01T00:00:00Z")), 422, "invalid_field", "at")
    problem(record(key, dict(ok, ref="")), 422, "invalid_field", "ref")
    problem(record(key, dict(ok, account="nonsense")), 404, "not_found")
    assert records() == before
    # report ranges
    base = "/v1/accounts/%s/usage" % platform
    problem(gw.call("GET", base + "?from=2026-11-01T00:00:00Z&to=2026-10-01T00:00:00Z", token=key),
            422, "invalid_field", "to")
    problem(gw.call("GET", base + "?from=2026-10-01T00:00:00Z&to=2026-10-01T00:00:00Z", token=key),
            422, "invalid_field", "to")
    problem(gw.call("GET", base + "?from=last-week", token=key), 422, "invalid_field", "from")
    problem(gw.call("GET", base + "?to=2026-13-01T00:00:00Z", token=key), 422, "invalid_field", "to")


# ---- effective settings and branding ------------------------------------------------------

gw.sql("UPDATE tenancy.accounts SET settings = %s, branding = %s WHERE public_id = %s" % (
    lit('{"locale": "en", "voice": {"speed": 1, "pitch": 0}, "platform_note": "for everyone below"}'),
    lit('{"name": "VoiceCo", "colors": {"primary": "#111111", "accent": "#222222"}, "logo_url": "https://v.example/l.png"}'),
    lit(platform)))
gw.sql("UPDATE tenancy.accounts SET settings = %s, branding = %s WHERE public_id = %s" % (
    lit('{"voice": {"speed": 1.2}, "timezone": "Europe/Rome"}'),
    lit('{"name": "Resell", "colors": {"primary": "#ff0000"}}'), lit(reseller)))


SECURITY_DEFAULTS = {"audit_log": True, "call_recording": False, "phi_protection": False,
                     "transcript_encryption": False}


@case("settings_inherited_and_overridden")
def _():
    r = gw.call("GET", "/v1/accounts/%s/settings/effective" % clinic, token=key)
    assert r.status == 200, r
    assert r.json["account"] == clinic, r
    # the security settings (issue 19's third seed) are part of what is
    # inherited; their own rules are tested in routes_phi
    assert r.json["settings"].pop("security") == SECURITY_DEFAULTS, r
    assert r.json["settings"] == {"locale": "en", "voice": {"speed": 1.2, "pitch": 0}, "timezone": "Europe/Rome",
                                  "platform_note": "for everyone below"}, r
    assert r.json["branding"] == {"name": "Resell", "colors": {"primary": "#ff0000", "accent": "#222222"},
                                  "logo_url": "https://v.example/l.png"}, r
    # the clinic overrides some values (set by the DBA here: PATCH
    # /v1/accounts/{id} is the accounts routes' business), and its own
    # owner's key reads its own values winning
    gw.sql("UPDATE tenancy.accounts SET settings = %s, branding = %s WHERE public_id = %s" % (
        lit('{"locale": "it", "voice": {"pitch": 2}}'), lit('{"logo_url": null}'), lit(clinic)))
    r = gw.call("GET", "/v1/accounts/%s/settings/effective" % clinic, token=clinic_key)
    assert r.status == 200, r
    assert r.json["settings"].pop("security") == SECURITY_DEFAULTS, r
    assert r.json["settings"] == {"locale": "it", "voice": {"speed": 1.2, "pitch": 2}, "timezone": "Europe/Rome",
                                  "platform_note": "for everyone below"}, r
    assert r.json["branding"]["logo_url"] is None and r.json["branding"]["name"] == "Resell", r
    # nothing about the ancestors but inherited values
    text = r.text
    for leak in (platform, reseller, "Voice Platform", "Reseller"):
        assert leak not in text, (leak, text)
    # the bakery inherits only from the platform
    r = gw.call("GET", "/v1/accounts/%s/settings/effective" % bakery, token=key)
    assert r.json["settings"]["voice"] == {"speed": 1, "pitch": 0} and r.json["branding"]["name"] == "VoiceCo", r


@case("effective_settings_who_may_read")
def _():
    # a viewer: branding yes, settings null
    r = gw.call("GET", "/v1/accounts/%s/settings/effective" % clinic, token=viewer_key)
    assert r.status == 200 and r.json["settings"] is None and r.json["branding"]["name"] == "Resell", r
    missing = "acc_%s_000000000000" % platform.split("_")[1]
    gone = problem(gw.call("GET", "/v1/accounts/%s/settings/effective" % missing, token=clinic_key),
                   404, "not_found")
    for up in (reseller, platform, bakery):
        a = problem(gw.call("GET", "/v1/accounts/%s/settings/effective" % up, token=clinic_key), 404, "not_found")
        same_problem(a, gone, up, missing)
    a = problem(gw.call("GET", "/v1/accounts/%s/settings/effective" % other, token=key), 404, "not_found")
    b = problem(gw.call("GET", "/v1/accounts/%s/settings/effective" % missing, token=key), 404, "not_found")
    same_problem(a, b, other, missing)
    assert gw.call("GET", "/v1/accounts/%s/settings/effective" % clinic).status == 401


sys.exit(finish())
