// Login throttling in shared memory (throttle.cpp).
#pragma once

extern "C" {
#include "postgres.h"
#include "datatype/timestamp.h"
}

namespace tenancy {

// Called from _PG_init: defines tenancy.login_throttle_entries and, when loaded
// from shared_preload_libraries, requests the shared failure table and the
// failed-login queue (login_queue.cpp). Otherwise the SQL counter is the only one.
void throttle_init();

// Size of a key's digest in the shared table (HMAC-SHA-256 under the salt).
constexpr int kThrottleDigestSize = 32;

// Is the shared table there?
bool throttle_available();

// The salted digest of a login key; false without the table (or if HMAC
// failed). Raises nothing.
bool throttle_digest(const char *key, size_t len, unsigned char *digest);

// The time of the key's newest failure in the window, 0 if none. C-style.
TimestampTz throttle_newest_failure(const unsigned char *digest);

// Does the key's entry still hold a failure recorded at `at` (no success,
// nor a rewind, since)? C-style.
bool throttle_holds_failure(const unsigned char *digest, TimestampTz at);

}  // namespace tenancy
