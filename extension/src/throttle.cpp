// Login throttling in shared memory: a failure counter that no rollback undoes.
//
// The SQL counter (tenancy.login_failures) commits with the caller's
// transaction, so `BEGIN; login() x5; ROLLBACK` used to buy unlimited guesses.
// This table lives in shared memory (requested at shared_preload_libraries
// time), outside any transaction: an attempt counts the moment it starts.
//
// Layout: a shared hash table of at most tenancy.login_throttle_entries
// entries, keyed by HMAC-SHA-256(salt, login key) with a random salt drawn at
// server start, so neither emails nor their plain hashes sit in memory. An
// entry keeps the times of its last kMaxFailures failures (a ring): the key is
// throttled while all of them lie within the window, exactly the rule of the
// SQL counter (5 failures within 15 minutes lock until the oldest is 15
// minutes old).
//
// An entry with a failure inside the window is never evicted: forgetting it
// would lift a lock (20,000 junk names used to push a locked victim out of a
// set-associative table). When the table is full, a new key first sweeps out
// the entries whose window has ended; if none has, the new key is refused as
// if throttled (fail closed) and nothing is counted. The sweep runs at most
// once per freed moment: the table remembers when its earliest live entry
// expires. One LWLock guards the table.
//
// Without shared_preload_libraries there is no table: every function returns
// NULL and the SQL side falls back to the table counter alone.
#include "throttle.hpp"

#include "boundary.hpp"
#include "login_queue.hpp"
#include "sha256.hpp"

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "datatype/timestamp.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
}

#include <cstring>

