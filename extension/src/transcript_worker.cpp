// The phi redactor: a dynamic background worker, started when PHI protection
// is turned on (tenancy._start_phi_redactor(), called by the settings trigger),
// that re-redacts the stored transcripts by calling tenancy.redact_pending()
// in short transactions until no job is pending. Needs no shared_preload_libraries.
//
// It waits until the transaction that started it has ended (the job rows are
// then visible, or rolled back and gone). One redactor per database at a time:
// a session advisory lock; a worker that cannot take it leaves, and the holder
// looks for pending jobs once more after letting the lock go, so a job queued
// meanwhile is not left behind. A failed round ends the worker; the job stays
// pending for the next start or a DBA's redact_pending().
//
// C-style code on purpose, as in audit_worker.cpp: every function here may
// ereport, so no C++ object with a destructor lives in any of its frames.
extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "access/transam.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"
}

#include <cstring>

namespace {

constexpr int kBatch = 500;
// pg_try_advisory_lock(int4, int4) key of the redactor.
constexpr const char *kLockSql = "SELECT pg_catalog.pg_try_advisory_lock(1952804449, 19)";
constexpr const char *kUnlockSql = "SELECT pg_catalog.pg_advisory_unlock(1952804449, 19)";

// Run one statement returning one value in its own transaction; the value as
// int64 (booleans as 0/1), -1 when the extension is not installed.
int64 run_one(const char *sql, bool need_extension) {
    int64 result = -1;
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
    pgstat_report_activity(STATE_RUNNING, sql);
    bool installed = true;
    if (need_extension) {
        SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'tenancy'", true, 1);
        installed = SPI_processed == 1;
    }
    if (installed && SPI_execute(sql, false, 0) == SPI_OK_SELECT && SPI_processed == 1) {
        bool isnull;
        Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
        Oid type = SPI_gettypeid(SPI_tuptable->tupdesc, 1);
        if (!isnull)
            result = type == BOOLOID ? (DatumGetBool(d) ? 1 : 0) : DatumGetInt32(d);
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    pgstat_report_activity(STATE_IDLE, nullptr);
    return result;
}

bool pending_jobs() {
    return run_one(
               "SELECT EXISTS (SELECT FROM tenancy.phi_redaction_jobs WHERE finished_at IS NULL)",
               true) == 1;
}

}  // namespace

extern "C" {

PGDLLEXPORT void tenancy_phi_redactor_main(Datum main_arg);

void tenancy_phi_redactor_main(Datum main_arg) {
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(main_arg), InvalidOid, 0);
    TransactionId starter;
    memcpy(&starter, MyBgworkerEntry->bgw_extra, sizeof starter);
    while (TransactionIdIsValid(starter) && TransactionIdIsInProgress(starter)) {
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 20,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
    }
    for (;;) {
        if (run_one(kLockSql, false) != 1)
            break;  // another redactor runs: it will see our jobs
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT tenancy.redact_pending(%d)", kBatch);
        for (;;) {
            CHECK_FOR_INTERRUPTS();
            if (run_one(sql, true) <= 0)
                break;
        }
        run_one(kUnlockSql, false);
        if (!pending_jobs())
            break;
    }
    proc_exit(0);
}

// tenancy._start_phi_redactor(): register the worker; false when no worker
// slot is free (the jobs wait for the next start or a DBA).
PG_FUNCTION_INFO_V1(tenancy_start_phi_redactor);
Datum tenancy_start_phi_redactor(PG_FUNCTION_ARGS) {
    BackgroundWorker worker;
    memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    strlcpy(worker.bgw_library_name, "tenancy", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "tenancy_phi_redactor_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "tenancy phi redactor", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "tenancy phi redactor", BGW_MAXLEN);
    worker.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
    TransactionId starter = GetTopTransactionIdIfAny();
    memcpy(worker.bgw_extra, &starter, sizeof starter);
    worker.bgw_notify_pid = 0;
    BackgroundWorkerHandle *handle;
    PG_RETURN_BOOL(RegisterDynamicBackgroundWorker(&worker, &handle));
}
}
