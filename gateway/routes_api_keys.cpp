// Routes: the API keys of an account (SPEC section 3).
//   GET    /v1/accounts/{id}/api-keys          {data: [key], next_cursor}: prefix, name, role,
//                                              expires_at, last_used_at, revoked; never a secret
//   POST   /v1/accounts/{id}/api-keys          {name, role, expires_at?} -> 201 {id, key, prefix,
//   ...} DELETE /v1/accounts/{id}/api-keys/{key}    -> 204, refused from the next request on
//   POST   /v1/api-keys/{key}/rotate               {grace_seconds?} -> 201 {id, key, prefix, ...,
//                                              replaces: {id, expires_at}}: a new key; the old one
//                                              works until the grace ends (rotate_api_key,
//                                              41_key_rotation.sql)
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
    // last_used_at lives in a row of its own (written without locking the
    // key). The page of keys first, then their use: on Citus the keys are
    // distributed and api_key_usage stays on the coordinator: Citus joins
    // them only through an intermediate result.
    // Both reads name the main account (main_id_is): one shard on Citus.
    Result r = tx.exec_last(
        "WITH a AS (SELECT a.main_id, a.id FROM tenancy.accounts a WHERE a.public_id = $1 AND " +
            main_id_is("a", 4) +
            "), page AS MATERIALIZED (SELECT k.* FROM tenancy.api_keys k "
            "WHERE (k.main_id, k.account_id) = (SELECT a.main_id, a.id FROM a) AND " +
            main_id_is("k", 4) +
            " "
            "AND ($2::bigint IS NULL OR k.id > $2::bigint) "
            "ORDER BY k.id LIMIT $3::integer) "
            "SELECT jsonb_build_object('found', EXISTS (SELECT 1 FROM a), 'rows', "
            "coalesce((SELECT jsonb_agg(jsonb_build_object('id', k.public_id, 'name', k.name, "
            "'role', k.role, 'prefix', k.prefix, 'created_at', k.created_at, "
            "'expires_at', k.expires_at, 'last_used_at', u.last_used_at, "
            "'revoked', k.revoked_at IS NOT NULL, 'revoked_at', k.revoked_at, "
            "'rotated_at', k.rotated_at, 'replaced_by', "
            "CASE WHEN k.replaced_by IS NOT NULL THEN format('key_%s_%s', k.main_id, "
            "k.replaced_by) "
            "END) ORDER BY k.id) "
            "FROM page k LEFT JOIN tenancy.api_key_usage u "
            "ON u.main_id = k.main_id AND u.key_id = k.id), '[]'))::text",
        {account, after, std::to_string(page.limit + 1), call.main_hint});
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

// The grace defaults to a day (rotate_api_key's default); the database checks
// its range (0 to 30 days: 422 otherwise).
ApiAnswer rotate(Tx &tx, const ApiCall &call) {
    std::optional<std::string> grace;
    auto it = call.body.find("grace_seconds");
    if (it != call.body.end() && it->is_number_integer())
        grace = std::to_string(it->get<long long>());
    Result r = tx.exec_last(
        "SELECT tenancy.rotate_api_key_json($1, coalesce(make_interval(secs => $2::bigint), "
        "interval '1 day'))::text",
        {call.path_param("key"), grace});
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
                                     {"revoked_at", schema::nullable(schema::timestamp())},
                                     {"rotated_at", schema::nullable(schema::timestamp())},
                                     {"replaced_by", schema::nullable(schema::string())}}));
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

    Route rot;
    rot.method = "POST";
    rot.path = "/v1/api-keys/{key}/rotate";
    rot.operation_id = "rotateApiKey";
    rot.summary =
        "replaces a key of the active subtree with a new one (same account, name and role); the "
        "old key keeps working for grace_seconds; the full new key is in this answer only";
    rot.tag = "api-keys";
    rot.body = std::vector<Field>{
        Field("grace_seconds", FieldType::integer)
            .describe("how long the old key keeps working, 0 to 2592000 (default 86400)")};
    rot.status = 201;
    rot.errors = {403, 404, 409};
    rot.response = schema::object(
        {{"id", schema::string()},
         {"key", schema::string()},
         {"prefix", schema::string()},
         {"name", schema::string()},
         {"role", schema::string()},
         {"expires_at", schema::nullable(schema::timestamp())},
         {"created_at", schema::timestamp()},
         {"replaces", schema::object({{"id", schema::string()},
                                      {"expires_at", schema::nullable(schema::timestamp())}})}});
    rot.handler = rotate;
    return {list, post, del, rot};
}

}  // namespace tenancy::gateway
