// Module entry points: the magic block PostgreSQL checks when loading
// tenancy.so, and _PG_init for process-wide set-up.
#include "audit.hpp"
#include "context.hpp"
#include "log_scrub_hook.hpp"
#include "throttle.hpp"

extern "C" {
#include "postgres.h"
#include "fmgr.h"
}

#include <sodium.h>

extern "C" {

PG_MODULE_MAGIC;

void _PG_init(void);
void _PG_init(void) {
    // libsodium's random generator must be initialised once per process.
    if (sodium_init() < 0)
        elog(FATAL, "tenancy: libsodium failed to initialise");
    // Before context_init(): it reserves the "tenancy." prefix, which would
    // drop a tenancy.audit_* (or login_throttle_*) value read from
    // postgresql.conf before the load.
    tenancy::audit_init();
    tenancy::throttle_init();
    tenancy::audit_batch_init();
    tenancy::log_scrub_init();
    tenancy::context_init();
}
}
