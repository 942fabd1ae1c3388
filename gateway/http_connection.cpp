// Serving one accepted connection (see http_connection.hpp).
#include "http_connection.hpp"

#include "http_server.hpp"
#include "log.hpp"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace tenancy::gateway {

namespace {

using Clock = std::chrono::steady_clock;

// How often an idle keep-alive connection checks whether the server stops,
// so shutdown does not wait out the keep-alive timeout.
constexpr auto kIdlePollSlice = std::chrono::milliseconds(100);
// Refused connections are logged at most this often (an attack must not
// flood the log).
constexpr auto kRefusalLogEvery = std::chrono::seconds(10);

std::chrono::milliseconds to_ms(time_t sec, time_t usec) {
    return std::chrono::milliseconds(sec * 1000 + usec / 1000);
}

// Waits for events on sock; >0 ready, 0 timed out, <0 error.
int wait_for(socket_t sock, short events, std::chrono::milliseconds timeout) {
    pollfd p{sock, events, 0};
    int ms = static_cast<int>(std::max<long long>(0, timeout.count()));
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

// A socket stream like cpp-httplib's own (buffered reads, each read and write
// bounded by its timeout) whose reads also stop at the current request's
// deadline.
class DeadlineStream : public httplib::Stream {
  public:
    DeadlineStream(socket_t sock, std::chrono::milliseconds read_timeout,
                   std::chrono::milliseconds write_timeout)
        : sock_(sock), read_timeout_(read_timeout), write_timeout_(write_timeout) {}

    // A new request starts now; its line, headers and body must arrive by
    // now + budget.
    void start_request(std::chrono::milliseconds budget) {
        deadline_ = Clock::now() + budget;
        timed_out_ = false;
    }
    // Whether a read of this request ran out of time.
    bool timed_out() const { return timed_out_; }
    bool has_buffered() const { return off_ < size_; }

    bool is_readable() const override {
        return has_buffered() || wait_for(sock_, POLLIN, read_budget()) > 0;
    }
    bool is_writable() const override { return wait_for(sock_, POLLOUT, write_timeout_) > 0; }

    ssize_t read(char *ptr, size_t size) override {
        if (has_buffered()) {
            size_t n = std::min(size, size_ - off_);
            std::memcpy(ptr, buf_.data() + off_, n);
            off_ += n;
            return static_cast<ssize_t>(n);
        }
        // Out of time (the deadline, or the per-read timeout): 408.
        auto budget = read_budget();
        int ready = budget.count() > 0 ? wait_for(sock_, POLLIN, budget) : 0;
        if (ready <= 0) {
            timed_out_ = ready == 0;
            return -1;
        }
        off_ = size_ = 0;
        ssize_t n = recv_some(buf_.data(), buf_.size());
        if (n <= 0)
            return n;
        size_t give = std::min(size, static_cast<size_t>(n));
        std::memcpy(ptr, buf_.data(), give);
        off_ = give;
        size_ = static_cast<size_t>(n);
        return static_cast<ssize_t>(give);
    }

    ssize_t write(const char *ptr, size_t size) override {
        if (!is_writable())
            return -1;
        for (;;) {
            ssize_t n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            return n;
        }
    }

    void get_remote_ip_and_port(std::string &ip, int &port) const override {
        address_of(sock_, true, ip, port);
    }
    void get_local_ip_and_port(std::string &ip, int &port) const override {
        address_of(sock_, false, ip, port);
    }
    socket_t socket() const override { return sock_; }

  private:
    // What one wait for input may take: the per-read timeout, cut short by
    // the request's deadline.
    std::chrono::milliseconds read_budget() const {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
        return std::min(read_timeout_, left);
    }

    ssize_t recv_some(char *ptr, size_t size) {
        for (;;) {
            ssize_t n = ::recv(sock_, ptr, size, 0);
            if (n < 0 && errno == EINTR)
                continue;
            return n;
        }
    }

    socket_t sock_;
    std::chrono::milliseconds read_timeout_, write_timeout_;
    Clock::time_point deadline_ = Clock::time_point::max();
    bool timed_out_ = false;
    std::array<char, 4096> buf_{};
    size_t off_ = 0, size_ = 0;
};

thread_local const DeadlineStream *t_stream = nullptr;

// A peer over the cap gets a complete 429 in one non-blocking send (its
// request is never read), then the connection closes.
void refuse_connection(socket_t sock, const std::string &peer, int max) {
    std::string id = new_request_id();
    std::string body =
        problem_json(problem_for_status(429, "at most " + std::to_string(max) +
                                                 " open connections per client address"),
                     id)
            .dump() +
        "\n";
    std::string answer =
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: " + std::string(kProblemContentType) +
        "\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\nCache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n" +
        kRequestIdHeader + ": " + id + "\r\n\r\n" + body;
    (void)::send(sock, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    // Closing with unread input would reset the connection, and the client
    // could lose the answer: end our side, then discard what has arrived.
    ::shutdown(sock, SHUT_WR);
    std::array<char, 4096> discard{};
    for (int i = 0; i < 16 && ::recv(sock, discard.data(), discard.size(), MSG_DONTWAIT) > 0; ++i) {
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
        log_event("warn", "too many connections from one address, refused",
                  {{"remote", peer}, {"limit", max}, {"refused", refused.exchange(0)}});
}

}  // namespace

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

bool request_read_timed_out() {
    return t_stream != nullptr && t_stream->timed_out();
}

// What cpp-httplib's own version does (keep-alive loop, then shutdown and
// close), with the per-peer cap and the request deadline added.
bool LimitedServer::process_and_close_socket(socket_t sock) {
    std::string peer;
    int peer_port = 0;
    address_of(sock, true, peer, peer_port);
    bool ret = false;
    if (!peers_.acquire(peer)) {
        refuse_connection(sock, peer, limits_.max_connections_per_peer);
    } else {
        // Released however serving ends (cpp-httplib may let an exception out).
        struct Slot {
            PeerCounter &peers;
            const std::string &peer;
            ~Slot() { peers.release(peer); }
        } slot{peers_, peer};
        ret = serve(sock);
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ret;
}

bool LimitedServer::serve(socket_t sock) {
    DeadlineStream strm(sock, to_ms(read_timeout_sec_, read_timeout_usec_),
                        to_ms(write_timeout_sec_, write_timeout_usec_));
    // For the error handler (request_read_timed_out), while this runs.
    struct Current {
        explicit Current(const DeadlineStream *s) { t_stream = s; }
        ~Current() { t_stream = nullptr; }
    } current(&strm);
    const auto keep_alive = std::chrono::seconds(keep_alive_timeout_sec_);
    bool ret = false;
    for (size_t left = keep_alive_max_count_; left > 0; --left) {
        // Wait for the next request's first byte (an idle connection closes
        // after the keep-alive timeout, or when the server stops).
        const auto idle_until = Clock::now() + keep_alive;
        int ready = strm.has_buffered() ? 1 : 0;
        while (ready == 0 && svr_sock_ != INVALID_SOCKET && Clock::now() < idle_until) {
            auto left_ms =
                std::chrono::duration_cast<std::chrono::milliseconds>(idle_until - Clock::now());
            ready = wait_for(sock, POLLIN,
                             std::min<std::chrono::milliseconds>(
                                 kIdlePollSlice, left_ms + std::chrono::milliseconds(1)));
        }
        if (ready <= 0 || svr_sock_ == INVALID_SOCKET)
            break;
        strm.start_request(limits_.request_read_timeout);
        bool connection_closed = false;
        ret = process_request(strm, left == 1, connection_closed, nullptr);
        if (!ret || connection_closed || strm.timed_out())
            break;
    }
    return ret;
}

}  // namespace tenancy::gateway
