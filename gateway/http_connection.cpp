// Serving accepted connections (see http_connection.hpp).
#include "http_connection.hpp"

#include "http_server.hpp"
#include "log.hpp"
#include "metrics.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>

namespace tenancy::gateway {

namespace {

using Clock = std::chrono::steady_clock;

// Worker stacks keep glibc's usual 8 MiB (virtual; only touched pages cost
// memory). Smaller ones are unsafe: libstdc++'s std::regex recurses per
// input character (~350 bytes each), and cpp-httplib matches the request
// path against the route patterns and the Range header (up to 8 KiB, parsed
// before any hook of ours runs) with it, so an 8 KiB value needs ~3 MiB.
constexpr size_t kWorkerStack = size_t{8} << 20;
// A refusal over TLS first completes the handshake, within this bound.
constexpr auto kRefusalHandshake = std::chrono::milliseconds(1000);
// Refused connections are logged at most this often (an attack must not
// flood the log).
constexpr auto kRefusalLogEvery = std::chrono::seconds(10);
// What a refused client is told to wait before retrying, in seconds.
constexpr int kRetryAfterSeconds = 1;

std::atomic<int64_t> g_open{0};
std::atomic<uint64_t> g_admitted{0}, g_refused_limit{0}, g_refused_peer{0};
std::atomic<int64_t> g_worker_threads{0}, g_busy_threads{0};

std::chrono::milliseconds to_ms(time_t sec, time_t usec) {
    return std::chrono::milliseconds(sec * 1000 + usec / 1000);
}

std::chrono::milliseconds left_until(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return std::max(left, std::chrono::milliseconds(0));
}

// Waits for events on sock; >0 ready, 0 timed out, <0 error.
int wait_for(socket_t sock, short events, std::chrono::milliseconds timeout) {
    pollfd p{sock, events, 0};
    int ms =
        static_cast<int>(std::min<long long>(INT_MAX, std::max<long long>(0, timeout.count())));
    for (;;) {
        int n = ::poll(&p, 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0 && (p.revents & POLLNVAL))
            return -1;
        return n;
    }
}

void address_of(socket_t sock, bool peer, std::string &ip, int &port) {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    int rc = peer ? ::getpeername(sock, reinterpret_cast<sockaddr *>(&addr), &len)
                  : ::getsockname(sock, reinterpret_cast<sockaddr *>(&addr), &len);
    if (rc != 0)
        return;
    std::array<char, NI_MAXHOST> host{};
    std::array<char, NI_MAXSERV> serv{};
    if (::getnameinfo(reinterpret_cast<sockaddr *>(&addr), len, host.data(), host.size(),
                      serv.data(), serv.size(), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
        ip = host.data();
        port = std::atoi(serv.data());
    }
}

std::string openssl_error() {
    unsigned long e = ERR_get_error();
    if (e == 0)
        return "unknown error";
    std::array<char, 256> buf{};
    ERR_error_string_n(e, buf.data(), buf.size());
    ERR_clear_error();
    return buf.data();
}

// One connection's bytes: plain, or TLS through OpenSSL on a non-blocking
// socket; every wait is bounded by a deadline.
class Transport {
  public:
    static constexpr ssize_t kError = -1;
    static constexpr ssize_t kTimedOut = -2;

    Transport(socket_t sock, SSL_CTX *ctx) : sock_(sock) {
        if (ctx == nullptr)
            return;
        int flags = ::fcntl(sock, F_GETFL, 0);
        ::fcntl(sock, F_SETFL, flags | O_NONBLOCK);
        ssl_ = SSL_new(ctx);
        if (ssl_ != nullptr && SSL_set_fd(ssl_, sock) != 1) {
            SSL_free(ssl_);
            ssl_ = nullptr;
        }
        tls_failed_ = ssl_ == nullptr;
    }
    ~Transport() {
        if (ssl_ != nullptr)
            SSL_free(ssl_);
    }
    Transport(const Transport &) = delete;
    Transport &operator=(const Transport &) = delete;

    socket_t socket() const { return sock_; }

    // The TLS handshake (nothing for plain connections).
    bool handshake(Clock::time_point deadline) {
        if (tls_failed_)
            return false;
        if (ssl_ == nullptr)
            return true;
        for (;;) {
            ERR_clear_error();
            int r = SSL_accept(ssl_);
            if (r == 1) {
                established_ = true;
                return true;
            }
            if (wait_ssl(SSL_get_error(ssl_, r), deadline) <= 0) {
                ERR_clear_error();
                return false;
            }
        }
    }

    // Bytes read (>0), 0 when the peer closed, kError or kTimedOut.
    ssize_t recv_some(char *ptr, size_t size, Clock::time_point deadline) {
        if (ssl_ == nullptr) {
            int ready = wait_for(sock_, POLLIN, left_until(deadline));
            if (ready <= 0)
                return ready == 0 ? kTimedOut : kError;
            for (;;) {
                ssize_t n = ::recv(sock_, ptr, size, 0);
                if (n < 0 && errno == EINTR)
                    continue;
                return n < 0 ? kError : n;
            }
        }
        for (;;) {
            ERR_clear_error();
            int r = SSL_read(ssl_, ptr, static_cast<int>(std::min<size_t>(size, INT_MAX)));
            if (r > 0)
                return r;
            int e = SSL_get_error(ssl_, r);
            if (e == SSL_ERROR_ZERO_RETURN)
                return 0;
            if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && r == 0)
                return 0;  // closed without close_notify
            int w = wait_ssl(e, deadline);
            if (w <= 0) {
                ERR_clear_error();
                return w == 0 ? kTimedOut : kError;
            }
        }
    }

    // Bytes written (>0), kError or kTimedOut.
    ssize_t send_some(const char *ptr, size_t size, Clock::time_point deadline) {
        if (ssl_ == nullptr) {
            for (;;) {
                int ready = wait_for(sock_, POLLOUT, left_until(deadline));
                if (ready <= 0)
                    return ready == 0 ? kTimedOut : kError;
                ssize_t n = ::send(sock_, ptr, size, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
                    continue;
                return n < 0 ? kError : n;
            }
        }
        for (;;) {
            ERR_clear_error();
            int r = SSL_write(ssl_, ptr, static_cast<int>(std::min<size_t>(size, INT_MAX)));
            if (r > 0)
                return r;
            int w = wait_ssl(SSL_get_error(ssl_, r), deadline);
            if (w <= 0) {
                ERR_clear_error();
                return w == 0 ? kTimedOut : kError;
            }
        }
    }

    // Decrypted input waiting inside OpenSSL (the socket may show nothing).
    bool pending() const { return ssl_ != nullptr && SSL_pending(ssl_) > 0; }

    // Sends TLS close_notify (best effort, never waits).
    void close_notify() {
        if (ssl_ != nullptr && established_) {
            ERR_clear_error();
            (void)SSL_shutdown(ssl_);
            ERR_clear_error();
        }
    }

  private:
    // Waits for what OpenSSL asked for: >0 ready, 0 timed out, <0 failed.
    int wait_ssl(int ssl_error, Clock::time_point deadline) {
        if (ssl_error == SSL_ERROR_WANT_READ)
            return left_until(deadline).count() > 0 ? wait_for(sock_, POLLIN, left_until(deadline))
                                                    : 0;
        if (ssl_error == SSL_ERROR_WANT_WRITE)
            return left_until(deadline).count() > 0 ? wait_for(sock_, POLLOUT, left_until(deadline))
                                                    : 0;
        return -1;
    }

    socket_t sock_;
    SSL *ssl_ = nullptr;
    bool tls_failed_ = false;
    bool established_ = false;
};

// A buffered stream over a Transport, like cpp-httplib's own socket stream,
// whose reads also stop at the current request's deadline.
class DeadlineStream : public httplib::Stream {
  public:
    DeadlineStream(Transport &transport, std::chrono::milliseconds read_timeout,
                   std::chrono::milliseconds write_timeout)
        : t_(transport), read_timeout_(read_timeout), write_timeout_(write_timeout) {}

    // A new request starts now; its line, headers and body must arrive by
    // now + budget.
    void start_request(std::chrono::milliseconds budget) {
        deadline_ = Clock::now() + budget;
        timed_out_ = false;
    }
    // Whether a read of this request ran out of time.
    bool timed_out() const { return timed_out_; }
    // Input already received and not yet consumed.
    bool has_input() const { return off_ < size_ || t_.pending(); }

    bool is_readable() const override {
        return has_input() || wait_for(t_.socket(), POLLIN, read_budget()) > 0;
    }
    bool is_writable() const override { return wait_for(t_.socket(), POLLOUT, write_timeout_) > 0; }

    ssize_t read(char *ptr, size_t size) override {
        if (off_ < size_) {
            size_t n = std::min(size, size_ - off_);
            std::memcpy(ptr, buf_.data() + off_, n);
            off_ += n;
            return static_cast<ssize_t>(n);
        }
        // Out of time (the deadline, or the per-read timeout): 408.
        auto budget = read_budget();
        if (budget.count() <= 0) {
            timed_out_ = true;
            return -1;
        }
        off_ = size_ = 0;
        ssize_t n = t_.recv_some(buf_.data(), buf_.size(), Clock::now() + budget);
        if (n == Transport::kTimedOut) {
            timed_out_ = true;
            return -1;
        }
        if (n <= 0)
            return n;
        size_t give = std::min(size, static_cast<size_t>(n));
        std::memcpy(ptr, buf_.data(), give);
        off_ = give;
        size_ = static_cast<size_t>(n);
        return static_cast<ssize_t>(give);
    }

    ssize_t write(const char *ptr, size_t size) override {
        ssize_t n = t_.send_some(ptr, size, Clock::now() + write_timeout_);
        return n < 0 ? -1 : n;
    }

    void get_remote_ip_and_port(std::string &ip, int &port) const override {
        address_of(t_.socket(), true, ip, port);
    }
    void get_local_ip_and_port(std::string &ip, int &port) const override {
        address_of(t_.socket(), false, ip, port);
    }
    socket_t socket() const override { return t_.socket(); }

  private:
    // What one wait for input may take: the per-read timeout, cut short by
    // the request's deadline.
    std::chrono::milliseconds read_budget() const {
        return std::min(read_timeout_, left_until(deadline_));
    }

    Transport &t_;
    std::chrono::milliseconds read_timeout_, write_timeout_;
    Clock::time_point deadline_ = Clock::time_point::max();
    bool timed_out_ = false;
    std::array<char, 16384> buf_{};
    size_t off_ = 0, size_ = 0;
};

thread_local const DeadlineStream *t_stream = nullptr;

// A refused connection gets a complete answer (429 over the per-peer cap,
// 503 over the connection limit) without its request being read, then
// closes. Plain: one non-blocking send. TLS: the handshake first, bounded.
void refuse_connection(Transport &t, const std::string &peer, int status, int limit) {
    Problem p;
    if (status == 429) {
        p = problem_for_status(
            429, "at most " + std::to_string(limit) + " open connections per client address");
    } else {
        p.status = 503;
        p.code = "too_many_connections";
        p.title = "Too many connections";
        p.detail = "the gateway serves at most " + std::to_string(limit) +
                   " connections at once; retry shortly";
    }
    std::string id = new_request_id();
    std::string body = problem_json(p, id).dump() + "\n";
    std::string answer = "HTTP/1.1 " + std::to_string(status) +
                         (status == 429 ? " Too Many Requests" : " Service Unavailable") +
                         "\r\nContent-Type: " + std::string(kProblemContentType) +
                         "\r\nContent-Length: " + std::to_string(body.size()) +
                         "\r\nRetry-After: " + std::to_string(kRetryAfterSeconds) +
                         "\r\nConnection: close\r\nCache-Control: no-store\r\n"
                         "X-Content-Type-Options: nosniff\r\n" +
                         kRequestIdHeader + ": " + id + "\r\n\r\n" + body;
    if (t.handshake(Clock::now() + kRefusalHandshake)) {
        // Fits in the socket buffer of a new connection: sent at once.
        (void)t.send_some(answer.data(), answer.size(),
                          Clock::now() + std::chrono::milliseconds(100));
        t.close_notify();
    }
    // Closing with unread input would reset the connection, and the client
    // could lose the answer: end our side, then discard what has arrived.
    ::shutdown(t.socket(), SHUT_WR);
    std::array<char, 4096> discard{};
    for (int i = 0; i < 16 && ::recv(t.socket(), discard.data(), discard.size(), MSG_DONTWAIT) > 0;
         ++i) {
    }

    static std::atomic<long long> last_log{0};
    static std::atomic<long long> refused{0};
    refused++;
    long long now =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
            .count();
    long long last = last_log.load();
    if (now - last >= std::chrono::milliseconds(kRefusalLogEvery).count() &&
        last_log.compare_exchange_strong(last, now))
        log_event("warn",
                  status == 429 ? "too many connections from one address, refused"
                                : "connection limit reached, refused",
                  {{"remote", peer}, {"limit", limit}, {"refused", refused.exchange(0)}});
}

}  // namespace

// ---- PeerCounter ----

bool PeerCounter::acquire(const std::string &peer) {
    std::lock_guard<std::mutex> lock(mutex_);
    int &n = open_[peer];
    if (n >= max_) {
        if (n == 0)
            open_.erase(peer);
        return false;
    }
    ++n;
    return true;
}

void PeerCounter::release(const std::string &peer) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = open_.find(peer);
    if (it != open_.end() && --it->second <= 0)
        open_.erase(it);
}

int PeerCounter::count(const std::string &peer) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = open_.find(peer);
    return it == open_.end() ? 0 : it->second;
}

