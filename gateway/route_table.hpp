// The gateway's one route table: every /v1 route is a Route entry, and
// dispatch, request validation and /openapi.json are all made from it, so
// they cannot drift apart. Each domain's file returns its entries
// (routes_catalog.hpp); register_routes() serves them all.
#pragma once

#include "db_tx.hpp"
#include "problem.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tenancy::gateway {

class DbPool;
class HttpServer;

enum class FieldType { string, integer, boolean, object, timestamp, string_array };

// A field of a JSON body, or a query parameter:
//   Field("email").require().max(254).describe("the invitee's address")
struct Field {
    Field() = default;
    explicit Field(std::string field_name, FieldType field_type = FieldType::string)
        : name(std::move(field_name)), type(field_type) {}
    Field &require() {
        required = true;
        return *this;
    }
    Field &allow_null() {
        nullable = true;
        return *this;
    }
    Field &max(size_t n) {
        max_length = n;
        return *this;
    }
    Field &values(std::vector<std::string> allowed) {
        one_of = std::move(allowed);
        return *this;
    }
    Field &describe(std::string text) {
        description = std::move(text);
        return *this;
    }

    std::string name;
    FieldType type = FieldType::string;
    bool required = false;
    bool nullable = false;  // JSON null accepted (bodies only)
    // string: bytes; object: bytes of its JSON text; string_array: items.
    size_t max_length = 200;
    std::vector<std::string> one_of;  // allowed values of a string
    std::string description;
};

enum class Auth { bearer, none };

// Whether a route serves a restricted context (MFA pending, password to
// change): only verifying the factor, changing the password and logging out.
enum class RestrictedContext { refuse, allow };

// What a handler answers: a status and a JSON body (none for 204).
struct ApiAnswer {
    int status = 200;
    nlohmann::json body;
};

// A handler's refusal that is not a database error.
struct ApiError {
    Problem problem;
};
[[noreturn]] void refuse(int status, std::string detail);

// The context a request acts in, known once its first statement ran.
struct RequestContext {
    std::string account;  // public id of the acting account
    std::string role;
    nlohmann::json principal;  // whoami()'s principal (GETs only)
};

// A validated request, as a handler sees it.
struct ApiCall {
    ApiCall(const httplib::Request &request, std::string id)
        : req(request), request_id(std::move(id)) {}
    const httplib::Request &req;
    std::string request_id;
    std::map<std::string, std::string> path;  // {id} -> value
    nlohmann::json body = nlohmann::json::object();
    std::map<std::string, std::string> query_values;
    const RequestContext *context = nullptr;
    std::string cursor_scope;  // list_page.hpp
    // The acting main account's id, set before the handler runs: an API key
    // names it (it acts only in its own main account); a session's is read
    // from its context after authenticate() and act_as(). Statements pass
    // it to main_id_is(). nullopt on routes without a bearer credential.
    std::optional<std::string> main_hint;

    const std::string &path_param(const std::string &name) const;
    std::optional<std::string> query(const std::string &name) const;
    // A string field of the body; nullopt when absent or null.
    std::optional<std::string> text(const std::string &name) const;
    // The acting account and role: valid after the handler's first statement.
    const std::string &account() const;
    const std::string &role() const;
};

using ApiHandler = std::function<ApiAnswer(Tx &, const ApiCall &)>;

struct Route {
    std::string method;  // GET POST PUT PATCH DELETE
    std::string path;    // OpenAPI template: "/v1/accounts/{id}/members/{user}"
    std::string operation_id;
    std::string summary;
    std::string tag;
    Auth auth = Auth::bearer;
    RestrictedContext restricted = RestrictedContext::refuse;
    std::optional<std::vector<Field>> body;  // nullopt: the route takes no body
    std::vector<Field> query;
    int status = 200;
    nlohmann::json response = nullptr;  // JSON Schema of the success body
    std::vector<int> errors;            // statuses besides 400/401/413/422/5xx
    ApiHandler handler;
};

// "<alias>.main_id = coalesce($<param>::bigint, tenancy.current_main_id())",
// the parameter being ApiCall::main_hint. Row security already keeps a
// statement within the acting main account; naming it lets Citus send the
// statement to that main account's shard alone (a router query) when the
// gateway passes it, instead of to every shard. NULL: the context's main
// account, the same rows. For reads: in an UPDATE or DELETE Citus refuses
// current_main_id() inside COALESCE.
std::string main_id_is(const std::string &alias, int param);

// JSON Schema pieces for Route::response (OpenAPI 3.1 is JSON Schema 2020-12).
namespace schema {
nlohmann::json string();
nlohmann::json integer();
nlohmann::json boolean();
nlohmann::json timestamp();
nlohmann::json any_object();
// type or null.
nlohmann::json nullable(nlohmann::json s);
// An object with these properties, all of them required unless listed in
// optional.
nlohmann::json object(const std::vector<std::pair<std::string, nlohmann::json>> &properties,
                      const std::vector<std::string> &optional = {});
nlohmann::json array(nlohmann::json items);
// {data: [items], next_cursor: string | null}
nlohmann::json page(nlohmann::json items);
}  // namespace schema

// The regex cpp-httplib matches a template with ("{id}" -> "([^/]+)").
std::string path_regex(const std::string &path_template);
// The parameter names of a template, in order.
std::vector<std::string> path_names(const std::string &path_template);

// Checks a body text against the route's fields: a Problem (400 invalid_json,
// 422 invalid_field naming it) or the parsed object with declared fields only.
std::optional<Problem> validate_body(const Route &route, const std::string &text,
                                     nlohmann::json &out);
// Checks query parameters: unknown ones are ignored, declared ones typed.
std::optional<Problem> validate_query(const Route &route, const httplib::Request &req,
                                      std::map<std::string, std::string> &out);

// The OpenAPI 3.1 document of routes (plus the fixed unauthenticated ones).
nlohmann::json openapi_document(const std::vector<Route> &routes);

// Serves routes (and GET /openapi.json) on server.
void register_routes(HttpServer &server, DbPool &pool, std::vector<Route> routes);

}  // namespace tenancy::gateway
