#!/usr/bin/python3
"""Auth and /v1/me routes over HTTP (routes_auth.cpp, routes_me.cpp), walking
the seeds' stories: a user of two agencies switching between them, an owner
enabling MFA and logging in with it, a sub-user's first login forced to change
its password, logout, own sessions; hostile input on every route.

Run by tests/suites/31_gateway_routes.sh (gwlib starts the cluster and the
real gateway). Prints one PASS/FAIL line per case.
"""
import atexit
import json
import re
import sys

from gwlib import Gateway, case, finish, poll

DOMAIN = "rta.test"


def lit(s):
    """A SQL string literal."""
    return "'" + str(s).replace("'", "''") + "'"


def login(email, password, account=None, **extra):
    body = {"email": email, "password": password}
    if account is not None:
        body["account"] = account
    body.update(extra)
    return gw.call("POST", "/v1/auth/login", body=body)


def must_login(email, password, account=None):
    status, _, j = login(email, password, account)
    assert status == 200, (status, j)
    return j


def totp(secret, offset_s=0):
    return gw.sql("SELECT tenancy.totp(%s, now() + interval '%d seconds')" % (lit(secret), offset_s))


def problem(answer, status, code, field=None):
    """Asserts a problem+json answer (a gwlib Response); returns its body."""
    j = answer.problem(status, code)
    if field is not None:
        assert j.get("field") == field, j
    return j


def same_problem(a, b, a_id=None, b_id=None):
    """Two problem bodies alike but for the request id (and the id each names)."""
    a = dict(a)
    b = dict(b)
    a.pop("request_id", None)
    b.pop("request_id", None)
    if a_id is not None:
        a = json.loads(json.dumps(a).replace(a_id, "<id>"))
        b = json.loads(json.dumps(b).replace(b_id, "<id>"))
    assert a == b, (a, b)


def sessions_of(email):
    return int(gw.sql("SELECT count(*) FROM tenancy.sessions s JOIN tenancy.users u ON u.id = s.user_id "
                      "WHERE u.email = %s" % lit(email)))


def hostile_body(method, path, token, fields_ok, string_field):
    """A body route's hostile input: malformed JSON 400; not an object,
    a missing / wrong-typed / unknown / too long field 422 naming it."""
    call = lambda body, raw=None: gw.call(method, path, token=token, body=body, raw_body=raw)
    problem(call(None, raw=b'{"oops": '), 400, "invalid_json")
    problem(call([1, 2]), 422, "invalid_field")
    for name in fields_ok:
        partial = {k: v for k, v in fields_ok.items() if k != name}
        problem(call(partial), 422, "invalid_field", name)
        wrong = dict(fields_ok)
        wrong[name] = 12345
        problem(call(wrong), 422, "invalid_field", name)
    unknown = dict(fields_ok)
    unknown["admin"] = True
    problem(call(unknown), 422, "invalid_field", "admin")
    long = dict(fields_ok)
    long[string_field] = "x" * 5000
    problem(call(long), 422, "invalid_field", string_field)


gw = Gateway(sys.argv[1], "auth")
atexit.register(gw.stop)  # also when a setup step below raises

# ---- the seeds' cast -------------------------------------------------------------

north, north_tok = gw.main_account("North Agency", "north@" + DOMAIN, "north-pass-1")
south, _ = gw.main_account("South Agency", "south@" + DOMAIN, "south-pass-1")
stranger, stranger_tok = gw.main_account("Stranger Inc", "stranger@" + DOMAIN, "stranger-pass-1")
north_client = gw.sql("SELECT tenancy.create_account(%s, 'North Client') FROM "
                      "(SELECT tenancy.authenticate(%s) OFFSET 0) a" % (lit(north), lit(north_tok)))
# A membership row as the DBA inserts it: on one node main_id is generated
# from the path; on Citus (tests/citus/30_gateway.sh) it is the distribution
# column, a plain one that the row must name (docs/operations/scale-out.md).
MEMBERSHIP_COLUMNS = "main_id, account_path, user_id, role" if gw.citus else "account_path, user_id, role"
MAIN_ID_VALUE = "a.main_id, " if gw.citus else ""

