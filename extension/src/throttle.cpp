// Login throttling in shared memory: a failure counter that no rollback undoes.
//
// The SQL counter (tenancy.login_failures) commits with the caller's
// transaction, so `BEGIN; login() x5; ROLLBACK` used to buy unlimited guesses.
// This table lives in shared memory (requested at shared_preload_libraries
// time), outside any transaction: an attempt counts the moment it starts.
//
// Layout: a set-associative table of kSets x kWays entries. An entry is keyed
// by HMAC-SHA-256(salt, login key) with a random salt drawn at server start, so
// neither emails nor their plain hashes sit in memory and nobody can pick keys
// that crowd one set to evict a victim's entry. An entry keeps the times of its
// last kMaxFailures failures (a ring): the key is throttled while all of them
// lie within the window, exactly the rule of the SQL counter (5 failures within
// 15 minutes lock until the oldest is 15 minutes old). A full set evicts the
// entry whose newest failure is oldest (its window ended longest ago). One
// LWLock guards the table; every operation is a few hundred nanoseconds.
//
// Without shared_preload_libraries there is no table: every function returns
// NULL and the SQL side falls back to the table counter alone.
#include "throttle.hpp"

#include "boundary.hpp"
#include "sha256.hpp"

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "datatype/timestamp.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"
}

#include <cstring>

namespace tenancy {
namespace {

constexpr int kMaxFailures = 5;
constexpr int64 kWindowUsec = int64(15) * 60 * USECS_PER_SEC;
constexpr int kSets = 512;
constexpr int kWays = 16;  // 8192 entries, 72 bytes each: under 600 kB
constexpr size_t kDigestSize = 32;
constexpr const char *kTrancheName = "tenancy_login_throttle";

struct Entry {
    unsigned char digest[kDigestSize];
    TimestampTz failures[kMaxFailures];  // 0: unused slot
};

struct SharedTable {
    LWLock *lock;
    unsigned char salt[32];
    Entry sets[kSets][kWays];
};

SharedTable *table = nullptr;
shmem_request_hook_type previous_shmem_request = nullptr;
shmem_startup_hook_type previous_shmem_startup = nullptr;

void throttle_shmem_request() {
    if (previous_shmem_request)
        previous_shmem_request();
    RequestAddinShmemSpace(sizeof(SharedTable));
    RequestNamedLWLockTranche(kTrancheName, 1);
}

void throttle_shmem_startup() {
    if (previous_shmem_startup)
        previous_shmem_startup();
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    auto *t = static_cast<SharedTable *>(
        ShmemInitStruct("tenancy login throttle", sizeof(SharedTable), &found));
    if (!found) {
        memset(t, 0, sizeof(SharedTable));
        t->lock = &(GetNamedLWLockTranche(kTrancheName))->lock;
        if (!pg_strong_random(t->salt, sizeof(t->salt)))
            elog(FATAL, "tenancy: could not generate the login throttle's salt");
    }
    LWLockRelease(AddinShmemInitLock);
    table = t;
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

// The entry of digest in its set, or (create) a fresh one in place of the
// entry whose last failure is oldest. Caller holds the lock (exclusive to create).
Entry *find_entry(const unsigned char *digest, bool create) {
    uint32 set_index = 0;
    memcpy(&set_index, digest, sizeof(set_index));
    Entry *set = table->sets[set_index % kSets];
    Entry *victim = &set[0];
    TimestampTz victim_newest = newest(set[0]);
    for (int w = 0; w < kWays; ++w) {
        TimestampTz n = newest(set[w]);
        if (n != 0 && memcmp(set[w].digest, digest, kDigestSize) == 0)
            return &set[w];
        if (n < victim_newest) {
            victim = &set[w];
            victim_newest = n;
        }
    }
    if (!create)
        return nullptr;
    memset(victim, 0, sizeof(Entry));
    memcpy(victim->digest, digest, kDigestSize);
    return victim;
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
    static_assert(kDigestSize == kSha256Size);
    if (!hmac_sha256(table->salt, sizeof(table->salt), VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
                     digest))
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
        LWLockAcquire(table->lock, op == Op::Check || op == Op::Count ? LW_SHARED : LW_EXCLUSIVE);
        switch (op) {
            case Op::Attempt: {
                // Check and count in one step: parallel attempts cannot all
                // slip through on the same count.
                Entry *e = find_entry(digest, true);
                if (live_failures(*e, now) >= kMaxFailures) {
                    result = 0;
                } else {
                    record_failure(e, now);
                }
                break;
            }
            case Op::Check: {
                Entry *e = find_entry(digest, false);
                result = e != nullptr && live_failures(*e, now) >= kMaxFailures;
                break;
            }
            case Op::Count: {
                Entry *e = find_entry(digest, false);
                result = e == nullptr ? 0 : live_failures(*e, now);
                break;
            }
            case Op::Success: {
                Entry *e = find_entry(digest, false);
                if (e != nullptr)
                    memset(e, 0, sizeof(Entry));
                break;
            }
        }
        LWLockRelease(table->lock);
        return result;
    });
}

Datum run(FunctionCallInfo fcinfo, Op op) {
    if (table == nullptr) {
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
        LWLockAcquire(table->lock, LW_EXCLUSIVE);
        for (auto &set : table->sets)
            for (Entry &e : set) {
                bool any = false;
                for (TimestampTz &t : e.failures)
                    if (t != 0) {
                        t = t - usec > 1 ? t - usec : 1;
                        any = true;
                    }
                touched += any ? 1 : 0;
            }
        LWLockRelease(table->lock);
        return touched;
    });
}

}  // namespace

void throttle_init() {
    if (!process_shared_preload_libraries_in_progress)
        return;
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
    return BoolGetDatum(tenancy::table != nullptr);
}

// _throttle_rewind(by interval) -> entries touched; NULL without the table.
PG_FUNCTION_INFO_V1(tenancy_throttle_rewind);
Datum tenancy_throttle_rewind(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        if (tenancy::table == nullptr) {
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
