// Routes: the members of an account and invitations (SPEC sections 6 and 7).
//   GET    /v1/accounts/{id}/members             {data: [member], next_cursor}
//   PATCH  /v1/accounts/{id}/members/{user}      {role} -> member
//   DELETE /v1/accounts/{id}/members/{user}      -> 204
//   POST   /v1/accounts/{id}/invitations         {email, role} -> 201 invitation (never the token)
//   POST   /v1/invitations/accept                {token, name?, password?} -> {token} (no bearer)
// {user} is the user's id as tenancy.memberships holds it (users have no other
// public id). Every rule (who may touch an owner, the last owner) is the
// database's: tenancy.set_member_role / remove_member (31_members.sql),
// invite / accept_invitation (304_identity_invitations.sql). The list is row-level
// security's: members readers see the account's members, others themselves.
#include "list_page.hpp"
#include "routes_catalog.hpp"

namespace tenancy::gateway {
namespace {

const std::vector<std::string> kMemberRoles = {"owner", "admin", "member", "support_agent",
                                               "viewer"};

// {user} as a bigint's text; anything else is a member that does not exist,
// refused as the database refuses one (the text is the caller's own).
std::string member_id(const ApiCall &call) {
    const std::string &user = call.path_param("user");
    bool digits = !user.empty() && user.size() <= 18 &&
                  user.find_first_not_of("0123456789") == std::string::npos;
    if (!digits)
        refuse(404, "member " + user + " of account \"" + call.path_param("id") + "\" not found");
    return user;
}

const char *kMemberJson =
    "jsonb_build_object('user', m.user_id::text, 'email', u.email, 'name', u.name, 'role', m.role, "
    "'created_at', m.created_at)";

ApiAnswer list_members(Tx &tx, const ApiCall &call) {
    PageRequest page = page_request(call);
    std::optional<std::string> after;
    if (page.after && page.after->contains("user") && (*page.after)["user"].is_number_integer())
        after = std::to_string((*page.after)["user"].get<long long>());
    const std::string &account = call.path_param("id");
    // The page of memberships first, then their users: on Citus memberships
    // are distributed and users stay on the coordinator,: Citus joins them
    // only through an intermediate result.
    Result r = tx.exec_last(
        std::string(
            "WITH a AS (SELECT a.main_id, a.id FROM tenancy.accounts a WHERE a.public_id = $1 "
            "AND ") +
            main_id_is("a", 4) +
            "), page AS MATERIALIZED (SELECT m.* FROM tenancy.memberships m "
            "WHERE (m.main_id, m.account_id) = (SELECT a.main_id, a.id FROM a) AND " +
            main_id_is("m", 4) +
            " AND ($2::bigint IS NULL OR m.user_id > $2::bigint) "
            "ORDER BY m.user_id LIMIT $3::integer) "
            "SELECT jsonb_build_object('found', EXISTS (SELECT 1 FROM a), 'rows', "
            "coalesce((SELECT jsonb_agg(" +
            kMemberJson +
            " ORDER BY m.user_id) FROM page m JOIN tenancy.users u ON u.id = m.user_id), "
            "'[]'))::text",
        {account, after, std::to_string(page.limit + 1), call.main_hint});
    nlohmann::json found = nlohmann::json::parse(r.value(0, 0).value_or("{}"));
    if (!found.value("found", false))
        refuse(404, "account \"" + account + "\" not found");
    return page_answer(call, found["rows"], page, [](const nlohmann::json &row) {
        return nlohmann::json{{"user", std::stoll(row["user"].get<std::string>())}};
    });
}

ApiAnswer change_role(Tx &tx, const ApiCall &call) {
    const std::string &account = call.path_param("id");
    std::string user = member_id(call);
    // The member is read before the change (only its role changes): on Citus
    // a read after set_member_role, which writes as its owner, would be
    // refused in this transaction.
    Result r = tx.exec(
        std::string("WITH member AS MATERIALIZED (SELECT m.* FROM tenancy.memberships m "
                    "JOIN tenancy.accounts a ON a.main_id = m.main_id AND a.id = m.account_id "
                    "WHERE a.public_id = $1 AND m.user_id = $2::bigint) SELECT ") +
            kMemberJson + "::text FROM member m JOIN tenancy.users u ON u.id = m.user_id",
        {account, user});
    tx.exec_last("SELECT tenancy.set_member_role($1, $2::bigint, $3)",
                 {account, user, call.text("role")});
    // A forwarded (promoted) account id resolves in set_member_role only:
    // answer what is known.
    const std::string role = call.text("role").value_or("");
    if (r.rows() == 0)
        return ApiAnswer{200, {{"user", user}, {"role", role}}};
    nlohmann::json member = nlohmann::json::parse(r.value(0, 0).value_or("{}"));
    member["role"] = role;
    return ApiAnswer{200, member};
}

ApiAnswer remove(Tx &tx, const ApiCall &call) {
    tx.exec_last("SELECT tenancy.remove_member($1, $2::bigint)",
                 {call.path_param("id"), member_id(call)});
    return ApiAnswer{204, nullptr};
}

ApiAnswer invite(Tx &tx, const ApiCall &call) {
    Result id = tx.exec("SELECT tenancy.invite($1, $2, $3)",
                        {call.path_param("id"), call.text("email"), call.text("role")});
    // Read back by the function owner, who wrote it (on Citus only that role
    // may read the row in this transaction).
    Result r = tx.exec_last("SELECT tenancy._invitation_json($1)::text", {id.value(0, 0)});
    if (!r.value(0, 0))  // not readable back (cannot happen for a role that may invite)
        return ApiAnswer{201, {{"id", id.value(0, 0).value_or("")}}};
    return ApiAnswer{201, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

ApiAnswer accept(Tx &tx, const ApiCall &call) {
    Result r = tx.exec_last("SELECT tenancy.accept_invitation($1, $2, $3)",
                            {call.text("token"), call.text("name"), call.text("password")});
    return ApiAnswer{200, {{"token", r.value(0, 0).value_or("")}}};
}

// email, name and created_at are missing only from a PATCH through a
// forwarded (promoted) account id, whose row the plain SELECT does not find.
nlohmann::json member_schema(std::vector<std::string> optional = {}) {
    return schema::object({{"user", schema::string()},
                           {"email", schema::string()},
                           {"name", schema::nullable(schema::string())},
                           {"role", schema::string()},
                           {"created_at", schema::timestamp()}},
                          optional);
}

}  // namespace

std::vector<Route> members_routes() {
    Route list;
    list.method = "GET";
    list.path = "/v1/accounts/{id}/members";
    list.operation_id = "listMembers";
    list.summary = "members of the account (members readers see all, others themselves)";
    list.tag = "members";
    list.query = page_query_fields();
    list.errors = {404};
    list.response = schema::page(member_schema());
    list.handler = list_members;

    Route patch;
    patch.method = "PATCH";
    patch.path = "/v1/accounts/{id}/members/{user}";
    patch.operation_id = "changeMemberRole";
    patch.summary =
        "a member's role; only an owner touches an owner or makes one; the last owner "
        "of a main account stays";
    patch.tag = "members";
    patch.body = std::vector<Field>{
        Field("role").require().values(kMemberRoles).describe("the member's new role")};
    patch.errors = {403, 404, 409};
    patch.response = member_schema({"email", "name", "created_at"});
    patch.handler = change_role;

    Route del;
    del.method = "DELETE";
    del.path = "/v1/accounts/{id}/members/{user}";
    del.operation_id = "removeMember";
    del.summary = "removes a membership (the user stays); its sessions there end at once";
    del.tag = "members";
    del.status = 204;
    del.errors = {403, 404, 409};
    del.handler = remove;

    Route inv;
    inv.method = "POST";
    inv.path = "/v1/accounts/{id}/invitations";
    inv.operation_id = "createInvitation";
    inv.summary = "invites an email with a role; the single-use token goes out by email only";
    inv.tag = "invitations";
    inv.body = std::vector<Field>{
        Field("email").require().max(254).describe("the invitee's address"),
        Field("role").require().values(kMemberRoles).describe("the role accepting gives")};
    inv.status = 201;
    inv.errors = {403, 404, 409};
    inv.response = schema::object({{"id", schema::string()},
                                   {"account", schema::string()},
                                   {"email", schema::string()},
                                   {"role", schema::string()},
                                   {"created_at", schema::timestamp()},
                                   {"expires_at", schema::timestamp()}},
                                  {"account", "email", "role", "created_at", "expires_at"});
    inv.handler = invite;

    Route acc;
    acc.method = "POST";
    acc.path = "/v1/invitations/accept";
    acc.operation_id = "acceptInvitation";
    acc.summary =
        "accepts an invitation: a new user sets a password, an existing one gives theirs; "
        "answers a session token";
    acc.tag = "invitations";
    acc.auth = Auth::none;
    acc.body = std::vector<Field>{
        Field("token").require().max(200).describe("the token from the invitation email"),
        Field("name").max(200).describe("a new user's name"),
        Field("password").max(1024).describe("a new user's password, or an existing user's own")};
    acc.errors = {401};
    acc.response = schema::object({{"token", schema::string()}});
    acc.handler = accept;
    return {list, patch, del, inv, acc};
}

}  // namespace tenancy::gateway
