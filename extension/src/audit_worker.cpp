// The audit sealer background workers (when tenancy is in
// shared_preload_libraries).
//
//   launcher      one static worker, connected to no database. Every second,
//                 and whenever one of its sealers stops, it makes sure each
//                 database listed in tenancy.audit_databases has a sealer
//                 running, backing off 5 s after a sealer that failed quickly
//                 (no such database, extension broken).
//   sealer        one dynamic worker per database: calls tenancy.audit_seal()
//                 every tenancy.audit_seal_interval (200 ms, from the start
//                 of one round to the next), or after a quarter of it
//                 following a round of a backlog (20,000 entries or more),
//                 each in its own short transaction (asynchronous
//                 commit), skipping databases without the extension. It
//                 exits when its database leaves tenancy.audit_databases
//                 (on reload); after 60 s, at the first round that finds
//                 nothing (the launcher replaces it at once); and once 1 s
//                 has passed without a round that sealed anything (the
//                 launcher starts the next one 0.5 s later): a database
//                 whose writers stopped is free within about a second plus
//                 the last round, so DROP DATABASE (which waits 5 s for
//                 other sessions) succeeds, while a busy database does not
//                 pay a new backend's start-up (~25 ms CPU measured) every
//                 few seconds.
//
// This file is C-style code on purpose: every function here may ereport, so no
// C++ object with a destructor lives in any of its frames.
#include "audit.hpp"

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"
}

#include <cstring>

