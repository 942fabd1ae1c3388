// The request context.
//
// Design (README, "Security"): the context travels as a signed token in the
// reserved setting `tenancy.context`, set with SET LOCAL semantics, so that it
//  * reaches parallel workers (settings are copied to them) and can reach other
//    nodes later (a setting can be propagated; a backend's memory cannot);
//  * cannot be forged: the token carries an HMAC-SHA-256 under a server key
//    that lives in tenancy.context_keys, a table no client role can read (the
//    key is read here with a direct heap scan, not through SQL privileges);
//  * cannot be replayed: the token is bound to the backend (or parallel leader)
//    pid and its local transaction id, so a value captured with SHOW and SET
//    again in a later transaction verifies as nothing;
//  * ends with the transaction (SET LOCAL).
// A session-scoped context is a record in this backend's memory naming the
// credential. At the first context read of every transaction the record is
// re-validated in SQL (revocation, expiry, deactivation) and a fresh
// transaction token is issued. The record dies with RESET ALL / DISCARD ALL
// (the marker setting `tenancy.session` is reset) and with tenancy.reset().
// A transaction-scoped authenticate() overrides a session context for that
// transaction only, as SET LOCAL overrides SET. Behind a transaction pooler a
// server session serves many clients: tenancy.allow_session_scope = off (set
// by the DBA on those roles) refuses session scope there.
//
// Verification costs one HMAC per backend per token; afterwards a read is a
// string compare with the cached token plus two integer compares.
//
// Key rotation (tenancy.rotate_context_key, 21_context.sql): the token names
// its key (key_id, inside the signed payload); new tokens are signed with the
// newest live key; a key past its retire_at verifies nothing, and an unknown
// key id is no context. A rotation invalidates the keys' relcache entry, and
// every backend drops its cached keys when it processes that invalidation.
#include "boundary.hpp"
#include "citus_binding.hpp"
#include "sha256.hpp"
#include "context.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/parallel.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

#include <openssl/crypto.h>
#include <sodium.h>

#include <array>
#include <cstring>
#include <map>

