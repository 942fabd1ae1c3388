-- wrk script for bench/gateway/run: the credential, method and body come from
-- the environment (BENCH_KEY, BENCH_METHOD, BENCH_BODY); done() prints one
-- machine-readable line the runner parses:
--   RESULT <req/s> <p50 ms> <p99 ms> <non-2xx answers> <socket errors> <requests>
wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_KEY"), "BENCH_KEY unset")
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %.1f %.3f %.3f %d %d %d\n",
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