// ---- WorkerPool ----

WorkerPool::WorkerPool(size_t min_threads, size_t max_threads, std::chrono::milliseconds idle_exit)
    : min_threads_(std::max<size_t>(1, min_threads)),
      max_threads_(std::max(max_threads, std::max<size_t>(1, min_threads))),
      idle_exit_(idle_exit) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < min_threads_; ++i)
        if (!start_thread())
            break;
}

WorkerPool::~WorkerPool() {
    shutdown();
}

void *WorkerPool::thread_main(void *self) {
    static_cast<WorkerPool *>(self)->work();
    return nullptr;
}

bool WorkerPool::start_thread() {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, kWorkerStack);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, &WorkerPool::thread_main, this);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        // Jobs then wait for a running thread; say so once.
        if (!start_failure_logged_)
            log_event("error", "cannot start a worker thread",
                      {{"error", std::strerror(rc)}, {"threads", threads_}});
        start_failure_logged_ = true;
        return false;
    }
    ++threads_;
    ++g_worker_threads;
    return true;
}

void WorkerPool::enqueue(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.push_back(std::move(fn));
    if (jobs_.size() > idle_ && threads_ < max_threads_)
        start_thread();
    work_ready_.notify_one();
}

void WorkerPool::work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        bool retire = false;
        while (jobs_.empty() && !shutdown_) {
            ++idle_;
            bool timed_out = work_ready_.wait_for(lock, idle_exit_) == std::cv_status::timeout;
            --idle_;
            if (timed_out && jobs_.empty() && !shutdown_ && threads_ > min_threads_) {
                retire = true;
                break;
            }
        }
        if (retire || jobs_.empty())
            break;
        std::function<void()> fn = std::move(jobs_.front());
        jobs_.pop_front();
        lock.unlock();
        ++g_busy_threads;
        try {
            fn();
        } catch (const std::exception &e) {
            log_event("error", "a connection ended with an exception", {{"error", e.what()}});
        } catch (...) {
            log_event("error", "a connection ended with an exception");
        }
        --g_busy_threads;
        lock.lock();
    }
    --threads_;
    --g_worker_threads;
    // Notified under the lock: once shutdown() sees 0 and returns, this
    // thread touches the pool no more.
    if (threads_ == 0)
        all_done_.notify_all();
}

