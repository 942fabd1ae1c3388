// The audit log writer: the row trigger installed on configuration tables and
// protected application tables, the internal event writer, and the SHA-256 /
// HMAC helpers of the chain (see extension/sql/400_audit_log.sql for the design).
//
// Entries are written unsealed with a direct heap insert plus index inserts:
// no SPI, no plan, no permission or RLS check (no client role holds any write
// privilege on tenancy.audit_log; the extension writes on its own authority).
//
// Boundary: every PostgreSQL call that can ereport goes through pg_call;
// insert_entry() and the change builders (audit_change.cpp) are C-style code
// (no C++ object with a destructor) run inside pg_call.
#include "audit.hpp"

#include "account_path_codec.hpp"
#include "audit_change.hpp"
#include "audit_digest.hpp"

#include "boundary.hpp"
#include "citus_binding.hpp"
#include "context.hpp"
#include "sha256.hpp"

extern "C" {
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_sequence.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/acl.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
}

#include <cstring>
#include <string>

namespace tenancy {

const RequestContext *current_context();  // context.cpp

// The writer and the sealer read and form entries by column position.
void audit_log_check_shape(Relation rel) {
    static const Oid kTypes[] = {INT8OID, INT8OID, INT8OID, InvalidOid, TIMESTAMPTZOID, TEXTOID,
                                 TEXTOID, INT8OID, TEXTOID, TEXTOID,    JSONBOID,       JSONBOID};
    constexpr int kColumns = sizeof kTypes / sizeof kTypes[0];
    TupleDesc desc = RelationGetDescr(rel);
    if (desc->natts != kColumns)
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                        errmsg("tenancy.audit_log has an unexpected shape")));
    for (int i = 0; i < kColumns; i++) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (att->attisdropped || (kTypes[i] != InvalidOid && att->atttypid != kTypes[i]))
            ereport(ERROR,
                    (errcode(ERRCODE_INTERNAL_ERROR),
                     errmsg("tenancy.audit_log has an unexpected shape (column %d)", i + 1)));
    }
}

