#!/usr/bin/python3
"""Team routes over HTTP (issue 18): members, invitations, sub-users and API
keys, walked as the seeds tell them, against the real gateway on a real
database (tests/gateway/gwlib.py). Prints one PASS/FAIL line per case.

Usage: routes_team.py WORKDIR (from the repository root, PG_CONFIG exported)."""
import atexit
import json
import re
import sys

from gwlib import Gateway, case, finish

gw = Gateway(sys.argv[1], "team")
atexit.register(gw.stop)

ACC, OWNER = gw.main_account("Team Co", "owner@team.test", "owner-pass-1")
RIVAL, RIVAL_TOKEN = gw.main_account("Rival Co", "rival@team.test", "rival-pass-1")
MISSING = "acc_999999_000000000000"  # well-formed, no such account


def q(s):
    """A SQL literal."""
    return "'" + s.replace("'", "''") + "'"


def sql1(query):
    """The single value a query answers, as text ('' for NULL)."""
    return gw.sql(query).strip()


def call(method, path, token=None, body=None, headers=None, raw_body=None):
    return gw.call(method, path, token=token, body=body, headers=headers, raw_body=raw_body)


def expect(answer, status, what=""):
    got, _, body = answer
    assert got == status, "%s: expected %d, got %d: %s" % (what, status, got, body)
    return body


def same_as_missing(answer, sent, missing_answer, missing_sent):
    """A foreign id's 404 reads exactly like a missing id's (up to the id sent)."""
    got, _, body = answer
    mgot, _, mbody = missing_answer
    assert got == 404 and mgot == 404, (got, body, mgot, mbody)
    def strip(b, ident):  # the id sent, as a whole word, becomes <id>
        word = re.compile(r"(?<![0-9A-Za-z_])%s(?![0-9A-Za-z_])" % re.escape(ident))
        return {k: (word.sub("<id>", v) if isinstance(v, str) else v)
                for k, v in b.items() if k != "request_id"}
    assert strip(body, sent) == strip(mbody, missing_sent), (body, mbody)


def invalid_field(answer, field, what=""):
    body = expect(answer, 422, what)
    assert body.get("code") == "invalid_field" and body.get("field") == field, \
        "%s: expected field %r in %s" % (what, field, body)


def outbox_token(recipient):
    return sql1("SELECT substring(body from '(tni_\\S+)') FROM tenancy.outbox WHERE recipient = %s "
                "ORDER BY id DESC LIMIT 1" % q(recipient))


def outbox_password(recipient):
    return sql1("SELECT substring(body from 'temporary password: (\\S+)') FROM tenancy.outbox "
                "WHERE recipient = %s ORDER BY id DESC LIMIT 1" % q(recipient))


def join(account, inviter, email, role, password):
    """Invite email into account as role, accept over HTTP; the new session token."""
    body = expect(call("POST", "/v1/accounts/%s/invitations" % account, inviter,
                       {"email": email, "role": role}), 201, "invite " + email)
    token = outbox_token(email)
    assert token.startswith("tni_"), token
    assert token not in json.dumps(body)
    return expect(call("POST", "/v1/invitations/accept", None,
                       {"token": token, "name": email.split("@")[0], "password": password}),
                  200, "accept")["token"]


def user_id(email):
    return sql1("SELECT id FROM tenancy.users WHERE email = %s" % q(email))


def member_roles(account):
    rows = expect(call("GET", "/v1/accounts/%s/members?limit=500" % account, OWNER), 200)["data"]
    return {m["email"]: m["role"] for m in rows}


def db_state(table, where=""):
    """Rows of a table as the DBA sees them (to show a refusal changed nothing)."""
    return gw.sql("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM tenancy.%s t %s"
                  % (table, where))


# ---- members and invitations --------------------------------------------------------

ADMIN = join(ACC, OWNER, "admin@team.test", "admin", "admin-pass-1")
VIEWER = join(ACC, OWNER, "viewer@team.test", "viewer", "viewer-pass-1")


@case("members_invite_accept_listed_with_role")
def _():
    roles = member_roles(ACC)
    assert roles == {"owner@team.test": "owner", "admin@team.test": "admin",
                     "viewer@team.test": "viewer"}, roles
    body = expect(call("GET", "/v1/accounts/%s/members" % ACC, OWNER), 200)
    m = next(x for x in body["data"] if x["email"] == "admin@team.test")
    assert m["user"] == user_id("admin@team.test") and "password_hash" not in m, m