void WorkerPool::shutdown() {
    std::unique_lock<std::mutex> lock(mutex_);
    shutdown_ = true;
    work_ready_.notify_all();
    all_done_.wait(lock, [this] { return threads_ == 0; });
}

size_t WorkerPool::threads() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return threads_;
}

size_t WorkerPool::busy() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return threads_ - idle_;
}

// ---- TlsContext ----

std::shared_ptr<TlsContext> TlsContext::load(const std::string &cert_file,
                                             const std::string &key_file, std::string &error) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == nullptr) {
        error = "cannot create a TLS context: " + openssl_error();
        return nullptr;
    }
    std::shared_ptr<TlsContext> tls(new TlsContext(ctx));
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(
        ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    // SSL_write is retried after a wait with the same bytes, maybe from a
    // different buffer address (cpp-httplib's write loop).
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
        error = "cannot load the TLS certificate from " + cert_file + ": " + openssl_error();
        return nullptr;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
        // OpenSSL also fails here ("key values mismatch") when the key does
        // not belong to the certificate.
        error = "cannot load the TLS key from " + key_file + ": " + openssl_error();
        return nullptr;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        error = "the TLS key in " + key_file + " does not match the certificate in " + cert_file;
        ERR_clear_error();
        return nullptr;
    }
    return tls;
}

