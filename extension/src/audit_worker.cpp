// The audit sealer background workers (when tenancy is in
// shared_preload_libraries).
//
//   launcher      one static worker, connected to no database (it reads the
//                 shared catalog pg_database). Every second, and whenever one
//                 of its workers stops, it makes sure each database listed in
//                 tenancy.audit_databases has a sealer running, and each
//                 database with queued failed logins (login_queue.cpp) a
//                 login audit writer. A listed database that does not exist,
//                 or takes no connections, is reported once (until it appears
//                 or the configuration is reloaded) and gets no worker, so no
//                 FATAL line a second fills the log. A worker that stops at
//                 once (extension broken, connection refused) is retried after
//                 1 s, then 2, 4, ... up to 5 min, reported once per streak;
//                 a reload, or a database created again, retries at once.
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
#include "login_queue.hpp"

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
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
#include "utils/memutils.h"
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
constexpr long kFirstRetryMs = 1000;
constexpr long kMaxRetryMs = 5 * 60 * 1000;
constexpr long kRestartGapMs = 500;
constexpr long kNoSlotRetryMs = 5000;
// A round this large means a backlog (writers outpaced the sealer): the
// next round follows after a quarter interval.
constexpr int64 kBacklogRound = 20000;  // entries

// A worker the launcher keeps running: a sealer (by database name) or a
// login audit writer (by database oid).
struct WorkerSlot {
    char dbname[NAMEDATALEN];
    Oid dboid;
    BackgroundWorkerHandle *handle;
    TimestampTz started_at;
    TimestampTz retry_at;
    long backoff_ms;  // 0: the last one did not fail at once
    bool reported;    // the current trouble is in the log already
};

WorkerSlot sealers[kMaxDatabases];
int sealer_count = 0;
WorkerSlot writers[kMaxDatabases];

// pg_database as of the launcher's round: name, oid, connections allowed.
struct DatabaseRow {
    NameData name;
    Oid oid;
    bool allowconn;
};
DatabaseRow *databases = nullptr;
int database_count = 0;
int database_capacity = 0;

void read_databases() {
    database_count = 0;
    StartTransactionCommand();
    (void)GetTransactionSnapshot();
    Relation rel = table_open(DatabaseRelationId, AccessShareLock);
    TableScanDesc scan = table_beginscan_catalog(rel, 0, NULL);
    HeapTuple tup;
    while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection))) {
        auto *row = reinterpret_cast<Form_pg_database>(GETSTRUCT(tup));
        if (database_count == database_capacity) {
            int capacity = database_capacity == 0 ? 16 : 2 * database_capacity;
            auto *grown = static_cast<DatabaseRow *>(
                MemoryContextAlloc(TopMemoryContext, sizeof(DatabaseRow) * capacity));
            if (database_count > 0)
                memcpy(grown, databases, sizeof(DatabaseRow) * database_count);
            if (databases != nullptr)
                pfree(databases);
            databases = grown;
            database_capacity = capacity;
        }
        DatabaseRow *d = &databases[database_count++];
        d->name = row->datname;
        d->oid = row->oid;
        d->allowconn = row->datallowconn;
    }
    table_endscan(scan);
    table_close(rel, AccessShareLock);
    CommitTransactionCommand();
}

const DatabaseRow *database_named(const char *dbname) {
    for (int i = 0; i < database_count; i++)
        if (strcmp(NameStr(databases[i].name), dbname) == 0)
            return &databases[i];
    return nullptr;
}

const DatabaseRow *database_with_oid(Oid oid) {
    for (int i = 0; i < database_count; i++)
        if (databases[i].oid == oid)
            return &databases[i];
    return nullptr;
}

WorkerSlot *sealer_slot(const char *dbname) {
    for (int i = 0; i < sealer_count; i++)
        if (strcmp(sealers[i].dbname, dbname) == 0)
            return &sealers[i];
    if (sealer_count == kMaxDatabases)
        return nullptr;
    WorkerSlot *s = &sealers[sealer_count++];
    memset(s, 0, sizeof *s);
    strlcpy(s->dbname, dbname, NAMEDATALEN);
    return s;
}