@case("members_list_pages_with_sealed_cursor")
def _():
    first = expect(call("GET", "/v1/accounts/%s/members?limit=2" % ACC, OWNER), 200)
    assert len(first["data"]) == 2 and first["next_cursor"], first
    second = expect(call("GET", "/v1/accounts/%s/members?limit=2&cursor=%s" % (ACC, first["next_cursor"]),
                         OWNER), 200)
    assert len(second["data"]) == 1 and second["next_cursor"] is None, second
    seen = [m["user"] for m in first["data"] + second["data"]]
    assert len(set(seen)) == 3, seen
    # a cursor of this list is refused on another account's list
    got = call("GET", "/v1/accounts/%s/members?cursor=%s" % (RIVAL, first["next_cursor"]), RIVAL_TOKEN)
    assert expect(got, 422)["code"] == "invalid_cursor", got
    forged = first["next_cursor"][:-2] + ("AA" if not first["next_cursor"].endswith("AA") else "BB")
    got = call("GET", "/v1/accounts/%s/members?cursor=%s" % (ACC, forged), OWNER)
    assert expect(got, 422)["code"] == "invalid_cursor", got


@case("members_admin_cannot_promote_to_owner_nor_touch_owner_403")
def _():
    before = db_state("memberships")
    viewer = user_id("viewer@team.test")
    owner = user_id("owner@team.test")
    assert expect(call("PATCH", "/v1/accounts/%s/members/%s" % (ACC, viewer), ADMIN, {"role": "owner"}),
                  403)["code"] == "forbidden"
    expect(call("PATCH", "/v1/accounts/%s/members/%s" % (ACC, owner), ADMIN, {"role": "viewer"}), 403)
    expect(call("DELETE", "/v1/accounts/%s/members/%s" % (ACC, owner), ADMIN), 403)
    expect(call("POST", "/v1/accounts/%s/invitations" % ACC, ADMIN,
                {"email": "boss@team.test", "role": "owner"}), 403)
    assert db_state("memberships") == before


@case("members_admin_changes_viewer_role_viewer_may_not")
def _():
    viewer = user_id("viewer@team.test")
    body = expect(call("PATCH", "/v1/accounts/%s/members/%s" % (ACC, viewer), ADMIN, {"role": "member"}), 200)
    assert body["role"] == "member" and body["user"] == viewer, body
    assert member_roles(ACC)["viewer@team.test"] == "member"
    admin = user_id("admin@team.test")
    expect(call("PATCH", "/v1/accounts/%s/members/%s" % (ACC, admin), VIEWER, {"role": "viewer"}), 403)


@case("members_last_owner_neither_demoted_nor_removed_409")
def _():
    owner = user_id("owner@team.test")
    body = expect(call("PATCH", "/v1/accounts/%s/members/%s" % (ACC, owner), OWNER, {"role": "admin"}), 409)
    assert "last owner" in body["detail"], body
    expect(call("DELETE", "/v1/accounts/%s/members/%s" % (ACC, owner), OWNER), 409)
    assert member_roles(ACC)["owner@team.test"] == "owner"


@case("members_hostile_bodies_422_naming_field_nothing_changes")
def _():
    before = db_state("memberships")
    viewer = user_id("viewer@team.test")
    path = "/v1/accounts/%s/members/%s" % (ACC, viewer)
    invalid_field(call("PATCH", path, OWNER, {}), "role", "missing role")
    invalid_field(call("PATCH", path, OWNER, {"role": 5}), "role", "wrong type")
    invalid_field(call("PATCH", path, OWNER, {"role": "emperor"}), "role", "unknown role")
    invalid_field(call("PATCH", path, OWNER, {"role": "admin", "salary": 1}), "salary", "unknown field")
    invalid_field(call("PATCH", path, OWNER, {"role": "sub_user"}), "role", "sub_user is no member role")
    assert expect(call("PATCH", path, OWNER, raw_body=b"{not json"), 400)["code"] == "invalid_json"
    assert db_state("memberships") == before