TlsContext::~TlsContext() {
    SSL_CTX_free(ctx_);
}

// ---- LimitedServer ----

ConnectionCounts connection_counts() {
    ConnectionCounts c;
    c.open = g_open.load();
    c.admitted = g_admitted.load();
    c.refused_limit = g_refused_limit.load();
    c.refused_peer = g_refused_peer.load();
    c.worker_threads = g_worker_threads.load();
    c.busy_threads = g_busy_threads.load();
    return c;
}

void register_connection_metrics(Metrics &m) {
    m.gauge("tenancy_http_connections_open", "Client connections admitted and not yet closed.",
            [] { return static_cast<double>(g_open.load()); });
    m.sampled_counter("tenancy_http_connections_admitted_total", "Client connections admitted.",
                      [] { return static_cast<double>(g_admitted.load()); });
    const char *refused_help =
        "Client connections refused at once: over --max-connections (503) or over "
        "--max-connections-per-peer (429).";
    m.sampled_counter("tenancy_http_connections_refused_total{reason=\"limit\"}", refused_help,
                      [] { return static_cast<double>(g_refused_limit.load()); });
    m.sampled_counter("tenancy_http_connections_refused_total{reason=\"peer\"}", refused_help,
                      [] { return static_cast<double>(g_refused_peer.load()); });
    m.gauge("tenancy_http_worker_threads", "HTTP worker threads running (idle or busy).",
            [] { return static_cast<double>(g_worker_threads.load()); });
    m.gauge("tenancy_http_worker_threads_busy", "HTTP worker threads serving a connection.",
            [] { return static_cast<double>(g_busy_threads.load()); });
}