namespace {

constexpr int kAuditColumns = 12;
constexpr size_t kHashSize = kSha256Size;

// Plain data for insert_entry(): pointers into strings owned by the caller.
struct EntryData {
    int64 main_id;
    Datum account_path;  // 0: none (main_id 0, the installation's chain)
    const char *actor_kind;
    const char *actor_id;  // may be null
    bool has_credential;
    int64 credential_id;
    const char *action;
    const char *target;  // may be null
    Datum row_key;       // jsonb, 0: none
    Datum change;        // jsonb, 0: none
};

// The log's relation, sequence and indexes, looked up once per backend and
// forgotten on any relcache invalidation of them (DROP EXTENSION, ALTER
// TABLE, CREATE INDEX): every audited row would otherwise pay catalog
// lookups and an IndexInfo per index.
Oid cached_log_relid = InvalidOid;
Oid cached_seq_relid = InvalidOid;
// The log is a heap whose indexes are all btrees or BRIN on plain columns
// (as created: BRIN on xid): an entry is then written like a catalog row,
// heap_insert and index_insert, without an executor state per entry. Any other index (a
// DBA's, with expressions or a predicate, or of another access method) sends
// entries through the executor.
bool cached_log_direct = false;
constexpr int kMaxDirectIndexes = 8;
struct LogIndex {
    Oid oid;
    bool unique;
    IndexInfo *info;  // key columns; btinsert reads nothing else of it
};
LogIndex cached_indexes[kMaxDirectIndexes];
int cached_index_count = 0;
MemoryContext log_cache_context = nullptr;  // the IndexInfos
bool invalidation_registered = false;

// Entry ids: tenancy.audit_seq counts in steps of its increment (64), and
// one nextval reserves that many ids for this backend: ids need only be
// unique (the chain orders entries), and a nextval per entry was ~1,600
// instructions (sequence lock, relation open, permission check).
int64 id_next = 0;
int64 id_end = 0;
int64 cached_id_block = 1;
// An unpinned copy of the log's descriptor, made at the first lookup and
// kept for the backend: statement batches form their entries with it and the
// multi-insert slots carry it. The checked shape (12 columns of fixed types)
// makes every checked descriptor of the log form the same tuples.
TupleDesc log_desc_copy = nullptr;

bool is_cached_index(Oid relid) {
    for (int x = 0; x < cached_index_count; x++)
        if (cached_indexes[x].oid == relid)
            return true;
    return false;
}

// Also on an invalidation of one of the log's indexes: BRIN keeps a
// descriptor of its index (pointing into the relcache entry) in the cached
// IndexInfo.
void forget_log_relation(Datum, Oid relid) {
    if (relid == InvalidOid || relid == cached_log_relid || relid == cached_seq_relid ||
        is_cached_index(relid)) {
        cached_log_relid = InvalidOid;
        cached_seq_relid = InvalidOid;
        id_next = id_end = 0;  // a reserved range belongs to the sequence as it was
    }
}

// Checks the log's shape (columns and types) once per lookup: the writer
// below forms its tuples by position.
void lookup_log_relation() {
    if (!invalidation_registered) {
        CacheRegisterRelcacheCallback(forget_log_relation, (Datum)0);
        invalidation_registered = true;
    }
    Oid nsp = get_namespace_oid("tenancy", false);
    Oid relid = get_relname_relid("audit_log", nsp);
    Oid seqid = get_relname_relid("audit_seq", nsp);
    if (!OidIsValid(relid) || !OidIsValid(seqid))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("tenancy.audit_log is missing")));
    HeapTuple seq = SearchSysCache1(SEQRELID, ObjectIdGetDatum(seqid));
    if (!HeapTupleIsValid(seq))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("tenancy.audit_seq is missing")));
    int64 increment = reinterpret_cast<Form_pg_sequence>(GETSTRUCT(seq))->seqincrement;
    ReleaseSysCache(seq);

    if (log_cache_context == nullptr)
        log_cache_context =
            AllocSetContextCreate(CacheMemoryContext, "tenancy audit log", ALLOCSET_SMALL_SIZES);
    MemoryContextReset(log_cache_context);
    Relation rel = table_open(relid, AccessShareLock);
    audit_log_check_shape(rel);
    if (log_desc_copy == nullptr) {
        MemoryContext outer = MemoryContextSwitchTo(TopMemoryContext);
        log_desc_copy = CreateTupleDescCopy(RelationGetDescr(rel));
        MemoryContextSwitchTo(outer);
    }
    bool direct = rel->rd_rel->relam == HEAP_TABLE_AM_OID;
    int count = 0;
    List *indexes = RelationGetIndexList(rel);
    ListCell *lc;
    foreach (lc, indexes) {
        Relation idx = index_open(lfirst_oid(lc), AccessShareLock);
        if ((idx->rd_rel->relam != BTREE_AM_OID && idx->rd_rel->relam != BRIN_AM_OID) ||
            !heap_attisnull(idx->rd_indextuple, Anum_pg_index_indexprs, NULL) ||
            !heap_attisnull(idx->rd_indextuple, Anum_pg_index_indpred, NULL) ||
            !idx->rd_index->indimmediate || idx->rd_index->indisexclusion ||
            count == kMaxDirectIndexes) {
            direct = false;
        } else {
            MemoryContext outer = MemoryContextSwitchTo(log_cache_context);
            IndexInfo *info = BuildIndexInfo(idx);
            MemoryContextSwitchTo(outer);
            for (int k = 0; k < info->ii_NumIndexAttrs; k++) {
                AttrNumber att = info->ii_IndexAttrNumbers[k];
                if (att <= 0 || att > kAuditColumns)
                    direct = false;
            }
            cached_indexes[count++] = {RelationGetRelid(idx), idx->rd_index->indisunique, info};
        }
        index_close(idx, AccessShareLock);
    }
    list_free(indexes);
    table_close(rel, AccessShareLock);
    cached_log_relid = relid;
    cached_seq_relid = seqid;
    cached_log_direct = direct;
    cached_index_count = count;
    cached_id_block = increment > 0 ? increment : 1;
    id_next = id_end = 0;
}

int64 next_entry_id() {
    if (id_next >= id_end) {
        id_next = nextval_internal(cached_seq_relid, false);
        id_end = id_next + cached_id_block;
    }
    return id_next++;
}

void require_writable() {
    if (RecoveryInProgress() || XactReadOnly)
        ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                        errmsg("cannot write an audit entry in a read-only transaction")));
}

// Opens the log for writing, looked up (and its shape checked) again if an
// invalidation concerned it.
Relation open_log() {
    require_writable();
    if (!OidIsValid(cached_log_relid))
        lookup_log_relation();
    Relation rel = table_open(cached_log_relid, RowExclusiveLock);
    // Opening processes pending invalidations: if they concerned the log,
    // look it up (and check its shape) again.
    if (!OidIsValid(cached_log_relid)) {
        table_close(rel, RowExclusiveLock);
        lookup_log_relation();
        rel = table_open(cached_log_relid, RowExclusiveLock);
    }
    if (RelationGetDescr(rel)->natts != kAuditColumns) {
        table_close(rel, RowExclusiveLock);
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                        errmsg("tenancy.audit_log has an unexpected shape")));
    }
    return rel;
}

