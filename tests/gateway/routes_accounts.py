#!/usr/bin/python3
"""The account routes over HTTP, walking the seeds' stories: an agency whose
clients cannot see each other, an enterprise with regional teams, a reseller
three levels deep (create, move, tree), deactivation refusing a subtree's
credentials at once, 120 accounts paged by 50, and hostile input that changes
nothing. Run by tests/suites/31_gateway_routes.sh (real gateway, real cluster).

Usage: routes_accounts.py WORKDIR (from the repository root)."""
import atexit
import json
import sys

from gwlib import Gateway, case, finish

gw = Gateway(sys.argv[1], "accounts")
atexit.register(gw.stop)  # also when a setup step raises

MISSING = "acc_999999_000000000000"


def q(value):
    """A SQL literal."""
    return "'" + str(value).replace("'", "''") + "'"


def key(account, role="owner"):
    """A bootstrap API key of account with role (made by the DBA)."""
    return gw.sql("SELECT tenancy.admin_create_api_key(%s, %s, %s)" % (q(account), q("k-" + role), q(role)))


def main_account(name, plan="standard"):
    """A main account of plan and its owner's key."""
    email = "owner@%s.test" % name.lower().replace(" ", "-")
    acc = gw.sql("SELECT tenancy.create_main_account(%s, %s, 'a long enough password', %s)"
                 % (q(name), q(email), q(plan)))
    return acc, key(acc)


def create(token, parent, name):
    status, _, body = gw.call("POST", "/v1/accounts", token=token, body={"parent": parent, "name": name})
    assert status == 201, (status, body)
    return body["id"]


def get(token, acc):
    """(status, headers, body) of GET /v1/accounts/{acc}."""
    return tuple(gw.call("GET", "/v1/accounts/" + acc, token=token))


def missing_like(token, method, path_of, body=None):
    """method on another tenant's account answers exactly as on a missing id."""
    theirs = tuple(gw.call(method, path_of(OTHER), token=token, body=body))
    missing = tuple(gw.call(method, path_of(MISSING), token=token, body=body))
    assert theirs[0] == 404, theirs
    # the detail names the id the caller sent: compare with that substituted
    strip = lambda b: json.dumps({k: v for k, v in b.items() if k != "request_id"}).replace(OTHER, "ID").replace(MISSING, "ID")
    assert strip(theirs[2]) == strip(missing[2]), (theirs, missing)
    assert theirs[2]["code"] == "not_found", theirs


def account_row(acc):
    return gw.sql("SELECT format('%%s|%%s|%%s|%%s|%%s', name, status, branding, settings, path) "
                  "FROM tenancy.accounts WHERE public_id = %s" % q(acc))


def count_accounts():
    return int(gw.sql("SELECT count(*) FROM tenancy.accounts"))


OTHER, OTHER_KEY = main_account("Other Tenant")

# ---- an agency whose clients cannot see each other -------------------------
AGENCY, AGENCY_KEY = main_account("Agency")


@case("accounts_create_201_answers_the_account")
def _():
    global CLIENT_A, CLIENT_B
    status, headers, body = gw.call("POST", "/v1/accounts", token=AGENCY_KEY,
                                    body={"parent": AGENCY, "name": "Client A"})
    assert status == 201, (status, body)
    assert set(body) >= {"id", "parent", "name", "status", "plan", "created_at"}, body
    assert body["parent"] == AGENCY and body["name"] == "Client A", body
    assert body["status"] == "active" and body["plan"] == "standard", body
    CLIENT_A = body["id"]
    CLIENT_B = create(AGENCY_KEY, AGENCY, "Client B")
    assert account_row(CLIENT_A).startswith("Client A|active|"), account_row(CLIENT_A)