bool request_read_timed_out() {
    return t_stream != nullptr && t_stream->timed_out();
}

LimitedServer::LimitedServer(ConnectionLimits limits)
    : limits_(limits), peers_(limits.max_connections_per_peer) {
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    // Up to the connection limit, plus a reserve so that refusing is never
    // queued behind admitted connections.
    const size_t min_threads = static_cast<size_t>(std::max(1, limits.min_threads));
    const size_t max_threads = static_cast<size_t>(limits.max_connections) + 16 +
                               static_cast<size_t>(limits.max_connections) / 16;
    new_task_queue = [min_threads, max_threads] {
        return new WorkerPool(min_threads, max_threads);
    };
    // cpp-httplib puts this in its Keep-Alive header; the idle wait below
    // uses the milliseconds.
    set_keep_alive_timeout(std::max<time_t>(1, limits.keep_alive_timeout.count() / 1000));
}

LimitedServer::~LimitedServer() {
    if (stop_fd_ >= 0)
        ::close(stop_fd_);
}

void LimitedServer::use_tls(std::shared_ptr<TlsContext> tls) {
    // OpenSSL writes to the socket with write(2), which raises SIGPIPE when
    // the client has gone; the default action would end the process.
    ::signal(SIGPIPE, SIG_IGN);
    tls_ = std::move(tls);
}

