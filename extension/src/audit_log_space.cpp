// Free pages for the audit log, added ahead of the writers by the sealer.
//
// Every audited write appends a ~250-byte row to tenancy.audit_log. With many
// writers, PostgreSQL 15 adds heap pages one 8 kB write at a time under the
// relation's extension lock, and at 8 clients on 2 cores the waits for that
// lock were the largest lock wait of the audited workload (bench/RESULTS.md).
// The sealer knows how many entries the last round sealed; after each round
// it keeps about two rounds' worth of empty pages recorded in the free space
// map, where a writer whose page is full finds one without the lock. This is
// what hio.c's RelationAddExtraBlocks does for waiters, done before anyone
// waits. Extended pages are all zeros (PageIsNew): a writer initialises one
// when it takes it, VACUUM one it never took; nothing here is WAL-logged, as
// in hio.c.
//
// C-style on purpose: every call here may ereport, so no C++ object with a
// destructor lives in these frames.
#include "audit.hpp"

extern "C" {
#include "postgres.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/freespace.h"
#include "storage/lmgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
}

namespace {

// The most pages kept ahead, below VACUUM's 1,000-page truncation threshold.
constexpr int kMaxPool = tenancy::kAuditLogPoolPages;
constexpr int64 kEntryBytes = 300;  // an entry's heap footprint, rounded up
constexpr int kMaxExtendPerRound = 256;

// Pages this sealer added and no writer has taken yet (still recorded as
// empty in the free space map). Per sealer process; a new sealer starts with
// none and adds at most one round's worth.
BlockNumber pool[kMaxPool];
int pool_size = 0;
Oid pool_relid = InvalidOid;

}  // namespace

namespace tenancy {

void audit_log_preextend(std::int64_t sealed_last_round) {
    if (sealed_last_round <= 0)
        return;
    Oid nsp = get_namespace_oid("tenancy", true);
    Oid relid = OidIsValid(nsp) ? get_relname_relid("audit_log", nsp) : InvalidOid;
    if (!OidIsValid(relid))
        return;
    if (relid != pool_relid) {
        pool_size = 0;
        pool_relid = relid;
    }
    Relation rel = table_open(relid, RowExclusiveLock);
    // Drop the pages writers have taken since (their free space went down).
    const Size empty = BLCKSZ - SizeOfPageHeaderData;
    BlockNumber nblocks = RelationGetNumberOfBlocks(rel);
    int kept = 0;
    for (int i = 0; i < pool_size; i++)
        if (pool[i] < nblocks && GetRecordedFreeSpace(rel, pool[i]) >= empty / 2)
            pool[kept++] = pool[i];
    pool_size = kept;
    int64 want = 2 * sealed_last_round * kEntryBytes / BLCKSZ + 1;
    if (want > kMaxPool)
        want = kMaxPool;
    int add = static_cast<int>(want) - pool_size;
    if (add > kMaxExtendPerRound)
        add = kMaxExtendPerRound;
    // Only when no writer is extending: never make one wait for us.
    if (add > 0 && ConditionalLockRelationForExtension(rel, ExclusiveLock)) {
        BlockNumber first = InvalidBlockNumber, last = InvalidBlockNumber;
        for (int i = 0; i < add; i++) {
            Buffer buf = ReadBufferExtended(rel, MAIN_FORKNUM, P_NEW, RBM_ZERO_AND_LOCK, NULL);
            BlockNumber blk = BufferGetBlockNumber(buf);
            UnlockReleaseBuffer(buf);
            pool[pool_size++] = blk;
            if (first == InvalidBlockNumber)
                first = blk;
            last = blk;
        }
        UnlockRelationForExtension(rel, ExclusiveLock);
        for (int i = pool_size - add; i < pool_size; i++)
            RecordPageWithFreeSpace(rel, pool[i], empty);
        FreeSpaceMapVacuumRange(rel, first, last + 1);
    }
    table_close(rel, RowExclusiveLock);
}

}  // namespace tenancy
