// Module entry points: the magic block PostgreSQL checks when loading
// tenancy.so, and _PG_init for process-wide set-up.
extern "C" {
#include "postgres.h"
#include "fmgr.h"

PG_MODULE_MAGIC;
}
