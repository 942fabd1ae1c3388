// The audit log: row trigger, event writer, chain helpers (audit.cpp) and the
// background sealer (audit_worker.cpp).
#pragma once

#include <cstdint>

extern "C" {
#include "postgres.h"
#include "utils/relcache.h"
}

namespace tenancy {

// Called from _PG_init: defines tenancy.audit_databases and, when loaded from
// shared_preload_libraries, registers the sealer background worker.
void audit_init();

// Called by the sealer after a round (audit_log_space.cpp): keeps about two
// rounds' worth of empty pages in the log's free space map. May ereport; call
// inside a transaction.
void audit_log_preextend(std::int64_t sealed_last_round);
// The most free pages audit_log_preextend keeps ahead of the writers (4 MB).
constexpr int kAuditLogPoolPages = 512;

// Called from _PG_init: installs the ExecutorFinish hook that writes a
// statement's audit entries together (audit.cpp, "statement batches").
void audit_batch_init();

// Errors unless tenancy.audit_log has the columns and types the writer and
// the sealer (audit_seal.cpp) read and form entries by. C-style: may ereport.
void audit_log_check_shape(Relation rel);

}  // namespace tenancy