// The entry's tuple, in the current memory context, its id reserved now.
// `desc` is the log's (checked shape: tuples formed with any checked
// descriptor of the log are alike).
HeapTuple form_entry(TupleDesc desc, const EntryData *e, int64 *id) {
    Datum values[kAuditColumns];
    bool nulls[kAuditColumns];
    memset(nulls, 0, sizeof nulls);
    *id = next_entry_id();
    values[0] = Int64GetDatum(e->main_id);
    values[1] = Int64GetDatum(*id);
    // The sealer finds new entries by their top-level transaction.
    values[2] =
        Int64GetDatum(static_cast<int64>(U64FromFullTransactionId(GetTopFullTransactionId())));
    if (e->account_path != 0)
        values[3] = e->account_path;
    else
        nulls[3] = true;
    values[4] = TimestampTzGetDatum(GetCurrentTimestamp());
    values[5] = CStringGetTextDatum(e->actor_kind);
    if (e->actor_id)
        values[6] = CStringGetTextDatum(e->actor_id);
    else
        nulls[6] = true;
    if (e->has_credential)
        values[7] = Int64GetDatum(e->credential_id);
    else
        nulls[7] = true;
    values[8] = CStringGetTextDatum(e->action);
    if (e->target)
        values[9] = CStringGetTextDatum(e->target);
    else
        nulls[9] = true;
    values[10] = e->row_key;
    nulls[10] = e->row_key == 0;
    values[11] = e->change;
    nulls[11] = e->change == 0;
    return heap_form_tuple(desc, values, nulls);
}

constexpr int kBatchFlushAt = 1000;  // entries: bounds the buffer of a bulk statement

// Slots for heap_multi_insert, made once per backend: a slot made and dropped
// per entry cost ~8k instructions (each pins the relation's descriptor in the
// resource owner). They carry log_desc_copy, which is not pinned; a slot here
// only carries a heap tuple. The log has been looked up (open_log) first.
TupleTableSlot *multi_slots[kBatchFlushAt];
int multi_slots_made = 0;

TupleTableSlot **batch_slots(int n) {
    if (n > kBatchFlushAt)
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("audit batch too large")));
    MemoryContext outer = MemoryContextSwitchTo(TopMemoryContext);
    for (; multi_slots_made < n; multi_slots_made++)
        multi_slots[multi_slots_made] = MakeSingleTupleTableSlot(log_desc_copy, &TTSOpsHeapTuple);
    MemoryContextSwitchTo(outer);
    return multi_slots;
}

// Writes entries to the open log. Direct path (the log's indexes are btrees or BRIN
// on plain columns: cached_log_direct): one heap_multi_insert, which fills a
// page per WAL record, then index_insert per entry and index. Otherwise each
// entry through the executor's insert and index maintenance.
void write_entries(Relation rel, HeapTuple *tuples, int n) {
    TupleDesc desc = RelationGetDescr(rel);
    if (cached_log_direct) {
        TupleTableSlot **slots = nullptr;
        if (n == 1) {
            heap_insert(rel, tuples[0], GetCurrentCommandId(true), 0, NULL);
        } else {
            slots = batch_slots(n);
            for (int i = 0; i < n; i++)
                ExecStoreHeapTuple(tuples[i], slots[i], false);
            heap_multi_insert(rel, slots, n, GetCurrentCommandId(true), 0, NULL);
        }
        for (int x = 0; x < cached_index_count; x++) {
            const LogIndex *li = &cached_indexes[x];
            Relation idx = index_open(li->oid, RowExclusiveLock);
            for (int i = 0; i < n; i++) {
                Datum keys[INDEX_MAX_KEYS];
                bool key_nulls[INDEX_MAX_KEYS];
                for (int k = 0; k < li->info->ii_NumIndexAttrs; k++)
                    keys[k] = heap_getattr(tuples[i], li->info->ii_IndexAttrNumbers[k], desc,
                                           &key_nulls[k]);
                // heap_multi_insert reports each entry's place in its slot.
                ItemPointer tid = slots == nullptr ? &tuples[0]->t_self : &slots[i]->tts_tid;
                index_insert(idx, keys, key_nulls, tid, rel,
                             li->unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, li->info);
            }
            index_close(idx, NoLock);
        }
        if (slots != nullptr)
            for (int i = 0; i < n; i++)
                ExecClearTuple(slots[i]);
        return;
    }
    ResultRelInfo *rri = makeNode(ResultRelInfo);
    InitResultRelInfo(rri, rel, 1, NULL, 0);
    ExecOpenIndices(rri, false);
    EState *estate = CreateExecutorState();
    TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
    for (int i = 0; i < n; i++) {
        ExecStoreHeapTuple(tuples[i], slot, false);
        simple_table_tuple_insert(rel, slot);
        ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
        ExecClearTuple(slot);
    }
    ExecDropSingleTupleTableSlot(slot);
    ExecCloseIndices(rri);
    FreeExecutorState(estate);
}