@case("accounts_agency_clients_cannot_see_each_other")
def _():
    a_key, b_key = key(CLIENT_A), key(CLIENT_B)
    a_sub = create(a_key, CLIENT_A, "Client A campaign")
    status, _, body = gw.call("GET", "/v1/accounts", token=a_key)
    assert status == 200, (status, body)
    assert [r["id"] for r in body["data"]] == [CLIENT_A, a_sub], body
    assert body["next_cursor"] is None, body
    # a sibling and a parent are missing, with the body a missing id gets
    for target in (CLIENT_B, AGENCY):
        theirs, missing = get(a_key, target), get(a_key, MISSING)
        assert theirs[0] == 404 and missing[0] == 404, (theirs, missing)
        assert theirs[2]["detail"].replace(target, "X") == missing[2]["detail"].replace(MISSING, "X"), (theirs, missing)
    status, _, body = gw.call("GET", "/v1/accounts", token=b_key)
    assert [r["id"] for r in body["data"]] == [CLIENT_B], body
    assert "path" not in body["data"][0], body  # internal ids stay inside
    # a sibling's tree is missing too; filtering by a sibling finds nothing
    theirs = gw.call("GET", "/v1/accounts/%s/tree" % CLIENT_B, token=a_key)
    missing = gw.call("GET", "/v1/accounts/%s/tree" % MISSING, token=a_key)
    assert theirs.problem(404, "not_found")["detail"].replace(CLIENT_B, "X") == \
        missing.problem(404, "not_found")["detail"].replace(MISSING, "X"), (theirs, missing)
    for parent in (CLIENT_B, MISSING):
        status, _, body = gw.call("GET", "/v1/accounts?parent=" + parent, token=a_key)
        assert status == 200 and body == {"data": [], "next_cursor": None}, (parent, status, body)
    # the agency sees all of them, in tree order
    status, _, body = gw.call("GET", "/v1/accounts", token=AGENCY_KEY)
    assert [r["id"] for r in body["data"]] == [AGENCY, CLIENT_A, a_sub, CLIENT_B], body
    # the agency acting in a client (Tenancy-Account) sees that client's subtree only
    status, _, body = gw.call("GET", "/v1/accounts", token=AGENCY_KEY, headers={"Tenancy-Account": CLIENT_A})
    assert [r["id"] for r in body["data"]] == [CLIENT_A, a_sub], body
    assert get(AGENCY_KEY, CLIENT_B)[0] == 200
    r = gw.call("GET", "/v1/accounts/" + CLIENT_B, token=AGENCY_KEY, headers={"Tenancy-Account": CLIENT_A})
    r.problem(404, "not_found")
    # a client's own account shows no parent: children never learn about ancestors
    status, _, body = get(a_key, CLIENT_A)
    assert status == 200 and body["parent"] is None, body


@case("accounts_a_user_of_a_client_lists_only_its_subtree")
def _():
    token = gw.sql(
        "SELECT tenancy.authenticate(%s); SELECT tenancy.invite(%s, 'ann@client-a.test', 'admin'); "
        "SELECT tenancy.reset(); "
        "SELECT tenancy.accept_invitation((SELECT substring(body from '(tni_\\S+)') FROM tenancy.outbox "
        "WHERE recipient = 'ann@client-a.test' ORDER BY id DESC LIMIT 1), 'Ann', 'ann-password-123')"
        % (q(AGENCY_KEY), q(CLIENT_A))).splitlines()[-1]
    status, _, body = gw.call("GET", "/v1/accounts", token=token)
    assert status == 200, (status, body)
    ids = [r["id"] for r in body["data"]]
    assert ids[0] == CLIENT_A and CLIENT_B not in ids and AGENCY not in ids, body
    assert get(token, CLIENT_B)[0] == 404


