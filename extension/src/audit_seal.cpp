// The sealer's round in C: tenancy._audit_seal_blocks(lower_xid, prev, cur,
// sealed_at) finds the entries to link, digests them and returns the chain
// blocks; audit_seal() (401_audit_seal.sql) holds the sealers' lock, keeps the
// snapshot bookkeeping and writes the blocks and moved heads in one
// statement.
//
// Why C: the same round as one SQL statement (an index range, a per-row
// function, a sort, array and string aggregates, window functions for the
// chain) cost ~4-10 us of CPU per entry under load, the digest itself ~1 us.
// Here the round asks the log's BRIN index on xid for the pages that may hold
// entries of writers new this round, reads those pages in heap order, tests
// each entry's writer against the two snapshots from its xid column before
// anything else, digests the new ones in a per-entry memory context, sorts
// narrow 64-byte records and hashes the blocks. Each block also records
// where its entries are (their TIDs): the readers' way to them, since the
// log has no index a lookup by (xid, id) could use cheaply.
//
// Boundary: everything below runs inside one pg_call and is C-style code
// (no C++ object with a destructor): any of it may ereport.
#include "audit.hpp"
#include "audit_digest.hpp"
#include "boundary.hpp"
#include "citus_binding.hpp"
#include "sha256.hpp"

extern "C" {
#include "access/brin.h"
#include "access/brin_revmap.h"
#include "access/brin_tuple.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/tidbitmap.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"
}

#include <algorithm>
#include <cstring>

namespace tenancy {
namespace {

constexpr size_t kHashSize = kSha256Size;
// A main account's entries of one round are split into blocks of at most
// this many (a block row stays well under a megabyte).
constexpr int64 kBlockEntries = 4096;

// Log columns (0-based, as tenancy.audit_log is created; the writer checks
// the same shape): main_id, id, xid, account_path, at, ...
constexpr int kLogMainId = 0;
constexpr int kLogId = 1;
constexpr int kLogXid = 2;
// The entry digest covers every column but xid, in column order.
constexpr int kDigestColumns[audit_digest::kEntryFields] = {0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11};

struct NewEntry {
    int64 main_id;
    int64 xid;
    int64 id;
    ItemPointerData tid;  // where the entry is: the readers' way to it
    unsigned char digest[kHashSize];
};

struct Head {
    int64 main_id;
    int64 last_pos;
    unsigned char last_hash[kHashSize];
};

// Chain order. Both sorts are std::sort with an inlined comparison: qsort's
// call through a pointer per comparison was a third of a round's
// instructions outside the digest (callgrind). std::sort neither allocates
// nor throws on these plain values, so it is safe inside pg_call.
bool entry_before(const NewEntry &x, const NewEntry &y) {
    if (x.main_id != y.main_id)
        return x.main_id < y.main_id;
    if (x.xid != y.xid)
        return x.xid < y.xid;
    return x.id < y.id;
}

// Committed as of `cur` and not as of `prev` (0: the sealer never ran). An
// entry the scan sees but `cur` does not committed after this round's
// snapshot was taken: the next round takes it.
bool entry_is_new(Datum xid, Datum prev, Datum cur) {
    if (!DatumGetBool(DirectFunctionCall2(pg_visible_in_snapshot, xid, cur)))
        return false;
    return prev == 0 || !DatumGetBool(DirectFunctionCall2(pg_visible_in_snapshot, xid, prev));
}

Oid log_index_oid(Oid nsp) {
    Oid index = get_relname_relid("audit_log_xid", nsp);
    if (!OidIsValid(index))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
                        errmsg("index tenancy.audit_log_xid is missing"),
                        errhint("The sealer finds new entries through it: recreate it ON "
                                "tenancy.audit_log USING brin (xid).")));
    return index;
}

// BRIN summarises a range of pages only when asked (VACUUM, or
// brin_summarize_range), and a scan returns every page of an unsummarised
// range: left alone, the log's tail would grow unsummarised between two
// VACUUMs and every round would read all of it. So each round summarises the
// ranges the writers have left behind: those wholly below the pages they may
// still fill (the free pages kept ahead of them, audit_log_space.cpp, and one
// range more). A range summarised early stays correct: a later insert into
// it widens its summary, at the cost of an index write. Skipped while
// VACUUM (or anyone) holds the lock summarising takes, which VACUUM needs for
// its whole run: the sealer must not wait on it.
BlockNumber summarized_below = 0;  // per sealer process: ranges below are known summarised
Oid summarized_index = InvalidOid;