// Inserts one entry now; returns its id. May ereport: call via pg_call.
int64 insert_entry(const EntryData *e) {
    Relation rel = open_log();
    int64 id = 0;
    HeapTuple tuple = form_entry(RelationGetDescr(rel), e, &id);
    write_entries(rel, &tuple, 1);
    table_close(rel, NoLock);
    heap_freetuple(tuple);
    return id;
}

// ---- statement batches ---------------------------------------------------------
//
// The row trigger's entries of one statement are written together when the
// statement's executor finishes (its AFTER triggers have all fired then):
// one heap_multi_insert fills a log page per WAL record, and the log is
// opened once per statement instead of once per row. A statement of one row
// writes its one entry as before.
//
// An entry is buffered only where that is exactly as safe as writing it at
// once: while this module's ExecutorFinish hook runs a statement at that
// nesting depth, and in the subtransaction the statement finishes in. The
// buffer is written (or, on an error, dropped with the statement's own
// changes) before the hook returns. Everything else writes at once: events,
// COPY and other firings outside an executor's finish, triggers fired inside
// a subtransaction an exception block opened, the first statement of a
// backend that loads the module from its own trigger.
constexpr int kMaxBatchDepth = 16;

struct Batch {
    SubTransactionId subxid;
    int n;
    int capacity;
    HeapTuple *tuples;
    MemoryContext context;  // the tuples; reset at each write
};

Batch batches[kMaxBatchDepth + 1];
int finish_depth = 0;
ExecutorFinish_hook_type previous_executor_finish = nullptr;

Batch *current_batch() {
    if (finish_depth < 1 || finish_depth > kMaxBatchDepth)
        return nullptr;
    Batch *b = &batches[finish_depth];
    return b->subxid == GetCurrentSubTransactionId() ? b : nullptr;
}

// Forgets the buffered entries (the array lives in the batch's context too).
void drop_batch(Batch *b) {
    b->n = 0;
    b->capacity = 0;
    b->tuples = nullptr;
    if (b->context != nullptr)
        MemoryContextReset(b->context);
}

void write_batch(Batch *b) {
    if (b->n == 0)
        return;
    Relation rel = open_log();
    write_entries(rel, b->tuples, b->n);
    table_close(rel, NoLock);
    drop_batch(b);
}

// The row trigger's write: into the statement's batch, or at once.
void record_entry(const EntryData *e) {
    Batch *b = current_batch();
    if (b == nullptr) {
        insert_entry(e);
        return;
    }
    require_writable();
    // The sequence's id and the descriptor copy come with the lookup.
    if (!OidIsValid(cached_log_relid))
        lookup_log_relation();
    if (b->context == nullptr)
        b->context =
            AllocSetContextCreate(TopMemoryContext, "tenancy audit batch", ALLOCSET_DEFAULT_SIZES);
    MemoryContext outer = MemoryContextSwitchTo(b->context);
    if (b->n == b->capacity) {
        b->capacity = b->capacity == 0 ? 16 : b->capacity * 2;
        b->tuples =
            b->tuples == nullptr
                ? static_cast<HeapTuple *>(palloc(b->capacity * sizeof(HeapTuple)))
                : static_cast<HeapTuple *>(repalloc(b->tuples, b->capacity * sizeof(HeapTuple)));
    }
    int64 id = 0;
    b->tuples[b->n++] = form_entry(log_desc_copy, e, &id);
    MemoryContextSwitchTo(outer);
    if (b->n >= kBatchFlushAt)
        write_batch(b);
}

// C-style on purpose (no C++ object in this frame): the statement may
// ereport through it.
void executor_finish(QueryDesc *query, ExecutorFinish_hook_type previous) {
    Batch *b = finish_depth < kMaxBatchDepth ? &batches[finish_depth + 1] : nullptr;
    finish_depth++;
    if (b != nullptr) {
        b->subxid = GetCurrentSubTransactionId();
        b->n = 0;
    }
    PG_TRY();
    {
        if (previous)
            previous(query);
        else
            standard_ExecutorFinish(query);
        if (b != nullptr)
            write_batch(b);
    }
    PG_CATCH();
    {
        // After an error the entries go with the statement's own changes.
        if (b != nullptr) {
            drop_batch(b);
            b->subxid = InvalidSubTransactionId;
        }
        finish_depth--;
        PG_RE_THROW();
    }
    PG_END_TRY();
    if (b != nullptr)
        b->subxid = InvalidSubTransactionId;
    finish_depth--;
}