namespace tenancy {
namespace {

constexpr int kMaxFailures = 5;
constexpr int64 kWindowUsec = int64(15) * 60 * USECS_PER_SEC;
constexpr size_t kDigestSize = kThrottleDigestSize;
constexpr const char *kTrancheName = "tenancy_login_throttle";

int max_entries = 16384;  // tenancy.login_throttle_entries

struct Entry {
    unsigned char digest[kDigestSize];   // hash key: must come first
    TimestampTz failures[kMaxFailures];  // 0: unused slot
};

struct SharedState {
    LWLock *lock;
    unsigned char salt[32];
    // No entry can expire before this: a full table need not be swept sooner.
    TimestampTz next_expiry;
};

SharedState *state = nullptr;
HTAB *entries = nullptr;
shmem_request_hook_type previous_shmem_request = nullptr;
shmem_startup_hook_type previous_shmem_startup = nullptr;

void throttle_shmem_request() {
    if (previous_shmem_request)
        previous_shmem_request();
    RequestAddinShmemSpace(
        add_size(MAXALIGN(sizeof(SharedState)), hash_estimate_size(max_entries, sizeof(Entry))));
    RequestNamedLWLockTranche(kTrancheName, 1);
    login_queue_request();
}

void throttle_shmem_startup() {
    if (previous_shmem_startup)
        previous_shmem_startup();
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    auto *s = static_cast<SharedState *>(
        ShmemInitStruct("tenancy login throttle", sizeof(SharedState), &found));
    if (!found) {
        memset(s, 0, sizeof(SharedState));
        s->lock = &(GetNamedLWLockTranche(kTrancheName))->lock;
        if (!pg_strong_random(s->salt, sizeof(s->salt)))
            elog(FATAL, "tenancy: could not generate the login throttle's salt");
    }
    HASHCTL info;
    memset(&info, 0, sizeof(info));
    info.keysize = kDigestSize;
    info.entrysize = sizeof(Entry);
    // All entries allocated at start: the table never grows into the shared
    // memory other modules count on.
    entries = ShmemInitHash("tenancy login throttle entries", max_entries, max_entries, &info,
                            HASH_ELEM | HASH_BLOBS);
    LWLockRelease(AddinShmemInitLock);
    state = s;
    login_queue_startup();
}

TimestampTz newest(const Entry &e) {
    TimestampTz n = 0;
    for (TimestampTz t : e.failures)
        n = t > n ? t : n;
    return n;
}

int live_failures(const Entry &e, TimestampTz now) {
    int n = 0;
    for (TimestampTz t : e.failures)
        if (t != 0 && t > now - kWindowUsec)
            ++n;
    return n;
}

// Removes every entry whose window has ended; notes when the next one ends.
// Caller holds the lock exclusively.
void sweep(TimestampTz now) {
    HASH_SEQ_STATUS scan;
    hash_seq_init(&scan, entries);
    TimestampTz next = DT_NOEND;
    Entry *e;
    while ((e = static_cast<Entry *>(hash_seq_search(&scan))) != nullptr) {
        TimestampTz n = newest(*e);
        if (n <= now - kWindowUsec) {
            hash_search(entries, e->digest, HASH_REMOVE, nullptr);
        } else if (n + kWindowUsec < next) {
            next = n + kWindowUsec;
        }
    }
    state->next_expiry = next;
}

// The key's entry, or (create) a new one; nullptr when the table is full of
// entries inside their window. Caller holds the lock (exclusive to create).
Entry *find_entry(const unsigned char *digest, bool create, TimestampTz now) {
    auto *e = static_cast<Entry *>(hash_search(entries, digest, HASH_FIND, nullptr));
    if (e != nullptr || !create)
        return e;
    if (hash_get_num_entries(entries) >= max_entries) {
        if (now < state->next_expiry)
            return nullptr;
        sweep(now);
        if (hash_get_num_entries(entries) >= max_entries)
            return nullptr;
    }
    bool found = false;
    e = static_cast<Entry *>(hash_search(entries, digest, HASH_ENTER_NULL, &found));
    if (e != nullptr && !found)
        memset(e->failures, 0, sizeof(e->failures));
    return e;
}

void record_failure(Entry *e, TimestampTz now) {
    int oldest = 0;
    for (int i = 1; i < kMaxFailures; ++i)
        if (e->failures[i] < e->failures[oldest])
            oldest = i;
    e->failures[oldest] = now;
}

// The salted digest of the function's text argument.
void key_digest(FunctionCallInfo fcinfo, unsigned char *digest) {
    auto *key = reinterpret_cast<text *>(pg_call([&] { return PG_GETARG_TEXT_PP(0); }));
    if (!throttle_digest(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), digest))
        throw SqlError(ERRCODE_INTERNAL_ERROR, "HMAC-SHA-256 failed");
}

enum class Op { Attempt, Check, Count, Success };

// Runs op on the key's entry under the lock. No C++ object lives in here, and
// nothing between acquire and release can raise (on an error elsewhere the
// transaction abort releases every LWLock anyway).
int locked_op(Op op, const unsigned char *digest) {
    return pg_call([&]() -> int {
        TimestampTz now = GetCurrentTimestamp();
        int result = 1;
        LWLockAcquire(state->lock, op == Op::Check || op == Op::Count ? LW_SHARED : LW_EXCLUSIVE);
        switch (op) {
            case Op::Attempt: {
                // Check and count in one step: parallel attempts cannot all
                // slip through on the same count. No room: refused (fail closed).
                Entry *e = find_entry(digest, true, now);
                if (e == nullptr || live_failures(*e, now) >= kMaxFailures) {
                    result = 0;
                } else {
                    record_failure(e, now);
                    if (now + kWindowUsec < state->next_expiry)
                        state->next_expiry = now + kWindowUsec;
                }
                break;
            }
            case Op::Check: {
                Entry *e = find_entry(digest, false, now);
                result = e != nullptr && live_failures(*e, now) >= kMaxFailures;
                break;
            }
            case Op::Count: {
                Entry *e = find_entry(digest, false, now);
                result = e == nullptr ? 0 : live_failures(*e, now);
                break;
            }
            case Op::Success: {
                hash_search(entries, digest, HASH_REMOVE, nullptr);
                break;
            }
        }
        LWLockRelease(state->lock);
        return result;
    });
}

Datum run(FunctionCallInfo fcinfo, Op op) {
    if (state == nullptr) {
        fcinfo->isnull = true;
        return (Datum)0;
    }
    unsigned char digest[kDigestSize];
    key_digest(fcinfo, digest);
    int result = locked_op(op, digest);
    return op == Op::Count ? Int32GetDatum(result) : BoolGetDatum(result != 0);
}

// Moves every recorded failure `usec` into the past (tests, and a DBA who
// wants to lift every lock: a day clears the table).
int64 rewind(int64 usec) {
    return pg_call([&]() -> int64 {
        int64 touched = 0;
        LWLockAcquire(state->lock, LW_EXCLUSIVE);
        HASH_SEQ_STATUS scan;
        hash_seq_init(&scan, entries);
        Entry *e;
        while ((e = static_cast<Entry *>(hash_seq_search(&scan))) != nullptr) {
            for (TimestampTz &t : e->failures)
                if (t != 0)
                    t = t - usec > 1 ? t - usec : 1;
            ++touched;
        }
        state->next_expiry = 0;  // the next full moment sweeps
        LWLockRelease(state->lock);
        return touched;
    });
}

}  // namespace