void summarize_completed_ranges(Relation heap, Relation index) {
    if (RelationGetRelid(index) != summarized_index) {
        summarized_index = RelationGetRelid(index);
        summarized_below = 0;
    }
    BlockNumber per_range = BrinGetPagesPerRange(index);
    BlockNumber nblocks = RelationGetNumberOfBlocks(heap);
    BlockNumber margin = kAuditLogPoolPages + per_range;
    if (nblocks <= margin || summarized_below + per_range > nblocks - margin)
        return;
    BlockNumber frontier = nblocks - margin;
    if (!ConditionalLockRelation(heap, ShareUpdateExclusiveLock))
        return;
    // The first range below the frontier without a summary, read from the
    // revmap (no relation opened per range).
    BrinRevmap *revmap = brinRevmapInitialize(index, &per_range, nullptr);
    BlockNumber first_unsummarized = InvalidBlockNumber;
    for (BlockNumber b = summarized_below;
         b + per_range <= frontier && first_unsummarized == InvalidBlockNumber; b += per_range) {
        Buffer buf = InvalidBuffer;
        OffsetNumber off;
        Size size;
        BrinTuple *summary =
            brinGetTupleForHeapBlock(revmap, b, &buf, &off, &size, BUFFER_LOCK_SHARE, nullptr);
        if (summary != nullptr)
            LockBuffer(buf, BUFFER_LOCK_UNLOCK);
        else
            first_unsummarized = b;
        if (BufferIsValid(buf))
            ReleaseBuffer(buf);
    }
    brinRevmapTerminate(revmap);
    if (first_unsummarized != InvalidBlockNumber) {
        // As the index's owner: brin_summarize_range checks ownership, and
        // audit_seal() may run as whoever owns the extension's functions.
        Oid saved_user;
        int saved_context;
        GetUserIdAndSecContext(&saved_user, &saved_context);
        SetUserIdAndSecContext(index->rd_rel->relowner, saved_context |
                                                            SECURITY_LOCAL_USERID_CHANGE |
                                                            SECURITY_RESTRICTED_OPERATION);
        for (BlockNumber b = first_unsummarized; b + per_range <= frontier; b += per_range)
            DirectFunctionCall2(brin_summarize_range, ObjectIdGetDatum(RelationGetRelid(index)),
                                Int64GetDatum(b));
        SetUserIdAndSecContext(saved_user, saved_context);
    }
    // Only now: a summarisation that failed is tried again next round.
    summarized_below = frontier - frontier % per_range;
    UnlockRelation(heap, ShareUpdateExclusiveLock);
}

