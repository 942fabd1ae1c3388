// The failed-login queue in shared memory (login_queue.cpp): a failed
// login's audit entries and table counter row, written again by a background
// worker when the caller's transaction does not commit.
#pragma once

extern "C" {
#include "postgres.h"
}

namespace tenancy {

// Shared memory hooks, called from throttle.cpp's (one preload set-up).
void login_queue_request();
void login_queue_startup();

// Launcher (audit_worker.cpp): the databases that have queued records (at
// most max, distinct), and dropping the records of a database that is gone.
// C-style: no allocation, nothing raises.
int login_queue_databases(Oid *out, int max);
int login_queue_discard(Oid dboid);

}  // namespace tenancy