@case("members_other_tenant_404_like_missing")
def _():
    rival_owner = user_id("rival@team.test")
    viewer = user_id("viewer@team.test")
    missing = call("GET", "/v1/accounts/%s/members" % MISSING, OWNER)
    same_as_missing(call("GET", "/v1/accounts/%s/members" % RIVAL, OWNER), RIVAL, missing, MISSING)
    missing = call("PATCH", "/v1/accounts/%s/members/%s" % (MISSING, viewer), OWNER, {"role": "viewer"})
    same_as_missing(call("PATCH", "/v1/accounts/%s/members/%s" % (RIVAL, rival_owner), OWNER, {"role": "viewer"}),
                    RIVAL, missing, MISSING)
    same_as_missing(call("DELETE", "/v1/accounts/%s/members/%s" % (RIVAL, rival_owner), OWNER), RIVAL,
                    call("DELETE", "/v1/accounts/%s/members/%s" % (MISSING, rival_owner), OWNER), MISSING)
    # the rival's owner is no member here: the same 404 as an id nobody has
    same_as_missing(call("PATCH", "/v1/accounts/%s/members/%s" % (ACC, rival_owner), OWNER, {"role": "viewer"}),
                    rival_owner, call("PATCH", "/v1/accounts/%s/members/999999999" % ACC, OWNER,
                                      {"role": "viewer"}), "999999999")
    expect(call("PATCH", "/v1/accounts/%s/members/not-a-user" % ACC, OWNER, {"role": "viewer"}), 404)
    expect(call("PATCH", "/v1/accounts/%s/members/99999999999999999999999" % ACC, OWNER, {"role": "viewer"}), 404)
    assert sql1("SELECT role FROM tenancy.memberships WHERE user_id = %s" % rival_owner) == "owner"


@case("members_remove_204_session_refused_at_once")
def _():
    gone = join(ACC, OWNER, "leaver@team.test", "viewer", "leaver-pass-1")
    expect(call("GET", "/v1/me", gone), 200)
    expect(call("DELETE", "/v1/accounts/%s/members/%s" % (ACC, user_id("leaver@team.test")), OWNER), 204)
    assert "leaver@team.test" not in member_roles(ACC)
    got, _, _ = call("GET", "/v1/me", gone)
    assert got in (401, 403), got
    expect(call("DELETE", "/v1/accounts/%s/members/%s" % (ACC, user_id("leaver@team.test")), OWNER), 404)


@case("invitations_no_token_in_answer_accept_without_bearer_bad_tokens_401")
def _():
    body = expect(call("POST", "/v1/accounts/%s/invitations" % ACC, OWNER,
                       {"email": "new@team.test", "role": "member"}), 201)
    assert body["id"].startswith("inv_") and body["role"] == "member" and body["email"] == "new@team.test", body
    assert "token" not in body and "tni_" not in json.dumps(body), body
    token = outbox_token("new@team.test")
    altered = token[:-1] + ("B" if token.endswith("A") else "A")
    expect(call("POST", "/v1/invitations/accept", None, {"token": altered, "password": "new-pass-12"}), 401)
    expect(call("POST", "/v1/invitations/accept", None, {"token": "tni_1_1_x", "password": "new-pass-12"}), 401)
    invalid_field(call("POST", "/v1/invitations/accept", None, {"password": "new-pass-12"}), "token")
    invalid_field(call("POST", "/v1/invitations/accept", None, {"token": token, "role": "owner"}), "role")
    session = expect(call("POST", "/v1/invitations/accept", None,
                          {"token": token, "name": "New", "password": "new-pass-12"}), 200)["token"]
    me = expect(call("GET", "/v1/me", session), 200)
    assert me["role"] == "member", me
    # single use
    expect(call("POST", "/v1/invitations/accept", None, {"token": token, "password": "new-pass-12"}), 401)


