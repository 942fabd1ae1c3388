// The audit log: row trigger, event writer, chain helpers (audit.cpp) and the
// background sealer (audit_worker.cpp).
#pragma once

namespace tenancy {

// Called from _PG_init: defines tenancy.audit_databases and, when loaded from
// shared_preload_libraries, registers the sealer background worker.
void audit_init();

}  // namespace tenancy