# Dana works for both agencies: admin of North, viewer of South. North's
# membership is the older one (its own statement first: on Citus a row's
# created_at is the now() of the worker holding it, so one statement writing
# two shards does not order them).
gw.sql("INSERT INTO tenancy.users (email, password_hash) VALUES (%s, tenancy.hash_password('dana-pass-1'))"
       % lit("dana@" + DOMAIN))
for acct, role in ((north, "admin"), (south, "viewer")):
    gw.sql("INSERT INTO tenancy.memberships (%s) "
           "SELECT %sa.path, u.id, %s FROM tenancy.accounts a, tenancy.users u "
           "WHERE a.public_id = %s AND u.email = %s"
           % (MEMBERSHIP_COLUMNS, MAIN_ID_VALUE, lit(role), lit(acct), lit("dana@" + DOMAIN)))
DANA = "dana@" + DOMAIN


# ---- login ----------------------------------------------------------------------------

@case("login_answers_token_and_the_token_works")
def _():
    j = must_login(DANA, "dana-pass-1")
    assert set(j) >= {"token", "expires_at", "account", "mfa_required"}, j
    assert j["account"] == north and j["mfa_required"] is False, j
    assert re.match(r"^tns_[0-9]+_[A-Za-z0-9_-]{43}$", j["token"]), j
    status, _, me = gw.call("GET", "/v1/me", token=j["token"])
    assert status == 200 and me["account"] == north and me["role"] == "admin", (status, me)
    assert {m["account"] for m in me["memberships"]} >= {north}, me


@case("login_into_a_given_account")
def _():
    j = must_login(DANA, "dana-pass-1", south)
    assert j["account"] == south, j
    status, _, me = gw.call("GET", "/v1/me", token=j["token"])
    assert me["role"] == "viewer", me
    # Another tenant's account and a missing one: 404, alike but for the id.
    a = problem(login(DANA, "dana-pass-1", stranger), 404, "not_found")
    b = problem(login(DANA, "dana-pass-1", "acc_999_nothing"), 404, "not_found")
    same_problem(a, b, stranger, "acc_999_nothing")


@case("login_refused_one_answer_whatever_the_cause")
def _():
    before = sessions_of(DANA)
    wrong = problem(login(DANA, "not-the-password"), 401, "invalid_credentials")
    unknown = problem(login("nobody@" + DOMAIN, "not-the-password"), 401, "invalid_credentials")
    not_email = problem(login("not an email", "whatever-pass"), 401, "invalid_credentials")
    same_problem(wrong, unknown)
    same_problem(wrong, not_email)
    assert sessions_of(DANA) == before


@case("login_failures_counted_then_throttled")
def _():
    victim = "victim@" + DOMAIN
    gw.sql("INSERT INTO tenancy.users (email, password_hash) VALUES (%s, tenancy.hash_password('victim-pass-1'))"
           % lit(victim))
    gw.sql("INSERT INTO tenancy.memberships (%s) SELECT %sa.path, u.id, 'member' "
           "FROM tenancy.accounts a, tenancy.users u WHERE a.public_id = %s AND u.email = %s"
           % (MEMBERSHIP_COLUMNS, MAIN_ID_VALUE, lit(north), lit(victim)))
    first = None
    for _ in range(5):
        p = problem(login(victim, "guess-pass-x"), 401, "invalid_credentials")
        first = first or p
    # The sixth attempt, with the right password, is refused all the same.
    locked = problem(login(victim, "victim-pass-1"), 401, "invalid_credentials")
    same_problem(first, locked)
    # Each failure left its trace, though the request's transaction rolled
    # back: a login.failure entry in North's log (written by the extension's
    # login audit writer), and the throttle's table row.
    count = lambda q: int(gw.sql(q % lit(victim)))
    poll(lambda: count("SELECT count(*) FROM tenancy.audit_entries() WHERE action = 'login.failure' "
                       "AND target = %s") >= 6, 20, "six login.failure entries")
    poll(lambda: count("SELECT count(*) FROM tenancy.login_failures "
                       "WHERE key_hash = tenancy.sha256_hex('user:' || %s)") >= 5, 20,
         "five login_failures rows")
    gw.sql("SELECT tenancy._throttle_rewind('1 day')")
    must_login(victim, "victim-pass-1")