@case("invitations_hostile_422_other_tenant_404_no_permission_403")
def _():
    before = db_state("outbox")
    path = "/v1/accounts/%s/invitations" % ACC
    invalid_field(call("POST", path, OWNER, {"role": "member"}), "email")
    invalid_field(call("POST", path, OWNER, {"email": "x@team.test"}), "role")
    invalid_field(call("POST", path, OWNER, {"email": ["x@team.test"], "role": "member"}), "email")
    invalid_field(call("POST", path, OWNER, {"email": "x@team.test", "role": "member", "cc": "y"}), "cc")
    expect(call("POST", path, OWNER, {"email": "not-an-email", "role": "member"}), 422)
    same_as_missing(call("POST", "/v1/accounts/%s/invitations" % RIVAL, OWNER,
                         {"email": "x@team.test", "role": "member"}), RIVAL,
                    call("POST", "/v1/accounts/%s/invitations" % MISSING, OWNER,
                         {"email": "x@team.test", "role": "member"}), MISSING)
    expect(call("POST", path, VIEWER, {"email": "x@team.test", "role": "viewer"}), 403)
    assert db_state("outbox") == before


# ---- sub-users ---------------------------------------------------------------------------

SUB_PATH = "/v1/accounts/%s/sub-users" % ACC
sub = {}


def sub_login(email, password, must_change=True):
    """A sub-user session (POST /v1/auth/sub-user-login); a temporary password must change first."""
    body = expect(call("POST", "/v1/auth/sub-user-login", None,
                       {"main_account_email": "owner@team.test", "email": email, "password": password}),
                  200, "sub-user login")
    assert body["must_change_password"] is must_change and body["account"] == ACC, body
    return body["token"]


def change_password(token, old, new):
    expect(call("POST", "/v1/me/password", token, {"old_password": old, "new_password": new}), 204,
           "password change")


@case("sub_users_create_201_inactive_no_password_listed")
def _():
    before = db_state("outbox")
    body = expect(call("POST", SUB_PATH, OWNER, {"email": "ann@team.test", "name": "Ann", "surname": "Lee",
                                                  "password": "ann-temp-123"}), 201)
    assert body["id"].startswith("sub_") and body["active"] is False and body["must_change_password"] is True, body
    assert "password" not in body and "ann-temp-123" not in json.dumps(body), body
    sub["ann"] = body["id"]
    listed = expect(call("GET", SUB_PATH, OWNER), 200)
    assert [s["email"] for s in listed["data"]] == ["ann@team.test"] and listed["next_cursor"] is None, listed
    assert set(listed["data"][0]) == set(body), (listed, body)  # the list shows what create answered
    assert db_state("outbox") == before  # nothing is mailed before activation


@case("sub_users_activation_mails_credentials_first_login_changes_password")
def _():
    body = expect(call("PATCH", "%s/%s" % (SUB_PATH, sub["ann"]), OWNER, {"active": True}), 200)
    assert body["active"] is True, body
    mailed = outbox_password("ann@team.test")
    assert len(mailed) >= 16, mailed
    assert sql1("SELECT body ~ 'main account email: owner@team\\.test' FROM tenancy.outbox "
                "WHERE recipient = 'ann@team.test' ORDER BY id DESC LIMIT 1") == "t"
    token = sub_login("ann@team.test", mailed)
    # a password-change session may do nothing else
    got, _, answer = call("GET", SUB_PATH, token)
    assert got in (401, 403), (got, answer)
    change_password(token, mailed, "ann-own-pass-1")
    me = expect(call("GET", "/v1/me", token), 200)
    assert me["role"] == "sub_user", me
    sub["ann_token"] = token


@case("sub_users_sub_user_cannot_manage_team")
def _():
    token = sub["ann_token"]
    expect(call("POST", SUB_PATH, token, {"email": "evil@team.test", "name": "E", "surname": "V",
                                          "password": "evil-pass-12"}), 403)
    expect(call("PATCH", "%s/%s" % (SUB_PATH, sub["ann"]), token, {"visible": False}), 403)
    expect(call("POST", "/v1/accounts/%s/api-keys" % ACC, token, {"name": "k", "role": "owner"}), 403)


@case("sub_users_edit_fields_password_reset_temporary_ends_sessions")
def _():
    path = "%s/%s" % (SUB_PATH, sub["ann"])
    body = expect(call("PATCH", path, ADMIN, {"name": "Anna", "surname": "Lee-Park", "visible": False}), 200)
    assert (body["name"], body["surname"], body["visible"]) == ("Anna", "Lee-Park", False), body
    body = expect(call("PATCH", path, OWNER, {"password": "reset-pass-123"}), 200)
    assert body["must_change_password"] is True, body
    got, _, _ = call("GET", "/v1/me", sub["ann_token"])
    assert got == 401, got
    token = sub_login("ann@team.test", "reset-pass-123")
    got, _, _ = call("GET", SUB_PATH, token)
    assert got in (401, 403), got
    change_password(token, "reset-pass-123", "ann-own-pass-2")
    expect(call("GET", "/v1/me", token), 200)
    sub_login("ann@team.test", "ann-own-pass-2", must_change=False)  # changed: no longer temporary
    sub["ann_token"] = token


