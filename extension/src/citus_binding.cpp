// The context on Citus (docs/operations/scale-out.md). Citus functions are
// looked up in the already loaded citus.so by name, only once Citus's settings
// exist (it is in shared_preload_libraries): tenancy neither links against nor
// loads Citus. The functions used are Citus 13's exported C API.
#include "boundary.hpp"
#include "citus_binding.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
}

#include <cstdio>
#include <cstring>

namespace tenancy {

namespace {

// Citus 13's DistributedTransactionId (distributed/transaction_identifier.h).
struct CitusDistributedTransactionId {
    int initiatorNodeIdentifier;
    bool transactionOriginator;
    uint64 transactionNumber;
    TimestampTz timestamp;
};

using GetXidFn = CitusDistributedTransactionId *(*)(void);
using VoidFn = void (*)(void);
using GroupFn = int32 (*)(void);
using IsCitusTableFn = bool (*)(Oid);
using ShardIdFn = uint64 (*)(const char *, bool);
using LoadedFn = bool (*)(void);

struct CitusApi {
    bool looked_up = false;
    GetXidFn get_xid = nullptr;
    VoidFn ensure_xid = nullptr;
    GroupFn local_group = nullptr;
    IsCitusTableFn is_citus_table = nullptr;
    IsCitusTableFn is_known_shard = nullptr;
    ShardIdFn shard_id_of_name = nullptr;
    LoadedFn has_been_loaded = nullptr;
};
CitusApi api;

void *citus_symbol(const char *name) {
    return pg_call([&] { return load_external_function("citus", name, true, NULL); });
}

const CitusApi &citus_api() {
    if (!api.looked_up) {
        api.get_xid =
            reinterpret_cast<GetXidFn>(citus_symbol("GetCurrentDistributedTransactionId"));
        api.ensure_xid = reinterpret_cast<VoidFn>(citus_symbol("EnsureDistributedTransactionId"));
        api.local_group = reinterpret_cast<GroupFn>(citus_symbol("GetLocalGroupId"));
        api.is_citus_table = reinterpret_cast<IsCitusTableFn>(citus_symbol("IsCitusTable"));
        api.is_known_shard =
            reinterpret_cast<IsCitusTableFn>(citus_symbol("RelationIsAKnownShard"));
        api.shard_id_of_name =
            reinterpret_cast<ShardIdFn>(citus_symbol("ExtractShardIdFromTableName"));
        api.has_been_loaded = reinterpret_cast<LoadedFn>(citus_symbol("CitusHasBeenLoaded"));
        api.looked_up = true;
    }
    return api;
}

// Citus is preloaded (its settings exist) and its extension is created in
// this database. A database without it, beside Citus's on the same server,
// is one node: Citus's metadata functions error there ("cache lookup failed
// for pg_dist_local_group"), so none is called. CitusHasBeenLoaded caches
// its answer per database.
bool citus_loaded() {
    if (GetConfigOption("citus.propagate_set_commands", true, false) == nullptr)
        return false;
    const CitusApi &c = citus_api();
    return c.has_been_loaded == nullptr || pg_call([&] { return c.has_been_loaded(); });
}

Oid context_keys_relid() {
    Oid nsp = get_namespace_oid("tenancy", true);
    return OidIsValid(nsp) ? get_relname_relid("context_keys", nsp) : InvalidOid;
}

}  // namespace

bool citus_distributed() {
    if (!citus_loaded())
        return false;
    const CitusApi &c = citus_api();
    Oid relid = pg_call([] { return context_keys_relid(); });
    if (!OidIsValid(relid))
        return false;
    return pg_call([&] { return c.is_citus_table(relid); });
}

DistributedXid citus_current_xid(bool assign) {
    const CitusApi &c = citus_api();
    DistributedXid x{};
    pg_call([&] {
        if (assign)
            c.ensure_xid();
        CitusDistributedTransactionId *id = c.get_xid();
        x.node = id->initiatorNodeIdentifier;
        x.number = id->transactionNumber;
        x.stamp = id->timestamp;
        x.originator = id->transactionOriginator;
        pfree(id);
        return 0;
    });
    return x;
}

int32_t citus_local_group() {
    const CitusApi &c = citus_api();
    return pg_call([&] { return c.local_group(); });
}

bool citus_propagates_set_local() {
    const char *v = GetConfigOption("citus.propagate_set_commands", true, false);
    return v != nullptr && std::strcmp(v, "local") == 0;
}

namespace {

// The first row of pg_dist_shard (logicalrelid oid, shardid bigint, ...)
// whose table is relid (when valid) or whose shard id is shardid (when not
// 0); false if none. Plain C: call through pg_call.
bool find_dist_shard(Oid relid, int64 shardid, Oid *table_out, int64 *shard_out) {
    Oid dist_shard = get_relname_relid("pg_dist_shard", PG_CATALOG_NAMESPACE);
    if (!OidIsValid(dist_shard))
        return false;
    Relation rel = table_open(dist_shard, AccessShareLock);
    Snapshot snapshot =
        RegisterSnapshot(ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot());
    TableScanDesc scan = table_beginscan(rel, snapshot, 0, NULL);
    bool found = false;
    HeapTuple tuple;
    while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL) {
        bool isnull1, isnull2;
        Datum logical = heap_getattr(tuple, 1, RelationGetDescr(rel), &isnull1);
        Datum shard = heap_getattr(tuple, 2, RelationGetDescr(rel), &isnull2);
        if (isnull1 || isnull2)
            continue;
        if ((OidIsValid(relid) && DatumGetObjectId(logical) == relid) ||
            (shardid != 0 && DatumGetInt64(shard) == shardid)) {
            *table_out = DatumGetObjectId(logical);
            *shard_out = DatumGetInt64(shard);
            found = true;
            break;
        }
    }
    table_endscan(scan);
    UnregisterSnapshot(snapshot);
    table_close(rel, AccessShareLock);
    return found;
}

// The table of a shard id; InvalidOid if none. Plain C: call through pg_call.
Oid table_of_shard(int64 shardid) {
    Oid table = InvalidOid;
    int64 shard = 0;
    if (shardid == 0 || !find_dist_shard(InvalidOid, shardid, &table, &shard))
        return InvalidOid;
    return table;
}

}  // namespace

Oid citus_shard_table(Oid relid) {
    if (!citus_loaded())
        return InvalidOid;
    const CitusApi &c = citus_api();
    if (c.is_known_shard == nullptr || c.shard_id_of_name == nullptr)
        return InvalidOid;
    if (!pg_call([&] { return c.is_known_shard(relid); }))
        return InvalidOid;
    return pg_call([&] {
        const char *name = get_rel_name(relid);
        uint64 shardid = name == nullptr ? 0 : c.shard_id_of_name(name, true);
        return shardid == 0 ? InvalidOid : table_of_shard(static_cast<int64>(shardid));
    });
}

// relid's shard in pg_dist_shard; the placement on this node is the table
// "<name>_<shardid>" beside it.
Oid citus_local_placement(Oid relid) {
    Oid table = InvalidOid;
    int64 shardid = 0;
    if (!find_dist_shard(relid, 0, &table, &shardid))
        return InvalidOid;
    if (shardid == 0)
        return InvalidOid;
    char name[NAMEDATALEN * 2];
    snprintf(name, sizeof name, "%s_" INT64_FORMAT, get_rel_name(relid), shardid);
    return get_relname_relid(name, get_rel_namespace(relid));
}

}  // namespace tenancy