WorkerSlot *writer_slot(Oid dboid) {
    WorkerSlot *free_slot = nullptr;
    for (WorkerSlot &w : writers) {
        if (w.dboid == dboid)
            return &w;
        if (w.dboid == InvalidOid && free_slot == nullptr)
            free_slot = &w;
    }
    if (free_slot != nullptr) {
        memset(free_slot, 0, sizeof *free_slot);
        free_slot->dboid = dboid;
    }
    return free_slot;
}

void start_worker(WorkerSlot *s, bool sealer, TimestampTz now) {
    BackgroundWorker worker;
    memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    strlcpy(worker.bgw_library_name, "tenancy", BGW_MAXLEN);
    if (sealer) {
        strlcpy(worker.bgw_function_name, "tenancy_audit_sealer_main", BGW_MAXLEN);
        snprintf(worker.bgw_name, BGW_MAXLEN, "tenancy audit sealer %s", s->dbname);
        strlcpy(worker.bgw_type, "tenancy audit sealer", BGW_MAXLEN);
        strlcpy(worker.bgw_extra, s->dbname, BGW_EXTRALEN);
    } else {
        strlcpy(worker.bgw_function_name, "tenancy_login_audit_writer_main", BGW_MAXLEN);
        snprintf(worker.bgw_name, BGW_MAXLEN, "tenancy login audit writer %s", s->dbname);
        strlcpy(worker.bgw_type, "tenancy login audit writer", BGW_MAXLEN);
        worker.bgw_main_arg = ObjectIdGetDatum(s->dboid);
    }
    worker.bgw_notify_pid = MyProcPid;
    if (RegisterDynamicBackgroundWorker(&worker, &s->handle)) {
        s->started_at = now;
    } else {
        s->handle = nullptr;
        s->retry_at = TimestampTzPlusMilliseconds(now, kNoSlotRetryMs);
        ereport(LOG, (errmsg("tenancy: no background worker slot for the %s of database \"%s\"",
                             sealer ? "audit sealer" : "login audit writer", s->dbname),
                      errhint("Raise max_worker_processes.")));
    }
}

// Has the slot's worker stopped? Then sets when the next may start: a worker
// that stopped well before its idle time failed (backoff, doubled each time
// and reported once); one that lived past its lifetime is replaced at once;
// one that stopped idle after a short gap (in which a DROP DATABASE, polling
// for other sessions every 100 ms, finds the database free).
bool reap(WorkerSlot *s, bool sealer, TimestampTz now) {
    if (s->handle == nullptr)
        return true;
    pid_t pid;
    if (GetBackgroundWorkerPid(s->handle, &pid) != BGWH_STOPPED)
        return false;
    pfree(s->handle);
    s->handle = nullptr;
    if (!TimestampDifferenceExceeds(s->started_at, now, kSealerIdleExitMs - 500)) {
        s->backoff_ms = s->backoff_ms == 0
                            ? kFirstRetryMs
                            : (s->backoff_ms * 2 > kMaxRetryMs ? kMaxRetryMs : s->backoff_ms * 2);
        s->retry_at = TimestampTzPlusMilliseconds(now, s->backoff_ms);
        if (!s->reported)
            ereport(LOG,
                    (errmsg("tenancy: the %s of database \"%s\" stopped at once; retrying after "
                            "1 s, then twice as long each time up to 5 min",
                            sealer ? "audit sealer" : "login audit writer", s->dbname),
                     errhint("Its own log line above says why; a configuration reload retries "
                             "at once.")));
        s->reported = true;
        return true;
    }
    s->backoff_ms = 0;
    s->reported = false;
    if (TimestampDifferenceExceeds(s->started_at, now, kSealerMaxLifetimeMs))
        s->retry_at = now;
    else
        s->retry_at = TimestampTzPlusMilliseconds(now, sealer ? kRestartGapMs : 0);
    return true;
}

// After a reload: every trouble is retried (and reported again) at once.
void reset_backoff() {
    for (int i = 0; i < sealer_count; i++) {
        sealers[i].backoff_ms = 0;
        sealers[i].retry_at = 0;
        sealers[i].reported = false;
    }
    for (WorkerSlot &w : writers) {
        w.backoff_ms = 0;
        w.retry_at = 0;
        w.reported = false;
    }
}

