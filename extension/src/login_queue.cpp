// The failed-login queue: what a failed login wrote in the caller's
// transaction (its login.failure entries, its tenancy.login_failures row),
// kept in shared memory until that transaction ends, and written again by a
// background worker in its own transaction if it did not commit.
//
// Every failed login is queued, together with the (sub)transaction id that
// writes the same rows in line. The "tenancy login audit writer" worker
// (one per database with queued records, started by the launcher in
// audit_worker.cpp) looks at each record once its transaction has ended:
// committed, the rows are there, the record is dropped; aborted (ROLLBACK, an
// error after the call, a savepoint rolled back, a crash of the backend), it
// calls tenancy._login_failure_replay() with the record. So a rollback can
// neither erase the trace of a guess nor its table count. A table row is
// replayed only while the shared throttle entry still holds that failure (a
// success since then cleared it, and must stay cleared).
//
// The queue is a fixed array (kCapacity records) under one LWLock. When it
// is full (transactions held open over thousands of failures), a record is
// not queued and the failure's rows survive only if its transaction commits;
// the server log says so at most once a minute. Needs shared_preload_libraries;
// without it the enqueue functions return NULL. Nothing is queued on a
// standby (nothing can be written there).
//
// The worker half is C-style code: it may ereport, so no C++ object with a
// destructor lives in its frames.
#include "login_queue.hpp"

#include "boundary.hpp"
#include "sha256.hpp"
#include "throttle.hpp"

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

#include <cstdlib>
#include <cstring>

namespace tenancy {
namespace {

constexpr int kCapacity = 2048;  // records, ~700 bytes each
constexpr int kBatch = 64;       // records written per transaction
constexpr const char *kTrancheName = "tenancy_login_queue";
constexpr long kWriterIdleExitMs = 1000;
constexpr long kWriterPollMs = 100;

enum Kind : int32 { kRow = 1, kUserLogin = 2, kSubUserLogin = 3 };

struct Record {
    uint64 seq;  // 0: free slot
    Oid dboid;
    TransactionId xid;  // the (sub)transaction that writes the same rows in line
    TimestampTz at;     // the failure's time (kRow: as in the throttle entry)
    int32 kind;
    int32 recent_failures;  // -1: none
    int64 user_id;          // 0: none
    unsigned char digest[kThrottleDigestSize];
    char key_hash[2 * kSha256Size + 1];
    char reason[32];
    char name[256];       // the login name as the audit log writes it
    char main_name[256];  // sub-user login: the main account email typed
};

struct Queue {
    LWLock *lock;
    uint64 next_seq;
    int used;
    int in_flight;  // taken by a writer, not yet committed (counted as queued)
    TimestampTz full_logged_at;
    Record records[kCapacity];
};

Queue *queue = nullptr;

void copy_text(char *dst, size_t size, const text *t) {
    dst[0] = '\0';
    if (t == nullptr)
        return;
    size_t len = VARSIZE_ANY_EXHDR(t);
    if (len >= size)
        len = size - 1;
    memcpy(dst, VARDATA_ANY(t), len);
    dst[len] = '\0';
}

const text *arg_text(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n))
        return nullptr;
    return reinterpret_cast<const text *>(pg_call([&] { return PG_GETARG_TEXT_PP(n); }));
}

// Queues r (seq assigned here); false when the queue is full.
bool enqueue(Record &r) {
    r.dboid = MyDatabaseId;
    r.xid = pg_call([] { return GetCurrentTransactionId(); });
    return pg_call([&]() -> bool {
        bool queued = false;
        bool report_full = false;
        LWLockAcquire(queue->lock, LW_EXCLUSIVE);
        if (queue->used < kCapacity) {
            for (Record &slot : queue->records)
                if (slot.seq == 0) {
                    r.seq = ++queue->next_seq;
                    slot = r;
                    queue->used++;
                    queued = true;
                    break;
                }
        } else {
            TimestampTz now = GetCurrentTimestamp();
            if (TimestampDifferenceExceeds(queue->full_logged_at, now, 60000)) {
                queue->full_logged_at = now;
                report_full = true;
            }
        }
        LWLockRelease(queue->lock);
        if (report_full)
            ereport(LOG, (errmsg("tenancy: the failed-login queue is full (%d records); a failed "
                                 "login's audit entries and count now survive only if its "
                                 "transaction commits",
                                 kCapacity)));
        return queued;
    });
}

// Queueable here? (preloaded, and not on a standby, where nothing is written)
bool can_queue() {
    return queue != nullptr && !pg_call([] { return RecoveryInProgress(); });
}

}  // namespace

void login_queue_request() {
    RequestAddinShmemSpace(sizeof(Queue));
    RequestNamedLWLockTranche(kTrancheName, 1);
}

void login_queue_startup() {
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    auto *q = static_cast<Queue *>(ShmemInitStruct("tenancy login queue", sizeof(Queue), &found));
    if (!found) {
        memset(q, 0, sizeof(Queue));
        q->lock = &(GetNamedLWLockTranche(kTrancheName))->lock;
    }
    LWLockRelease(AddinShmemInitLock);
    queue = q;
}