void LimitedServer::raise_backlog() {
    socket_t sock = svr_sock_;
    if (sock != INVALID_SOCKET)
        ::listen(sock, SOMAXCONN);  // Linux changes the backlog of a listening socket
}

void LimitedServer::wake_idle() {
    if (stop_fd_ >= 0) {
        uint64_t one = 1;
        (void)!::write(stop_fd_, &one, sizeof(one));
    }
}

// What cpp-httplib's own version does (keep-alive loop, then shutdown and
// close), with admission, TLS, the request deadline and the idle timeout.
bool LimitedServer::process_and_close_socket(socket_t sock) {
    std::string peer;
    int peer_port = 0;
    address_of(sock, true, peer, peer_port);
    Transport t(sock, tls_ ? tls_->get() : nullptr);
    // Closed however serving ends (cpp-httplib may let an exception out).
    struct Closer {
        Transport &t;
        ~Closer() {
            t.close_notify();
            ::shutdown(t.socket(), SHUT_RDWR);
            ::close(t.socket());
        }
    } closer{t};

    if (!peers_.acquire(peer)) {
        ++g_refused_peer;
        refuse_connection(t, peer, 429, limits_.max_connections_per_peer);
        return false;
    }
    struct PeerSlot {
        PeerCounter &peers;
        const std::string &peer;
        ~PeerSlot() { peers.release(peer); }
    } peer_slot{peers_, peer};
    if (open_.fetch_add(1) >= limits_.max_connections) {
        --open_;
        ++g_refused_limit;
        refuse_connection(t, peer, 503, limits_.max_connections);
        return false;
    }
    struct OpenSlot {
        std::atomic<int> &open;
        explicit OpenSlot(std::atomic<int> &o) : open(o) {
            ++g_open;
            ++g_admitted;
        }
        ~OpenSlot() {
            --open;
            --g_open;
        }
    } open_slot(open_);

    if (!t.handshake(Clock::now() + limits_.request_read_timeout))
        return false;

    DeadlineStream strm(t, to_ms(read_timeout_sec_, read_timeout_usec_),
                        to_ms(write_timeout_sec_, write_timeout_usec_));
    // For the error handler (request_read_timed_out), while this runs.
    struct Current {
        explicit Current(const DeadlineStream *s) { t_stream = s; }
        ~Current() { t_stream = nullptr; }
    } current(&strm);
    bool ret = false;
    for (size_t left = keep_alive_max_count_; left > 0; --left) {
        // Wait for the next request's first byte: an idle connection closes
        // after the keep-alive timeout, or at once when the server stops.
        if (svr_sock_ == INVALID_SOCKET)
            break;
        if (!strm.has_input()) {
            pollfd fds[2] = {{sock, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
            const auto idle_until = Clock::now() + limits_.keep_alive_timeout;
            int ready = 0;
            for (;;) {
                ready = ::poll(fds, stop_fd_ >= 0 ? 2 : 1,
                               static_cast<int>(left_until(idle_until).count()));
                if (ready < 0 && errno == EINTR)
                    continue;
                break;
            }
            if (ready <= 0 || (fds[0].revents & POLLNVAL) || svr_sock_ == INVALID_SOCKET ||
                !(fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
                break;
        }
        strm.start_request(limits_.request_read_timeout);
        bool connection_closed = false;
        ret = process_request(strm, left == 1, connection_closed, nullptr);
        if (!ret || connection_closed || strm.timed_out())
            break;
    }
    return ret;
}

}  // namespace tenancy::gateway