bool throttle_available() {
    return state != nullptr;
}

bool throttle_digest(const char *key, size_t len, unsigned char *digest) {
    static_assert(kDigestSize == kSha256Size);
    return state != nullptr && hmac_sha256(state->salt, sizeof(state->salt), key, len, digest);
}

TimestampTz throttle_newest_failure(const unsigned char *digest) {
    if (state == nullptr)
        return 0;
    TimestampTz n = 0;
    LWLockAcquire(state->lock, LW_SHARED);
    auto *e = static_cast<Entry *>(hash_search(entries, digest, HASH_FIND, nullptr));
    if (e != nullptr)
        n = newest(*e);
    LWLockRelease(state->lock);
    return n;
}

bool throttle_holds_failure(const unsigned char *digest, TimestampTz at) {
    if (state == nullptr || at == 0)
        return false;
    bool holds = false;
    LWLockAcquire(state->lock, LW_SHARED);
    auto *e = static_cast<Entry *>(hash_search(entries, digest, HASH_FIND, nullptr));
    if (e != nullptr)
        for (TimestampTz t : e->failures)
            holds = holds || t == at;
    LWLockRelease(state->lock);
    return holds;
}

void throttle_init() {
    // A PGC_POSTMASTER setting may be defined only while preloading.
    if (!process_shared_preload_libraries_in_progress)
        return;
    DefineCustomIntVariable(
        "tenancy.login_throttle_entries",
        "Login names the shared login throttle can hold (entries inside their window are never "
        "evicted; when full, new names are refused as throttled).",
        NULL, &max_entries, 16384, 64, 16 * 1024 * 1024, PGC_POSTMASTER, 0, NULL, NULL, NULL);
    previous_shmem_request = shmem_request_hook;
    shmem_request_hook = throttle_shmem_request;
    previous_shmem_startup = shmem_startup_hook;
    shmem_startup_hook = throttle_shmem_startup;
}

}  // namespace tenancy

extern "C" {

// _throttle_attempt(key) -> may the attempt go on? Counts it as a failure
// until _throttle_success(key); false (and nothing counted) while throttled.
PG_FUNCTION_INFO_V1(tenancy_throttle_attempt);
Datum tenancy_throttle_attempt(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::run(fcinfo, tenancy::Op::Attempt); });
}

// _throttle_check(key) -> is the key throttled now? (counts nothing)
PG_FUNCTION_INFO_V1(tenancy_throttle_check);
Datum tenancy_throttle_check(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::run(fcinfo, tenancy::Op::Check); });
}

// _throttle_count(key) -> failures within the window (attempts under way included).
PG_FUNCTION_INFO_V1(tenancy_throttle_count);
Datum tenancy_throttle_count(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::run(fcinfo, tenancy::Op::Count); });
}

// _throttle_success(key): forgets the key's failures.
PG_FUNCTION_INFO_V1(tenancy_throttle_success);
Datum tenancy_throttle_success(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::run(fcinfo, tenancy::Op::Success); });
}

PG_FUNCTION_INFO_V1(tenancy_throttle_available);
Datum tenancy_throttle_available(PG_FUNCTION_ARGS) {
    return BoolGetDatum(tenancy::throttle_available());
}

// _throttle_rewind(by interval) -> entries touched; NULL without the table.
PG_FUNCTION_INFO_V1(tenancy_throttle_rewind);
Datum tenancy_throttle_rewind(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        if (!tenancy::throttle_available()) {
            fcinfo->isnull = true;
            return (Datum)0;
        }
        const Interval *by = PG_GETARG_INTERVAL_P(0);
        if (by->month != 0 || by->day < 0 || by->time < 0 || by->day > 3650)
            throw tenancy::SqlError(
                ERRCODE_INVALID_PARAMETER_VALUE,
                "rewind by a non-negative interval of days, hours, minutes or seconds");
        return Int64GetDatum(tenancy::rewind(by->time + int64(by->day) * USECS_PER_DAY));
    });
}
}