// The entries visible to the active snapshot that are new this round, sorted
// by (main_id, xid, id); *count is set. Allocated in the current context.
// installation_only: only the installation's chain (main_id 0), as on a
// Citus coordinator, whose entries of main accounts go to the workers
// instead (97_citus_audit.sql).
NewEntry *collect_entries(int64 lower_xid, Datum prev, Datum cur, bool installation_only,
                          size_t *count) {
    Oid nsp = get_namespace_oid("tenancy", false);
    Oid log_relid = get_relname_relid("audit_log", nsp);
    if (!OidIsValid(log_relid))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("tenancy.audit_log is missing")));
    Relation heap = table_open(log_relid, AccessShareLock);
    audit_log_check_shape(heap);
    Oid index_oid = log_index_oid(nsp);
    Relation index = index_open(index_oid, AccessShareLock);
    if (index->rd_rel->relam != BRIN_AM_OID || index->rd_index->indrelid != log_relid ||
        index->rd_index->indnkeyatts < 1 || index->rd_index->indkey.values[0] != kLogXid + 1)
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                        errmsg("index tenancy.audit_log_xid is not a brin index on xid")));

    // 1. The pages that may hold entries with xid >= lower_xid: those of the
    //    ranges whose summary reaches it, and every page of the ranges not
    //    summarised yet (the tail, summarised below once left behind).
    ScanKeyData key;
    ScanKeyInit(&key, 1, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(lower_xid));
    key.sk_subtype = INT8OID;  // BRIN's minmax looks its operator up by subtype
    Snapshot snapshot = GetActiveSnapshot();
    IndexScanDesc scan = index_beginscan_bitmap(index, snapshot, 1);
    index_rescan(scan, &key, 1, nullptr, 0);
    TIDBitmap *bitmap = tbm_create(work_mem * 1024L, nullptr);  // as a bitmap index scan
    index_getbitmap(scan, bitmap);
    index_endscan(scan);
    summarize_completed_ranges(heap, index);
    index_close(index, AccessShareLock);

    size_t n = 0, capacity = 1024;
    NewEntry *entries = static_cast<NewEntry *>(
        MemoryContextAllocHuge(CurrentMemoryContext, capacity * sizeof(NewEntry)));
    StringInfo scratch = makeStringInfo();
    MemoryContext per_entry = AllocSetContextCreate(
        CurrentMemoryContext, "tenancy audit seal entry", ALLOCSET_DEFAULT_SIZES);
    TupleDesc desc = RelationGetDescr(heap);
    Datum *row_values = static_cast<Datum *>(palloc(desc->natts * sizeof(Datum)));
    bool *row_nulls = static_cast<bool *>(palloc(desc->natts * sizeof(bool)));
    OffsetNumber visible[MaxHeapTuplesPerPage];
    TBMIterator *pages = tbm_begin_iterate(bitmap);
    TBMIterateResult *page_result;
    while ((page_result = tbm_iterate(pages)) != nullptr) {
        CHECK_FOR_INTERRUPTS();
        BlockNumber block = page_result->blockno;
        Buffer buf = ReadBuffer(heap, block);
        LockBuffer(buf, BUFFER_LOCK_SHARE);
        Page page = BufferGetPage(buf);
        int n_visible = 0;
        if (!PageIsNew(page)) {
            OffsetNumber max_offset = PageGetMaxOffsetNumber(page);
            for (OffsetNumber off = FirstOffsetNumber; off <= max_offset; off++) {
                ItemId item = PageGetItemId(page, off);
                if (!ItemIdIsNormal(item))
                    continue;
                HeapTupleData tuple;
                tuple.t_data = reinterpret_cast<HeapTupleHeader>(PageGetItem(page, item));
                tuple.t_len = ItemIdGetLength(item);
                tuple.t_tableOid = RelationGetRelid(heap);
                ItemPointerSet(&tuple.t_self, block, off);
                bool isnull = true;
                Datum xid = heap_getattr(&tuple, kLogXid + 1, desc, &isnull);
                if (isnull || DatumGetInt64(xid) < lower_xid || !entry_is_new(xid, prev, cur))
                    continue;
                if (installation_only &&
                    DatumGetInt64(heap_getattr(&tuple, kLogMainId + 1, desc, &isnull)) != 0)
                    continue;
                if (HeapTupleSatisfiesVisibility(&tuple, snapshot, buf))
                    visible[n_visible++] = off;
            }
        }
        LockBuffer(buf, BUFFER_LOCK_UNLOCK);
        if (n + n_visible > capacity) {
            while (n + n_visible > capacity)
                capacity *= 2;
            entries = static_cast<NewEntry *>(repalloc_huge(entries, capacity * sizeof(NewEntry)));
        }
        for (int v = 0; v < n_visible; v++) {
            ItemId item = PageGetItemId(page, visible[v]);
            HeapTupleData tuple;
            tuple.t_data = reinterpret_cast<HeapTupleHeader>(PageGetItem(page, item));
            tuple.t_len = ItemIdGetLength(item);
            tuple.t_tableOid = RelationGetRelid(heap);
            ItemPointerSet(&tuple.t_self, block, visible[v]);
            heap_deform_tuple(&tuple, desc, row_values, row_nulls);
            NewEntry *e = &entries[n++];
            e->main_id = DatumGetInt64(row_values[kLogMainId]);
            e->xid = DatumGetInt64(row_values[kLogXid]);
            e->id = DatumGetInt64(row_values[kLogId]);
            e->tid = tuple.t_self;
            Datum values[audit_digest::kEntryFields];
            bool nulls[audit_digest::kEntryFields];
            for (int f = 0; f < audit_digest::kEntryFields; f++) {
                values[f] = row_values[kDigestColumns[f]];
                nulls[f] = row_nulls[kDigestColumns[f]];
            }
            MemoryContext outer = MemoryContextSwitchTo(per_entry);
            audit_digest::entry_digest(values, nulls, scratch, e->digest);
            MemoryContextSwitchTo(outer);
            MemoryContextReset(per_entry);
        }
        ReleaseBuffer(buf);
    }
    tbm_end_iterate(pages);
    tbm_free(bitmap);
    pfree(row_values);
    pfree(row_nulls);
    table_close(heap, AccessShareLock);
    MemoryContextDelete(per_entry);

    // Chain order: per main account (a block each), then (xid, id).
    std::sort(entries, entries + n,
              [](const NewEntry &x, const NewEntry &y) { return entry_before(x, y); });
    *count = n;
    return entries;
}