@case("login_hostile_input")
def _():
    before = sessions_of(DANA)
    hostile_body("POST", "/v1/auth/login", None, {"email": DANA, "password": "dana-pass-1"}, "email")
    problem(gw.call("POST", "/v1/auth/login", body={"email": DANA, "password": "x" * 1100}), 422,
            "invalid_field", "password")
    problem(gw.call("POST", "/v1/auth/login", body={"email": DANA, "password": "dana-pass-1", "account": 7}),
            422, "invalid_field", "account")
    assert sessions_of(DANA) == before


# ---- sub-user: the first login owes a password change -------------------------------------

sam = gw.sql("SELECT tenancy.create_sub_user('sam@%s', 'Sam', 'Poe', 'sam-temp-pass') FROM "
             "(SELECT tenancy.authenticate(%s) OFFSET 0) a" % (DOMAIN, lit(north_tok)))
gw.sql("SELECT tenancy.activate_sub_user(%s) FROM (SELECT tenancy.authenticate(%s) OFFSET 0) a"
       % (lit(sam), lit(north_tok)))
sam_pw = gw.sql("SELECT substring(body from 'temporary password: (\\S+)') FROM tenancy.outbox "
                "WHERE recipient = 'sam@%s' ORDER BY id DESC LIMIT 1" % DOMAIN)


def sub_login(main_email, email, password):
    return gw.call("POST", "/v1/auth/sub-user-login",
                   body={"main_account_email": main_email, "email": email, "password": password})


@case("sub_user_first_login_must_change_password")
def _():
    status, _, j = sub_login("north@" + DOMAIN, "sam@" + DOMAIN, sam_pw)
    assert status == 200, (status, j)
    assert j["must_change_password"] is True and j["account"] == north, j
    tok = j["token"]
    problem(gw.call("GET", "/v1/me", token=tok), 403, "password_change_required")
    problem(gw.call("GET", "/v1/me/sessions", token=tok), 403, "password_change_required")
    problem(gw.call("POST", "/v1/auth/switch", token=tok, body={"account": north_client}), 403,
            "password_change_required")
    # too short, then the wrong old password: refused, nothing changed
    problem(gw.call("POST", "/v1/me/password", token=tok,
                    body={"old_password": sam_pw, "new_password": "short"}), 422, "unprocessable")
    problem(gw.call("POST", "/v1/me/password", token=tok,
                    body={"old_password": "wrong-old-pass", "new_password": "sam-own-pass-1"}), 403,
            "invalid_password")
    problem(gw.call("GET", "/v1/me", token=tok), 403, "password_change_required")
    st, _, body = gw.call("POST", "/v1/me/password", token=tok,
                          body={"old_password": sam_pw, "new_password": "sam-own-pass-1"})
    assert st == 204, (st, body)
    status, _, me = gw.call("GET", "/v1/me", token=tok)
    assert status == 200 and me["role"] == "sub_user" and me["principal"]["kind"] == "sub_user", me
    # the new password logs in without owing a change
    status, _, j = sub_login("north@" + DOMAIN, "sam@" + DOMAIN, "sam-own-pass-1")
    assert status == 200 and j["must_change_password"] is False, j


@case("sub_user_login_refused_same_answer_as_users")
def _():
    a = problem(sub_login("north@" + DOMAIN, "sam@" + DOMAIN, "not-the-password"), 401, "invalid_credentials")
    b = problem(sub_login("nobody@" + DOMAIN, "sam@" + DOMAIN, "not-the-password"), 401, "invalid_credentials")
    c = problem(login(DANA, "not-the-password"), 401, "invalid_credentials")
    same_problem(a, b)
    same_problem(a, c)


@case("sub_user_login_hostile_input")
def _():
    hostile_body("POST", "/v1/auth/sub-user-login", None,
                 {"main_account_email": "north@" + DOMAIN, "email": "sam@" + DOMAIN, "password": "whatever-1"},
                 "email")


