// Routes: the voice-AI data of the acting account's subtree (extension/sql/50_voice.sql):
//   GET, POST /v1/{agents,contacts,conversations}; GET, PATCH, DELETE .../{rid}
//   GET /v1/escalations; POST /v1/conversations/{rid}/claim; PUT /v1/me/availability
// {rid} is a row's opaque public id. Row-level security confines every
// statement to the subtree and the role's permissions: a row of another
// tenant is simply not found (404, the same answer as a missing one); a role
// that may not write the resource gets 403. A write is checked, made and read
// back in separate statements of the request's transaction (the shapes Citus
// plans: docs/operations/scale-out.md, "Voice data and PHI through the
// coordinator"). Writes name the acting main account's id as a value (every
// row the caller can see has it): Citus sends them to that one shard.
#include "list_page.hpp"
#include "routes_catalog.hpp"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tenancy::gateway {
namespace {

// The one expression that reads a conversation's transcript (alias x). Issue
// 19's part B may swap it for a decrypting one when transcripts are stored
// sealed; nothing else here reads the column.
constexpr const char *kTranscriptSql =
    "tenancy.transcript_of(x.account_path, x.transcript, x.transcript_sealed)";

// A body field and the column it writes. ref: the table whose public id the
// field names (the column holds that row's id); cast: the SQL type of the
// parameter.
struct Column {
    Column(Field f, std::string col, std::string sql_cast = "text", std::string ref_table = "",
           bool in_post = true, bool in_patch = true)
        : field(std::move(f)),
          column(std::move(col)),
          cast(std::move(sql_cast)),
          ref(std::move(ref_table)),
          post(in_post),
          patch(in_patch) {}
    Field field;
    std::string column;
    std::string cast;
    std::string ref;  // e.g. "agents": a public id resolved to x.agent_id
    bool post;
    bool patch;
};

struct Resource {
    std::string plural;    // path segment and table name
    std::string singular;  // for messages: agent "agt_..." not found
    std::string tag;
    std::string permission;                     // the resource of tenancy.may()
    std::string json_sql;                       // the row as JSON (alias x, joins below)
    std::string list_json_sql;                  // the row in lists (alias x, joins below)
    std::string joins;                          // rows named in the JSON, joined to x
    std::vector<Column> columns;                // writable through POST/PATCH
    std::vector<std::pair<Field, std::string>>  // list filters: query field, SQL column
        filters;
    nlohmann::json schema;
    nlohmann::json list_schema;
};

std::string quoted(const std::string &s) {
    return "\"" + s + "\"";
}

// The row's public id holds its id (prefix_main_id_random): the list position.
nlohmann::json position_of(const nlohmann::json &row) {
    const std::string rid = row.value("id", std::string());
    size_t a = rid.find('_');
    size_t b = a == std::string::npos ? a : rid.find('_', a + 1);
    size_t c = b == std::string::npos ? b : rid.find('_', b + 1);
    long long id = 0;
    if (c != std::string::npos)
        id = std::stoll(rid.substr(b + 1, c - b - 1));
    return nlohmann::json{{"id", id}};
}

// A field's value as a statement parameter (objects as JSON text).
std::optional<std::string> param_of(const nlohmann::json &v) {
    if (v.is_null())
        return std::nullopt;
    if (v.is_string())
        return v.get<std::string>();
    return v.dump();
}

// The row's account, joined on the distribution column and the path: the
// account's public id is xa.public_id in the JSON. A join rather than a
// correlated subquery, which Citus cannot plan under a limited list.
std::string account_join() {
    return " LEFT JOIN tenancy.accounts xa ON xa.main_id = x.main_id AND xa.path "
           "OPERATOR(tenancy.=) x.account_path";
}

// A row named by a reference column, joined like the account (alias as).
std::string ref_join(const std::string &table, const std::string &alias,
                     const std::string &column) {
    return " LEFT JOIN tenancy." + table + " " + alias + " ON " + alias +
           ".main_id = x.main_id AND " + alias + ".id = x." + column;
}

// The row (main_id, id) as the JSON of res, read as the client (row security).
std::optional<std::string> read_back(const Resource &res, Tx &tx, const std::string &main_id,
                                     const std::string &id) {
    Result r = tx.exec("SELECT (" + res.json_sql + ")::text FROM tenancy." + res.plural + " x" +
                           res.joins + " WHERE x.main_id = $1::bigint AND x.id = $2::bigint",
                       {main_id, id});
    return r.rows() == 0 ? std::nullopt : r.value(0, 0);
}

// The reference columns of a body: each named row's id, looked up by its
// public id as the client (NULL when not visible). One statement, which also
// answers may(permission, 'write') and the named account's path. Refused in
// this order: 403 when forbidden is given and the role may not write, 404 for
// the named account, 404 for the first reference not found (column order).
struct Lookup {
    bool may_write = false;
    std::string main_id;                      // the acting main account (every visible row's)
    std::optional<std::string> account_path;  // of the body's "account", when named
    std::map<std::string, std::string> ids;   // column -> the referenced row's id
};

Lookup look_up(const Resource &res, const ApiCall &call, Tx &tx, bool with_account,
               const std::string &forbidden = "") {
    // $1: the main account (main_id_is), so each lookup goes to one shard.
    Params params = {call.main_hint, with_account ? call.text("account") : std::nullopt};
    std::string sql = "SELECT tenancy.may('" + res.permission +
                      "', 'write'), tenancy.current_main_id(), (SELECT a.path::text FROM "
                      "tenancy.accounts a WHERE a.public_id = $2::text AND " +
                      main_id_is("a", 1) + ")";
    std::vector<const Column *> named;
    for (const Column &c : res.columns) {
        if (c.ref.empty() || !call.body.contains(c.field.name) || call.body[c.field.name].is_null())
            continue;
        params.push_back(param_of(call.body[c.field.name]));
        sql += ", (SELECT r.id FROM tenancy." + c.ref + " r WHERE r.public_id = $" +
               std::to_string(params.size()) + "::text AND " + main_id_is("r", 1) + ")";
        named.push_back(&c);
    }
    Result r = tx.exec(sql, params);
    Lookup out;
    out.may_write = r.value(0, 0) == std::optional<std::string>("t");
    out.main_id = r.value(0, 1).value_or("");
    out.account_path = r.value(0, 2);
    if (!forbidden.empty() && !out.may_write)
        refuse(403, forbidden);
    if (params[1] && !out.account_path)
        refuse(404, "account " + (quoted)(*params[1]) + " not found");
    for (size_t i = 0; i < named.size(); ++i) {
        auto id = r.value(0, static_cast<int>(i) + 3);
        if (!id)
            refuse(404, named[i]->field.name + " " +
                            (quoted)(call.body[named[i]->field.name].get<std::string>()) +
                            " not found");
        out.ids[named[i]->column] = *id;
    }
    return out;
}

ApiAnswer list_rows(const Resource &res, Tx &tx, const ApiCall &call) {
    PageRequest page = page_request(call);
    std::optional<std::string> after;
    if (page.after && page.after->contains("id") && (*page.after)["id"].is_number_integer())
        after = std::to_string((*page.after)["id"].get<long long>());
    Params params = {after, std::to_string(page.limit + 1), call.main_hint};
    std::string where = "($1::bigint IS NULL OR x.id > $1) AND " + main_id_is("x", 3);
    for (const auto &[field, column] : res.filters) {
        if (auto v = call.query(field.name)) {
            params.push_back(*v);
            where += " AND x." + column + " = $" + std::to_string(params.size());
        }
    }
    Result r = tx.exec_last(
        "SELECT coalesce(jsonb_agg(s.j ORDER BY s.id), '[]')::text FROM ("
        "SELECT x.id, " +
            res.list_json_sql + " AS j FROM tenancy." + res.plural + " x" + res.joins + " WHERE " +
            where + " ORDER BY x.id LIMIT $2::integer) s",
        params);
    return page_answer(call, nlohmann::json::parse(r.value(0, 0).value_or("[]")), page,
                       position_of);
}

ApiAnswer get_row(const Resource &res, Tx &tx, const ApiCall &call) {
    const std::string &rid = call.path_param("rid");
    Result r =
        tx.exec_last("SELECT (" + res.json_sql + ")::text FROM tenancy." + res.plural + " x" +
                         res.joins + " WHERE x.public_id = $1 AND " + main_id_is("x", 2),
                     {rid, call.main_hint});
    if (r.rows() == 0)
        refuse(404, res.singular + " " + quoted(rid) + " not found");
    return ApiAnswer{200, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

// POST: the fields present in the body (absent ones take the column default),
// in the named account (a visible one) or the acting account. Row security
// refuses a write the role may not make (403).
ApiAnswer create_row(const Resource &res, Tx &tx, const ApiCall &call) {
    Lookup found = look_up(res, call, tx, true);
    Params params = {found.account_path};
    std::string columns = "account_path",
                values = "coalesce($1::tenancy.account_path, tenancy.current_path())";
    for (const Column &c : res.columns) {
        if (!c.post || !call.body.contains(c.field.name))
            continue;
        columns += ", " + c.column;
        const nlohmann::json &v = call.body[c.field.name];
        if (!c.ref.empty() && v.is_null()) {
            values += ", NULL";
            continue;
        }
        params.push_back(c.ref.empty() ? param_of(v) : found.ids[c.column]);
        values +=
            ", $" + std::to_string(params.size()) + "::" + (c.ref.empty() ? c.cast : "bigint");
    }
    Result r = tx.exec("INSERT INTO tenancy." + res.plural + " (" + columns + ") VALUES (" +
                           values + ") RETURNING main_id, id",
                       params);
    auto json = read_back(res, tx, r.value(0, 0).value_or(""), r.value(0, 1).value_or(""));
    return ApiAnswer{201, nlohmann::json::parse(json.value_or("{}"))};
}

// PATCH: only the fields present change (null clears a nullable one). The
// row is found by the UPDATE itself (not visible: 404, like a missing one).
ApiAnswer update_row(const Resource &res, Tx &tx, const ApiCall &call) {
    const std::string &rid = call.path_param("rid");
    Lookup found =
        look_up(res, call, tx, false, "this credential's role may not change " + res.plural);
    Params params = {rid, found.main_id};
    std::string sets;
    for (const Column &c : res.columns) {
        if (!c.patch || !call.body.contains(c.field.name))
            continue;
        const nlohmann::json &v = call.body[c.field.name];
        std::string value = "NULL";
        if (c.ref.empty() || !v.is_null()) {
            params.push_back(c.ref.empty() ? param_of(v) : found.ids[c.column]);
            value =
                "$" + std::to_string(params.size()) + "::" + (c.ref.empty() ? c.cast : "bigint");
        }
        sets += (sets.empty() ? "" : ", ") + c.column + " = " + value;
    }
    if (sets.empty())  // nothing to change: still a write (permission, updated_at)
        sets = res.columns.front().column + " = x." + res.columns.front().column;
    Result r = tx.exec("UPDATE tenancy." + res.plural + " x SET " + sets +
                           " WHERE x.main_id = $2::bigint AND x.public_id = $1 RETURNING "
                           "x.main_id, x.id",
                       params);
    if (r.rows() == 0)
        refuse(404, res.singular + " " + quoted(rid) + " not found");
    auto json = read_back(res, tx, r.value(0, 0).value_or(""), r.value(0, 1).value_or(""));
    return ApiAnswer{200, nlohmann::json::parse(json.value_or("{}"))};
}

ApiAnswer delete_row(const Resource &res, Tx &tx, const ApiCall &call) {
    const std::string &rid = call.path_param("rid");
    Result may = tx.exec("SELECT tenancy.may('" + res.permission + "', 'write')");
    if (may.value(0, 0) != std::optional<std::string>("t"))
        refuse(403, "this credential's role may not delete " + res.plural);
    // Named by the acting main account (ApiCall::main_hint; one shard on
    // Citus); not through main_id_is(): in a write Citus refuses a
    // non-IMMUTABLE function inside COALESCE.
    std::string sql = "DELETE FROM tenancy." + res.plural + " x WHERE x.public_id = $1";
    Params params = {rid};
    if (call.main_hint) {
        params.push_back(call.main_hint);
        sql += " AND x.main_id = $2::bigint";
    }
    Result r = tx.exec_last(sql + " RETURNING 1", params);
    if (r.rows() == 0)
        refuse(404, res.singular + " " + quoted(rid) + " not found");
    return ApiAnswer{204, nullptr};
}

// ---- the three resources -----------------------------------------------------------------

Field account_field() {
    return Field("account").max(64).describe(
        "public id of the account (the acting one or a descendant) that owns the row; "
        "default: the acting account");
}

Resource agents() {
    Resource r;
    r.plural = "agents";
    r.singular = "agent";
    r.tag = "agents";
    r.permission = "agents";
    r.json_sql =
        "jsonb_build_object('id', x.public_id, 'account', xa.public_id, 'name', x.name, "
        "'prompt', x.prompt, 'voice', x.voice, 'language', "
        "x.language, 'model', x.model, 'tools', x.tools, 'created_at', x.created_at, "
        "'updated_at', x.updated_at)";
    r.list_json_sql = r.json_sql;
    r.joins = account_join();
    r.columns = {
        {Field("name").require().max(200).describe("the assistant's name"), "name"},
        {Field("prompt").max(100000).describe("system prompt"), "prompt"},
        {Field("voice").max(200).allow_null().describe("voice id of the TTS provider"), "voice"},
        {Field("language").max(35).describe("BCP 47 language tag, e.g. en-US"), "language"},
        {Field("model", FieldType::object).max(16384).describe("model settings"), "model", "jsonb"},
        {Field("tools", FieldType::object).max(65536).describe("custom tools, by name"), "tools",
         "jsonb"},
    };
    r.schema = schema::object({{"id", schema::string()},
                               {"account", schema::string()},
                               {"name", schema::string()},
                               {"prompt", schema::string()},
                               {"voice", schema::nullable(schema::string())},
                               {"language", schema::string()},
                               {"model", schema::any_object()},
                               {"tools", schema::any_object()},
                               {"created_at", schema::timestamp()},
                               {"updated_at", schema::timestamp()}});
    r.list_schema = r.schema;
    return r;
}

Resource contacts() {
    Resource r;
    r.plural = "contacts";
    r.singular = "contact";
    r.tag = "contacts";
    r.permission = "contacts";
    r.json_sql =
        "jsonb_build_object('id', x.public_id, 'account', xa.public_id, 'name', x.name, "
        "'phone', x.phone, 'email', x.email, 'attributes', "
        "x.attributes, 'created_at', x.created_at, 'updated_at', x.updated_at)";
    r.list_json_sql = r.json_sql;
    r.joins = account_join();
    r.columns = {
        {Field("name").max(200).allow_null().describe("display name"), "name"},
        {Field("phone").max(40).allow_null().describe("phone number"), "phone"},
        {Field("email").max(254).allow_null().describe("email address"), "email"},
        {Field("attributes", FieldType::object).max(16384).describe("free-form attributes"),
         "attributes", "jsonb"},
    };
    r.filters = {{Field("email").max(254).describe("contacts with this email"), "email"},
                 {Field("phone").max(40).describe("contacts with this phone number"), "phone"}};
    r.schema = schema::object({{"id", schema::string()},
                               {"account", schema::string()},
                               {"name", schema::nullable(schema::string())},
                               {"phone", schema::nullable(schema::string())},
                               {"email", schema::nullable(schema::string())},
                               {"attributes", schema::any_object()},
                               {"created_at", schema::timestamp()},
                               {"updated_at", schema::timestamp()}});
    r.list_schema = r.schema;
    return r;
}

const std::vector<std::string> kStatuses = {"queued", "ringing",   "active",   "completed",
                                            "failed", "no_answer", "escalated"};

Resource conversations() {
    Resource r;
    r.plural = "conversations";
    r.singular = "conversation";
    r.tag = "conversations";
    r.permission = "conversations";
    std::string common =
        "'id', x.public_id, 'account', xa.public_id, 'agent', xg.public_id, 'contact', "
        "xc.public_id, 'channel', xh.public_id, 'direction', x.direction, 'started_at', "
        "x.started_at, 'ended_at', x.ended_at, 'duration_s', "
        "x.duration_s, 'status', x.status, 'recording_ref', x.recording_ref, "
        "'escalation_state', x.escalation_state, 'claimed_by', x.claimed_by, 'claimed_at', "
        "x.claimed_at, 'created_at', x.created_at, 'updated_at', x.updated_at";
    r.json_sql = "jsonb_build_object(" + common + ", 'transcript', jsonb_build_object('turns', " +
                 kTranscriptSql + "))";
    r.list_json_sql = "jsonb_build_object(" + common + ")";
    r.joins = account_join() + ref_join("agents", "xg", "agent_id") +
              ref_join("contacts", "xc", "contact_id") + ref_join("channels", "xh", "channel_id");
    Field transcript = Field("transcript", FieldType::object)
                           .max(1 << 20)
                           .describe("{\"turns\": [{\"speaker\", \"text\", \"at\"}, ...]}");
    r.columns = {
        {Field("status").values(kStatuses).describe("call status"), "status"},
        {Field("agent").max(64).allow_null().describe("public id of the agent"), "agent_id", "text",
         "agents"},
        {Field("contact").max(64).allow_null().describe("public id of the contact"), "contact_id",
         "text", "contacts"},
        {Field("channel").max(64).allow_null().describe("public id of the channel"), "channel_id",
         "text", "channels"},
        {Field("direction").require().values({"inbound", "outbound"}), "direction", "text", "",
         true, false},
        {Field("started_at", FieldType::timestamp).describe("default: now"), "started_at",
         "timestamptz"},
        {Field("ended_at", FieldType::timestamp).allow_null(), "ended_at", "timestamptz"},
        // {"turns": [...]} -> the stored array of turns
        {transcript, "transcript", "jsonb -> 'turns'"},
        {Field("recording_ref").max(2000).allow_null().describe("reference to the recording"),
         "recording_ref"},
        {Field("escalation_state")
             .values({"none", "queued", "resolved"})
             .describe("queued: waits for a support agent (claimed only by the claim route)"),
         "escalation_state"},
    };
    r.filters = {
        {Field("status").values(kStatuses).describe("conversations in this status"), "status"},
        {Field("escalation_state")
             .values({"none", "queued", "claimed", "resolved"})
             .describe("conversations in this escalation state"),
         "escalation_state"}};
    std::vector<std::pair<std::string, nlohmann::json>> props = {
        {"id", schema::string()},
        {"account", schema::string()},
        {"agent", schema::nullable(schema::string())},
        {"contact", schema::nullable(schema::string())},
        {"channel", schema::nullable(schema::string())},
        {"direction", schema::string()},
        {"started_at", schema::timestamp()},
        {"ended_at", schema::nullable(schema::timestamp())},
        {"duration_s", schema::nullable(schema::integer())},
        {"status", schema::string()},
        {"recording_ref", schema::nullable(schema::string())},
        {"escalation_state", schema::string()},
        {"claimed_by", schema::nullable(schema::string())},
        {"claimed_at", schema::nullable(schema::timestamp())},
        {"created_at", schema::timestamp()},
        {"updated_at", schema::timestamp()}};
    r.list_schema = schema::object(props);
    props.push_back({"transcript", schema::any_object()});
    r.schema = schema::object(props);
    return r;
}

// The five routes of a resource.
void add_crud(std::vector<Route> &routes, const Resource &res) {
    auto shared = std::make_shared<Resource>(res);
    std::string Name = res.singular;
    Name[0] = static_cast<char>(Name[0] - 'a' + 'A');
    std::string Plural = res.plural;
    Plural[0] = static_cast<char>(Plural[0] - 'a' + 'A');

    Route list;
    list.method = "GET";
    list.path = "/v1/" + res.plural;
    list.operation_id = "list" + Plural;
    list.summary = res.plural + " of the acting account's subtree";
    list.tag = res.tag;
    list.query = page_query_fields();
    for (const auto &f : res.filters)
        list.query.push_back(f.first);
    list.response = schema::page(res.list_schema);
    list.handler = [shared](Tx &tx, const ApiCall &call) { return list_rows(*shared, tx, call); };
    routes.push_back(list);

    Route create;
    create.method = "POST";
    create.path = "/v1/" + res.plural;
    create.operation_id = "create" + Name;
    create.summary = "creates a" + std::string(Name[0] == 'A' ? "n " : " ") + res.singular;
    create.tag = res.tag;
    std::vector<Field> fields = {account_field()};
    for (const Column &c : res.columns)
        if (c.post)
            fields.push_back(c.field);
    create.body = fields;
    create.status = 201;
    create.response = res.schema;
    create.errors = {403, 404};
    create.handler = [shared](Tx &tx, const ApiCall &call) {
        return create_row(*shared, tx, call);
    };
    routes.push_back(create);

    Route get;
    get.method = "GET";
    get.path = "/v1/" + res.plural + "/{rid}";
    get.operation_id = "get" + Name;
    get.summary = "one " + res.singular + " of the subtree";
    get.tag = res.tag;
    get.response = res.schema;
    get.errors = {404};
    get.handler = [shared](Tx &tx, const ApiCall &call) { return get_row(*shared, tx, call); };
    routes.push_back(get);

    Route patch;
    patch.method = "PATCH";
    patch.path = "/v1/" + res.plural + "/{rid}";
    patch.operation_id = "update" + Name;
    patch.summary = "changes the fields given";
    patch.tag = res.tag;
    fields.clear();
    for (const Column &c : res.columns) {
        if (!c.patch)
            continue;
        Field f = c.field;
        f.required = false;
        fields.push_back(f);
    }
    patch.body = fields;
    patch.response = res.schema;
    patch.errors = {403, 404};
    patch.handler = [shared](Tx &tx, const ApiCall &call) { return update_row(*shared, tx, call); };
    routes.push_back(patch);

    Route del;
    del.method = "DELETE";
    del.path = "/v1/" + res.plural + "/{rid}";
    del.operation_id = "delete" + Name;
    del.summary = "deletes the " + res.singular;
    del.tag = res.tag;
    del.status = 204;
    del.errors = {403, 404};
    del.handler = [shared](Tx &tx, const ApiCall &call) { return delete_row(*shared, tx, call); };
    routes.push_back(del);
}

// ---- escalation queue and availability -----------------------------------------------------

ApiAnswer list_escalations(const Resource &conv, Tx &tx, const ApiCall &call) {
    PageRequest page = page_request(call);
    std::optional<std::string> after;
    if (page.after && page.after->contains("id") && (*page.after)["id"].is_number_integer())
        after = std::to_string((*page.after)["id"].get<long long>());
    Result r = tx.exec_last(
        "SELECT tenancy.may('escalations', 'read'), coalesce(jsonb_agg(s.j ORDER BY s.id), "
        "'[]')::text FROM (SELECT x.id, " +
            conv.list_json_sql + " AS j FROM tenancy.conversations x" + conv.joins + " WHERE " +
            main_id_is("x", 4) +
            " AND x.escalation_state IN ('queued', 'claimed') "
            "AND ($3::text IS NULL OR x.escalation_state = $3) AND ($1::bigint IS NULL OR x.id > "
            "$1) ORDER BY x.id LIMIT $2::integer) s",
        {after, std::to_string(page.limit + 1), call.query("state"), call.main_hint});
    if (r.value(0, 0) != std::optional<std::string>("t"))
        refuse(403, "this credential's role may not read the escalation queue");
    return page_answer(call, nlohmann::json::parse(r.value(0, 1).value_or("[]")), page,
                       position_of);
}

ApiAnswer claim(Tx &tx, const ApiCall &call) {
    const std::string &rid = call.path_param("rid");
    // now(): the instant claim_conversation stored (one transaction).
    Result r =
        tx.exec_last("SELECT tenancy.claim_conversation($1), to_json(now()) #>> '{}'", {rid});
    return ApiAnswer{200,
                     {{"id", rid},
                      {"escalation_state", "claimed"},
                      {"claimed_by", r.value(0, 0).value_or("")},
                      {"claimed_at", r.value(0, 1).value_or("")}}};
}

ApiAnswer put_availability(Tx &tx, const ApiCall &call) {
    Result r = tx.exec_last("SELECT tenancy.set_availability($1)::text", {call.text("status")});
    return ApiAnswer{200, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

}  // namespace

std::vector<Route> voice_routes() {
    std::vector<Route> routes;
    add_crud(routes, agents());
    add_crud(routes, contacts());
    Resource conv = conversations();
    add_crud(routes, conv);
    auto shared = std::make_shared<Resource>(conv);

    Route escalations;
    escalations.method = "GET";
    escalations.path = "/v1/escalations";
    escalations.operation_id = "listEscalations";
    escalations.summary = "escalated conversations of the subtree (queued or claimed)";
    escalations.tag = "escalations";
    escalations.query = page_query_fields();
    escalations.query.push_back(
        Field("state").values({"queued", "claimed"}).describe("only this escalation state"));
    escalations.response = schema::page(conv.list_schema);
    escalations.errors = {403};
    escalations.handler = [shared](Tx &tx, const ApiCall &call) {
        return list_escalations(*shared, tx, call);
    };
    routes.push_back(escalations);

    Route claim_route;
    claim_route.method = "POST";
    claim_route.path = "/v1/conversations/{rid}/claim";
    claim_route.operation_id = "claimConversation";
    claim_route.summary = "takes a queued escalation; one claimant wins, the others get 409";
    claim_route.tag = "escalations";
    claim_route.response = schema::object({{"id", schema::string()},
                                           {"escalation_state", schema::string()},
                                           {"claimed_by", schema::string()},
                                           {"claimed_at", schema::timestamp()}});
    claim_route.errors = {403, 404, 409};
    claim_route.handler = claim;
    routes.push_back(claim_route);

    Route availability;
    availability.method = "PUT";
    availability.path = "/v1/me/availability";
    availability.operation_id = "setAvailability";
    availability.summary = "the caller's availability for escalations in the acting account";
    availability.tag = "escalations";
    availability.body =
        std::vector<Field>{Field("status").require().values({"online", "away", "offline"})};
    availability.response = schema::object({{"principal", schema::string()},
                                            {"account", schema::string()},
                                            {"status", schema::string()},
                                            {"updated_at", schema::timestamp()}});
    availability.errors = {403};
    availability.handler = put_availability;
    routes.push_back(availability);
    return routes;
}

}  // namespace tenancy::gateway