namespace {

char *audit_databases = nullptr;
int seal_interval_ms = 200;

constexpr int kMaxDatabases = 16;
constexpr long kSealerIdleExitMs = 1000;
constexpr long kSealerMaxLifetimeMs = 60000;
constexpr long kRetryDelayMs = 5000;
constexpr long kRestartGapMs = 500;
// A round this large means a backlog (writers outpaced the sealer): the
// next round follows after a quarter interval.
constexpr int64 kBacklogRound = 20000;  // entries

struct SealerSlot {
    char dbname[NAMEDATALEN];
    BackgroundWorkerHandle *handle;
    TimestampTz started_at;
    TimestampTz retry_at;
};

SealerSlot slots[kMaxDatabases];
int slot_count = 0;

SealerSlot *slot_for(const char *dbname) {
    for (int i = 0; i < slot_count; i++)
        if (strcmp(slots[i].dbname, dbname) == 0)
            return &slots[i];
    if (slot_count == kMaxDatabases)
        return nullptr;
    SealerSlot *s = &slots[slot_count++];
    memset(s, 0, sizeof *s);
    strlcpy(s->dbname, dbname, NAMEDATALEN);
    return s;
}

void start_sealer(SealerSlot *s, TimestampTz now) {
    BackgroundWorker worker;
    memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    strlcpy(worker.bgw_library_name, "tenancy", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "tenancy_audit_sealer_main", BGW_MAXLEN);
    snprintf(worker.bgw_name, BGW_MAXLEN, "tenancy audit sealer %s", s->dbname);
    strlcpy(worker.bgw_type, "tenancy audit sealer", BGW_MAXLEN);
    strlcpy(worker.bgw_extra, s->dbname, BGW_EXTRALEN);
    worker.bgw_notify_pid = MyProcPid;
    if (RegisterDynamicBackgroundWorker(&worker, &s->handle)) {
        s->started_at = now;
    } else {
        s->handle = nullptr;
        s->retry_at = TimestampTzPlusMilliseconds(now, kRetryDelayMs);
        ereport(
            LOG,
            (errmsg("tenancy: no background worker slot for the audit sealer of database \"%s\"",
                    s->dbname),
             errhint("Raise max_worker_processes.")));
    }
}

// Until the launcher's next round: a second, or less when a sealer is due
// to be started again sooner (a stopping sealer wakes the launcher through
// bgw_notify_pid; the restart it schedules must not wait for the next second).
long next_launcher_wait_ms() {
    TimestampTz now = GetCurrentTimestamp();
    long wait_ms = 1000;
    for (int i = 0; i < slot_count; i++) {
        const SealerSlot *s = &slots[i];
        if (s->handle != nullptr || s->retry_at <= now)
            continue;
        long until = static_cast<long>((s->retry_at - now + 999) / 1000);
        if (until < wait_ms)
            wait_ms = until;
    }
    return wait_ms < 1 ? 1 : wait_ms;
}

void launcher_round() {
    TimestampTz now = GetCurrentTimestamp();
    char *list = pstrdup(audit_databases ? audit_databases : "");
    List *names = NIL;
    if (!SplitIdentifierString(list, ',', &names)) {
        ereport(LOG, (errmsg("tenancy: tenancy.audit_databases is not a list of database names")));
        names = NIL;
    }
    ListCell *lc;
    foreach (lc, names) {
        const char *dbname = static_cast<const char *>(lfirst(lc));
        SealerSlot *s = slot_for(dbname);
        if (s == nullptr)
            break;
        if (s->handle != nullptr) {
            pid_t pid;
            if (GetBackgroundWorkerPid(s->handle, &pid) != BGWH_STOPPED)
                continue;
            pfree(s->handle);
            s->handle = nullptr;
            // A sealer that stopped well before its idle time failed: back
            // off. One that lived past its lifetime (renewed at a round that
            // found nothing, or idle after a long busy spell) is replaced at
            // once: writers may be active, and until the new one's first
            // round nothing is sealed (measured, before sealers were renewed
            // only at a quiet round: a 2.4 s gap once a minute put the p99
            // delay of a 75 s run at 1.6 s). One that stopped idle is
            // replaced after a short gap, in which a DROP DATABASE (polling
            // for other sessions every 100 ms) finds the database free.
            if (!TimestampDifferenceExceeds(s->started_at, now, kSealerIdleExitMs - 500))
                s->retry_at = TimestampTzPlusMilliseconds(now, kRetryDelayMs);
            else if (TimestampDifferenceExceeds(s->started_at, now, kSealerMaxLifetimeMs))
                s->retry_at = now;
            else
                s->retry_at = TimestampTzPlusMilliseconds(now, kRestartGapMs);
        }
        if (now >= s->retry_at)
            start_sealer(s, now);
    }
    list_free(names);
    pfree(list);
}

// Is `dbname` still listed in tenancy.audit_databases? (Parsed as the
// launcher parses it, so it compares with the name the launcher passed.)
bool database_listed(const char *dbname) {
    char *list = pstrdup(audit_databases ? audit_databases : "");
    List *names = NIL;
    bool listed = false;
    if (SplitIdentifierString(list, ',', &names)) {
        ListCell *lc;
        foreach (lc, names)
            if (strcmp(static_cast<const char *>(lfirst(lc)), dbname) == 0)
                listed = true;
    }
    list_free(names);
    pfree(list);
    return listed;
}

// One audit_seal() in its own transaction, if the extension is installed;
// returns how many entries it sealed.
int64 seal_once() {
    int64 sealed = 0;
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
    if (OidIsValid(get_extension_oid("tenancy", true))) {
        pgstat_report_activity(STATE_RUNNING, "SELECT tenancy.audit_seal()");
        if (SPI_execute("SELECT tenancy.audit_seal()", false, 0) == SPI_OK_SELECT &&
            SPI_processed == 1) {
            bool isnull = true;
            Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
            sealed = isnull ? 0 : DatumGetInt64(d);
        }
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    // Pages ahead of the writers, in a transaction of their own: nothing
    // there can roll the round back.
    if (sealed > 0) {
        StartTransactionCommand();
        tenancy::audit_log_preextend(sealed);
        CommitTransactionCommand();
    }
    pgstat_report_stat(false);
    pgstat_report_activity(STATE_IDLE, NULL);
    return sealed;
}

}  // namespace

namespace tenancy {

void audit_init() {
    DefineCustomStringVariable(
        "tenancy.audit_databases",
        "Databases whose audit log the background sealer links (comma-separated).",
        "Needs tenancy in shared_preload_libraries; otherwise call tenancy.audit_seal().",
        &audit_databases, "", PGC_SIGHUP, GUC_LIST_INPUT, NULL, NULL, NULL);
    DefineCustomIntVariable("tenancy.audit_seal_interval",
                            "Time between two runs of the audit sealer.", NULL, &seal_interval_ms,
                            200, 10, 60000, PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
    if (!process_shared_preload_libraries_in_progress)
        return;
    BackgroundWorker worker;
    memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = 5;
    strlcpy(worker.bgw_library_name, "tenancy", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "tenancy_audit_launcher_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "tenancy audit launcher", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "tenancy audit launcher", BGW_MAXLEN);
    RegisterBackgroundWorker(&worker);
}

}  // namespace tenancy

extern "C" {

PGDLLEXPORT void tenancy_audit_launcher_main(Datum arg);
PGDLLEXPORT void tenancy_audit_sealer_main(Datum arg);

void tenancy_audit_launcher_main(Datum arg) {
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
    BackgroundWorkerUnblockSignals();
    while (!ShutdownRequestPending) {
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
        launcher_round();
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                        next_launcher_wait_ms(), PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
    proc_exit(0);
}

void tenancy_audit_sealer_main(Datum arg) {
    char dbname[BGW_EXTRALEN];
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    memcpy(dbname, MyBgworkerEntry->bgw_extra, BGW_EXTRALEN);
    dbname[BGW_EXTRALEN - 1] = '\0';
    BackgroundWorkerInitializeConnection(dbname, NULL, 0);
    // A round's commit need not wait for its WAL flush: a round lost in a
    // crash is all or nothing (chain rows, heads and the sealer's snapshot
    // are one transaction) and the next round seals the same entries again.
    // Waiting would put a flush per round next to the writers' own (measured:
    // synchronous_commit on, 1 client, 0.67x of the unaudited rate).
    SetConfigOption("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION);
    TimestampTz started = GetCurrentTimestamp();
    TimestampTz last_sealed = started;
    for (;;) {
        TimestampTz now = GetCurrentTimestamp();
        if (TimestampDifferenceExceeds(last_sealed, now, kSealerIdleExitMs))
            break;
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
            // Taken off the list: stop now, also in the middle of a busy
            // spell (the launcher starts no other).
            if (!database_listed(dbname))
                break;
        }
        // Rounds start one interval apart (the round's own time counts), so
        // an entry waits at most about an interval plus a round. Under steady
        // load rounds stay large: each round costs per main account it
        // touches (a block, a head, its MAC), so many small rounds cost more
        // CPU per entry (measured: rounds every 50 ms sealed ~13 entries per
        // block at ~12 us per entry). Only a backlog shortens the wait.
        TimestampTz round_start = GetCurrentTimestamp();
        int64 sealed = seal_once();
        TimestampTz round_end = GetCurrentTimestamp();
        // The sealer is renewed after its lifetime, but only at a quiet
        // moment (a round that found nothing): between the old one's exit
        // and the new one's first round nothing is sealed, ~1.2 s on busy
        // cores (measured), which no entry should have to wait.
        if (sealed > 0)
            last_sealed = round_end;
        else if (TimestampDifferenceExceeds(started, round_end, kSealerMaxLifetimeMs))
            break;
        long wait_ms = seal_interval_ms;
        if (sealed >= kBacklogRound)
            wait_ms = seal_interval_ms / 4;
        else
            wait_ms -= static_cast<long>((round_end - round_start) / 1000);
        if (wait_ms < 1)
            wait_ms = 1;
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
    proc_exit(0);
}
}