@case("sub_users_deactivation_refused_at_once")
def _():
    token = sub["ann_token"]
    expect(call("GET", "/v1/me", token), 200)
    body = expect(call("PATCH", "%s/%s" % (SUB_PATH, sub["ann"]), OWNER, {"active": False}), 200)
    assert body["active"] is False, body
    expect(call("GET", "/v1/me", token), 401)


@case("sub_users_hostile_bodies_422_naming_field_nothing_changes")
def _():
    before = db_state("sub_users")
    path = "%s/%s" % (SUB_PATH, sub["ann"])
    invalid_field(call("POST", SUB_PATH, OWNER, {"email": "b@team.test", "name": "B", "password": "b-pass-1234"}),
                  "surname", "missing surname")
    invalid_field(call("POST", SUB_PATH, OWNER, {"email": "b@team.test", "name": 7, "surname": "B",
                                                  "password": "b-pass-1234"}), "name", "wrong type")
    invalid_field(call("POST", SUB_PATH, OWNER, {"email": "b@team.test", "name": "B", "surname": "B",
                                                  "password": "b-pass-1234", "role": "owner"}), "role")
    invalid_field(call("POST", SUB_PATH, OWNER, {"email": "b@team.test", "name": "B" * 201, "surname": "B",
                                                  "password": "b-pass-1234"}), "name", "too long")
    expect(call("POST", SUB_PATH, OWNER, {"email": "b@team.test", "name": "B", "surname": "B",
                                          "password": "short"}), 422)
    invalid_field(call("PATCH", path, OWNER, {"active": "yes"}), "active")
    invalid_field(call("PATCH", path, OWNER, {"visible": 1}), "visible")
    invalid_field(call("PATCH", path, OWNER, {"status": "active"}), "status")
    # activation mails its own password: both at once is refused
    expect(call("PATCH", path, OWNER, {"active": True, "password": "chosen-pass-1"}), 422)
    expect(call("PATCH", path, OWNER, {"name": "Changed", "password": "short"}), 422)
    # the same email twice
    expect(call("POST", SUB_PATH, OWNER, {"email": "ANN@team.test", "name": "A", "surname": "L",
                                          "password": "ann-temp-123"}), 409)
    assert db_state("sub_users") == before


@case("sub_users_other_tenant_404_like_missing")
def _():
    rival = expect(call("POST", "/v1/accounts/%s/sub-users" % RIVAL, RIVAL_TOKEN,
                        {"email": "r@team.test", "name": "R", "surname": "R", "password": "rival-temp-1"}),
                   201)["id"]
    before = db_state("sub_users")
    missing_sub = "sub_999999_999999"
    same_as_missing(call("PATCH", "%s/%s" % (SUB_PATH, rival), OWNER, {"name": "x"}), rival,
                    call("PATCH", "%s/%s" % (SUB_PATH, missing_sub), OWNER, {"name": "x"}), missing_sub)
    same_as_missing(call("DELETE", "%s/%s" % (SUB_PATH, rival), OWNER), rival,
                    call("DELETE", "%s/%s" % (SUB_PATH, missing_sub), OWNER), missing_sub)
    same_as_missing(call("PATCH", "/v1/accounts/%s/sub-users/%s" % (RIVAL, rival), OWNER, {"name": "x"}), RIVAL,
                    call("PATCH", "/v1/accounts/%s/sub-users/%s" % (MISSING, rival), OWNER, {"name": "x"}),
                    MISSING)
    same_as_missing(call("GET", "/v1/accounts/%s/sub-users" % RIVAL, OWNER), RIVAL,
                    call("GET", "/v1/accounts/%s/sub-users" % MISSING, OWNER), MISSING)
    assert [s["id"] for s in expect(call("GET", SUB_PATH, OWNER), 200)["data"]] == [sub["ann"]]
    assert db_state("sub_users") == before