@case("password_change_hostile_input")
def _():
    tok = must_login(DANA, "dana-pass-1")["token"]
    hostile_body("POST", "/v1/me/password", tok, {"old_password": "dana-pass-1", "new_password": "dana-pass-2"},
                 "new_password")
    must_login(DANA, "dana-pass-1")  # unchanged


# ---- MFA: an owner enables it and logs in with it -------------------------------------------

OWEN = "owen@" + DOMAIN
owen_acc, owen_tok = gw.main_account("Owen Voice", OWEN, "owen-pass-1")


@case("owner_enables_mfa_and_logs_in_with_it")
def _():
    status, _, j = gw.call("POST", "/v1/me/mfa", token=owen_tok)
    assert status == 200 and j["otpauth_uri"].startswith("otpauth://totp/"), (status, j)
    secret = re.search(r"secret=([A-Z2-7]+)", j["otpauth_uri"]).group(1)
    # a wrong code does not turn MFA on
    problem(gw.call("POST", "/v1/me/mfa/confirm", token=owen_tok, body={"code": "000000"}), 422,
            "invalid_mfa_code")
    assert gw.sql("SELECT mfa_enabled FROM tenancy.users WHERE email = %s" % lit(OWEN)) == "f"
    status, _, j = gw.call("POST", "/v1/me/mfa/confirm", token=owen_tok, body={"code": totp(secret)})
    assert status == 200 and len(j["recovery_codes"]) == 10, (status, j)
    recovery = j["recovery_codes"]
    problem(gw.call("POST", "/v1/me/mfa", token=owen_tok), 409, "conflict")

    # login: the session owes the second factor
    j = must_login(OWEN, "owen-pass-1")
    assert j["mfa_required"] is True, j
    tok = j["token"]
    problem(gw.call("GET", "/v1/me", token=tok), 401, "mfa_required")
    problem(gw.call("GET", "/v1/me/sessions", token=tok), 401, "mfa_required")
    problem(gw.call("POST", "/v1/auth/switch", token=tok, body={"account": owen_acc}), 401, "mfa_required")
    problem(gw.call("POST", "/v1/me/password", token=tok,
                    body={"old_password": "owen-pass-1", "new_password": "owen-pass-2"}), 401, "mfa_required")
    # a wrong code: refused, and counted on the session (committed)
    problem(gw.call("POST", "/v1/auth/mfa/verify", token=tok, body={"code": "123456"}), 401, "invalid_mfa_code")
    sid = tok.split("_")[1]
    assert gw.sql("SELECT mfa_failures FROM tenancy.sessions WHERE id = %s" % sid) == "1"
    st, _, body = gw.call("POST", "/v1/auth/mfa/verify", token=tok, body={"code": totp(secret, 30)})
    assert st == 204, (st, body)
    status, _, me = gw.call("GET", "/v1/me", token=tok)
    assert status == 200 and me["role"] == "owner", (status, me)
    # a recovery code works once
    tok2 = must_login(OWEN, "owen-pass-1")["token"]
    assert gw.call("POST", "/v1/auth/mfa/verify", token=tok2, body={"code": recovery[0]}).status == 204
    tok3 = must_login(OWEN, "owen-pass-1")["token"]
    problem(gw.call("POST", "/v1/auth/mfa/verify", token=tok3, body={"code": recovery[0]}), 401,
            "invalid_mfa_code")


@case("mfa_hostile_input")
def _():
    tok = must_login(DANA, "dana-pass-1")["token"]
    hostile_body("POST", "/v1/me/mfa/confirm", tok, {"code": "123456"}, "code")
    hostile_body("POST", "/v1/auth/mfa/verify", tok, {"code": "123456"}, "code")
    # an API key holds no session: cannot enrol
    key = gw.sql("SELECT tenancy.admin_create_api_key(%s, 'mfa key')" % lit(north))
    problem(gw.call("POST", "/v1/me/mfa", token=key), 403, "forbidden")
    assert gw.sql("SELECT mfa_secret IS NULL FROM tenancy.users WHERE email = %s" % lit(DANA)) == "t"


