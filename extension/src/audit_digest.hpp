// What the audit chain hashes (audit_digest.cpp): an entry's canonical
// serialisation and a block's link. One definition for the sealer
// (audit_seal.cpp) and the SQL helpers verification uses (audit.cpp).
//
// Both are C-style and may ereport (detoasting, palloc): call
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

// digest = SHA-256("tenancy-audit-entry-v3" || each field: a presence byte,
// then a 4-byte big-endian length and the bytes). Numbers and timestamps as
// 8-byte big-endian integers; the path, texts and jsonb as their stored
// bytes (detoasted): nothing depends on a setting (DateStyle, TimeZone), and
// any change to a stored value is caught, also one that prints the same.
// (v2 hashed jsonb as its text: printing it was a fifth of the sealer's
// work per entry, measured with callgrind.)
// `scratch` is reset and reused (one allocation for a whole round).
void entry_digest(const Datum *values, const bool *nulls, StringInfo scratch,
                  unsigned char *digest);

// Appends a block's link to `out`: "tenancy-audit-block-v3" || first_pos ||
// n || sealed_at (8-byte big-endian each) || the n concatenated digests.
// The block's hash is SHA-256(previous block's hash || link).
void append_block_link(StringInfo out, int64 first_pos, TimestampTz sealed_at,
                       const unsigned char *digests, std::size_t n);

}  // namespace tenancy::audit_digest
