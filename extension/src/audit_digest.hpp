// What the audit chain hashes (audit_digest.cpp): an entry's canonical
// serialisation and a block's link. One definition for the sealer
// (audit_seal.cpp) and the SQL helpers verification uses (audit.cpp).
//
// Both are C-style and may ereport (detoasting, jsonb output, palloc): call
// them inside pg_call.
#pragma once

extern "C" {
#include "postgres.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
}

#include <cstddef>

namespace tenancy::audit_digest {

// The fields an entry digest covers, in this order: main_id, id,
// account_path, at, actor_kind, actor_id, credential_id, action, target,
// row_key, change.
constexpr int kEntryFields = 11;

// digest = SHA-256("tenancy-audit-entry-v2" || each field: a presence byte,
// then a 4-byte big-endian length and the bytes). Numbers and timestamps as
// 8-byte big-endian integers, the path in its binary form, jsonb as its
// normalised text: nothing depends on a setting (DateStyle, TimeZone).
// `scratch` is reset and reused (one allocation for a whole round).
void entry_digest(const Datum *values, const bool *nulls, StringInfo scratch,
                  unsigned char *digest);

// Appends a block's link to `out`: "tenancy-audit-block-v3" || first_pos ||
// n || sealed_at (8-byte big-endian each) || the n concatenated digests.
// The block's hash is SHA-256(previous block's hash || link).
void append_block_link(StringInfo out, int64 first_pos, TimestampTz sealed_at,
                       const unsigned char *digests, std::size_t n);

}  // namespace tenancy::audit_digest
