// The route table served: paths to regexes, handlers wrapped in run_route,
// and the OpenAPI 3.1 document made from the same entries.
#include "route_table.hpp"

#include "api_request.hpp"
#include "http_server.hpp"

#include <regex>
#include <set>

namespace tenancy::gateway {

namespace schema {
nlohmann::json string() {
    return {{"type", "string"}};
}
nlohmann::json integer() {
    return {{"type", "integer"}};
}
nlohmann::json boolean() {
    return {{"type", "boolean"}};
}
nlohmann::json timestamp() {
    return {{"type", "string"}, {"format", "date-time"}};
}
nlohmann::json any_object() {
    return {{"type", "object"}};
}
nlohmann::json nullable(nlohmann::json s) {
    if (s.contains("type") && s["type"].is_string())
        s["type"] = nlohmann::json::array({s["type"], "null"});
    else
        s = {{"anyOf", nlohmann::json::array({s, {{"type", "null"}}})}};
    return s;
}
nlohmann::json object(const std::vector<std::pair<std::string, nlohmann::json>> &properties,
                      const std::vector<std::string> &optional) {
    nlohmann::json props = nlohmann::json::object();
    nlohmann::json required = nlohmann::json::array();
    for (const auto &[name, s] : properties) {
        props[name] = s;
        if (std::find(optional.begin(), optional.end(), name) == optional.end())
            required.push_back(name);
    }
    nlohmann::json out = {{"type", "object"}, {"properties", props}};
    if (!required.empty())
        out["required"] = required;
    return out;
}
nlohmann::json array(nlohmann::json items) {
    return {{"type", "array"}, {"items", std::move(items)}};
}
nlohmann::json page(nlohmann::json items) {
    return object({{"data", array(std::move(items))}, {"next_cursor", nullable(string())}});
}
}  // namespace schema

const std::string &ApiCall::path_param(const std::string &name) const {
    auto it = path.find(name);
    if (it == path.end())
        throw std::logic_error("route has no path parameter " + name);
    return it->second;
}

std::optional<std::string> ApiCall::query(const std::string &name) const {
    auto it = query_values.find(name);
    if (it == query_values.end())
        return std::nullopt;
    return it->second;
}

std::optional<std::string> ApiCall::text(const std::string &name) const {
    auto it = body.find(name);
    if (it == body.end() || it->is_null())
        return std::nullopt;
    if (it->is_string())
        return it->get<std::string>();
    return it->dump();  // an object or number as JSON text (for jsonb parameters)
}

std::string main_id_is(const std::string &alias, int param) {
    return alias + ".main_id = coalesce($" + std::to_string(param) +
           "::bigint, tenancy.current_main_id())";
}

const std::string &ApiCall::account() const {
    if (!context)
        throw std::logic_error("no request context");
    return context->account;
}

const std::string &ApiCall::role() const {
    if (!context)
        throw std::logic_error("no request context");
    return context->role;
}

std::vector<std::string> path_names(const std::string &path_template) {
    std::vector<std::string> names;
    static const std::regex param(R"(\{([a-z_]+)\})");
    for (auto it = std::sregex_iterator(path_template.begin(), path_template.end(), param);
         it != std::sregex_iterator(); ++it)
        names.push_back((*it)[1]);
    return names;
}

std::string path_regex(const std::string &path_template) {
    static const std::regex param(R"(\{[a-z_]+\})");
    return std::regex_replace(path_template, param, "([^/]+)");
}

namespace {

nlohmann::json field_schema(const Field &f, bool in_query) {
    nlohmann::json s;
    switch (f.type) {
        case FieldType::string:
            s = {{"type", "string"}, {"maxLength", f.max_length}};
            if (!f.one_of.empty())
                s["enum"] = f.one_of;
            break;
        case FieldType::integer:
            s = {{"type", "integer"}};
            break;
        case FieldType::boolean:
            s = {{"type", "boolean"}};
            break;
        case FieldType::object:
            s = {{"type", "object"}};
            break;
        case FieldType::timestamp:
            s = {{"type", "string"}, {"format", "date-time"}};
            break;
        case FieldType::string_array:
            s = {{"type", "array"}, {"items", {{"type", "string"}}}, {"maxItems", f.max_length}};
            break;
    }
    if (f.nullable && !in_query)
        s = schema::nullable(s);
    if (!f.description.empty())
        s["description"] = f.description;
    return s;
}

nlohmann::json problem_response(const char *description) {
    return {{"description", description},
            {"content",
             {{kProblemContentType, {{"schema", {{"$ref", "#/components/schemas/Problem"}}}}}}}};
}

const char *status_description(int status) {
    switch (status) {
        case 400:
            return "malformed request (invalid_json, invalid_request)";
        case 401:
            return "no valid credential (unauthenticated, mfa_required)";
        case 403:
            return "the role may not do this (forbidden, password_change_required)";
        case 404:
            return "not found, or outside the caller's subtree (same answer)";
        case 409:
            return "conflicts with the current state (conflict)";
        case 413:
            return "body over the size limit";
        case 422:
            return "invalid field, cursor or value (invalid_field, invalid_cursor, unprocessable)";
        case 503:
            return "database unavailable; retry after Retry-After";
        default:
            return "error";
    }
}

nlohmann::json operation(const Route &r) {
    nlohmann::json op = {{"operationId", r.operation_id},
                         {"summary", r.summary},
                         {"tags", nlohmann::json::array({r.tag})}};
    nlohmann::json params = nlohmann::json::array();
    for (const auto &name : path_names(r.path))
        params.push_back({{"name", name},
                          {"in", "path"},
                          {"required", true},
                          {"schema", {{"type", "string"}, {"maxLength", 200}}}});
    for (const auto &f : r.query) {
        nlohmann::json p = {{"name", f.name},
                            {"in", "query"},
                            {"required", f.required},
                            {"schema", field_schema(f, true)}};
        params.push_back(p);
    }
    if (r.auth == Auth::bearer)
        params.push_back({{"$ref", "#/components/parameters/TenancyAccount"}});
    if (r.method == "POST")
        params.push_back({{"$ref", "#/components/parameters/IdempotencyKey"}});
    if (!params.empty())
        op["parameters"] = params;
    op["security"] = r.auth == Auth::bearer
                         ? nlohmann::json::array({{{"bearer", nlohmann::json::array()}}})
                         : nlohmann::json::array();
    if (r.body) {
        nlohmann::json props = nlohmann::json::object();
        nlohmann::json required = nlohmann::json::array();
        for (const auto &f : *r.body) {
            props[f.name] = field_schema(f, false);
            if (f.required)
                required.push_back(f.name);
        }
        nlohmann::json body = {
            {"type", "object"}, {"properties", props}, {"additionalProperties", false}};
        if (!required.empty())
            body["required"] = required;
        op["requestBody"] = {{"required", !required.empty()},
                             {"content", {{"application/json", {{"schema", body}}}}}};
    }
    nlohmann::json responses = nlohmann::json::object();
    nlohmann::json ok = {{"description", "success"}};
    if (r.status != 204 && !r.response.is_null())
        ok["content"] = {{"application/json", {{"schema", r.response}}}};
    responses[std::to_string(r.status)] = ok;
    std::set<int> errors(r.errors.begin(), r.errors.end());
    errors.insert({400, 422, 503});
    if (r.auth == Auth::bearer)
        errors.insert(401);
    if (r.body)
        errors.insert(413);
    for (int e : errors)
        responses[std::to_string(e)] = problem_response(status_description(e));
    op["responses"] = responses;
    return op;
}

void add_fixed(nlohmann::json &paths, const char *path, const char *id, const char *summary,
               nlohmann::json content) {
    paths[path]["get"] = {
        {"operationId", id},
        {"summary", summary},
        {"tags", {"operations"}},
        {"security", nlohmann::json::array()},
        {"responses", {{"200", {{"description", "success"}, {"content", std::move(content)}}}}}};
}

}  // namespace

nlohmann::json openapi_document(const std::vector<Route> &routes) {
    nlohmann::json paths = nlohmann::json::object();
    for (const auto &r : routes) {
        std::string method = r.method;
        for (auto &c : method)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        paths[r.path][method] = operation(r);
    }
    add_fixed(paths, "/healthz", "health", "the process serves",
              {{"application/json", {{"schema", schema::object({{"status", schema::string()}})}}}});
    add_fixed(paths, "/readyz", "ready", "the database answers",
              {{"application/json", {{"schema", schema::object({{"status", schema::string()}})}}}});
    paths["/readyz"]["get"]["responses"]["503"] = problem_response("database unavailable");
    add_fixed(paths, "/metrics", "metrics", "Prometheus text format",
              {{"text/plain", {{"schema", schema::string()}}}});
    add_fixed(paths, "/openapi.json", "openapi", "this document",
              {{"application/json", {{"schema", schema::any_object()}}}});

    nlohmann::json problem = schema::object({{"type", schema::string()},
                                             {"title", schema::string()},
                                             {"status", schema::integer()},
                                             {"detail", schema::string()},
                                             {"code", schema::string()},
                                             {"field", schema::string()},
                                             {"request_id", schema::string()}},
                                            {"field", "request_id"});
    return {{"openapi", "3.1.0"},
            {"info",
             {{"title", "Tenancy gateway"},
              {"version", "0.1"},
              {"description",
               "REST over the tenancy extension: every rule is enforced by the database under "
               "row-level security. Errors are application/problem+json with a stable code."}}},
            {"paths", paths},
            {"components",
             {{"securitySchemes",
               {{"bearer",
                 {{"type", "http"},
                  {"scheme", "bearer"},
                  {"description", "an API key (tnc_...) or a session token (tns_...)"}}}}},
              {"parameters",
               {{"TenancyAccount",
                 {{"name", "Tenancy-Account"},
                  {"in", "header"},
                  {"required", false},
                  {"description", "act in this descendant account for this request"},
                  {"schema", {{"type", "string"}, {"maxLength", 200}}}}},
                {"IdempotencyKey",
                 {{"name", "Idempotency-Key"},
                  {"in", "header"},
                  {"required", false},
                  {"description",
                   "the same key and body within 24 h returns the first answer and has one effect"},
                  {"schema", {{"type", "string"}, {"minLength", 1}, {"maxLength", 255}}}}}}},
              {"schemas", {{"Problem", problem}}}}}};
}

void register_routes(HttpServer &server, DbPool &pool, std::vector<Route> routes) {
    auto table = std::make_shared<const std::vector<Route>>(std::move(routes));
    auto document = std::make_shared<const std::string>(openapi_document(*table).dump());
    for (const Route &r : *table) {
        const Route *route = &r;
        server.route(
            r.method, path_regex(r.path),
            [table, route, &pool](const httplib::Request &req, httplib::Response &res) {
                run_route(pool, *route, req, res);
            },
            r.path);
    }
    server.route(
        "GET", "/openapi.json",
        [document](const httplib::Request &, httplib::Response &res) {
            res.status = 200;
            res.set_content(*document, "application/json");
        },
        "/openapi.json");
}

}  // namespace tenancy::gateway