int login_queue_databases(Oid *out, int max) {
    if (queue == nullptr)
        return 0;
    int n = 0;
    LWLockAcquire(queue->lock, LW_SHARED);
    for (const Record &r : queue->records) {
        if (r.seq == 0)
            continue;
        bool seen = false;
        for (int i = 0; i < n && !seen; i++)
            seen = out[i] == r.dboid;
        if (!seen && n < max)
            out[n++] = r.dboid;
    }
    LWLockRelease(queue->lock);
    return n;
}

int login_queue_discard(Oid dboid) {
    if (queue == nullptr)
        return 0;
    int n = 0;
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    for (Record &r : queue->records)
        if (r.seq != 0 && r.dboid == dboid) {
            r.seq = 0;
            queue->used--;
            n++;
        }
    LWLockRelease(queue->lock);
    return n;
}

}  // namespace tenancy

// ---- the writer worker (C-style) -------------------------------------------------

namespace {

using tenancy::queue;
using tenancy::Record;

int my_in_flight = 0;  // this writer's share of queue->in_flight

void add_in_flight(int n) {
    LWLockAcquire(queue->lock, LW_EXCLUSIVE);
    queue->in_flight += n;
    LWLockRelease(queue->lock);
    my_in_flight += n;
}

// A writer that dies in the middle of a batch (its records are lost, the
// error says why) must not leave them counted.
void release_in_flight(int code, Datum arg) {
    if (my_in_flight != 0)
        add_in_flight(-my_in_flight);
}

int compare_seq(const void *a, const void *b) {
    uint64 x = static_cast<const Record *>(a)->seq, y = static_cast<const Record *>(b)->seq;
    return x < y ? -1 : x > y ? 1 : 0;
}

// Replays one record through SQL. Caller: in a transaction, SPI connected.
void replay(const Record *r) {
    static const char *kinds[] = {"", "row", "user", "sub_user"};
    Oid types[8] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, INT4OID};
    Datum values[8];
    char nulls[8];
    memset(nulls, ' ', sizeof nulls);
    values[0] = CStringGetTextDatum(kinds[r->kind]);
    values[1] = CStringGetTextDatum(r->key_hash);
    nulls[1] = r->kind == tenancy::kRow ? ' ' : 'n';
    values[2] = TimestampTzGetDatum(r->at);
    values[3] = Int64GetDatum(r->user_id);
    nulls[3] = r->user_id != 0 ? ' ' : 'n';
    values[4] = CStringGetTextDatum(r->name);
    values[5] = CStringGetTextDatum(r->main_name);
    nulls[5] = r->main_name[0] != '\0' ? ' ' : 'n';
    values[6] = CStringGetTextDatum(r->reason);
    values[7] = Int32GetDatum(r->recent_failures);
    nulls[7] = r->recent_failures >= 0 ? ' ' : 'n';
    SPI_execute_with_args("SELECT tenancy._login_failure_replay($1, $2, $3, $4, $5, $6, $7, $8)", 8,
                          types, values, nulls, false, 0);
}

// One pass over this database's records: drops those whose transaction
// committed, replays (in one transaction) those whose transaction did not.
// Returns how many of this database's records are still queued.
int drain() {
    struct Ref {
        int index;
        uint64 seq;
        TransactionId xid;
    };
    Ref refs[tenancy::kBatch];
    int n = 0, mine = 0;
    LWLockAcquire(queue->lock, LW_SHARED);
    for (int i = 0; i < tenancy::kCapacity; i++) {
        const Record &r = queue->records[i];
        if (r.seq == 0 || r.dboid != MyDatabaseId)
            continue;
        mine++;
        if (n < tenancy::kBatch)
            refs[n++] = Ref{i, r.seq, r.xid};
    }
    LWLockRelease(queue->lock);
    if (n == 0)
        return 0;

    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    auto *todo = static_cast<Record *>(palloc(sizeof(Record) * n));
    int m = 0, done = 0;
    for (int k = 0; k < n; k++) {
        // In progress first: a committing transaction is marked in the commit
        // log before it leaves the process array.
        if (TransactionIdIsInProgress(refs[k].xid))
            continue;
        bool committed = TransactionIdDidCommit(refs[k].xid);
        LWLockAcquire(queue->lock, LW_EXCLUSIVE);
        Record &slot = queue->records[refs[k].index];
        if (slot.seq == refs[k].seq) {
            if (!committed)
                todo[m++] = slot;
            slot.seq = 0;
            queue->used--;
            done++;
        }
        LWLockRelease(queue->lock);
    }
    add_in_flight(m);
    if (m > 0) {
        qsort(todo, m, sizeof(Record), compare_seq);
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
        if (OidIsValid(get_extension_oid("tenancy", true))) {
            pgstat_report_activity(STATE_RUNNING, "SELECT tenancy._login_failure_replay(...)");
            // Held to commit: tenancy._throttle_rewind() waits for it, so it
            // shifts either both a row and its shared failure or neither.
            SPI_execute("SELECT pg_advisory_xact_lock(32762622053868409)", false, 0);
            for (int k = 0; k < m; k++)
                if (todo[k].kind != tenancy::kRow ||
                    tenancy::throttle_holds_failure(todo[k].digest, todo[k].at))
                    replay(&todo[k]);
        }
        SPI_finish();
        PopActiveSnapshot();
    }
    pfree(todo);
    CommitTransactionCommand();
    add_in_flight(-m);
    pgstat_report_stat(false);
    pgstat_report_activity(STATE_IDLE, NULL);
    return mine - done;
}

}  // namespace