void audit_executor_finish(QueryDesc *query) {
    executor_finish(query, previous_executor_finish);
}

// The audited table's "schema.table" and the session user's name, kept per
// backend (a catalog lookup per audited row otherwise) and forgotten when a
// relation, schema or role changes (a rename).
Oid cached_target_relid = InvalidOid;
std::string cached_target;
Oid cached_user_oid = InvalidOid;
std::string cached_user_name;
bool cached_user_is_dba = false;
bool name_callbacks_registered = false;

void forget_target(Datum, Oid relid) {
    if (relid == InvalidOid || relid == cached_target_relid)
        cached_target_relid = InvalidOid;
}
void forget_names(Datum, int, uint32) {
    cached_target_relid = InvalidOid;
    cached_user_oid = InvalidOid;
}

void register_name_callbacks() {
    if (name_callbacks_registered)
        return;
    pg_call([] {
        CacheRegisterRelcacheCallback(forget_target, (Datum)0);
        CacheRegisterSyscacheCallback(NAMESPACEOID, forget_names, (Datum)0);
        CacheRegisterSyscacheCallback(AUTHOID, forget_names, (Datum)0);
        CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, forget_names, (Datum)0);
    });
    name_callbacks_registered = true;
}

// The session user outside any context: its name, and whether it is the
// DBA (a superuser, or has the privileges of tenancy_admin). Any other role
// changes audited rows outside a context only through the extension's
// functions that run before a credential exists (accept_invitation): its
// entries say `anonymous`, not `dba`.
void refresh_session_user() {
    register_name_callbacks();
    Oid user = GetSessionUserId();
    if (cached_user_oid == user)
        return;
    const char *name = pg_call([&] { return GetUserNameFromId(user, true); });
    cached_user_name = name ? name : "?";
    cached_user_is_dba = pg_call([&] {
        Oid admin = get_role_oid("tenancy_admin", true);
        return superuser_arg(user) || (OidIsValid(admin) && has_privs_of_role(user, admin));
    });
    cached_user_oid = user;
}

struct Actor {
    std::string kind;
    std::string id;
    bool has_credential = false;
    int64 credential_id = 0;
};

// A principal's id as whoami() shows it (24_authenticate.sql), so that the
// gateway's ?actor= filter finds a principal's entries by the id /v1/me gives:
// an API key key_<main>_<key>, a sub-user sub_<main>_<sub-user> (their public
// ids), a user its bare numeric id (users are global, not per main account).
std::string principal_id_text(const char *kind, int64 main_id, int64 id) {
    if (std::strcmp(kind, "api_key") == 0)
        return "key_" + std::to_string(main_id) + "_" + std::to_string(id);
    if (std::strcmp(kind, "sub_user") == 0)
        return "sub_" + std::to_string(main_id) + "_" + std::to_string(id);
    return std::to_string(id);
}

Actor current_actor() {
    Actor a;
    const RequestContext *c = current_context();
    if (c != nullptr) {
        switch (c->principal_kind) {
            case PrincipalKind::ApiKey:
                a.kind = "api_key";
                break;
            case PrincipalKind::User:
                a.kind = "user";
                break;
            case PrincipalKind::SubUser:
                a.kind = "sub_user";
                break;
        }
        // Keys and sub-users never leave their main account (act_as goes
        // down only), so the active main account is theirs.
        a.id = principal_id_text(a.kind.c_str(), c->main_id, c->principal_id);
        a.has_credential = true;
        a.credential_id = c->credential_id;
    } else {
        // Outside any context: the DBA acting directly, or a client role
        // before it has presented a credential.
        refresh_session_user();
        a.kind = cached_user_is_dba ? "dba" : "anonymous";
        a.id = cached_user_name;
    }
    return a;
}

int find_column(TupleDesc desc, const char *name) {
    for (int i = 0; i < desc->natts; i++) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (!att->attisdropped && std::strcmp(NameStr(att->attname), name) == 0)
            return i + 1;
    }
    return 0;
}

const std::string &qualified_name(Relation rel) {
    register_name_callbacks();
    if (cached_target_relid != RelationGetRelid(rel)) {
        // On a Citus worker the trigger fires on a shard ("accounts_102008"):
        // the entry names its table, as on one node.
        Oid table = citus_shard_table(RelationGetRelid(rel));
        const char *nsp = nullptr;
        const char *name = nullptr;
        if (OidIsValid(table))
            pg_call([&] {
                nsp = get_namespace_name(get_rel_namespace(table));
                name = get_rel_name(table);
            });
        if (nsp == nullptr || name == nullptr) {
            nsp = pg_call([&] { return get_namespace_name(RelationGetNamespace(rel)); });
            name = RelationGetRelationName(rel);
        }
        cached_target = nsp ? nsp : "?";
        cached_target += '.';
        cached_target += name;
        cached_target_relid = RelationGetRelid(rel);
    }
    return cached_target;
}