// The chain heads of the main accounts in `entries` (sorted), in main_id
// order; *count is set. A main account without a head starts at position 0
// after the zero hash.
SPIPlanPtr heads_plan = nullptr;

Head *read_heads(const NewEntry *entries, size_t n, size_t *count) {
    size_t mains = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || entries[i].main_id != entries[i - 1].main_id)
            mains++;
    Datum *ids = static_cast<Datum *>(palloc(mains * sizeof(Datum)));
    Head *heads = static_cast<Head *>(palloc0(mains * sizeof(Head)));
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || entries[i].main_id != entries[i - 1].main_id) {
            ids[m] = Int64GetDatum(entries[i].main_id);
            heads[m].main_id = entries[i].main_id;
            m++;
        }
    ArrayType *id_array = construct_array(ids, static_cast<int>(mains), INT8OID, sizeof(int64),
                                          FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);

    if (SPI_connect() != SPI_OK_CONNECT)
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("SPI_connect failed")));
    if (heads_plan == nullptr) {
        Oid arg_types[1] = {INT8ARRAYOID};
        SPIPlanPtr plan = SPI_prepare(
            "SELECT h.main_id, h.last_pos, h.last_hash FROM tenancy.audit_heads h "
            "WHERE h.main_id OPERATOR(pg_catalog.=) ANY ($1) ORDER BY h.main_id",
            1, arg_types);
        if (plan == nullptr || SPI_keepplan(plan) != 0)
            ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                            errmsg("could not prepare the audit heads query: %s",
                                   SPI_result_code_string(SPI_result))));
        heads_plan = plan;
    }
    Datum args[1] = {PointerGetDatum(id_array)};
    if (SPI_execute_plan(heads_plan, args, nullptr, true, 0) != SPI_OK_SELECT)
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("reading the audit heads failed")));
    // Both lists are in main_id order: merge.
    size_t h = 0;
    for (uint64 r = 0; r < SPI_processed; r++) {
        HeapTuple row = SPI_tuptable->vals[r];
        TupleDesc desc = SPI_tuptable->tupdesc;
        bool null_id, null_pos, null_hash;
        int64 main_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &null_id));
        int64 last_pos = DatumGetInt64(SPI_getbinval(row, desc, 2, &null_pos));
        Datum hash = SPI_getbinval(row, desc, 3, &null_hash);
        while (h < mains && heads[h].main_id < main_id)
            h++;
        if (h == mains || heads[h].main_id != main_id || null_id)
            continue;
        bytea *hb = DatumGetByteaPP(hash);
        if (null_pos || null_hash || VARSIZE_ANY_EXHDR(hb) != kHashSize)
            ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                            errmsg("chain head of main account %lld is malformed",
                                   static_cast<long long>(main_id)),
                            errhint("Run tenancy.audit_verify() to see what was altered.")));
        heads[h].last_pos = last_pos;
        memcpy(heads[h].last_hash, VARDATA_ANY(hb), kHashSize);
    }
    SPI_finish();
    *count = mains;
    return heads;
}

Datum tid_array(const NewEntry *entries, size_t n) {
    Datum *items = static_cast<Datum *>(palloc(n * sizeof(Datum)));
    for (size_t i = 0; i < n; i++)
        items[i] = PointerGetDatum(&entries[i].tid);
    ArrayType *a = construct_array(items, static_cast<int>(n), TIDOID, sizeof(ItemPointerData),
                                   false, TYPALIGN_SHORT);
    pfree(items);
    return PointerGetDatum(a);
}

