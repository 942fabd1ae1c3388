// Serving accepted connections: a thread per connection up to a limit (more
// are answered 503 at once), a cap on open connections per peer address, a
// total deadline on receiving each request, a keep-alive idle timeout, and
// optional TLS.
//
// cpp-httplib 0.11 gives each connection a worker thread for its whole life
// and bounds only each recv (read timeout), so a client sending a header line
// every few seconds holds a worker forever. Server::process_and_close_socket
// (virtual, called on a worker for each accepted socket) is overridden to
// admit or refuse the connection, do the TLS handshake when configured, and
// read through a stream that also enforces a deadline over the request's
// line, headers and body. The workers come from WorkerPool, which starts a
// thread whenever none is free, up to the connection limit plus a reserve
// that keeps refusals immediate.
//
// TLS is done here rather than with httplib::SSLServer: its
// process_and_close_socket is private to the prebuilt library and would
// bypass every limit above.
#pragma once

#include <httplib.h>
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace tenancy::gateway {

// Open connections per peer address (thread-safe).
class PeerCounter {
  public:
    explicit PeerCounter(int max_per_peer) : max_(max_per_peer) {}
    // Counts one more connection from peer; false (nothing counted) when it
    // already holds the maximum.
    bool acquire(const std::string &peer);
    void release(const std::string &peer);
    int count(const std::string &peer) const;

  private:
    const int max_;
    mutable std::mutex mutex_;
    std::map<std::string, int> open_;
};

// Worker threads that start on demand: a job finds an idle thread or a new
// one is started, up to max_threads (beyond that jobs wait in a queue);
// threads beyond min_threads end after idle_exit without work. Stacks stay
// at 8 MiB of virtual memory (see kWorkerStack in http_connection.cpp).
class WorkerPool : public httplib::TaskQueue {
  public:
    WorkerPool(size_t min_threads, size_t max_threads,
               std::chrono::milliseconds idle_exit = std::chrono::seconds(30));
    ~WorkerPool() override;
    void enqueue(std::function<void()> fn) override;
    // Runs the queued jobs, then waits for every thread to end.
    void shutdown() override;

    size_t threads() const;
    size_t busy() const;

  private:
    static void *thread_main(void *self);
    void work();
    bool start_thread();  // mutex_ held

    const size_t min_threads_, max_threads_;
    const std::chrono::milliseconds idle_exit_;
    mutable std::mutex mutex_;
    std::condition_variable work_ready_, all_done_;
    std::deque<std::function<void()>> jobs_;
    size_t threads_ = 0, idle_ = 0;
    bool shutdown_ = false;
    bool start_failure_logged_ = false;
};

// An OpenSSL server context from PEM files (certificate chain, private key).
class TlsContext {
  public:
    // nullptr, with error set, when the files cannot be loaded or the key
    // does not match the certificate.
    static std::shared_ptr<TlsContext> load(const std::string &cert_file,
                                            const std::string &key_file, std::string &error);
    ~TlsContext();
    SSL_CTX *get() const { return ctx_; }

  private:
    explicit TlsContext(SSL_CTX *ctx) : ctx_(ctx) {}
    SSL_CTX *ctx_;
};

struct ConnectionLimits {
    std::chrono::milliseconds request_read_timeout{10000};
    int max_connections_per_peer = 8;
    // Connections served at once; more are answered 503 and closed.
    int max_connections = 1024;
    // An idle keep-alive connection closes after this long without a request.
    std::chrono::milliseconds keep_alive_timeout{5000};
    // Worker threads kept even when idle.
    int min_threads = 16;
};

// This process's connection counts (every server), for /metrics.
struct ConnectionCounts {
    int64_t open = 0;  // admitted and not yet closed
    uint64_t admitted = 0, refused_limit = 0, refused_peer = 0;
    int64_t worker_threads = 0, busy_threads = 0;
};
ConnectionCounts connection_counts();

class Metrics;
// Registers the counts above with metrics (idempotent).
void register_connection_metrics(Metrics &metrics);

class LimitedServer : public httplib::Server {
  public:
    explicit LimitedServer(ConnectionLimits limits);
    ~LimitedServer() override;

    // Serve TLS on every connection (call before listening).
    void use_tls(std::shared_ptr<TlsContext> tls);
    bool tls() const { return tls_ != nullptr; }
    // cpp-httplib 0.11 listens with a backlog of 5, so a burst of new
    // connections overflows the accept queue and clients wait out SYN
    // retransmits (1 s and more); call after binding to raise it.
    void raise_backlog();
    // After stop(): idle keep-alive connections close at once rather than
    // after their idle timeout.
    void wake_idle();

  private:
    bool process_and_close_socket(socket_t sock) override;

    const ConnectionLimits limits_;
    PeerCounter peers_;
    std::shared_ptr<TlsContext> tls_;
    std::atomic<int> open_{0};
    int stop_fd_ = -1;  // an eventfd, readable once wake_idle() ran
};

// Whether the request being answered on this worker thread ran out of its
// read deadline (the error handler then answers 408).
bool request_read_timed_out();

}  // namespace tenancy::gateway