@case("sub_users_delete_204_then_404_viewer_may_not")
def _():
    path = "%s/%s" % (SUB_PATH, sub["ann"])
    expect(call("DELETE", path, VIEWER), 403)
    expect(call("DELETE", path, OWNER), 204)
    expect(call("DELETE", path, OWNER), 404)
    assert expect(call("GET", SUB_PATH, OWNER), 200)["data"] == []


# ---- API keys ----------------------------------------------------------------------------

KEY_PATH = "/v1/accounts/%s/api-keys" % ACC
key = {}


@case("api_keys_create_201_full_key_only_here")
def _():
    body = expect(call("POST", KEY_PATH, OWNER, {"name": "ci", "role": "owner",
                                                  "expires_at": "2099-01-01T00:00:00Z"}), 201)
    assert body["id"].startswith("key_") and body["key"].startswith(body["prefix"]), body
    assert body["key"] != body["prefix"], body
    key.update(body)


@case("api_keys_used_as_bearer_last_used_listed_never_secret")
def _():
    listed = expect(call("GET", KEY_PATH, OWNER), 200)
    entry = next(k for k in listed["data"] if k["id"] == key["id"])
    assert entry["last_used_at"] is None and entry["revoked"] is False, entry
    expect(call("GET", "/v1/me", key["key"]), 200)
    # a write through the key (reads run READ ONLY and record no use)
    expect(call("POST", "/v1/accounts/%s/invitations" % ACC, key["key"],
                {"email": "bykey@team.test", "role": "viewer"}), 201)
    listed = expect(call("GET", KEY_PATH, OWNER), 200)
    entry = next(k for k in listed["data"] if k["id"] == key["id"])
    assert entry["last_used_at"] is not None, entry
    assert entry["prefix"] == key["prefix"] and entry["name"] == "ci" and entry["role"] == "owner", entry
    assert entry["expires_at"].startswith("2099-01-01"), entry
    text = json.dumps(listed)
    assert key["key"] not in text and "hash" not in text and "secret" not in text, listed


@case("api_keys_revoke_204_refused_at_once_401")
def _():
    expect(call("DELETE", "%s/%s" % (KEY_PATH, key["id"]), OWNER), 204)
    got = call("GET", "/v1/me", key["key"])
    assert expect(got, 401)["code"] == "unauthenticated", got
    listed = expect(call("GET", KEY_PATH, OWNER), 200)
    assert next(k for k in listed["data"] if k["id"] == key["id"])["revoked"] is True


@case("api_keys_hostile_bodies_422_naming_field_nothing_changes")
def _():
    before = db_state("api_keys")
    invalid_field(call("POST", KEY_PATH, OWNER, {"role": "owner"}), "name")
    invalid_field(call("POST", KEY_PATH, OWNER, {"name": "k"}), "role")
    invalid_field(call("POST", KEY_PATH, OWNER, {"name": "k", "role": "emperor"}), "role")
    invalid_field(call("POST", KEY_PATH, OWNER, {"name": "k", "role": "owner", "expires_at": "tomorrow"}),
                  "expires_at")
    invalid_field(call("POST", KEY_PATH, OWNER, {"name": "k", "role": "owner", "expires_at": 5}), "expires_at")
    invalid_field(call("POST", KEY_PATH, OWNER, {"name": "k", "role": "owner", "scopes": []}), "scopes")
    expect(call("POST", KEY_PATH, OWNER, {"name": "k", "role": "owner", "expires_at": "2001-01-01T00:00:00Z"}),
           422)
    assert db_state("api_keys") == before


@case("api_keys_admin_reads_cannot_create_or_revoke_viewer_sees_none")
def _():
    other = expect(call("POST", KEY_PATH, OWNER, {"name": "other", "role": "viewer"}), 201)
    expect(call("POST", KEY_PATH, ADMIN, {"name": "k", "role": "viewer"}), 403)
    expect(call("DELETE", "%s/%s" % (KEY_PATH, other["id"]), ADMIN), 403)
    assert any(k["id"] == other["id"] for k in expect(call("GET", KEY_PATH, ADMIN), 200)["data"])
    assert expect(call("GET", KEY_PATH, VIEWER), 200)["data"] == []
    expect(call("GET", "/v1/me", other["key"]), 200)


