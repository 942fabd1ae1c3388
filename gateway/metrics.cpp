// The gateway's metrics registry and its Prometheus text rendering (see
// metrics.hpp).
#include "metrics.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace tenancy::gateway {

namespace {

constexpr const char *kRequestsName = "tenancy_http_requests_total";
constexpr const char *kLatencyName = "tenancy_http_request_duration_seconds";

bool name_char(char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

// The family name of "name" or "name{labels}"; throws when Prometheus
// would reject it (a bad name, or labels that are not k="v",...).
std::string family_of(const std::string &series) {
    auto brace = series.find('{');
    std::string base = series.substr(0, brace);
    bool ok = !base.empty();
    for (size_t i = 0; ok && i < base.size(); ++i)
        ok = name_char(base[i], i == 0);
    if (ok && brace != std::string::npos) {
        // k="v"(,k="v")* then '}' at the very end; values without raw quotes
        // or newlines (they come from code, not from requests).
        size_t i = brace + 1;
        ok = series.back() == '}';
        while (ok && i < series.size() - 1) {
            size_t k = i;
            while (k < series.size() && name_char(series[k], k == i))
                ++k;
            ok = k > i && k + 1 < series.size() && series[k] == '=' && series[k + 1] == '"';
            if (!ok)
                break;
            size_t end = series.find('"', k + 2);
            ok = end != std::string::npos && series.find('\n', k + 2) > end;
            if (!ok)
                break;
            i = end + 1;
            if (series[i] == ',')
                ++i;
            else
                ok = i == series.size() - 1;
        }
    }
    if (!ok || base == kRequestsName || base == kLatencyName)
        throw std::invalid_argument("invalid or reserved metric name: " + series);
    return base;
}

std::string number(double v) {
    if (std::isnan(v))
        return "NaN";
    if (std::isinf(v))
        return v > 0 ? "+Inf" : "-Inf";
    char buf[40];
    if (v == std::floor(v) && std::fabs(v) < 1e15)
        std::snprintf(buf, sizeof buf, "%.0f", v);
    else
        std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

const std::string &known_method(const std::string &method) {
    static const std::vector<std::string> methods = {
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"};
    static const std::string other = "other";
    for (const auto &m : methods)
        if (m == method)
            return m;
    return other;
}

struct Family {
    std::string type, help;
    std::string lines;
};

void header(std::string &out, const std::string &name, const std::string &help,
            const std::string &type) {
    std::string h;
    for (char c : help)
        h += c == '\\' ? "\\\\" : c == '\n' ? "\\n" : std::string(1, c);
    out += "# HELP " + name + " " + h + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

std::string escape_label_value(const std::string &value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

Metrics &Metrics::global() {
    static Metrics instance;
    return instance;
}

const std::vector<double> &Metrics::latency_buckets() {
    static const std::vector<double> buckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    return buckets;
}

void Metrics::observe_request(const std::string &route, const std::string &method, int status,
                              double seconds) {
    const auto &buckets = latency_buckets();
    size_t bucket = 0;
    while (bucket < buckets.size() && seconds > buckets[bucket])
        ++bucket;
    const std::string &m = known_method(method);
    std::lock_guard<std::mutex> lock(mutex_);
    ++requests_[{route, m, status}];
    Histogram &h = latency_[{route, m}];
    if (h.counts.empty())
        h.counts.assign(buckets.size() + 1, 0);
    ++h.counts[bucket];
    h.sum += seconds;
    ++h.count;
}

void Metrics::add(const std::string &counter_name, const std::string &help, uint64_t n) {
    family_of(counter_name);
    std::lock_guard<std::mutex> lock(mutex_);
    Counter &c = counters_[counter_name];
    if (c.help.empty())
        c.help = help;
    c.value += n;
}

void Metrics::gauge(const std::string &name, const std::string &help,
                    std::function<double()> read) {
    family_of(name);
    std::lock_guard<std::mutex> lock(mutex_);
    gauges_[name] = Gauge{help, std::move(read), false};
}

void Metrics::sampled_counter(const std::string &name, const std::string &help,
                              std::function<double()> read) {
    family_of(name);
    std::lock_guard<std::mutex> lock(mutex_);
    gauges_[name] = Gauge{help, std::move(read), true};
}

std::string Metrics::render() const {
    std::map<std::string, Family> families;
    std::vector<std::pair<std::string, Gauge>> gauges;
    std::string requests, latency;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto &[key, n] : requests_) {
            const auto &[route, method, status] = key;
            requests += std::string(kRequestsName) + "{route=\"" + escape_label_value(route) +
                        "\",method=\"" + method + "\",status=\"" + std::to_string(status) + "\"} " +
                        std::to_string(n) + "\n";
        }
        const auto &buckets = latency_buckets();
        for (const auto &[key, h] : latency_) {
            std::string labels =
                "route=\"" + escape_label_value(key.first) + "\",method=\"" + key.second + "\"";
            uint64_t cumulative = 0;
            for (size_t i = 0; i <= buckets.size(); ++i) {
                cumulative += h.counts[i];
                latency += std::string(kLatencyName) + "_bucket{" + labels + ",le=\"" +
                           (i < buckets.size() ? number(buckets[i]) : "+Inf") + "\"} " +
                           std::to_string(cumulative) + "\n";
            }
            latency += std::string(kLatencyName) + "_sum{" + labels + "} " + number(h.sum) + "\n";
            latency += std::string(kLatencyName) + "_count{" + labels + "} " +
                       std::to_string(h.count) + "\n";
        }
        for (const auto &[name, c] : counters_) {
            Family &f = families[family_of(name)];
            if (f.type.empty())
                f = Family{"counter", c.help, ""};
            f.lines += name + " " + std::to_string(c.value) + "\n";
        }
        gauges.assign(gauges_.begin(), gauges_.end());
    }
    // Outside the lock: a reader may take locks of its own.
    for (const auto &[name, g] : gauges) {
        const char *type = g.counter ? "counter" : "gauge";
        Family &f = families[family_of(name)];
        if (f.type.empty())
            f = Family{type, g.help, ""};
        else if (f.type != type)
            continue;  // another kind already owns this name
        double v = NAN;
        if (g.read)
            v = g.read();
        f.lines += name + " " + number(v) + "\n";
    }

    std::string out;
    header(out, kRequestsName,
           "HTTP requests answered, by route template (\"unmatched\" when no route matched), "
           "method and status.",
           "counter");
    out += requests;
    header(out, kLatencyName,
           "Time from a request's headers being read to its answer being written, in seconds, by "
           "route template and method.",
           "histogram");
    out += latency;
    for (const auto &[name, f] : families) {
        header(out, name, f.help, f.type);
        out += f.lines;
    }
    return out;
}

}  // namespace tenancy::gateway
