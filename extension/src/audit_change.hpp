// The audited row's change image and row key as jsonb (audit_change.cpp).
// Both are C-style and may ereport: call them inside pg_call.
#pragma once

extern "C" {
#include "postgres.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"
}

namespace tenancy::audit_change {

// One row's attributes (heap_deform_tuple), palloc'd; by-reference values
// point into the tuple.
struct RowValues {
    Datum *values;
    bool *nulls;
};
RowValues deform_row(TupleDesc desc, HeapTuple tuple);

// {"old": {...}, "new": {...}, "redacted": [...]}: for an update only the
// changed columns; for an insert or delete every column but the account
// columns (main_id and path_col, which the entry records itself). Secret
// columns are only named in "redacted". Returns NULL when an update changed
// nothing worth a trace (nothing, or only the row's account columns, which an
// account move cascades: the move itself is recorded on tenancy.accounts).
Jsonb *build_change(TupleDesc desc, const RowValues *oldr, const RowValues *newr,
                    const char *path_col);

// The row's primary key as a JSON object; NULL when the table has none.
Jsonb *build_row_key(Relation rel, const RowValues *row);

}  // namespace tenancy::audit_change
