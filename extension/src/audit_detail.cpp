// tenancy._audit_redact_detail(jsonb): an event's detail without the members
// whose key may name a credential (secret_names.hpp), at any depth: in nested
// objects and in objects inside arrays too. audit_event() passes every
// client-supplied detail through it before writing the entry, with the same
// rule the row trigger applies to column names. tenancy._audit_detail_size:
// the detail's size, for audit_event's cap.
//
// Boundary: the rebuild is C-style code (no C++ object with a destructor)
// and runs inside one pg_call: the jsonb iterator and builder may ereport.
#include "boundary.hpp"
#include "secret_names.hpp"

extern "C" {
#include "access/detoast.h"
#include "utils/jsonb.h"
}

namespace tenancy {
namespace {

// Skips the value that follows a key: a scalar, or a whole container.
void skip_value(JsonbIterator **it) {
    JsonbValue v;
    JsonbIteratorToken token = JsonbIteratorNext(it, &v, false);
    if (token != WJB_BEGIN_OBJECT && token != WJB_BEGIN_ARRAY)
        return;
    for (int depth = 1; depth > 0;) {
        token = JsonbIteratorNext(it, &v, false);
        if (token == WJB_BEGIN_OBJECT || token == WJB_BEGIN_ARRAY)
            depth++;
        else if (token == WJB_END_OBJECT || token == WJB_END_ARRAY)
            depth--;
        else if (token == WJB_DONE)
            elog(ERROR, "tenancy: jsonb ended inside a container");
    }
}

Jsonb *redact_detail(Jsonb *in) {
    if (JB_ROOT_IS_SCALAR(in))
        return in;  // a scalar has no keys
    JsonbIterator *it = JsonbIteratorInit(&in->root);
    JsonbParseState *state = nullptr;
    JsonbValue v;
    JsonbValue *result = nullptr;
    JsonbIteratorToken token;
    while ((token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE) {
        if (token == WJB_KEY &&
            is_secret_name(v.val.string.val, static_cast<size_t>(v.val.string.len))) {
            skip_value(&it);
            continue;
        }
        bool carries_value = token == WJB_KEY || token == WJB_VALUE || token == WJB_ELEM;
        result = pushJsonbValue(&state, token, carries_value ? &v : nullptr);
    }
    return JsonbValueToJsonb(result);
}

Datum audit_redact_detail(FunctionCallInfo fcinfo) {
    return pg_call([&] { return PointerGetDatum(redact_detail(PG_GETARG_JSONB_P(0))); });
}

// The jsonb's size in bytes uncompressed, without detoasting it: a 50 MB
// detail is refused without being read (pg_column_size would give its
// compressed size).
Datum audit_detail_size(FunctionCallInfo fcinfo) {
    return pg_call([&] {
        return Int64GetDatum(static_cast<int64>(toast_raw_datum_size(PG_GETARG_DATUM(0))));
    });
}

}  // namespace
}  // namespace tenancy

extern "C" {
PG_FUNCTION_INFO_V1(tenancy_audit_redact_detail);
Datum tenancy_audit_redact_detail(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::audit_redact_detail(fcinfo); });
}

PG_FUNCTION_INFO_V1(tenancy_audit_detail_size);
Datum tenancy_audit_detail_size(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::audit_detail_size(fcinfo); });
}
}
