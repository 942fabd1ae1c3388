// The gateway's metrics in Prometheus text format (version 0.0.4), served
// unauthenticated at GET /metrics: requests and latency by route, plus any
// counter or gauge another part of the gateway registers.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace tenancy::gateway {

inline constexpr const char *kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

class Metrics {
  public:
    Metrics() = default;
    Metrics(const Metrics &) = delete;
    Metrics &operator=(const Metrics &) = delete;

    // The process's registry (what /metrics renders).
    static Metrics &global();

    // One answered request. route is the route's documented template (e.g.
    // "/v1/accounts/{id}") or "unmatched", never the raw path, so the number
    // of series stays bounded; a method outside the HTTP set counts as "other".
    void observe_request(const std::string &route, const std::string &method, int status,
                         double seconds);

    // Adds n to a counter (n = 0 only makes it appear). The name may carry a
    // fixed label set, e.g. tenancy_x_total{reason="peer"}; series sharing
    // a name form one family, with the help text of its first registration.
    // Throws std::invalid_argument on a name Prometheus would reject.
    void add(const std::string &counter_name, const std::string &help, uint64_t n = 1);

    // A gauge sampled when rendering (labels in the name as for add).
    // Registering a name again replaces its reader. read runs on the thread
    // that renders, outside this registry's lock, and must not throw.
    void gauge(const std::string &name, const std::string &help, std::function<double()> read);

    // A counter kept elsewhere (e.g. an atomic), sampled when rendering like
    // a gauge but typed counter: read must never decrease.
    void sampled_counter(const std::string &name, const std::string &help,
                         std::function<double()> read);

    // The whole registry, families sorted by name.
    std::string render() const;

    // The latency histogram's upper bounds in seconds (+Inf is implied).
    static const std::vector<double> &latency_buckets();

  private:
    struct Histogram {
        std::vector<uint64_t> counts;  // per bucket, not cumulative
        double sum = 0;
        uint64_t count = 0;
    };
    struct Counter {
        std::string help;
        uint64_t value = 0;
    };
    struct Gauge {
        std::string help;
        std::function<double()> read;
        bool counter = false;
    };

    mutable std::mutex mutex_;
    std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
    std::map<std::pair<std::string, std::string>, Histogram> latency_;
    std::map<std::string, Counter> counters_;
    std::map<std::string, Gauge> gauges_;
};

// A label value escaped for the text format (backslash, quote, newline).
std::string escape_label_value(const std::string &value);

}  // namespace tenancy::gateway