extern "C" {

// _login_queue_row(login_key): queues the table counter row of a failure
// that _throttle_attempt counted (its time taken from the shared entry).
// NULL without the preload; false when the queue is full.
PG_FUNCTION_INFO_V1(tenancy_login_queue_row);
Datum tenancy_login_queue_row(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        if (!tenancy::can_queue()) {
            fcinfo->isnull = true;
            return (Datum)0;
        }
        const text *key = tenancy::arg_text(fcinfo, 0);
        Record r;
        memset(&r, 0, sizeof r);
        r.kind = tenancy::kRow;
        r.recent_failures = -1;
        unsigned char hash[tenancy::kSha256Size];
        if (!tenancy::throttle_digest(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), r.digest) ||
            !tenancy::sha256(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), hash))
            throw tenancy::SqlError(ERRCODE_INTERNAL_ERROR, "SHA-256 failed");
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < tenancy::kSha256Size; i++) {
            r.key_hash[2 * i] = hex[hash[i] >> 4];
            r.key_hash[2 * i + 1] = hex[hash[i] & 15];
        }
        r.at = tenancy::pg_call([&] { return tenancy::throttle_newest_failure(r.digest); });
        if (r.at == 0)  // not counted in shared memory (rewound meanwhile): nothing to keep
            return BoolGetDatum(false);
        return BoolGetDatum(tenancy::enqueue(r));
    });
}

// _login_queue_audit(kind 'user'|'sub_user', user_id, name, main_name, reason,
// recent_failures): queues a failed login's audit entries.
PG_FUNCTION_INFO_V1(tenancy_login_queue_audit);
Datum tenancy_login_queue_audit(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        if (!tenancy::can_queue()) {
            fcinfo->isnull = true;
            return (Datum)0;
        }
        Record r;
        memset(&r, 0, sizeof r);
        char kind[16];
        tenancy::copy_text(kind, sizeof kind, tenancy::arg_text(fcinfo, 0));
        if (strcmp(kind, "user") == 0)
            r.kind = tenancy::kUserLogin;
        else if (strcmp(kind, "sub_user") == 0)
            r.kind = tenancy::kSubUserLogin;
        else
            throw tenancy::SqlError(ERRCODE_INVALID_PARAMETER_VALUE,
                                    "kind must be user or sub_user");
        r.user_id = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
        tenancy::copy_text(r.name, sizeof r.name, tenancy::arg_text(fcinfo, 2));
        tenancy::copy_text(r.main_name, sizeof r.main_name, tenancy::arg_text(fcinfo, 3));
        tenancy::copy_text(r.reason, sizeof r.reason, tenancy::arg_text(fcinfo, 4));
        r.recent_failures = PG_ARGISNULL(5) ? -1 : PG_GETARG_INT32(5);
        r.at = GetCurrentTimestamp();
        return BoolGetDatum(tenancy::enqueue(r));
    });
}

// _login_queue_length() -> records queued or being written (all databases);
// NULL without the preload. 0: every failure so far is in its table.
PG_FUNCTION_INFO_V1(tenancy_login_queue_length);
Datum tenancy_login_queue_length(PG_FUNCTION_ARGS) {
    if (queue == nullptr)
        PG_RETURN_NULL();
    LWLockAcquire(queue->lock, LW_SHARED);
    int used = queue->used + queue->in_flight;
    LWLockRelease(queue->lock);
    PG_RETURN_INT32(used);
}

PGDLLEXPORT void tenancy_login_audit_writer_main(Datum arg);

// One per database with queued records, started by the launcher; exits a
// second after the database's last record is gone (DROP DATABASE then finds
// it free).
void tenancy_login_audit_writer_main(Datum arg) {
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
    before_shmem_exit(release_in_flight, (Datum)0);
    TimestampTz last_busy = GetCurrentTimestamp();
    for (;;) {
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
        int left = drain();
        TimestampTz now = GetCurrentTimestamp();
        if (left > 0)
            last_busy = now;
        else if (TimestampDifferenceExceeds(last_busy, now, tenancy::kWriterIdleExitMs))
            break;
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                        left > 0 ? tenancy::kWriterPollMs : tenancy::kWriterPollMs * 2,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
    proc_exit(0);
}
}