@case("api_keys_other_tenant_404_like_missing")
def _():
    rival = expect(call("POST", "/v1/accounts/%s/api-keys" % RIVAL, RIVAL_TOKEN,
                        {"name": "rk", "role": "owner"}), 201)
    missing_key = "key_999999_999999"
    same_as_missing(call("DELETE", "%s/%s" % (KEY_PATH, rival["id"]), OWNER), rival["id"],
                    call("DELETE", "%s/%s" % (KEY_PATH, missing_key), OWNER), missing_key)
    same_as_missing(call("DELETE", "/v1/accounts/%s/api-keys/%s" % (RIVAL, rival["id"]), OWNER), RIVAL,
                    call("DELETE", "/v1/accounts/%s/api-keys/%s" % (MISSING, rival["id"]), OWNER), MISSING)
    same_as_missing(call("GET", "/v1/accounts/%s/api-keys" % RIVAL, OWNER), RIVAL,
                    call("GET", "/v1/accounts/%s/api-keys" % MISSING, OWNER), MISSING)
    same_as_missing(call("POST", "/v1/accounts/%s/api-keys" % RIVAL, OWNER, {"name": "x", "role": "owner"}), RIVAL,
                    call("POST", "/v1/accounts/%s/api-keys" % MISSING, OWNER, {"name": "x", "role": "owner"}),
                    MISSING)
    expect(call("GET", "/v1/me", rival["key"]), 200)  # still alive


# ---- API key rotation (41_key_rotation.sql) -----------------------------------------

def key_entry(key_id):
    listed = expect(call("GET", KEY_PATH, OWNER), 200)
    return next(k for k in listed["data"] if k["id"] == key_id), listed


@case("api_keys_rotate_201_new_key_once_old_works_in_grace_both_listed")
def _():
    old = expect(call("POST", KEY_PATH, OWNER, {"name": "deploy", "role": "admin"}), 201)
    new = expect(call("POST", "/v1/api-keys/%s/rotate" % old["id"], OWNER, {"grace_seconds": 3600}), 201)
    assert new["id"] != old["id"] and new["key"].startswith(new["prefix"]), new
    assert new["name"] == "deploy" and new["role"] == "admin" and new["expires_at"] is None, new
    assert new["replaces"]["id"] == old["id"] and new["replaces"]["expires_at"], new
    assert expect(call("GET", "/v1/me", new["key"]), 200)["role"] == "admin"
    assert expect(call("GET", "/v1/me", old["key"]), 200)["role"] == "admin"  # in its grace
    entry, listed = key_entry(old["id"])
    assert entry["replaced_by"] == new["id"] and entry["rotated_at"] and entry["expires_at"], entry
    entry, _ = key_entry(new["id"])
    assert entry["replaced_by"] is None and entry["rotated_at"] is None and entry["expires_at"] is None, entry
    text = json.dumps(listed)
    assert new["key"] not in text and old["key"] not in text, listed


@case("api_keys_rotate_grace_0_old_refused_at_once_default_grace_a_day")
def _():
    old = expect(call("POST", KEY_PATH, OWNER, {"name": "short", "role": "viewer"}), 201)
    new = expect(call("POST", "/v1/api-keys/%s/rotate" % old["id"], OWNER, {"grace_seconds": 0}), 201)
    assert expect(call("GET", "/v1/me", old["key"]), 401)["code"] == "unauthenticated"
    expect(call("GET", "/v1/me", new["key"]), 200)
    newer = expect(call("POST", "/v1/api-keys/%s/rotate" % new["id"], OWNER), 201)  # no body: a day
    assert sql1("SELECT expires_at - now() BETWEEN interval '23 hours' AND interval '1 day' "
                "FROM tenancy.api_keys WHERE public_id = %s" % q(new["id"])) == "t"
    expect(call("GET", "/v1/me", new["key"]), 200)
    expect(call("GET", "/v1/me", newer["key"]), 200)


