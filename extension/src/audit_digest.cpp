// The audit chain's canonical serialisation (see audit_digest.hpp).
//
// Boundary: plain C-style code (no C++ object with a destructor); every
// function may ereport, so callers run them inside pg_call.
#include "audit_digest.hpp"

#include "sha256.hpp"

extern "C" {
#include "fmgr.h"
}

namespace tenancy::audit_digest {
namespace {

enum class FieldKind { Int8, Bytes };

// main_id, id, account_path, at, actor_kind, actor_id, credential_id,
// action, target, row_key, change: bigint and timestamptz are both int64;
// the path, texts and jsonb are hashed as their stored bytes.
constexpr FieldKind kFields[kEntryFields] = {FieldKind::Int8,  FieldKind::Int8,  FieldKind::Bytes,
                                             FieldKind::Int8,  FieldKind::Bytes, FieldKind::Bytes,
                                             FieldKind::Int8,  FieldKind::Bytes, FieldKind::Bytes,
                                             FieldKind::Bytes, FieldKind::Bytes};

void append_be(StringInfo out, uint64 v, int bytes) {
    char buf[8];
    for (int i = 0; i < bytes; i++)
        buf[i] = static_cast<char>((v >> (8 * (bytes - 1 - i))) & 0xff);
    appendBinaryStringInfo(out, buf, bytes);
}

void append_field(StringInfo out, const char *data, size_t len) {
    append_be(out, len, 4);
    appendBinaryStringInfo(out, data, static_cast<int>(len));
}

}  // namespace

void entry_digest(const Datum *values, const bool *nulls, StringInfo scratch,
                  unsigned char *digest) {
    resetStringInfo(scratch);
    appendStringInfoString(scratch, "tenancy-audit-entry-v3");
    for (int f = 0; f < kEntryFields; f++) {
        if (nulls[f]) {
            appendStringInfoChar(scratch, '\0');
            continue;
        }
        appendStringInfoChar(scratch, '\1');
        switch (kFields[f]) {
            case FieldKind::Int8:
                append_be(scratch, 8, 4);
                append_be(scratch, static_cast<uint64>(DatumGetInt64(values[f])), 8);
                break;
            case FieldKind::Bytes: {
                struct varlena *v = PG_DETOAST_DATUM_PACKED(values[f]);
                append_field(scratch, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
                if (reinterpret_cast<Pointer>(v) != DatumGetPointer(values[f]))
                    pfree(v);
                break;
            }
        }
    }
    if (!sha256(scratch->data, scratch->len, digest))
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("SHA-256 failed")));
}

void append_block_link(StringInfo out, int64 first_pos, TimestampTz sealed_at,
                       const unsigned char *digests, std::size_t n) {
    appendStringInfoString(out, "tenancy-audit-block-v3");
    append_be(out, static_cast<uint64>(first_pos), 8);
    append_be(out, n, 8);
    append_be(out, static_cast<uint64>(sealed_at), 8);
    appendBinaryStringInfo(out, reinterpret_cast<const char *>(digests),
                           static_cast<int>(n * kSha256Size));
}

}  // namespace tenancy::audit_digest
