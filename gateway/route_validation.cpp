// Request validation from the route table: bodies and query parameters are
// checked against their Field lists before any handler or statement runs, so
// a bad request changes nothing and names what is wrong.
#include "route_table.hpp"

#include <cctype>
#include <ctime>
#include <regex>

namespace tenancy::gateway {
namespace {

Problem invalid_field(const std::string &field, std::string detail) {
    Problem p;
    p.status = 422;
    p.code = "invalid_field";
    p.title = "Invalid field";
    p.detail = std::move(detail);
    p.field = field;
    return p;
}

const char *type_name(FieldType t) {
    switch (t) {
        case FieldType::string:
            return "a string";
        case FieldType::integer:
            return "an integer";
        case FieldType::boolean:
            return "a boolean";
        case FieldType::object:
            return "an object";
        case FieldType::timestamp:
            return "a timestamp (RFC 3339)";
        case FieldType::string_array:
            return "an array of strings";
    }
    return "a value";
}

// RFC 3339 date-time, e.g. 2026-12-07T10:00:00Z or ...+01:00 (fraction optional).
bool is_timestamp(const std::string &s) {
    static const std::regex re(
        R"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2}))");
    if (s.size() > 40 || !std::regex_match(s, re))
        return false;
    std::tm tm{};
    tm.tm_year = std::stoi(s.substr(0, 4)) - 1900;
    tm.tm_mon = std::stoi(s.substr(5, 2)) - 1;
    tm.tm_mday = std::stoi(s.substr(8, 2));
    int hour = std::stoi(s.substr(11, 2)), minute = std::stoi(s.substr(14, 2)),
        second = std::stoi(s.substr(17, 2));
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || hour > 23 ||
        minute > 59 || second > 59)
        return false;
    // mktime normalises 2026-02-31 to March: a real date survives unchanged.
    std::tm check = tm;
    timegm(&check);
    return check.tm_mday == tm.tm_mday && check.tm_mon == tm.tm_mon;
}

bool is_integer_text(const std::string &s) {
    if (s.empty() || s.size() > 18)
        return false;
    size_t i = s[0] == '-' ? 1 : 0;
    if (i == s.size())
        return false;
    for (; i < s.size(); ++i)
        if (!std::isdigit(static_cast<unsigned char>(s[i])))
            return false;
    return true;
}

std::optional<Problem> check_string(const Field &f, const std::string &v) {
    if (v.size() > f.max_length)
        return invalid_field(f.name,
                             f.name + " is longer than " + std::to_string(f.max_length) + " bytes");
    if (!f.one_of.empty()) {
        bool found = false;
        std::string allowed;
        for (const auto &o : f.one_of) {
            found = found || o == v;
            allowed += (allowed.empty() ? "" : ", ") + o;
        }
        if (!found)
            return invalid_field(f.name, f.name + " must be one of: " + allowed);
    }
    for (unsigned char c : v)
        if (c < 0x20 || c == 0x7f)
            return invalid_field(f.name, f.name + " contains a control character");
    return std::nullopt;
}

std::optional<Problem> check_value(const Field &f, const nlohmann::json &v) {
    if (v.is_null()) {
        if (f.nullable)
            return std::nullopt;
        return invalid_field(f.name, f.name + " may not be null");
    }
    auto wrong = [&] { return invalid_field(f.name, f.name + " must be " + type_name(f.type)); };
    switch (f.type) {
        case FieldType::string:
            if (!v.is_string())
                return wrong();
            return check_string(f, v.get<std::string>());
        case FieldType::timestamp:
            if (!v.is_string() || !is_timestamp(v.get<std::string>()))
                return wrong();
            return std::nullopt;
        case FieldType::integer:
            if (!v.is_number_integer())
                return wrong();
            return std::nullopt;
        case FieldType::boolean:
            if (!v.is_boolean())
                return wrong();
            return std::nullopt;
        case FieldType::object:
            if (!v.is_object())
                return wrong();
            if (v.dump().size() > f.max_length)
                return invalid_field(
                    f.name, f.name + " is larger than " + std::to_string(f.max_length) + " bytes");
            return std::nullopt;
        case FieldType::string_array:
            if (!v.is_array())
                return wrong();
            if (v.size() > f.max_length)
                return invalid_field(
                    f.name, f.name + " has more than " + std::to_string(f.max_length) + " items");
            for (const auto &item : v) {
                if (!item.is_string())
                    return wrong();
                Field item_field = f;
                item_field.max_length = 200;
                if (auto p = check_string(item_field, item.get<std::string>()))
                    return p;
            }
            return std::nullopt;
    }
    return wrong();
}

}  // namespace

std::optional<Problem> validate_body(const Route &route, const std::string &text,
                                     nlohmann::json &out) {
    out = nlohmann::json::object();
    if (!route.body) {
        // A body where none belongs is refused, not ignored: the client
        // meant something the route will not do.
        if (text.find_first_not_of(" \t\r\n") != std::string::npos) {
            Problem p = invalid_field("", "this route takes no request body");
            return p;
        }
        return std::nullopt;
    }
    nlohmann::json parsed;
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
        parsed = nlohmann::json::object();  // an empty body is an empty object
    } else {
        parsed = nlohmann::json::parse(text, nullptr, false);
        if (parsed.is_discarded()) {
            Problem p;
            p.status = 400;
            p.code = "invalid_json";
            p.title = "Malformed JSON";
            p.detail = "the request body is not valid JSON";
            return p;
        }
    }
    if (!parsed.is_object())
        return invalid_field("", "the request body must be a JSON object");
    for (auto it = parsed.begin(); it != parsed.end(); ++it) {
        bool known = false;
        for (const auto &f : *route.body)
            known = known || f.name == it.key();
        if (!known)
            return invalid_field(it.key(), "unknown field " + it.key());
    }
    for (const auto &f : *route.body) {
        auto it = parsed.find(f.name);
        if (it == parsed.end()) {
            if (f.required)
                return invalid_field(f.name, "missing field " + f.name);
            continue;
        }
        if (auto p = check_value(f, *it))
            return p;
        out[f.name] = *it;
    }
    return std::nullopt;
}

std::optional<Problem> validate_query(const Route &route, const httplib::Request &req,
                                      std::map<std::string, std::string> &out) {
    for (const auto &f : route.query) {
        if (!req.has_param(f.name.c_str())) {
            if (f.required)
                return invalid_field(f.name, "missing query parameter " + f.name);
            continue;
        }
        if (req.get_param_value_count(f.name.c_str()) > 1)
            return invalid_field(f.name, "query parameter " + f.name + " is given twice");
        std::string v = req.get_param_value(f.name.c_str());
        bool ok = true;
        switch (f.type) {
            case FieldType::integer:
                ok = is_integer_text(v);
                break;
            case FieldType::timestamp:
                ok = is_timestamp(v);
                break;
            case FieldType::boolean:
                ok = v == "true" || v == "false";
                break;
            default:
                break;
        }
        if (!ok)
            return invalid_field(f.name,
                                 "query parameter " + f.name + " must be " + type_name(f.type));
        if (auto p = check_string(f, v)) {
            p->detail = "query parameter " + p->detail;
            return p;
        }
        out[f.name] = v;
    }
    return std::nullopt;
}

}  // namespace tenancy::gateway
