// The emit_log_hook that keeps credentials out of the server log
// (log_scrub_hook.cpp; the scrubbing rules are in log_scrub.cpp).
#pragma once

namespace tenancy {

// Called from _PG_init, before the tenancy.* prefix is reserved: defines
// tenancy.log_scrub and installs the hook in this process (in every backend
// when tenancy is in shared_preload_libraries).
void log_scrub_init();

}  // namespace tenancy