@case("api_keys_rotate_refusals_409_404_422_403_nothing_changes")
def _():
    old = expect(call("POST", KEY_PATH, OWNER, {"name": "refusals", "role": "viewer"}), 201)
    revoked = expect(call("POST", KEY_PATH, OWNER, {"name": "revoked", "role": "viewer"}), 201)
    expect(call("DELETE", "%s/%s" % (KEY_PATH, revoked["id"]), OWNER), 204)
    rival = expect(call("POST", "/v1/accounts/%s/api-keys" % RIVAL, RIVAL_TOKEN,
                        {"name": "rival", "role": "owner"}), 201)
    rotated = expect(call("POST", "/v1/api-keys/%s/rotate" % old["id"], OWNER), 201)
    before = db_state("api_keys") + db_state("api_key_secrets")
    rot = "/v1/api-keys/%s/rotate"
    assert expect(call("POST", rot % old["id"], OWNER), 409)["code"] == "conflict"  # already rotated
    assert expect(call("POST", rot % revoked["id"], OWNER), 409)["code"] == "conflict"
    same_as_missing(call("POST", rot % rival["id"], OWNER), rival["id"],
                    call("POST", rot % "key_999999_999999", OWNER), "key_999999_999999")
    invalid_field(call("POST", rot % rotated["id"], OWNER, {"grace_seconds": "1 day"}), "grace_seconds")
    invalid_field(call("POST", rot % rotated["id"], OWNER, {"grace": 5}), "grace")
    for bad in (-1, 2592001, 10 ** 15):
        assert expect(call("POST", rot % rotated["id"], OWNER, {"grace_seconds": bad}), 422)["code"] \
            == "unprocessable", bad
    expect(call("POST", rot % rotated["id"], ADMIN), 403)
    expect(call("POST", rot % rotated["id"], VIEWER), 403)
    expect(call("POST", rot % rotated["id"], rotated["key"]), 403)  # a viewer key
    assert db_state("api_keys") + db_state("api_key_secrets") == before
    expect(call("GET", "/v1/me", rival["key"]), 200)


@case("api_keys_max_lifetime_set_by_owner_older_keys_401")
def _():
    life, life_owner = gw.main_account("Life Co", "owner@life.test", "life-pass-1")
    k = expect(call("POST", "/v1/accounts/%s/api-keys" % life, life_owner, {"name": "aging", "role": "viewer"}),
               201)
    p = expect(call("PATCH", "/v1/accounts/%s" % life, life_owner,
                    {"settings": {"api_keys": {"max_lifetime_days": 0}}}), 422)
    assert "max_lifetime_days" in p["detail"], p
    expect(call("PATCH", "/v1/accounts/%s" % life, life_owner,
                {"settings": {"api_keys": {"max_lifetime_days": 30}}}), 200)
    expect(call("GET", "/v1/me", k["key"]), 200)
    gw.sql("UPDATE tenancy.api_keys SET created_at = now() - interval '31 days' WHERE public_id = %s" % q(k["id"]))
    p = expect(call("GET", "/v1/me", k["key"]), 401)
    assert p["code"] == "unauthenticated" and "maximum key lifetime" in p["detail"], p
    fresh = expect(call("POST", "/v1/api-keys/%s/rotate" % k["id"], life_owner, {"grace_seconds": 0}), 201)
    expect(call("GET", "/v1/me", fresh["key"]), 200)


@case("plan_limits_409_plan_limit_reached")
def _():
    small, small_owner = gw.main_account("Small Co", "owner@small.test", "small-pass-1", plan="free")
    for i in range(2):  # the free plan: 2 sub-users, 2 active keys per account
        expect(call("POST", "/v1/accounts/%s/sub-users" % small, small_owner,
                    {"email": "s%d@small.test" % i, "name": "S", "surname": "S", "password": "s-pass-1234"}),
               201)
        expect(call("POST", "/v1/accounts/%s/api-keys" % small, small_owner, {"name": "k%d" % i, "role": "viewer"}),
               201)
    before = db_state("sub_users") + db_state("api_keys")
    p = expect(call("POST", "/v1/accounts/%s/sub-users" % small, small_owner,
                    {"email": "s9@small.test", "name": "S", "surname": "S", "password": "s-pass-1234"}), 409)
    assert p["code"] == "plan_limit_reached", p
    p = expect(call("POST", "/v1/accounts/%s/api-keys" % small, small_owner, {"name": "k9", "role": "viewer"}), 409)
    assert p["code"] == "plan_limit_reached", p
    assert db_state("sub_users") + db_state("api_keys") == before


sys.exit(finish())
