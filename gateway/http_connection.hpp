// Serving one accepted connection: a cap on open connections per peer
// address, and a total deadline on receiving each request.
//
// cpp-httplib 0.11 gives each connection a worker thread for its whole life
// and bounds only each recv (read timeout), so a client sending a header line
// every few seconds holds a worker forever, and twenty such clients starve
// every other request. Server::process_and_close_socket (virtual, called on
// the worker for each accepted socket) is overridden to read through a
// stream that also enforces a deadline over the request's line, headers and
// body, and to refuse a peer's connections beyond the cap at once.
#pragma once

#include <httplib.h>

#include <chrono>
#include <map>
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

struct ConnectionLimits {
    std::chrono::milliseconds request_read_timeout{10000};
    int max_connections_per_peer = 8;
};

class LimitedServer : public httplib::Server {
  public:
    explicit LimitedServer(ConnectionLimits limits)
        : limits_(limits), peers_(limits.max_connections_per_peer) {}

  private:
    bool process_and_close_socket(socket_t sock) override;
    // The keep-alive loop over one admitted connection.
    bool serve(socket_t sock);

    const ConnectionLimits limits_;
    PeerCounter peers_;
};

// Whether the request being answered on this worker thread ran out of its
// read deadline (the error handler then answers 408).
bool request_read_timed_out();

}  // namespace tenancy::gateway
