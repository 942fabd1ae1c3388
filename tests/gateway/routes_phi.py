#!/usr/bin/python3
"""Security settings over HTTP (routes_security.cpp) and, when the voice
routes serve conversations, the clinic's story: a conversation written with
PHI protection on is stored and returned redacted, and the raw text is in
neither the table nor a pg_dump read by the DBA.

Run by tests/suites/31_gateway_routes.sh (gwlib starts the cluster and the
real gateway). Prints one PASS/FAIL line per case.
"""
import atexit
import json
import os
import subprocess
import sys

from gwlib import Gateway, case, finish

gw = Gateway(sys.argv[1], "phi")
atexit.register(gw.stop)  # also when a setup step below raises

grp, grp_token = gw.main_account("Clinic Group", "owner@phi-rest.test", "clinic password 1", "enterprise")
std, std_token = gw.main_account("Standard Co", "owner@std-rest.test", "standard password 1")
clinic = gw.sql("BEGIN; SELECT tenancy.authenticate(tenancy.admin_create_api_key('%s', 'boot')) IS NOT NULL;"
                " SELECT tenancy.create_account('%s', 'Downtown Clinic'); COMMIT;" % (grp, grp)).splitlines()[-1]
clinic_owner = gw.api_key(clinic, "owner", "clinic owner")
grp_admin = gw.api_key(grp, "admin", "group admin")
NAMES = ["phi_protection", "call_recording", "transcript_encryption", "audit_log"]


def security(account, token):
    return gw.call("GET", "/v1/accounts/%s/security" % account, token=token)


def patch(account, token, body):
    return gw.call("PATCH", "/v1/accounts/%s/security" % account, token=token, body=body)


def stored(account):
    return gw.sql("SELECT coalesce(settings -> 'security', '{}') FROM tenancy.accounts WHERE public_id = '%s'"
                  % account)


@case("get_security_effective_and_own_defaults")
def _():
    r = security(grp, grp_token)
    assert r.status == 200, r
    assert r.json == {"account": grp, "own": {},
                      "effective": {"phi_protection": False, "call_recording": False,
                                    "transcript_encryption": False, "audit_log": True}}, r.json


@case("patch_owner_turns_phi_on_clinic_inherits")
def _():
    r = patch(grp, grp_token, {"phi_protection": True})
    assert r.status == 200, r
    assert r.json["own"] == {"phi_protection": True} and r.json["effective"]["phi_protection"], r.json
    r = security(clinic, clinic_owner)
    assert r.status == 200 and r.json["effective"]["phi_protection"] and r.json["own"] == {}, r.json


@case("patch_descendant_tightens_never_loosens_409")
def _():
    before = stored(clinic)
    patch(clinic, clinic_owner, {"phi_protection": False}).problem(409, "conflict")
    assert stored(clinic) == before
    r = patch(clinic, clinic_owner, {"transcript_encryption": True, "audit_log": True})
    assert r.status == 200 and r.json["effective"]["transcript_encryption"], r.json
    r = security(grp, grp_token)
    assert not r.json["effective"]["transcript_encryption"], r.json


@case("patch_feature_outside_plan_409_plan_limit_reached_nothing_stored")
def _():
    patch(std, std_token, {"phi_protection": True}).problem(409, "plan_limit_reached")
    patch(std, std_token, {"audit_log": False, "call_recording": True}).problem(409, "plan_limit_reached")
    assert stored(std) == "{}", stored(std)


@case("patch_owner_only_403_other_tenant_404_like_missing")
def _():
    patch(grp, grp_admin, {"call_recording": True}).problem(403, "forbidden")
    assert json.loads(stored(grp)) == {"phi_protection": True}
    other = patch(std, grp_token, {"audit_log": True}).problem(404, "not_found")
    missing = patch("acc_99999_0123456789ab", grp_token, {"audit_log": True}).problem(404, "not_found")
    assert other["detail"].replace(std, "X") == missing["detail"].replace("acc_99999_0123456789ab", "X"), (other, missing)
    security(std, grp_token).problem(404, "not_found")
    security(grp, clinic_owner).problem(404, "not_found")  # an ancestor is outside the clinic's subtree


@case("patch_null_inherits_hostile_bodies_422")
def _():
    r = patch(clinic, clinic_owner, {"audit_log": None})
    assert r.status == 200 and "audit_log" not in r.json["own"], r.json
    before = stored(clinic)
    patch(clinic, clinic_owner, {"phi_protection": "yes"}).problem(422, "invalid_field")
    patch(clinic, clinic_owner, {"colour": True}).problem(422, "invalid_field")
    gw.call("PATCH", "/v1/accounts/%s/security" % clinic, token=clinic_owner, raw_body=b'{"phi_').problem(400, "invalid_json")
    assert stored(clinic) == before


@case("patch_is_audited")
def _():
    n = gw.sql("SELECT count(*) FROM tenancy.audit_entries() WHERE target = 'tenancy.accounts' AND action = 'update' "
               "AND change #> '{new,settings,security,phi_protection}' = 'true' "
               "AND change #> '{old,settings,security}' IS NULL")
    assert int(n) >= 1, n


# ---- the clinic's conversation over REST (when the voice routes serve conversations) ----
RAW = ["415-555-0123", "jane.patient@example.com", "4111 1111 1111 1111"]
has_conversations = gw.sql("SELECT to_regclass('tenancy.conversations') IS NOT NULL") == "t"
probe = gw.call("GET", "/v1/conversations", token=clinic_owner) if has_conversations else None
if probe is not None and probe.status == 200:
    transcript = [{"speaker": "caller", "text": "Call me on %s or mail %s" % (RAW[0], RAW[1]),
                   "at": "2026-12-07T09:00:00Z"},
                  {"speaker": "caller", "text": "My card is %s" % RAW[2], "at": "2026-12-07T09:00:05Z"}]
    created = {}

    @case("clinic_story_post_answer_redacted")
    def _():
        r = gw.call("POST", "/v1/conversations", token=clinic_owner,
                    body={"direction": "inbound", "status": "completed", "transcript": {"turns": transcript}})
        assert r.status == 201, r
        text = json.dumps(r.json)
        assert not any(x in text for x in RAW), r.json
        assert "[PHONE]" in text and "[EMAIL]" in text and "[CARD]" in text, r.json
        created["id"] = r.json["id"]

    @case("clinic_story_get_redacted_decrypted")
    def _():
        r = gw.call("GET", "/v1/conversations/%s" % created["id"], token=clinic_owner)
        assert r.status == 200, r
        texts = [t["text"] for t in r.json["transcript"]["turns"]]
        assert texts == ["Call me on [PHONE] or mail [EMAIL]", "My card is [CARD]"], r.json

    @case("clinic_story_table_and_dump_hold_no_raw_text")
    def _():
        table = gw.sql("SELECT c::text FROM tenancy.conversations c")
        assert not any(x in table for x in RAW), table[:300]
        assert gw.sql("SELECT count(*) FROM tenancy.conversations WHERE transcript_sealed IS NOT NULL") == "1"
        dump = subprocess.run(["pg_dump", "-h", gw.cluster, "-p", str(gw.pg_port), "-U", "postgres", "postgres"],
                              capture_output=True, text=True, timeout=120)
        assert dump.returncode == 0, dump.stderr
        assert not any(x in dump.stdout for x in RAW + ["4111111111111111"])
else:
    print("# the voice routes do not serve /v1/conversations here: the clinic story runs in tests/suites/19_phi.sh")

gw.stop()
sys.exit(finish())