Datum audit_row(FunctionCallInfo fcinfo) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        throw SqlError(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                       "tenancy._audit_trigger() must be called as a trigger");
    TriggerData *td = reinterpret_cast<TriggerData *>(fcinfo->context);
    if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
        throw SqlError(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                       "tenancy._audit_trigger() must run AFTER ... FOR EACH ROW");
    const char *path_col =
        td->tg_trigger->tgnargs >= 1 ? td->tg_trigger->tgargs[0] : "account_path";
    Relation rel = td->tg_relation;
    TupleDesc desc = RelationGetDescr(rel);
    HeapTuple oldt = nullptr, newt = nullptr;
    const char *action;
    if (TRIGGER_FIRED_BY_INSERT(td->tg_event)) {
        newt = td->tg_trigtuple;
        action = "insert";
    } else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) {
        oldt = td->tg_trigtuple;
        newt = td->tg_newtuple;
        action = "update";
    } else if (TRIGGER_FIRED_BY_DELETE(td->tg_event)) {
        oldt = td->tg_trigtuple;
        action = "delete";
    } else {
        throw SqlError(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                       "tenancy._audit_trigger(): unsupported event");
    }
    int path_att = find_column(desc, path_col);
    int main_att = find_column(desc, "main_id");
    if (path_att == 0 || main_att == 0)
        throw SqlError(ERRCODE_UNDEFINED_COLUMN,
                       std::string("table ") + RelationGetRelationName(rel) + " has no \"" +
                           path_col + "\" or \"main_id\" column to audit");

    // Each image is deformed once, for the change, the account and the key.
    audit_change::RowValues oldr{}, newr{};
    Datum change = pg_call([&] {
        if (oldt)
            oldr = audit_change::deform_row(desc, oldt);
        if (newt)
            newr = audit_change::deform_row(desc, newt);
        return PointerGetDatum(audit_change::build_change(desc, oldt ? &oldr : nullptr,
                                                          newt ? &newr : nullptr, path_col));
    });
    if (change == 0)
        return PointerGetDatum(nullptr);

    // An update is recorded where the row was before it (an account moved away
    // stays visible to its old ancestors).
    const audit_change::RowValues &where = oldt ? oldr : newr;
    bool path_null = where.nulls[path_att - 1], main_null = where.nulls[main_att - 1];
    Datum path = where.values[path_att - 1];
    Datum main_id = where.values[main_att - 1];
    if (path_null || main_null)
        throw SqlError(ERRCODE_NOT_NULL_VIOLATION, "audited row has no account path or main_id");
    if (TupleDescAttr(desc, main_att - 1)->atttypid != INT8OID)
        throw SqlError(ERRCODE_DATATYPE_MISMATCH,
                       "column main_id of an audited table must be bigint");

    const audit_change::RowValues *key_row = newt ? &newr : &oldr;
    Datum row_key =
        pg_call([&] { return PointerGetDatum(audit_change::build_row_key(rel, key_row)); });
    const std::string &target = qualified_name(rel);
    Actor actor = current_actor();

    EntryData e{};
    e.main_id = DatumGetInt64(main_id);
    e.account_path = path;
    e.actor_kind = actor.kind.c_str();
    e.actor_id = actor.id.c_str();
    e.has_credential = actor.has_credential;
    e.credential_id = actor.credential_id;
    e.action = action;
    e.target = target.c_str();
    e.row_key = row_key;
    e.change = change;
    pg_call([&] { record_entry(&e); });
    return PointerGetDatum(nullptr);
}