Datum int8_array(const NewEntry *entries, size_t n, bool want_xid) {
    Datum *items = static_cast<Datum *>(palloc(n * sizeof(Datum)));
    for (size_t i = 0; i < n; i++)
        items[i] = Int64GetDatum(want_xid ? entries[i].xid : entries[i].id);
    ArrayType *a = construct_array(items, static_cast<int>(n), INT8OID, sizeof(int64),
                                   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
    pfree(items);
    return PointerGetDatum(a);
}

// One output row per block: main_id, first_pos, n, entry_xids, entry_ids, entry_tids,
// digests, hash, last_pos (the head's position after this round).
void emit_blocks(ReturnSetInfo *rsinfo, const NewEntry *entries, size_t n, const Head *heads,
                 TimestampTz sealed_at) {
    StringInfo link = makeStringInfo();
    unsigned char *digests = static_cast<unsigned char *>(palloc(kBlockEntries * kHashSize));
    size_t start = 0, h = 0;
    while (start < n) {
        size_t end = start;
        while (end < n && entries[end].main_id == entries[start].main_id)
            end++;
        const Head *head = &heads[h++];
        int64 round_last = head->last_pos + static_cast<int64>(end - start);
        unsigned char prev_hash[kHashSize];
        memcpy(prev_hash, head->last_hash, kHashSize);
        for (size_t b = start; b < end; b += kBlockEntries) {
            size_t count = end - b < static_cast<size_t>(kBlockEntries) ? end - b : kBlockEntries;
            int64 first_pos = head->last_pos + static_cast<int64>(b - start) + 1;
            for (size_t i = 0; i < count; i++)
                memcpy(digests + i * kHashSize, entries[b + i].digest, kHashSize);
            // hash = SHA-256(previous block's hash || the block's link)
            resetStringInfo(link);
            appendBinaryStringInfo(link, reinterpret_cast<const char *>(prev_hash), kHashSize);
            audit_digest::append_block_link(link, first_pos, sealed_at, digests, count);
            unsigned char hash[kHashSize];
            if (!sha256(link->data, link->len, hash))
                ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("SHA-256 failed")));

            bytea *digest_bytes = static_cast<bytea *>(palloc(VARHDRSZ + count * kHashSize));
            SET_VARSIZE(digest_bytes, VARHDRSZ + count * kHashSize);
            memcpy(VARDATA(digest_bytes), digests, count * kHashSize);
            bytea *hash_bytes = static_cast<bytea *>(palloc(VARHDRSZ + kHashSize));
            SET_VARSIZE(hash_bytes, VARHDRSZ + kHashSize);
            memcpy(VARDATA(hash_bytes), hash, kHashSize);

            Datum values[9] = {Int64GetDatum(entries[b].main_id),
                               Int64GetDatum(first_pos),
                               Int32GetDatum(static_cast<int32>(count)),
                               int8_array(&entries[b], count, true),
                               int8_array(&entries[b], count, false),
                               tid_array(&entries[b], count),
                               PointerGetDatum(digest_bytes),
                               PointerGetDatum(hash_bytes),
                               Int64GetDatum(round_last)};
            bool nulls[9] = {false, false, false, false, false, false, false, false, false};
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
            for (int k = 3; k <= 7; k++)
                pfree(DatumGetPointer(values[k]));
            memcpy(prev_hash, hash, kHashSize);
        }
        start = end;
    }
    pfree(digests);
}

Datum seal_blocks(FunctionCallInfo fcinfo) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
        throw SqlError(ERRCODE_NULL_VALUE_NOT_ALLOWED,
                       "lower_xid, the current snapshot and sealed_at are required");
    bool installation_only = citus_distributed() && citus_local_group() == 0;
    pg_call([&] {
        InitMaterializedSRF(fcinfo, 0);
        ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        int64 lower_xid = PG_GETARG_INT64(0);
        // Detoasted once: pg_visible_in_snapshot then reads them in place.
        Datum prev = PG_ARGISNULL(1) ? 0 : PointerGetDatum(PG_DETOAST_DATUM(PG_GETARG_DATUM(1)));
        Datum cur = PointerGetDatum(PG_DETOAST_DATUM(PG_GETARG_DATUM(2)));
        TimestampTz sealed_at = PG_GETARG_TIMESTAMPTZ(3);
        size_t n = 0, mains = 0;
        NewEntry *entries = collect_entries(lower_xid, prev, cur, installation_only, &n);
        if (n == 0)
            return;
        Head *heads = read_heads(entries, n, &mains);
        emit_blocks(rsinfo, entries, n, heads, sealed_at);
        pfree(heads);
        pfree(entries);
    });
    return static_cast<Datum>(0);
}

}  // namespace
}  // namespace tenancy

extern "C" {

PG_FUNCTION_INFO_V1(tenancy_audit_seal_blocks);
Datum tenancy_audit_seal_blocks(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::seal_blocks(fcinfo); });
}
}