# ---- switch: a user between two agencies ---------------------------------------------------

@case("user_switches_between_agencies")
def _():
    j = must_login(DANA, "dana-pass-1")
    old = j["token"]
    assert j["account"] == north
    status, _, sw = gw.call("POST", "/v1/auth/switch", token=old, body={"account": south})
    assert status == 200 and sw["account"] == south and sw["token"] != old, (status, sw)
    # the old token ended; the new one acts in South with Dana's role there
    problem(gw.call("GET", "/v1/me", token=old), 401, "unauthenticated")
    status, _, me = gw.call("GET", "/v1/me", token=sw["token"])
    assert me["account"] == south and me["role"] == "viewer", me
    # and back, into a descendant of North, as North's admin
    status, _, back = gw.call("POST", "/v1/auth/switch", token=sw["token"], body={"account": north_client})
    assert status == 200 and back["account"] == north_client, (status, back)
    status, _, me = gw.call("GET", "/v1/me", token=back["token"])
    assert me["account"] == north_client and me["role"] == "admin", me


@case("switch_to_another_tenant_is_404_like_a_missing_account")
def _():
    tok = must_login(DANA, "dana-pass-1")["token"]
    a = problem(gw.call("POST", "/v1/auth/switch", token=tok, body={"account": stranger}), 404, "not_found")
    b = problem(gw.call("POST", "/v1/auth/switch", token=tok, body={"account": "acc_999_nothing"}), 404,
                "not_found")
    same_problem(a, b, stranger, "acc_999_nothing")
    # nothing changed: the token still acts in North
    status, _, me = gw.call("GET", "/v1/me", token=tok)
    assert status == 200 and me["account"] == north, me


@case("api_key_switch_names_a_descendant_without_a_token")
def _():
    key = gw.sql("SELECT tenancy.admin_create_api_key(%s, 'switch key', 'admin')" % lit(north))
    status, _, sw = gw.call("POST", "/v1/auth/switch", token=key, body={"account": north_client})
    assert status == 200 and sw == {"account": north_client}, (status, sw)
    # nothing stored: the key still acts in North unless the header names the account
    assert gw.call("GET", "/v1/me", token=key).json["account"] == north
    status, _, me = gw.call("GET", "/v1/me", token=key, headers={"Tenancy-Account": north_client})
    assert status == 200 and me["account"] == north_client, me
    problem(gw.call("POST", "/v1/auth/switch", token=key, body={"account": south}), 404, "not_found")


@case("switch_hostile_input")
def _():
    tok = must_login(DANA, "dana-pass-1")["token"]
    hostile_body("POST", "/v1/auth/switch", tok, {"account": south}, "account")
    status, _, me = gw.call("GET", "/v1/me", token=tok)
    assert status == 200 and me["account"] == north, me


# ---- logout -------------------------------------------------------------------------------------

@case("logout_then_the_token_is_refused")
def _():
    tok = must_login(DANA, "dana-pass-1")["token"]
    st, _, body = gw.call("POST", "/v1/auth/logout", token=tok)
    assert st == 204, (st, body)
    problem(gw.call("GET", "/v1/me", token=tok), 401, "unauthenticated")
    problem(gw.call("POST", "/v1/auth/logout", token=tok), 401, "unauthenticated")
    # an MFA-pending session may log out
    pending = must_login(OWEN, "owen-pass-1")
    assert pending["mfa_required"] is True
    assert gw.call("POST", "/v1/auth/logout", token=pending["token"]).status == 204
    problem(gw.call("POST", "/v1/auth/mfa/verify", token=pending["token"], body={"code": "123456"}), 401,
            "unauthenticated")
    # the logout is on the audit log
    assert int(gw.sql("SELECT count(*) FROM tenancy.audit_entries() WHERE action = 'api.request' "
                      "AND change->>'route' = 'POST /v1/auth/logout'")) >= 2