std::string arg_text(FunctionCallInfo fcinfo, int n) {
    text *t = reinterpret_cast<text *>(pg_call([&] { return PG_GETARG_TEXT_PP(n); }));
    return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

// _audit_record(main_id, account_path, action, target, detail
//               [, actor_kind, actor_id, credential_id]).
// main_id 0 with a NULL path is the installation's own chain (logins that
// name no known account); the explicit actor is for events recorded before a
// context exists (a login attempt).
Datum audit_record(FunctionCallInfo fcinfo) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
        throw SqlError(ERRCODE_NULL_VALUE_NOT_ALLOWED, "main_id and action are required");
    int64 main_id = PG_GETARG_INT64(0);
    struct varlena *path = nullptr;
    if (main_id == 0) {
        if (!PG_ARGISNULL(1))
            throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE,
                           "the installation's chain (main_id 0) takes no account_path");
    } else {
        uint64_t root = 0;
        if (PG_ARGISNULL(1))
            throw SqlError(ERRCODE_NULL_VALUE_NOT_ALLOWED, "account_path is required");
        path = reinterpret_cast<struct varlena *>(
            pg_call([&] { return PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(1)); }));
        // The path's first label is its main account.
        if (path::decode_label(reinterpret_cast<const uint8_t *>(VARDATA_ANY(path)),
                               VARSIZE_ANY_EXHDR(path), 0, &root) == 0 ||
            root != static_cast<uint64_t>(main_id))
            throw SqlError(
                ERRCODE_INVALID_PARAMETER_VALUE,
                "account_path does not lie under main account " + std::to_string(main_id));
    }
    std::string action = arg_text(fcinfo, 2);
    if (action.empty() || action.size() > 100 || action.find('\0') != std::string::npos)
        throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "audit action must be 1 to 100 characters");
    bool has_target = !PG_ARGISNULL(3);
    std::string target = has_target ? arg_text(fcinfo, 3) : std::string();
    if (target.find('\0') != std::string::npos)
        throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "audit target must not contain NUL");
    Actor actor;
    bool explicit_actor = PG_NARGS() >= 8 && !PG_ARGISNULL(5);
    if (explicit_actor) {
        actor.kind = arg_text(fcinfo, 5);
        if (actor.kind != "api_key" && actor.kind != "user" && actor.kind != "sub_user" &&
            actor.kind != "anonymous")
            throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE,
                           "actor_kind must be api_key, user, sub_user or anonymous");
        if (!PG_ARGISNULL(6))
            actor.id = arg_text(fcinfo, 6);
        if (actor.id.find('\0') != std::string::npos || actor.id.size() > 320)
            throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE,
                           "actor_id must be at most 320 characters");
        // Callers pass a key's or sub-user's bare numeric id: stored as
        // whoami() names it, in the entry's main account (theirs).
        if ((actor.kind == "api_key" || actor.kind == "sub_user") && main_id != 0 &&
            !actor.id.empty() && actor.id.size() <= 18 &&
            actor.id.find_first_not_of("0123456789") == std::string::npos)
            actor.id = principal_id_text(actor.kind.c_str(), main_id, std::stoll(actor.id));
        actor.has_credential = !PG_ARGISNULL(7);
        actor.credential_id = actor.has_credential ? PG_GETARG_INT64(7) : 0;
    } else {
        actor = current_actor();
    }
    EntryData e{};
    e.main_id = main_id;
    e.account_path = PointerGetDatum(path);
    e.actor_kind = actor.kind.c_str();
    e.actor_id = actor.id.empty() && explicit_actor ? nullptr : actor.id.c_str();
    e.has_credential = actor.has_credential;
    e.credential_id = actor.credential_id;
    e.action = action.c_str();
    e.target = has_target ? target.c_str() : nullptr;
    e.change = PG_ARGISNULL(4) ? 0 : PG_GETARG_DATUM(4);
    int64 id = pg_call([&] { return insert_entry(&e); });
    return Int64GetDatum(id);
}

bytea *hash_datum(const unsigned char *digest, size_t len) {
    bytea *out = static_cast<bytea *>(palloc(VARHDRSZ + len));
    SET_VARSIZE(out, VARHDRSZ + len);
    memcpy(VARDATA(out), digest, len);
    return out;
}

// One step of the chain, as verification recomputes it: SHA-256(state ||
// payload), where a NULL state stands for `start` (the hash before the first
// block). The sealer (audit_seal.cpp) hashes the same bytes.
Datum audit_chain_step(FunctionCallInfo fcinfo) {
    if (PG_ARGISNULL(2) || (PG_ARGISNULL(0) && PG_ARGISNULL(1)))
        throw SqlError(ERRCODE_NULL_VALUE_NOT_ALLOWED, "start and payload must not be NULL");
    bytea *prev = reinterpret_cast<bytea *>(
        pg_call([&] { return PG_ARGISNULL(0) ? PG_GETARG_BYTEA_PP(1) : PG_GETARG_BYTEA_PP(0); }));
    bytea *payload = reinterpret_cast<bytea *>(pg_call([&] { return PG_GETARG_BYTEA_PP(2); }));
    if (VARSIZE_ANY_EXHDR(prev) != kHashSize)
        throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "start must be a 32-byte SHA-256 hash");
    std::string input(VARDATA_ANY(prev), kHashSize);
    input.append(VARDATA_ANY(payload), VARSIZE_ANY_EXHDR(payload));
    unsigned char digest[kHashSize];
    if (!sha256(input.data(), input.size(), digest))
        throw SqlError(ERRCODE_INTERNAL_ERROR, "SHA-256 failed");
    bytea *out = pg_call([&] { return hash_datum(digest, kHashSize); });
    PG_RETURN_BYTEA_P(out);
}

