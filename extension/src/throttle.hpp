// Login throttling in shared memory (throttle.cpp).
#pragma once

namespace tenancy {

// Called from _PG_init: when loaded from shared_preload_libraries, requests
// the shared failure table. Otherwise the SQL counter is the only one.
void throttle_init();

}  // namespace tenancy