// Until the launcher's next round: a second, or less when a worker is due
// to be started again sooner (a stopping worker wakes the launcher through
// bgw_notify_pid; the restart it schedules must not wait for the next second).
long next_launcher_wait_ms() {
    TimestampTz now = GetCurrentTimestamp();
    long wait_ms = 1000;
    auto consider = [&](const WorkerSlot &s) {
        if (s.handle != nullptr || s.retry_at <= now)
            return;
        long until = static_cast<long>((s.retry_at - now + 999) / 1000);
        if (until < wait_ms)
            wait_ms = until;
    };
    for (int i = 0; i < sealer_count; i++)
        consider(sealers[i]);
    for (const WorkerSlot &w : writers)
        if (w.dboid != InvalidOid)
            consider(w);
    return wait_ms < 1 ? 1 : wait_ms;
}

void seal_round(TimestampTz now) {
    char *list = pstrdup(audit_databases ? audit_databases : "");
    List *names = NIL;
    if (!SplitIdentifierString(list, ',', &names)) {
        ereport(LOG, (errmsg("tenancy: tenancy.audit_databases is not a list of database names")));
        names = NIL;
    }
    ListCell *lc;
    foreach (lc, names) {
        const char *dbname = static_cast<const char *>(lfirst(lc));
        WorkerSlot *s = sealer_slot(dbname);
        if (s == nullptr)
            break;
        if (!reap(s, true, now))
            continue;
        const DatabaseRow *d = database_named(dbname);
        if (d == nullptr || !d->allowconn) {
            // No worker that would only log FATAL; checked again every round
            // (a catalog read), so it starts as soon as the database appears.
            if (!s->reported)
                ereport(LOG, (errmsg(d == nullptr ? "tenancy: database \"%s\" in "
                                                    "tenancy.audit_databases does not exist; its "
                                                    "sealer starts once it is created"
                                                  : "tenancy: database \"%s\" in "
                                                    "tenancy.audit_databases does not allow "
                                                    "connections; it is not sealed",
                                     dbname)));
            s->reported = true;
            s->dboid = InvalidOid;
            s->backoff_ms = 0;
            s->retry_at = 0;
            continue;
        }
        if (s->dboid != d->oid) {  // appeared, or created again: a fresh start
            if (s->dboid == InvalidOid)
                s->reported = false;
            s->dboid = d->oid;
            s->backoff_ms = 0;
            s->retry_at = 0;
        }
        if (now >= s->retry_at)
            start_worker(s, true, now);
    }
    list_free(names);
    pfree(list);
}

void writer_round(TimestampTz now) {
    Oid pending[kMaxDatabases];
    int n = tenancy::login_queue_databases(pending, kMaxDatabases);
    for (WorkerSlot &w : writers)  // slots of databases with nothing queued
        if (w.dboid != InvalidOid && reap(&w, false, now)) {
            bool queued = false;
            for (int i = 0; i < n; i++)
                queued = queued || pending[i] == w.dboid;
            if (!queued)
                w.dboid = InvalidOid;
        }
    for (int i = 0; i < n; i++) {
        const DatabaseRow *d = database_with_oid(pending[i]);
        if (d == nullptr) {
            int dropped = tenancy::login_queue_discard(pending[i]);
            ereport(LOG, (errmsg("tenancy: dropped %d failed-login records of database %u, which "
                                 "no longer exists",
                                 dropped, pending[i])));
            continue;
        }
        WorkerSlot *w = writer_slot(pending[i]);
        if (w == nullptr || !reap(w, false, now))
            continue;
        strlcpy(w->dbname, NameStr(d->name), NAMEDATALEN);
        if (now >= w->retry_at)
            start_worker(w, false, now);
    }
}

void launcher_round() {
    TimestampTz now = GetCurrentTimestamp();
    read_databases();
    seal_round(now);
    writer_round(now);
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
    // Connected to no database: reads the shared catalog pg_database.
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
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
    BackgroundWorkerInitializeConnection(NULL, NULL, 0);
    while (!ShutdownRequestPending) {
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
            reset_backoff();
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
