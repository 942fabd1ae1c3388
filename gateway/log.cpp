#include "log.hpp"

#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace tenancy::gateway {

namespace {
std::mutex g_log_mutex;

void write_line(const nlohmann::json &j) {
    // Replace invalid UTF-8 (a client can put anything in a path) rather
    // than throwing from the logger.
    std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line.push_back('\n');
    std::lock_guard<std::mutex> lock(g_log_mutex);
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
}
}  // namespace

std::string format_time(std::chrono::system_clock::time_point t) {
    using namespace std::chrono;
    auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms % 1000));
    return buf;
}

void log_event(const char *level, const std::string &msg, const nlohmann::json &fields) {
    nlohmann::json j = {
        {"time", format_time(std::chrono::system_clock::now())}, {"level", level}, {"msg", msg}};
    if (fields.is_object())
        for (auto it = fields.begin(); it != fields.end(); ++it)
            j[it.key()] = it.value();
    write_line(j);
}

nlohmann::json request_log_json(const RequestLogEntry &e) {
    return {
        {"time", format_time(e.time)},
        {"level", e.status >= 500 ? "error" : "info"},
        {"msg", "request"},
        {"request_id", e.request_id},
        {"method", e.method},
        {"path", e.path},
        {"status", e.status},
        // Microsecond resolution is plenty and keeps lines short.
        {"duration_ms", std::round(e.duration_ms * 1000.0) / 1000.0},
        {"remote", e.remote},
    };
}

void log_request(const RequestLogEntry &e) {
    write_line(request_log_json(e));
}

}  // namespace tenancy::gateway