@case("no_bearer_is_401_on_every_bearer_route")
def _():
    for method, path, body in [("POST", "/v1/auth/mfa/verify", {"code": "123456"}),
                               ("POST", "/v1/auth/logout", None),
                               ("POST", "/v1/auth/switch", {"account": north}),
                               ("GET", "/v1/me", None),
                               ("POST", "/v1/me/password", {"old_password": "a-pass-123", "new_password": "b-pass-123"}),
                               ("POST", "/v1/me/mfa", None),
                               ("POST", "/v1/me/mfa/confirm", {"code": "123456"}),
                               ("GET", "/v1/me/sessions", None),
                               ("DELETE", "/v1/me/sessions/1", None)]:
        problem(gw.call(method, path, body=body), 401, "unauthenticated")


# ---- own sessions ---------------------------------------------------------------------------

@case("sessions_list_in_pages_and_delete")
def _():
    toks = [must_login(DANA, "dana-pass-1")["token"] for _ in range(3)]
    me = toks[-1]
    seen = []
    cursor = None
    pages = 0
    while True:
        path = "/v1/me/sessions?limit=2" + ("&cursor=" + cursor if cursor else "")
        status, _, page = gw.call("GET", path, token=me)
        assert status == 200, (status, page)
        assert len(page["data"]) <= 2, page
        seen += page["data"]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
        assert pages < 50
    ids = [s["id"] for s in seen]
    assert len(ids) == len(set(ids)) and pages >= 2, ids
    for t in toks:
        assert t.split("_")[1] in [str(i) for i in ids], (t, ids)
    current = [s for s in seen if s["current"]]
    assert len(current) == 1 and str(current[0]["id"]) == me.split("_")[1], current
    assert all(set(s) >= {"id", "account", "current", "created_at", "expires_at"} for s in seen), seen
    # a forged cursor, and one made for another caller: 422
    status, _, first = gw.call("GET", "/v1/me/sessions?limit=1", token=me)
    problem(gw.call("GET", "/v1/me/sessions?limit=1&cursor=" + first["next_cursor"][:-2] + "xx", token=me), 422,
            "invalid_cursor")
    problem(gw.call("GET", "/v1/me/sessions?limit=1&cursor=" + first["next_cursor"], token=toks[0]), 422,
            "invalid_cursor")
    problem(gw.call("GET", "/v1/me/sessions?limit=0", token=me), 422, "invalid_field", "limit")
    # delete one of one's own: that token is refused at once
    victim = toks[0]
    st, _, body = gw.call("DELETE", "/v1/me/sessions/" + victim.split("_")[1], token=me)
    assert st == 204, (st, body)
    problem(gw.call("GET", "/v1/me", token=victim), 401, "unauthenticated")
    status, _, page = gw.call("GET", "/v1/me/sessions?limit=500", token=me)
    assert victim.split("_")[1] not in [str(s["id"]) for s in page["data"]], page


@case("another_users_session_is_404_like_a_missing_one")
def _():
    me = must_login(DANA, "dana-pass-1")["token"]
    other = stranger_tok.split("_")[1]
    a = problem(gw.call("DELETE", "/v1/me/sessions/" + other, token=me), 404, "not_found")
    b = problem(gw.call("DELETE", "/v1/me/sessions/999999999", token=me), 404, "not_found")
    same_problem(a, b, other, "999999999")
    c = problem(gw.call("DELETE", "/v1/me/sessions/not-a-number", token=me), 404, "not_found")
    same_problem(a, c, other, "not-a-number")
    # the stranger's session lives on, and is not in Dana's list
    assert gw.call("GET", "/v1/me", token=stranger_tok).status == 200
    status, _, page = gw.call("GET", "/v1/me/sessions?limit=500", token=me)
    assert other not in [str(s["id"]) for s in page["data"]], page


@case("api_key_has_no_sessions")
def _():
    key = gw.sql("SELECT tenancy.admin_create_api_key(%s, 'sessions key')" % lit(north))
    problem(gw.call("GET", "/v1/me/sessions", token=key), 403, "forbidden")
    problem(gw.call("DELETE", "/v1/me/sessions/1", token=key), 403, "forbidden")
    problem(gw.call("POST", "/v1/auth/logout", token=key), 403, "forbidden")


sys.exit(finish())