@case("accounts_other_tenant_is_404_like_missing_on_every_route")
def _():
    missing_like(AGENCY_KEY, "GET", lambda a: "/v1/accounts/" + a)
    missing_like(AGENCY_KEY, "GET", lambda a: "/v1/accounts/%s/tree" % a)
    missing_like(AGENCY_KEY, "PATCH", lambda a: "/v1/accounts/" + a, {"name": "stolen"})
    missing_like(AGENCY_KEY, "POST", lambda a: "/v1/accounts/%s/deactivate" % a)
    missing_like(AGENCY_KEY, "POST", lambda a: "/v1/accounts/%s/reactivate" % a)
    missing_like(AGENCY_KEY, "POST", lambda a: "/v1/accounts/%s/move" % a, {"new_parent": AGENCY})
    # as a parent or a new parent too
    before = count_accounts()
    st, _, body = gw.call("POST", "/v1/accounts", token=AGENCY_KEY, body={"parent": OTHER, "name": "x"})
    assert st == 404 and OTHER in body["detail"], body
    st, _, body = gw.call("POST", "/v1/accounts/%s/move" % CLIENT_B, token=AGENCY_KEY, body={"new_parent": OTHER})
    assert st == 404, body
    assert count_accounts() == before
    assert account_row(OTHER).startswith("Other Tenant|active|")


# ---- an enterprise with regional teams -----------------------------------------
@case("accounts_enterprise_regional_teams")
def _():
    ent, ent_key = main_account("Globex", "enterprise")
    eu = create(ent_key, ent, "EU")
    us = create(ent_key, ent, "US")
    berlin = create(ent_key, eu, "Berlin")
    paris = create(ent_key, eu, "Paris")
    # the region's admin runs its teams
    eu_admin = key(eu, "admin")
    status, _, body = gw.call("GET", "/v1/accounts", token=eu_admin)
    assert [r["id"] for r in body["data"]] == [eu, berlin, paris], body
    status, _, body = gw.call("PATCH", "/v1/accounts/" + berlin, token=eu_admin, body={"name": "Berlin Team"})
    assert status == 200 and body["name"] == "Berlin Team", body
    assert get(eu_admin, us)[0] == 404
    # central oversight filters by parent and status
    status, _, body = gw.call("GET", "/v1/accounts?parent=" + eu, token=ent_key)
    assert [r["id"] for r in body["data"]] == [berlin, paris], body
    assert all(r["parent"] == eu for r in body["data"]), body
    status, _, body = gw.call("POST", "/v1/accounts/%s/deactivate" % paris, token=ent_key)
    assert status == 200 and body["status"] == "inactive", body
    status, _, body = gw.call("GET", "/v1/accounts?status=inactive", token=ent_key)
    assert [r["id"] for r in body["data"]] == [paris], body
    status, _, body = gw.call("GET", "/v1/accounts?status=active&parent=" + eu, token=ent_key)
    assert [r["id"] for r in body["data"]] == [berlin], body
    status, _, body = gw.call("GET", "/v1/accounts?status=deleted", token=ent_key)
    assert status == 422 and body["code"] == "invalid_field" and body.get("field") == "status", body
    # a viewer reads but changes nothing
    viewer = key(eu, "viewer")
    assert get(viewer, berlin)[0] == 200
    before = account_row(berlin)
    status, _, body = gw.call("PATCH", "/v1/accounts/" + berlin, token=viewer, body={"name": "by viewer"})
    assert status == 403, (status, body)
    status, _, body = gw.call("POST", "/v1/accounts", token=viewer, body={"parent": eu, "name": "by viewer"})
    assert status == 403, (status, body)
    status, _, body = gw.call("POST", "/v1/accounts/%s/deactivate" % berlin, token=viewer)
    assert status == 403, (status, body)
    assert account_row(berlin) == before
    # an admin may not move (owners only)
    status, _, body = gw.call("POST", "/v1/accounts/%s/move" % berlin, token=eu_admin, body={"new_parent": eu})
    assert status == 403, (status, body)