// _audit_entry_digest(main_id, id, account_path, at, actor_kind, actor_id,
//                     credential_id, action, target, row_key, change)
Datum audit_entry_digest(FunctionCallInfo fcinfo) {
    if (PG_NARGS() != audit_digest::kEntryFields)
        throw SqlError(ERRCODE_INTERNAL_ERROR, "tenancy._audit_entry_digest: wrong arguments");
    Datum values[audit_digest::kEntryFields];
    bool nulls[audit_digest::kEntryFields];
    for (int i = 0; i < audit_digest::kEntryFields; i++) {
        nulls[i] = PG_ARGISNULL(i);
        values[i] = nulls[i] ? 0 : PG_GETARG_DATUM(i);
    }
    return pg_call([&] {
        unsigned char digest[kHashSize];
        audit_digest::entry_digest(values, nulls, makeStringInfo(), digest);
        return PointerGetDatum(hash_datum(digest, kHashSize));
    });
}

// _audit_block_link(first_pos, sealed_at, digests): what a chain step hashes
// after the previous block's hash: the block's entry digests bound to its
// first position, its size and its sealing time.
Datum audit_block_link(FunctionCallInfo fcinfo) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
        throw SqlError(ERRCODE_NULL_VALUE_NOT_ALLOWED,
                       "first_pos, sealed_at and digests must not be NULL");
    int64 first_pos = PG_GETARG_INT64(0);
    TimestampTz sealed_at = PG_GETARG_TIMESTAMPTZ(1);
    bytea *digests = reinterpret_cast<bytea *>(pg_call([&] { return PG_GETARG_BYTEA_PP(2); }));
    size_t len = VARSIZE_ANY_EXHDR(digests);
    if (len == 0 || len % kHashSize != 0)
        throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE,
                       "digests must be one or more 32-byte SHA-256 digests");
    return pg_call([&] {
        StringInfo link = makeStringInfo();
        audit_digest::append_block_link(
            link, first_pos, sealed_at,
            reinterpret_cast<const unsigned char *>(VARDATA_ANY(digests)), len / kHashSize);
        return PointerGetDatum(
            hash_datum(reinterpret_cast<const unsigned char *>(link->data), link->len));
    });
}

Datum hmac_sha256_sql(FunctionCallInfo fcinfo) {
    bytea *key = reinterpret_cast<bytea *>(pg_call([&] { return PG_GETARG_BYTEA_PP(0); }));
    text *data = reinterpret_cast<text *>(pg_call([&] { return PG_GETARG_TEXT_PP(1); }));
    if (VARSIZE_ANY_EXHDR(key) < 16)
        throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "HMAC key too short");
    unsigned char mac[kSha256Size];
    if (!hmac_sha256(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), VARDATA_ANY(data),
                     VARSIZE_ANY_EXHDR(data), mac))
        throw SqlError(ERRCODE_INTERNAL_ERROR, "HMAC-SHA-256 failed");
    bytea *out = pg_call([&] { return hash_datum(mac, kSha256Size); });
    PG_RETURN_BYTEA_P(out);
}

}  // namespace

void audit_batch_init() {
    previous_executor_finish = ExecutorFinish_hook;
    ExecutorFinish_hook = audit_executor_finish;
}

}  // namespace tenancy

extern "C" {

PG_FUNCTION_INFO_V1(tenancy_audit_trigger);
Datum tenancy_audit_trigger(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::audit_row(fcinfo); });
}

PG_FUNCTION_INFO_V1(tenancy_audit_record);
Datum tenancy_audit_record(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::audit_record(fcinfo); });
}

PG_FUNCTION_INFO_V1(tenancy_audit_chain_step);
Datum tenancy_audit_chain_step(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::audit_chain_step(fcinfo); });
}

PG_FUNCTION_INFO_V1(tenancy_audit_entry_digest);
Datum tenancy_audit_entry_digest(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::audit_entry_digest(fcinfo); });
}

PG_FUNCTION_INFO_V1(tenancy_audit_block_link);
Datum tenancy_audit_block_link(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::audit_block_link(fcinfo); });
}

PG_FUNCTION_INFO_V1(tenancy_hmac_sha256);
Datum tenancy_hmac_sha256(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::hmac_sha256_sql(fcinfo); });
}
}
