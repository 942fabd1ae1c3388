// Routes: the sub-users of a main account (SPEC section 3, the AI4CALL model).
//   GET    /v1/accounts/{id}/sub-users          {data: [sub-user], next_cursor}
//   POST   /v1/accounts/{id}/sub-users          {email, name, surname, password} -> 201 (inactive)
//   PATCH  /v1/accounts/{id}/sub-users/{sub}    {active?, visible?, name?, surname?, password?}
//   DELETE /v1/accounts/{id}/sub-users/{sub}    -> 204
// {id} is the main account the sub-users belong to. The rules are the
// database's (35_api_team.sql over 303_identity_sub_users.sql): activation mails fresh
// credentials, a password set here is temporary (changed at next login),
// deactivation ends the sub-user's sessions at once. No answer holds a password.
#include "list_page.hpp"
#include "routes_catalog.hpp"

namespace tenancy::gateway {
namespace {

// The list's rows carry what tenancy._sub_user_json answers for one sub-user.
ApiAnswer list_sub_users(Tx &tx, const ApiCall &call) {
    PageRequest page = page_request(call);
    std::optional<std::string> after;
    if (page.after && page.after->contains("sub") && (*page.after)["sub"].is_number_integer())
        after = std::to_string((*page.after)["sub"].get<long long>());
    const std::string &account = call.path_param("id");
    Result r = tx.exec_last(
        "WITH a AS (SELECT a.main_id, a.id FROM tenancy.accounts a WHERE a.public_id = $1 AND " +
            main_id_is("a", 4) +
            ") "
            "SELECT jsonb_build_object('found', EXISTS (SELECT FROM a), 'rows', "
            "coalesce((SELECT jsonb_agg(p.j ORDER BY p.id) FROM ("
            "SELECT s.id, jsonb_build_object('id', s.public_id, 'email', s.email, 'name', s.name, "
            "'surname', s.surname, 'active', s.status = 'active', 'visible', s.visible, "
            "'must_change_password', s.must_change_password, 'created_at', s.created_at, "
            "'activated_at', s.activated_at, 'last_login_at', s.last_login_at) AS j "
            "FROM tenancy.sub_users s WHERE s.main_id = (SELECT a.main_id FROM a WHERE a.id = "
            "a.main_id) AND " +
            main_id_is("s", 4) +
            " AND ($2::bigint IS NULL OR s.id > $2::bigint) "
            "ORDER BY s.id LIMIT $3::integer) p), '[]'))::text",
        {account, after, std::to_string(page.limit + 1), call.main_hint});
    nlohmann::json found = nlohmann::json::parse(r.value(0, 0).value_or("{}"));
    if (!found.value("found", false))
        refuse(404, "account \"" + account + "\" not found");
    return page_answer(call, found["rows"], page, [](const nlohmann::json &row) {
        // sub_<main id>_<id>: the id orders the list.
        const std::string id = row["id"].get<std::string>();
        return nlohmann::json{{"sub", std::stoll(id.substr(id.rfind('_') + 1))}};
    });
}

ApiAnswer create(Tx &tx, const ApiCall &call) {
    Result r = tx.exec_last("SELECT tenancy.create_sub_user_in($1, $2, $3, $4, $5)::text",
                            {call.path_param("id"), call.text("email"), call.text("name"),
                             call.text("surname"), call.text("password")});
    return ApiAnswer{201, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

ApiAnswer update(Tx &tx, const ApiCall &call) {
    Result r = tx.exec_last(
        "SELECT tenancy.update_sub_user_in($1, $2, active => $3::boolean, visible => $4::boolean, "
        "name => $5, surname => $6, password => $7)::text",
        {call.path_param("id"), call.path_param("sub"), call.text("active"), call.text("visible"),
         call.text("name"), call.text("surname"), call.text("password")});
    return ApiAnswer{200, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

ApiAnswer remove(Tx &tx, const ApiCall &call) {
    tx.exec_last("SELECT tenancy.delete_sub_user_in($1, $2)",
                 {call.path_param("id"), call.path_param("sub")});
    return ApiAnswer{204, nullptr};
}

nlohmann::json sub_user_schema() {
    return schema::object({{"id", schema::string()},
                           {"email", schema::string()},
                           {"name", schema::string()},
                           {"surname", schema::string()},
                           {"active", schema::boolean()},
                           {"visible", schema::boolean()},
                           {"must_change_password", schema::boolean()},
                           {"created_at", schema::timestamp()},
                           {"activated_at", schema::nullable(schema::timestamp())},
                           {"last_login_at", schema::nullable(schema::timestamp())}});
}

}  // namespace

std::vector<Route> sub_user_routes() {
    Route list;
    list.method = "GET";
    list.path = "/v1/accounts/{id}/sub-users";
    list.operation_id = "listSubUsers";
    list.summary = "sub-users of the main account (managers see all, others the visible ones)";
    list.tag = "sub-users";
    list.query = page_query_fields();
    list.errors = {404};
    list.response = schema::page(sub_user_schema());
    list.handler = list_sub_users;

    Route post;
    post.method = "POST";
    post.path = "/v1/accounts/{id}/sub-users";
    post.operation_id = "createSubUser";
    post.summary =
        "creates an inactive sub-user with a temporary password, within the plan's limit";
    post.tag = "sub-users";
    post.body = std::vector<Field>{
        Field("email").require().max(254).describe("the sub-user's login email"),
        Field("name").require().max(200), Field("surname").require().max(200),
        Field("password").require().max(1024).describe("a temporary password (8 bytes or more)")};
    post.status = 201;
    post.errors = {403, 404, 409};
    post.response = sub_user_schema();
    post.handler = create;

    Route patch;
    patch.method = "PATCH";
    patch.path = "/v1/accounts/{id}/sub-users/{sub}";
    patch.operation_id = "updateSubUser";
    patch.summary =
        "edits a sub-user: active (true mails fresh credentials, false refuses it at "
        "once), visible, name, surname, a temporary password";
    patch.tag = "sub-users";
    patch.body = std::vector<Field>{
        Field("active", FieldType::boolean)
            .describe("activate (mails a fresh temporary password) or deactivate"),
        Field("visible", FieldType::boolean).describe("seen in lists and reports"),
        Field("name").max(200), Field("surname").max(200),
        Field("password")
            .max(1024)
            .describe("a temporary password the sub-user must change at the next login; not with "
                      "active: true")};
    patch.errors = {403, 404};
    patch.response = sub_user_schema();
    patch.handler = update;

    Route del;
    del.method = "DELETE";
    del.path = "/v1/accounts/{id}/sub-users/{sub}";
    del.operation_id = "deleteSubUser";
    del.summary = "removes a sub-user for good; its sessions end";
    del.tag = "sub-users";
    del.status = 204;
    del.errors = {403, 404};
    del.handler = remove;
    return {list, post, patch, del};
}

}  // namespace tenancy::gateway