# ---- a reseller three levels deep ---------------------------------------------------
@case("accounts_reseller_three_levels_create_move_tree")
def _():
    global RESELLER, RESELLER_KEY, C1, C2, C1A, C1AI
    RESELLER, RESELLER_KEY = main_account("Reseller")
    C1 = create(RESELLER_KEY, RESELLER, "Customer 1")
    C2 = create(RESELLER_KEY, RESELLER, "Customer 2")
    C1A = create(RESELLER_KEY, C1, "Customer 1 site")
    C1AI = create(RESELLER_KEY, C1A, "Customer 1 site team")
    # standard plan: 4 levels; a fifth is refused and nothing is created
    before = count_accounts()
    status, _, body = gw.call("POST", "/v1/accounts", token=RESELLER_KEY, body={"parent": C1AI, "name": "too deep"})
    assert status == 409 and body["code"] == "plan_limit_reached", (status, body)
    assert count_accounts() == before
    status, _, body = gw.call("POST", "/v1/accounts/%s/move" % C1A, token=RESELLER_KEY, body={"new_parent": C2})
    assert status == 200 and body["parent"] == C2 and body["id"] == C1A, (status, body)
    status, _, tree = gw.call("GET", "/v1/accounts/%s/tree" % RESELLER, token=RESELLER_KEY)
    assert status == 200, (status, tree)

    def shape(n):
        return [n["id"], [shape(c) for c in n["children"]]]
    assert shape(tree) == [RESELLER, [[C1, []], [C2, [[C1A, [[C1AI, []]]]]]]], tree
    assert tree["children"][1]["children"][0]["name"] == "Customer 1 site", tree
    # the subtree's own tree, for its own key
    status, _, sub = gw.call("GET", "/v1/accounts/%s/tree" % C2, token=key(C2))
    assert status == 200 and shape(sub) == [C2, [[C1A, [[C1AI, []]]]]], sub
    # under itself or its descendant: 422, nothing moved
    before = account_row(C2)
    status, _, body = gw.call("POST", "/v1/accounts/%s/move" % C2, token=RESELLER_KEY, body={"new_parent": C1AI})
    assert status == 422, (status, body)
    assert account_row(C2) == before


@case("accounts_deactivate_refuses_the_subtree_at_once_reactivate_restores")
def _():
    c2_key, deep_key = key(C2), key(C1AI)
    assert get(c2_key, C2)[0] == 200 and get(deep_key, C1AI)[0] == 200
    status, _, body = gw.call("POST", "/v1/accounts/%s/deactivate" % C2, token=RESELLER_KEY)
    assert status == 200 and body["status"] == "inactive" and body["id"] == C2, (status, body)
    before = count_accounts()
    r = gw.call("POST", "/v1/accounts", token=RESELLER_KEY, body={"parent": C2, "name": "under inactive"})
    r.problem(409, "conflict")
    assert count_accounts() == before
    for token, acc in ((c2_key, C2), (deep_key, C1AI)):
        status, _, body = get(token, acc)
        assert status == 401 and body["code"] == "unauthenticated", (status, body)
    # the parent still sees it
    status, _, body = get(RESELLER_KEY, C1AI)
    assert status == 200, body
    # no account changes its own status
    status, _, body = gw.call("POST", "/v1/accounts/%s/deactivate" % RESELLER, token=RESELLER_KEY)
    assert status == 403, (status, body)
    status, _, body = gw.call("POST", "/v1/accounts/%s/reactivate" % C2, token=RESELLER_KEY)
    assert status == 200 and body["status"] == "active", (status, body)
    assert get(c2_key, C2)[0] == 200 and get(deep_key, C1AI)[0] == 200


