// Structured logs: one JSON object per line on stdout. Lines are written
// whole under a lock, so concurrent requests never interleave.
// Never pass Authorization headers, request bodies or database passwords.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

namespace tenancy::gateway {

// RFC 3339 UTC time with milliseconds, e.g. 2026-11-23T10:00:00.123Z.
std::string format_time(std::chrono::system_clock::time_point t);

// Emits {"time":..., "level":..., "msg":..., ...fields}.
void log_event(const char *level, const std::string &msg,
               const nlohmann::json &fields = nlohmann::json::object());

struct RequestLogEntry {
    std::chrono::system_clock::time_point time;
    std::string request_id;
    std::string method;
    std::string path;
    int status = 0;
    double duration_ms = 0;
    std::string remote;
};

nlohmann::json request_log_json(const RequestLogEntry &e);
void log_request(const RequestLogEntry &e);

}  // namespace tenancy::gateway
