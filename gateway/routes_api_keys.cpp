// Routes: the API keys of an account (SPEC section 3).
//   GET    /v1/accounts/{id}/api-keys          {data: [key], next_cursor}: prefix, name, role,
//                                              expires_at, last_used_at, revoked; never a secret
//   POST   /v1/accounts/{id}/api-keys          {name, role, expires_at?} -> 201 {id, key, prefix,
//   ...} DELETE /v1/accounts/{id}/api-keys/{key}    -> 204, refused from the next request on
// The full key is in the creation answer only; the database keeps its SHA-256
// in a table no client reads. Rules: 23_api_keys.sql, 35_api_team.sql.
#include "list_page.hpp"
#include "routes_catalog.hpp"

namespace tenancy::gateway {
namespace {

ApiAnswer list_keys(Tx &tx, const ApiCall &call) {
    PageRequest page = page_request(call);
    std::optional<std::string> after;
    if (page.after && page.after->contains("key") && (*page.after)["key"].is_number_integer())
        after = std::to_string((*page.after)["key"].get<long long>());
    const std::string &account = call.path_param("id");
    // last_used_at lives in a row of its own (written without locking the key).
    Result r = tx.exec_last(
        "WITH a AS (SELECT a.main_id, a.id FROM tenancy.accounts a WHERE a.public_id = $1) "
        "SELECT jsonb_build_object('found', EXISTS (SELECT FROM a), 'rows', "
        "coalesce((SELECT jsonb_agg(p.j ORDER BY p.id) FROM ("
        "SELECT k.id, jsonb_build_object('id', k.public_id, 'name', k.name, 'role', k.role, "
        "'prefix', k.prefix, 'created_at', k.created_at, 'expires_at', k.expires_at, "
        "'last_used_at', u.last_used_at, 'revoked', k.revoked_at IS NOT NULL, "
        "'revoked_at', k.revoked_at) AS j "
        "FROM tenancy.api_keys k LEFT JOIN tenancy.api_key_usage u "
        "ON u.main_id = k.main_id AND u.key_id = k.id "
        "WHERE (k.main_id, k.account_id) = (SELECT a.main_id, a.id FROM a) "
        "AND ($2::bigint IS NULL OR k.id > $2::bigint) "
        "ORDER BY k.id LIMIT $3::integer) p), '[]'))::text",
        {account, after, std::to_string(page.limit + 1)});
    nlohmann::json found = nlohmann::json::parse(r.value(0, 0).value_or("{}"));
    if (!found.value("found", false))
        refuse(404, "account \"" + account + "\" not found");
    return page_answer(call, found["rows"], page, [](const nlohmann::json &row) {
        // key_<main id>_<id>: the id orders the list.
        const std::string id = row["id"].get<std::string>();
        return nlohmann::json{{"key", std::stoll(id.substr(id.rfind('_') + 1))}};
    });
}

ApiAnswer create(Tx &tx, const ApiCall &call) {
    Result r = tx.exec_last(
        "SELECT tenancy.create_api_key_in($1, $2, $3, $4::timestamptz)::text",
        {call.path_param("id"), call.text("name"), call.text("role"), call.text("expires_at")});
    return ApiAnswer{201, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

ApiAnswer revoke(Tx &tx, const ApiCall &call) {
    tx.exec_last("SELECT tenancy.revoke_api_key_in($1, $2)",
                 {call.path_param("id"), call.path_param("key")});
    return ApiAnswer{204, nullptr};
}

}  // namespace

std::vector<Route> api_key_routes() {
    const std::vector<std::string> roles = {"owner",         "admin",  "member",
                                            "support_agent", "viewer", "sub_user"};
    Route list;
    list.method = "GET";
    list.path = "/v1/accounts/{id}/api-keys";
    list.operation_id = "listApiKeys";
    list.summary = "API keys of the account, by prefix (roles that may read keys)";
    list.tag = "api-keys";
    list.query = page_query_fields();
    list.errors = {404};
    list.response =
        schema::page(schema::object({{"id", schema::string()},
                                     {"name", schema::string()},
                                     {"role", schema::string()},
                                     {"prefix", schema::string()},
                                     {"created_at", schema::timestamp()},
                                     {"expires_at", schema::nullable(schema::timestamp())},
                                     {"last_used_at", schema::nullable(schema::timestamp())},
                                     {"revoked", schema::boolean()},
                                     {"revoked_at", schema::nullable(schema::timestamp())}}));
    list.handler = list_keys;

    Route post;
    post.method = "POST";
    post.path = "/v1/accounts/{id}/api-keys";
    post.operation_id = "createApiKey";
    post.summary =
        "creates a key scoped to the account's subtree and a role; the full key is "
        "in this answer only";
    post.tag = "api-keys";
    post.body = std::vector<Field>{
        Field("name").require().max(200),
        Field("role").require().values(roles).describe("the role the key acts with"),
        Field("expires_at", FieldType::timestamp).describe("when the key stops working")};
    post.status = 201;
    post.errors = {403, 404, 409};
    post.response = schema::object({{"id", schema::string()},
                                    {"key", schema::string()},
                                    {"prefix", schema::string()},
                                    {"name", schema::string()},
                                    {"role", schema::string()},
                                    {"expires_at", schema::nullable(schema::timestamp())},
                                    {"created_at", schema::timestamp()}});
    post.handler = create;

    Route del;
    del.method = "DELETE";
    del.path = "/v1/accounts/{id}/api-keys/{key}";
    del.operation_id = "revokeApiKey";
    del.summary = "revokes a key of the account at once";
    del.tag = "api-keys";
    del.status = 204;
    del.errors = {403, 404};
    del.handler = revoke;
    return {list, post, del};
}

}  // namespace tenancy::gateway