# ---- pagination ---------------------------------------------------------------------------
@case("accounts_120_paged_by_50_each_once_in_order")
def _():
    global BIG, BIG_KEY, BIG_CURSOR
    BIG, BIG_KEY = main_account("Big Co", "enterprise")
    gw.sql("BEGIN; SELECT tenancy.authenticate(%s); "
           "SELECT tenancy.create_account(%s, 'Team ' || i) FROM generate_series(1, 40) i; "
           # (the teams are read first: Citus refuses a function that writes
           # other shards called from a query on a shard)
           "WITH teams AS MATERIALIZED (SELECT a.public_id FROM tenancy.accounts a "
           "WHERE a.name LIKE 'Team %%' AND a.main_id = "
           "(SELECT main_id FROM tenancy.accounts WHERE public_id = %s)) "
           "SELECT tenancy.create_account(t.public_id, 'Sub ' || i) "
           "FROM generate_series(1, 2) i, teams t; COMMIT"
           % (q(BIG_KEY), q(BIG), q(BIG)))
    expected = gw.sql("SELECT string_agg(public_id, ' ' ORDER BY path) FROM tenancy.accounts WHERE main_id = "
                      "(SELECT main_id FROM tenancy.accounts WHERE public_id = %s)" % q(BIG)).split()
    assert len(expected) == 121, len(expected)
    seen, cursor, pages = [], None, 0
    while True:
        path = "/v1/accounts?limit=50" + ("&cursor=" + cursor if cursor else "")
        status, _, body = gw.call("GET", path, token=BIG_KEY)
        assert status == 200, (status, body)
        pages += 1
        assert len(body["data"]) == (50 if pages < 3 else 21), (pages, len(body["data"]))
        seen += [r["id"] for r in body["data"]]
        if pages == 1:
            BIG_CURSOR = body["next_cursor"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 5, "too many pages"
    assert seen == expected, "pages differ from tree order"
    assert len(set(seen)) == len(seen) == 121


@case("accounts_foreign_or_altered_cursor_422")
def _():
    # another account's cursor
    status, _, body = gw.call("GET", "/v1/accounts?limit=50&cursor=" + BIG_CURSOR, token=AGENCY_KEY)
    assert status == 422 and body["code"] == "invalid_cursor", (status, body)
    # one character altered
    i = len(BIG_CURSOR) // 2
    altered = BIG_CURSOR[:i] + ("A" if BIG_CURSOR[i] != "A" else "B") + BIG_CURSOR[i + 1:]
    status, _, body = gw.call("GET", "/v1/accounts?limit=50&cursor=" + altered, token=BIG_KEY)
    assert status == 422 and body["code"] == "invalid_cursor", (status, body)
    # the genuine one still works
    status, _, body = gw.call("GET", "/v1/accounts?limit=50&cursor=" + BIG_CURSOR, token=BIG_KEY)
    assert status == 200 and len(body["data"]) == 50, (status, body)


@case("accounts_bad_limit_422")
def _():
    for bad in ("0", "501", "x", "-1", "1.5"):
        status, _, body = gw.call("GET", "/v1/accounts?limit=" + bad, token=BIG_KEY)
        assert status == 422 and body.get("field") == "limit", (bad, status, body)
    status, _, body = gw.call("GET", "/v1/accounts?limit=500", token=BIG_KEY)
    assert status == 200 and len(body["data"]) == 121 and body["next_cursor"] is None, status


# ---- PATCH: merge patches ---------------------------------------------------------------------
@case("accounts_patch_name_branding_settings_merge")
def _():
    status, _, body = gw.call("PATCH", "/v1/accounts/" + C1, token=RESELLER_KEY, body={
        "name": "Customer One",
        "branding": {"name": "One Voice", "logo_url": "https://cdn.one.test/logo.png",
                     "colours": {"primary": "#102030"}},
        "settings": {"voice": {"lang": "en", "speed": 1}}})
    assert status == 200, (status, body)
    assert body["name"] == "Customer One" and body["branding"]["colours"] == {"primary": "#102030"}, body
    # a merge patch: add a colour, drop the logo, change one nested setting
    status, _, body = gw.call("PATCH", "/v1/accounts/" + C1, token=RESELLER_KEY, body={
        "branding": {"logo_url": None, "colours": {"accent": "#abc"}},
        "settings": {"voice": {"speed": 2}}})
    assert status == 200, (status, body)
    assert body["branding"] == {"name": "One Voice", "colours": {"primary": "#102030", "accent": "#abc"}}, body
    assert body["settings"] == {"voice": {"lang": "en", "speed": 2}}, body
    assert body["name"] == "Customer One", body
    status, _, body = get(RESELLER_KEY, C1)
    assert body["settings"] == {"voice": {"lang": "en", "speed": 2}}, body
    # null removes every override
    status, _, body = gw.call("PATCH", "/v1/accounts/" + C1, token=RESELLER_KEY, body={"settings": None})
    assert status == 200 and body["settings"] == {}, (status, body)
    # the change is on the audit log with old and new values
    n = gw.sql("SELECT count(*) FROM tenancy.audit_entries() WHERE target = 'tenancy.accounts' AND action = 'update' "
               "AND change->'new'->'branding'->'colours' ? 'accent'")
    assert n == "1", n


@case("accounts_hostile_bodies_422_400_nothing_changed")
def _():
    before, count = account_row(C1), count_accounts()
    cases = [
        ("PATCH", "/v1/accounts/" + C1, {"name": 5}, 422, "name"),
        ("PATCH", "/v1/accounts/" + C1, {"nmae": "typo"}, 422, "nmae"),
        ("PATCH", "/v1/accounts/" + C1, {"branding": "blue"}, 422, "branding"),
        ("PATCH", "/v1/accounts/" + C1, {"settings": [1]}, 422, "settings"),
        ("PATCH", "/v1/accounts/" + C1, {"name": "n" * 201}, 422, None),
        ("PATCH", "/v1/accounts/" + C1, {"name": None}, 422, "name"),
        ("PATCH", "/v1/accounts/" + C1, {"name": ""}, 422, None),
        ("PATCH", "/v1/accounts/" + C1, {"branding": {"font": "Comic"}}, 422, None),
        ("PATCH", "/v1/accounts/" + C1, {"branding": {"logo_url": "javascript:alert(1)"}}, 422, None),
        ("PATCH", "/v1/accounts/" + C1, {"name": "ok", "branding": {"colours": {"primary": "red"}}}, 422, None),
        ("PATCH", "/v1/accounts/" + C1, [], 422, None),
        ("POST", "/v1/accounts", {"name": "no parent"}, 422, "parent"),
        ("POST", "/v1/accounts", {"parent": RESELLER}, 422, "name"),
        ("POST", "/v1/accounts", {"parent": 7, "name": "x"}, 422, "parent"),
        ("POST", "/v1/accounts", {"parent": RESELLER, "name": "x", "plan": "enterprise"}, 422, "plan"),
        ("POST", "/v1/accounts", {"parent": RESELLER, "name": "n" * 201}, 422, None),
        ("POST", "/v1/accounts/%s/move" % C1, {}, 422, "new_parent"),
        ("POST", "/v1/accounts/%s/move" % C1, {"new_parent": C2, "x": 1}, 422, "x"),
        ("POST", "/v1/accounts/%s/deactivate" % C1, {"now": True}, 422, None),
    ]
    for method, path, payload, want, field in cases:
        status, _, body = gw.call(method, path, token=RESELLER_KEY, body=payload)
        assert status == want, (method, path, payload, status, body)
        if field:
            assert body.get("field") == field, (payload, body)
    for method, path in (("PATCH", "/v1/accounts/" + C1), ("POST", "/v1/accounts"),
                         ("POST", "/v1/accounts/%s/move" % C1)):
        status, _, body = gw.call(method, path, token=RESELLER_KEY, raw_body=b'{"name": "x",')
        assert status == 400 and body["code"] == "invalid_json", (path, status, body)
    assert account_row(C1) == before, (account_row(C1), before)
    assert count_accounts() == count


sys.exit(finish())