namespace tenancy {

namespace {

constexpr uint8_t kTokenVersion = 1;
constexpr uint8_t kTokenVersionDistributed = 2;  // + the distributed transaction id
constexpr size_t kMacSize = 32;
constexpr size_t kKeySize = 32;
constexpr int kMaxKeys = 16;

char *context_setting = nullptr;  // tenancy.context (the signed token)
// Bumped on every change of tenancy.context (SET, SET LOCAL ending, rollback,
// restore in a parallel worker): equal generations mean the same token.
uint64 context_generation = 1;
char *session_setting = nullptr;  // tenancy.session (marker of a session context)

// Server keys, loaded once per backend (and again after a rotation), with the
// time each one retires (DT_NOEND: not scheduled).
std::map<int, std::array<unsigned char, kKeySize>> server_keys;
std::map<int, TimestampTz> key_retire_at;
Oid context_keys_relid = InvalidOid;

// Last verified token and what it says.
std::string cached_token;
RequestContext cached;
bool cached_valid = false;
uint64 cached_generation = 0;

// The paths of the current token as Datums, for the per-row policy check:
// allocated in TopTransactionContext and never freed before the transaction
// ends, so a Datum handed out earlier in the query stays valid after act_as.
struct PathCache {
    uint64 generation;
    LocalTransactionId lxid;
    Datum path;  // 0: no context
    Datum home_path;
};
PathCache path_cache = {0, InvalidLocalTransactionId, 0, 0};

void context_setting_assign(const char *newval, void *extra) {
    context_generation++;
}

// The session record: trivially destructible, so the setting's assign hook can
// clear it without allocating.
struct SessionRecord {
    bool active;
    char nonce[33];
    char principal_kind[16];
    int64 main_id;
    int64 credential_id;
    int64 account_id;
    LocalTransactionId refreshed_lxid;
};
SessionRecord session = {};
bool refreshing = false;

// tenancy.allow_session_scope (superuser-only, so a client cannot turn it back
// on): off refuses authenticate(..., session => true). A transaction pooler
// hands one server session to many clients, so a session context would reach
// the next client; the DBA sets it off on the roles that connect through one
// (docs/operations/pooling.md).
bool allow_session_scope = true;

void clear_session() noexcept {
    session.active = false;
    session.nonce[0] = '\0';
    session.refreshed_lxid = InvalidLocalTransactionId;
}

// RESET ALL, DISCARD ALL, a rolled-back SET or a client's SET of the marker:
// any value other than the one we issued ends the session context.
void session_setting_assign(const char *newval, void *extra) {
    if (!session.active)
        return;
    if (newval == nullptr || std::strcmp(newval, session.nonce) != 0)
        clear_session();
}

// The backend whose transaction a token is bound to: ourselves, or our
// parallel leader when we are a worker.
void current_binding(int32_t &pid, uint32_t &lxid) {
    PGPROC *leader = MyProc->lockGroupLeader ? MyProc->lockGroupLeader : MyProc;
    pid = leader->pid;
    lxid = leader->lxid;
}

// ---- token encoding -------------------------------------------------------

void put_u8(std::string &out, uint8_t v) {
    out.push_back(static_cast<char>(v));
}
void put_int(std::string &out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_bytes(std::string &out, const std::string &s, int len_bytes) {
    put_int(out, s.size(), len_bytes);
    out.append(s);
}

class Reader {
  public:
    Reader(const std::string &s) : s_(s) {}
    uint64_t integer(int bytes) {
        need(bytes);
        uint64_t v = 0;
        for (int i = 0; i < bytes; i++)
            v |= uint64_t(static_cast<unsigned char>(s_[pos_ + i])) << (8 * i);
        pos_ += bytes;
        return v;
    }
    std::string bytes(int len_bytes) {
        size_t n = integer(len_bytes);
        need(n);
        std::string r = s_.substr(pos_, n);
        pos_ += n;
        return r;
    }
    bool at_end() const { return pos_ == s_.size(); }

  private:
    void need(size_t n) {
        if (pos_ + n > s_.size())
            throw SqlError(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                           "tenancy context is malformed");
    }
    const std::string &s_;
    size_t pos_ = 0;
};

std::string encode_payload(const RequestContext &c) {
    std::string out;
    put_u8(out, c.distributed ? kTokenVersionDistributed : kTokenVersion);
    put_u8(out, static_cast<uint8_t>(c.principal_kind));
    put_int(out, c.key_id, 2);
    put_int(out, static_cast<uint32_t>(c.leader_pid), 4);
    put_int(out, c.leader_lxid, 4);
    put_int(out, static_cast<uint64_t>(c.expires_at), 8);
    put_int(out, static_cast<uint64_t>(c.principal_id), 8);
    put_int(out, static_cast<uint64_t>(c.credential_id), 8);
    put_int(out, static_cast<uint64_t>(c.account_id), 8);
    put_int(out, static_cast<uint64_t>(c.main_id), 8);
    put_int(out, static_cast<uint64_t>(c.home_account_id), 8);
    put_bytes(out, c.role, 1);
    put_bytes(out, c.account_public_id, 1);
    put_bytes(out, c.path, 2);
    put_bytes(out, c.home_path, 2);
    if (c.distributed) {
        put_int(out, static_cast<uint32_t>(c.dist_node), 4);
        put_int(out, c.dist_number, 8);
        put_int(out, static_cast<uint64_t>(c.dist_stamp), 8);
    }
    return out;
}

RequestContext decode_payload(const std::string &payload) {
    Reader r(payload);
    RequestContext c;
    uint64_t version = r.integer(1);
    if (version != kTokenVersion && version != kTokenVersionDistributed)
        throw SqlError(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                       "tenancy context has an unknown version");
    c.principal_kind = static_cast<PrincipalKind>(r.integer(1));
    c.key_id = static_cast<uint16_t>(r.integer(2));
    c.leader_pid = static_cast<int32_t>(r.integer(4));
    c.leader_lxid = static_cast<uint32_t>(r.integer(4));
    c.expires_at = static_cast<int64_t>(r.integer(8));
    c.principal_id = static_cast<int64_t>(r.integer(8));
    c.credential_id = static_cast<int64_t>(r.integer(8));
    c.account_id = static_cast<int64_t>(r.integer(8));
    c.main_id = static_cast<int64_t>(r.integer(8));
    c.home_account_id = static_cast<int64_t>(r.integer(8));
    c.role = r.bytes(1);
    c.account_public_id = r.bytes(1);
    c.path = r.bytes(2);
    c.home_path = r.bytes(2);
    c.distributed = version == kTokenVersionDistributed;
    if (c.distributed) {
        c.dist_node = static_cast<int32_t>(r.integer(4));
        c.dist_number = r.integer(8);
        c.dist_stamp = static_cast<int64_t>(r.integer(8));
    }
    if (!r.at_end())
        throw SqlError(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, "tenancy context is malformed");
    return c;
}

std::string base64url(const std::string &bin) {
    std::string out(sodium_base64_encoded_len(bin.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                    '\0');
    sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char *>(bin.data()),
                      bin.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    out.resize(std::strlen(out.c_str()));
    return out;
}

bool unbase64url(const std::string &text, std::string &bin) {
    bin.assign(text.size(), '\0');
    size_t len = 0;
    if (sodium_base642bin(reinterpret_cast<unsigned char *>(bin.data()), bin.size(), text.data(),
                          text.size(), nullptr, &len, nullptr,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return false;
    bin.resize(len);
    return true;
}

std::array<unsigned char, kMacSize> mac_of(const std::array<unsigned char, kKeySize> &key,
                                           const std::string &payload) {
    static_assert(kMacSize == kSha256Size);
    std::array<unsigned char, kMacSize> mac{};
    if (!hmac_sha256(key.data(), key.size(), payload.data(), payload.size(), mac.data()))
        throw SqlError(ERRCODE_INTERNAL_ERROR, "HMAC-SHA-256 failed");
    return mac;
}

// ---- server keys ----------------------------------------------------------

struct KeySlot {
    int id;
    TimestampTz retire_at;
    unsigned char secret[kKeySize];
};

// Reads tenancy.context_keys with a heap scan: no SQL privilege check, so the
// key is readable here whatever role runs the query, and by no client. Plain C:
// run through pg_call.
// On Citus the table is a reference table: its rows are in this node's
// placement (a shard table), not in the table itself.
int read_server_keys(KeySlot *slots, bool citus) {
    Oid nsp = get_namespace_oid("tenancy", false);
    Oid relid = get_relname_relid("context_keys", nsp);
    if (!OidIsValid(relid))
        elog(ERROR, "tenancy.context_keys is missing");
    if (citus) {
        relid = citus_local_placement(relid);
        if (!OidIsValid(relid))
            return 0;  // no copy of the keys here: no context verifies
    }
    // The relation read (on a Citus node, its local copy) is the one whose
    // invalidation a rotation sends.
    context_keys_relid = relid;
    // Absent before ALTER EXTENSION tenancy UPDATE to 0.2: no key retires.
    AttrNumber retire_attnum = get_attnum(relid, "retire_at");
    TimestampTz now = GetCurrentTimestamp();
    Relation rel = table_open(relid, AccessShareLock);
    // The active snapshot: parallel workers may not take a new one.
    Snapshot snapshot =
        RegisterSnapshot(ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot());
    TableScanDesc scan = table_beginscan(rel, snapshot, 0, NULL);
    int n = 0;
    HeapTuple tuple;
    while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL && n < kMaxKeys) {
        bool id_null, secret_null;
        Datum id = heap_getattr(tuple, 1, RelationGetDescr(rel), &id_null);
        Datum secret = heap_getattr(tuple, 2, RelationGetDescr(rel), &secret_null);
        if (id_null || secret_null)
            continue;
        TimestampTz retire_at = DT_NOEND;
        if (retire_attnum != InvalidAttrNumber) {
            bool retire_null;
            Datum r = heap_getattr(tuple, retire_attnum, RelationGetDescr(rel), &retire_null);
            if (!retire_null)
                retire_at = DatumGetTimestampTz(r);
        }
        if (retire_at <= now)
            continue;  // retired: it verifies nothing
        bytea *b = DatumGetByteaPP(secret);
        if (VARSIZE_ANY_EXHDR(b) != kKeySize)
            continue;
        slots[n].id = DatumGetInt16(id);
        slots[n].retire_at = retire_at;
        memcpy(slots[n].secret, VARDATA_ANY(b), kKeySize);
        n++;
    }
    table_endscan(scan);
    UnregisterSnapshot(snapshot);
    table_close(rel, AccessShareLock);
    return n;
}

const std::array<unsigned char, kKeySize> *server_key(int id, bool reload) {
    auto it = server_keys.find(id);
    if (it != server_keys.end() && !reload)
        return &it->second;
    KeySlot slots[kMaxKeys];
    bool citus = citus_distributed();
    int n = pg_call([&] { return read_server_keys(slots, citus); });
    server_keys.clear();
    key_retire_at.clear();
    for (int i = 0; i < n; i++) {
        std::array<unsigned char, kKeySize> k;
        std::memcpy(k.data(), slots[i].secret, kKeySize);
        server_keys[slots[i].id] = k;
        key_retire_at[slots[i].id] = slots[i].retire_at;
    }
    sodium_memzero(slots, sizeof slots);
    it = server_keys.find(id);
    return it == server_keys.end() ? nullptr : &it->second;
}

bool key_retired(int id) {
    auto it = key_retire_at.find(id);
    return it == key_retire_at.end() || it->second <= GetCurrentTimestamp();
}

// The newest key that is not retiring: a rotation's new key.
int newest_key_id() {
    for (int attempt = 0; attempt < 2; attempt++) {
        if (server_keys.empty() || attempt == 1)
            server_key(-1, true);
        for (auto it = server_keys.rbegin(); it != server_keys.rend(); ++it)
            if (!key_retired(it->first))
                return it->first;
    }
    throw SqlError(ERRCODE_INTERNAL_ERROR, "tenancy has no live server key");
}

// A rotation changed tenancy.context_keys (or every cache is reset): forget
// the keys and re-verify the current token at its next read. Allocates
// nothing, throws nothing.
void context_keys_changed(Datum arg, Oid relid) {
    if (relid != InvalidOid && relid != context_keys_relid)
        return;
    server_keys.clear();
    key_retire_at.clear();
    cached_valid = false;
    context_generation++;
}

std::string sign(const RequestContext &c) {
    std::string payload = encode_payload(c);
    const auto *key = server_key(c.key_id, false);
    if (key == nullptr)
        throw SqlError(ERRCODE_INTERNAL_ERROR, "tenancy server key is missing");
    auto mac = mac_of(*key, payload);
    payload.append(reinterpret_cast<const char *>(mac.data()), mac.size());
    return base64url(payload);
}

// A token that fails any check is simply no context: the caller sees nothing.
bool verify(const std::string &token, RequestContext &out) {
    std::string bin;
    if (!unbase64url(token, bin) || bin.size() <= kMacSize + 4)
        return false;
    std::string payload = bin.substr(0, bin.size() - kMacSize);
    int key_id =
        static_cast<unsigned char>(payload[2]) | (static_cast<unsigned char>(payload[3]) << 8);
    const auto *key = server_key(key_id, false);
    if (key == nullptr)
        key = server_key(key_id, true);  // rotated since we loaded
    if (key == nullptr || key_retired(key_id))
        return false;  // unknown or retired key: no context
    auto mac = mac_of(*key, payload);
    if (CRYPTO_memcmp(mac.data(), bin.data() + payload.size(), kMacSize) != 0)
        return false;
    try {
        out = decode_payload(payload);
    } catch (const SqlError &) {
        return false;
    }
    return out.expires_at > GetCurrentTimestamp();
}

// Whether the extension is distributed, evaluated once per transaction.
struct DistributedMode {
    LocalTransactionId lxid = InvalidLocalTransactionId;
    bool value = false;
};
DistributedMode distributed_mode;

bool distributed_now() {
    LocalTransactionId lxid =
        MyProc->lockGroupLeader ? MyProc->lockGroupLeader->lxid : MyProc->lxid;
    if (distributed_mode.lxid != lxid || lxid == InvalidLocalTransactionId) {
        distributed_mode.value = citus_distributed();
        distributed_mode.lxid = lxid;
    }
    return distributed_mode.value;
}

// Without Citus a token is bound to the backend and its transaction. On Citus
// it is bound to the distributed transaction, which is all another node can
// check. On the node that started that transaction the id must have been
// assigned there (not claimed with assign_distributed_transaction_id()), and
// the backend binding must hold too; elsewhere only the coordinator's own
// connections can claim the id (pg_hba, docs/operations/scale-out.md).
bool bound_here(const RequestContext &c) {
    int32_t pid;
    uint32_t lxid;
    current_binding(pid, lxid);
    bool backend_bound = c.leader_pid == pid && c.leader_lxid == lxid;
    if (!distributed_now())
        return !c.distributed && backend_bound;
    if (!c.distributed)
        return false;
    DistributedXid x = citus_current_xid(false);
    if (x.number == 0 || x.node != c.dist_node || x.number != c.dist_number ||
        x.stamp != c.dist_stamp)
        return false;
    if (x.node == citus_local_group())
        return x.originator && backend_bound;
    return !x.originator;
}

// On Citus the setting must reach the workers: only a SET LOCAL statement
// does (Citus forwards it with citus.propagate_set_commands = 'local').
void set_context_setting(const char *value) {
    if (distributed_now()) {
        if (!citus_propagates_set_local())
            throw SqlError(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                           "tenancy on Citus needs citus.propagate_set_commands = 'local'",
                           "Without it the context would not reach the worker nodes.");
        // The token is base64url, so it needs no quoting beyond the quotes.
        std::string sql = std::string("SET LOCAL tenancy.context = '") + value + "'";
        const char *text = sql.c_str();
        pg_call([&] {
            if (SPI_connect() != SPI_OK_CONNECT)
                elog(ERROR, "SPI_connect failed");
            // A SET that did not run would leave the workers without the
            // context: say so rather than go on.
            if (SPI_execute(text, false, 0) != SPI_OK_UTILITY)
                elog(ERROR, "SET LOCAL tenancy.context failed");
            SPI_finish();
            return 0;
        });
        return;
    }
    pg_call([&] {
        return set_config_option("tenancy.context", value, PGC_USERSET, PGC_S_SESSION,
                                 GUC_ACTION_LOCAL, true, 0, false);
    });
}

// Re-validates the session credential for this transaction, in SQL
// (tenancy._resume_session), which issues a fresh transaction token.
void resume_session() {
    if (!allow_session_scope) {
        // Turned off (by the DBA) since the session began: end it, fail closed.
        clear_session();
        return;
    }
    refreshing = true;
    session.refreshed_lxid = MyProc->lxid;
    try {
        pg_call([] {
            if (SPI_connect() != SPI_OK_CONNECT)
                elog(ERROR, "SPI_connect failed");
            SPI_execute("SELECT tenancy._resume_session()", false, 1);
            SPI_finish();
            return 0;
        });
    } catch (...) {
        refreshing = false;
        clear_session();
        throw;
    }
    refreshing = false;
}

bool session_needs_refresh() {
    return session.active && !refreshing && !IsParallelWorker() && IsTransactionState() &&
           session.refreshed_lxid != MyProc->lxid;
}

// A parallel plan may run every context read in workers, which cannot refresh
// the session: so the leader refreshes before it executes anything.
ExecutorStart_hook_type previous_executor_start = nullptr;

void executor_start(QueryDesc *query, int eflags) {
    if (session_needs_refresh())
        guard([]() -> Datum {
            resume_session();
            return (Datum)0;
        });
    // On Citus a context that cannot reach the workers is an error, not a
    // silent difference between nodes.
    if (context_setting != nullptr && context_setting[0] != '\0' && !IsParallelWorker())
        guard([]() -> Datum {
            if (!distributed_now())
                return (Datum)0;
            DistributedXid x = citus_current_xid(false);
            // A client that claimed a distributed transaction id on the node
            // that hands them out would forward a replayed token with it.
            if (x.number != 0 && !x.originator && x.node == citus_local_group() &&
                !superuser_arg(GetSessionUserId()))
                throw SqlError(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                               "a tenancy context cannot be used in a distributed transaction "
                               "id claimed by the client");
            // Where the transaction starts (not in Citus's connections to a worker).
            if ((x.number == 0 || x.originator) && !citus_propagates_set_local())
                throw SqlError(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                               "tenancy on Citus needs citus.propagate_set_commands = 'local'",
                               "Without it the context would not reach the worker nodes.");
            return (Datum)0;
        });
    if (previous_executor_start)
        previous_executor_start(query, eflags);
    else
        standard_ExecutorStart(query, eflags);
}

}  // namespace

// The verified context of this transaction, or nullptr when there is none.
const RequestContext *current_context() {
    if (session_needs_refresh())
        resume_session();
    const char *token = context_setting;
    if (token == nullptr || token[0] == '\0')
        return nullptr;
    if (cached_valid && cached_generation == context_generation)
        return bound_here(cached) ? &cached : nullptr;
    cached_generation = context_generation;
    if (!cached_valid || cached_token != token) {
        cached_valid = false;
        RequestContext c;
        if (!verify(token, c))
            return nullptr;
        cached = std::move(c);
        cached_token = token;
        cached_valid = true;
    }
    return bound_here(cached) ? &cached : nullptr;
}

void context_init() {
    DefineCustomStringVariable(
        "tenancy.context", "Signed request context of the current transaction.",
        "Set only by tenancy.authenticate() and related functions; any other value is ignored.",
        &context_setting, "", PGC_USERSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE, NULL,
        context_setting_assign, NULL);
    DefineCustomStringVariable(
        "tenancy.session", "Marker of a session-scoped tenancy context.",
        "Resetting it (RESET ALL, DISCARD ALL) ends the session context.", &session_setting, "",
        PGC_USERSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE, NULL, session_setting_assign, NULL);
    DefineCustomBoolVariable(
        "tenancy.allow_session_scope", "Whether authenticate(..., session => true) is allowed.",
        "Set it off (ALTER ROLE ... SET) for roles that connect through a transaction pooler: "
        "a session-scoped context would stay on a server session shared with other clients.",
        &allow_session_scope, true, PGC_SUSET, 0, NULL, NULL, NULL);
    MarkGUCPrefixReserved("tenancy");
    CacheRegisterRelcacheCallback(context_keys_changed, (Datum)0);
    previous_executor_start = ExecutorStart_hook;
    ExecutorStart_hook = executor_start;
}

// ---- SQL-callable ---------------------------------------------------------

namespace {

std::string arg_text(FunctionCallInfo fcinfo, int n) {
    text *t = PG_GETARG_TEXT_PP(n);
    return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

std::string arg_path(FunctionCallInfo fcinfo, int n) {
    struct varlena *v = PG_GETARG_VARLENA_PP(n);
    return std::string(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
}

Datum path_datum_in(MemoryContext context, const std::string &bytes) {
    return pg_call([&] {
        struct varlena *v =
            static_cast<struct varlena *>(MemoryContextAlloc(context, VARHDRSZ + bytes.size()));
        SET_VARSIZE(v, VARHDRSZ + bytes.size());
        memcpy(VARDATA(v), bytes.data(), bytes.size());
        return PointerGetDatum(v);
    });
}

PrincipalKind kind_from_text(const std::string &k) {
    if (k == "api_key")
        return PrincipalKind::ApiKey;
    if (k == "user")
        return PrincipalKind::User;
    if (k == "sub_user")
        return PrincipalKind::SubUser;
    throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "unknown principal kind \"" + k + "\"");
}

const char *kind_text(PrincipalKind k) {
    switch (k) {
        case PrincipalKind::ApiKey:
            return "api_key";
        case PrincipalKind::User:
            return "user";
        case PrincipalKind::SubUser:
            return "sub_user";
    }
    return "unknown";
}

}  // namespace
}  // namespace tenancy

using tenancy::current_context;
using tenancy::guard;
using tenancy::RequestContext;

extern "C" {

// _issue_context(scope, principal_kind, principal_id, credential_id, account_id,
//                main_id, account_public_id, path, home_account_id, home_path, role,
//                expires_at)
// Internal: EXECUTE is granted to no client role; only the extension's
// SECURITY DEFINER functions call it, after verifying a credential.
PG_FUNCTION_INFO_V1(tenancy_issue_context);
Datum tenancy_issue_context(PG_FUNCTION_ARGS) {
    for (int i = 0; i < 12; i++)
        if (PG_ARGISNULL(i))
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("context field %d is null", i + 1)));
    return guard([&]() -> Datum {
        using namespace tenancy;
        std::string scope = arg_text(fcinfo, 0);
        if (scope != "transaction" && scope != "session" && scope != "refresh")
            throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "scope must be transaction or session");
        RequestContext c;
        c.principal_kind = kind_from_text(arg_text(fcinfo, 1));
        c.principal_id = PG_GETARG_INT64(2);
        c.credential_id = PG_GETARG_INT64(3);
        c.account_id = PG_GETARG_INT64(4);
        c.main_id = PG_GETARG_INT64(5);
        c.account_public_id = arg_text(fcinfo, 6);
        c.path = arg_path(fcinfo, 7);
        c.home_account_id = PG_GETARG_INT64(8);
        c.home_path = arg_path(fcinfo, 9);
        c.role = arg_text(fcinfo, 10);
        c.expires_at = PG_GETARG_TIMESTAMPTZ(11);
        if (c.role.size() > 255 || c.account_public_id.size() > 255 || c.path.size() > 65535 ||
            c.home_path.size() > 65535)
            throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "context field too long");
        current_binding(c.leader_pid, c.leader_lxid);
        if (distributed_now()) {
            DistributedXid x = citus_current_xid(true);
            if (!x.originator || x.node != citus_local_group())
                throw SqlError(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                               "a tenancy context is issued only by the node that started "
                               "the distributed transaction");
            c.distributed = true;
            c.dist_node = x.node;
            c.dist_number = x.number;
            c.dist_stamp = x.stamp;
        }
        c.key_id = static_cast<uint16_t>(newest_key_id());
        std::string token = sign(c);
        if (scope == "session" && !allow_session_scope)
            throw SqlError(ERRCODE_FEATURE_NOT_SUPPORTED,
                           "session-scoped contexts are refused here",
                           "tenancy.allow_session_scope is off (set where clients connect "
                           "through a transaction pooler, which would hand a session context "
                           "on to other clients).",
                           "Call tenancy.authenticate(credential) in each transaction.");
        if (scope == "session") {
            // Bind the record to a fresh nonce before setting the marker: the
            // marker's assign hook compares against it.
            unsigned char raw[16];
            randombytes_buf(raw, sizeof raw);
            sodium_bin2hex(session.nonce, sizeof session.nonce, raw, sizeof raw);
            std::strncpy(session.principal_kind, kind_text(c.principal_kind),
                         sizeof session.principal_kind - 1);
            session.main_id = c.main_id;
            session.credential_id = c.credential_id;
            session.account_id = c.account_id;
            session.refreshed_lxid = MyProc->lxid;
            session.active = true;
            const char *nonce = session.nonce;
            pg_call([&] {
                return set_config_option("tenancy.session", nonce, PGC_USERSET, PGC_S_SESSION,
                                         GUC_ACTION_SET, true, 0, false);
            });
        } else if (scope == "refresh" && session.active) {
            session.account_id = c.account_id;  // refresh or act_as keeps the session going
        }
        set_context_setting(token.c_str());
        return (Datum)0;
    });
}

// The session record, for tenancy._resume_session() (internal).
PG_FUNCTION_INFO_V1(tenancy_session_record);
Datum tenancy_session_record(PG_FUNCTION_ARGS) {
    return guard([&]() -> Datum {
        using tenancy::session;
        if (!session.active)
            return tenancy::text_datum(std::string());
        std::string r =
            std::string(session.principal_kind) + ":" + std::to_string(session.main_id) + ":" +
            std::to_string(session.credential_id) + ":" + std::to_string(session.account_id);
        return tenancy::text_datum(r);
    });
}

PG_FUNCTION_INFO_V1(tenancy_reset);
Datum tenancy_reset(PG_FUNCTION_ARGS) {
    return guard([&]() -> Datum {
        tenancy::clear_session();
        tenancy::cached_valid = false;
        tenancy::pg_call([] {
            return set_config_option("tenancy.session", "", PGC_USERSET, PGC_S_SESSION,
                                     GUC_ACTION_SET, true, 0, false);
        });
        tenancy::set_context_setting("");
        return (Datum)0;
    });
}

// One of the context's paths, or SQL NULL without a context. Policies compare
// every row against it, so the common case is a few integer compares: same
// token generation, same transaction, no session refresh due.
static Datum context_path_or_null(FunctionCallInfo fcinfo, bool home) {
    using tenancy::path_cache;
    if (path_cache.generation != tenancy::context_generation || path_cache.lxid != MyProc->lxid ||
        tenancy::session_needs_refresh()) {
        guard([&]() -> Datum {
            const RequestContext *c = current_context();
            tenancy::PathCache fresh = {tenancy::context_generation, MyProc->lxid, 0, 0};
            if (c != nullptr) {
                fresh.path = tenancy::path_datum_in(TopTransactionContext, c->path);
                fresh.home_path = tenancy::path_datum_in(TopTransactionContext, c->home_path);
            }
            path_cache = fresh;
            return (Datum)0;
        });
    }
    Datum result = home ? path_cache.home_path : path_cache.path;
    if (result == 0)
        PG_RETURN_NULL();
    return result;
}

// current_path(): the active account's path.
PG_FUNCTION_INFO_V1(tenancy_current_path);
Datum tenancy_current_path(PG_FUNCTION_ARGS) {
    return context_path_or_null(fcinfo, false);
}

// _home_path(): the path of the credential's own account (act_as stays below it).
PG_FUNCTION_INFO_V1(tenancy_home_path);
Datum tenancy_home_path(PG_FUNCTION_ARGS) {
    return context_path_or_null(fcinfo, true);
}

// current_field(name): one field of the context as text, NULL without one.
PG_FUNCTION_INFO_V1(tenancy_context_field);
Datum tenancy_context_field(PG_FUNCTION_ARGS) {
    bool found = false;
    Datum result = guard([&]() -> Datum {
        std::string name = tenancy::arg_text(fcinfo, 0);
        const RequestContext *c = current_context();
        if (c == nullptr)
            return (Datum)0;
        std::string v;
        if (name == "account")
            v = c->account_public_id;
        else if (name == "account_id")
            v = std::to_string(c->account_id);
        else if (name == "main_id")
            v = std::to_string(c->main_id);
        else if (name == "home_account_id")
            v = std::to_string(c->home_account_id);
        else if (name == "role")
            v = c->role;
        else if (name == "principal_kind")
            v = tenancy::kind_text(c->principal_kind);
        else if (name == "principal_id")
            v = std::to_string(c->principal_id);
        else if (name == "credential_id")
            v = std::to_string(c->credential_id);
        else if (name == "expires_at")
            v = std::to_string(c->expires_at);
        else if (name == "key_id")
            v = std::to_string(c->key_id);
        else if (name == "scope")
            v = tenancy::session.active && !IsParallelWorker() ? "session" : "transaction";
        else
            throw tenancy::SqlError(ERRCODE_INVALID_PARAMETER_VALUE,
                                    "unknown context field \"" + name + "\"");
        found = true;
        return tenancy::text_datum(v);
    });
    if (!found)
        PG_RETURN_NULL();
    return result;
}

// _context_keys_changed(): after a rotation, every backend (this one at its
// next command, the others at their next transaction) reloads the keys.
PG_FUNCTION_INFO_V1(tenancy_context_keys_changed);
Datum tenancy_context_keys_changed(PG_FUNCTION_ARGS) {
    Oid relid = get_relname_relid("context_keys", get_namespace_oid("tenancy", false));
    if (OidIsValid(relid))
        CacheInvalidateRelcacheByRelid(relid);
    PG_RETURN_VOID();
}

// Fresh random bytes from libsodium (server keys, secrets).
PG_FUNCTION_INFO_V1(tenancy_random_bytes);
Datum tenancy_random_bytes(PG_FUNCTION_ARGS) {
    int32 n = PG_GETARG_INT32(0);
    if (n < 1 || n > 1024)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("random_bytes takes 1 to 1024 bytes")));
    bytea *b = (bytea *)palloc(VARHDRSZ + n);
    SET_VARSIZE(b, VARHDRSZ + n);
    randombytes_buf(VARDATA(b), n);
    PG_RETURN_BYTEA_P(b);
}
}
