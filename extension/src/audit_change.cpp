// The audited row's change image and row key, built as jsonb directly.
//
// The first writer built JSON text and parsed it with jsonb_in: that parse
// was a third of the trigger's instructions (callgrind, single-row inserts).
// Here each column value becomes a JsonbValue (numbers as numeric, text as
// its bytes) and pushJsonbValue assembles the object. The stored jsonb is the
// same as the parse of the old text: same keys, values and types.
//
// Boundary: plain C-style code (no C++ object with a destructor); every
// function may ereport, so callers run them inside pg_call.
#include "audit_change.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/sysattr.h"
#include "catalog/pg_type.h"
#include "nodes/bitmapset.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/relcache.h"
}

#include <cctype>
#include <cstring>

namespace tenancy::audit_change {
namespace {

// Column names that may hold credentials: never copied into the log.
bool is_secret_column(const char *name) {
    char lower[NAMEDATALEN];
    size_t n = 0;
    for (; name[n] != '\0' && n < NAMEDATALEN - 1; n++)
        lower[n] = static_cast<char>(std::tolower(static_cast<unsigned char>(name[n])));
    lower[n] = '\0';
    return std::strstr(lower, "hash") != nullptr || std::strstr(lower, "secret") != nullptr ||
           std::strstr(lower, "token") != nullptr || std::strncmp(lower, "password", 8) == 0;
}

// A JSON number literal? (Output of float can be NaN or Infinity.)
bool is_json_number(const char *s) {
    const char *p = s;
    if (*p == '-')
        ++p;
    if (!std::isdigit(static_cast<unsigned char>(*p)))
        return false;
    for (; *p; ++p)
        if (!std::isdigit(static_cast<unsigned char>(*p)) && *p != '.' && *p != 'e' && *p != 'E' &&
            *p != '+' && *p != '-')
            return false;
    return true;
}

void push_string(JsonbParseState **state, JsonbIteratorToken token, const char *s, size_t len) {
    if (len > JENTRY_OFFLENMASK)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("an audited value is too long for the audit log (%zu bytes)", len)));
    JsonbValue v;
    v.type = jbvString;
    v.val.string.val = const_cast<char *>(s);
    v.val.string.len = static_cast<int>(len);
    pushJsonbValue(state, token, &v);
}

void push_numeric(JsonbParseState **state, JsonbIteratorToken token, Numeric n) {
    JsonbValue v;
    v.type = jbvNumeric;
    v.val.numeric = n;
    pushJsonbValue(state, token, &v);
}

// A jsonb value nested as it is: a scalar root as that scalar, a container
// token by token (pushJsonbValue nests BEGIN/END pairs itself).
void push_jsonb(JsonbParseState **state, JsonbIteratorToken token, Jsonb *jb) {
    JsonbIterator *it = JsonbIteratorInit(&jb->root);
    JsonbValue v;
    JsonbIteratorToken t;
    bool scalar = JB_ROOT_IS_SCALAR(jb);
    while ((t = JsonbIteratorNext(&it, &v, false)) != WJB_DONE) {
        if (scalar) {
            if (t == WJB_ELEM)
                pushJsonbValue(state, token, &v);
            continue;
        }
        pushJsonbValue(state, t, t < WJB_BEGIN_ARRAY ? &v : nullptr);
    }
}

void push_text_output(JsonbParseState **state, JsonbIteratorToken token, Datum value, Oid typid,
                      bool as_number) {
    Oid output_fn = InvalidOid;
    bool is_varlena = false;
    getTypeOutputInfo(typid, &output_fn, &is_varlena);
    char *out = OidOutputFunctionCall(output_fn, value);
    if (as_number && is_json_number(out))
        push_numeric(
            state, token,
            DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(out),
                                                ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1))));
    else
        push_string(state, token, out, std::strlen(out));
}

// One column value: null, boolean, number (integers, numeric, float unless NaN
// or infinite), nested json/jsonb, else the type's text output as a string.
void push_value(JsonbParseState **state, JsonbIteratorToken token, Datum value, bool isnull,
                Oid typid) {
    JsonbValue v;
    if (isnull) {
        v.type = jbvNull;
        pushJsonbValue(state, token, &v);
        return;
    }
    switch (typid) {
        case BOOLOID:
            v.type = jbvBool;
            v.val.boolean = DatumGetBool(value);
            pushJsonbValue(state, token, &v);
            return;
        case INT2OID:
            push_numeric(state, token, int64_to_numeric(DatumGetInt16(value)));
            return;
        case INT4OID:
            push_numeric(state, token, int64_to_numeric(DatumGetInt32(value)));
            return;
        case INT8OID:
            push_numeric(state, token, int64_to_numeric(DatumGetInt64(value)));
            return;
        case NUMERICOID: {
            Numeric n = DatumGetNumeric(value);
            if (numeric_is_nan(n) || numeric_is_inf(n))
                push_text_output(state, token, value, typid, false);
            else
                push_numeric(state, token, n);
            return;
        }
        case FLOAT4OID:
        case FLOAT8OID:
            push_text_output(state, token, value, typid, true);
            return;
        case TEXTOID:
        case VARCHAROID: {
            text *t = DatumGetTextPP(value);
            push_string(state, token, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
            return;
        }
        case JSONBOID:
            push_jsonb(state, token, DatumGetJsonbP(value));
            return;
        case JSONOID: {
            char *json_text = TextDatumGetCString(value);
            push_jsonb(state, token,
                       DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json_text))));
            return;
        }
        default:
            push_text_output(state, token, value, typid, false);
            return;
    }
}

void push_key(JsonbParseState **state, const char *name) {
    push_string(state, WJB_KEY, name, std::strlen(name));
}

}  // namespace

Jsonb *build_change(TupleDesc desc, HeapTuple oldt, HeapTuple newt, const char *path_col) {
    int natts = desc->natts;
    Datum *old_values = nullptr, *new_values = nullptr;
    bool *old_nulls = nullptr, *new_nulls = nullptr;
    if (oldt) {
        old_values = static_cast<Datum *>(palloc(natts * sizeof(Datum)));
        old_nulls = static_cast<bool *>(palloc(natts * sizeof(bool)));
        heap_deform_tuple(oldt, desc, old_values, old_nulls);
    }
    if (newt) {
        new_values = static_cast<Datum *>(palloc(natts * sizeof(Datum)));
        new_nulls = static_cast<bool *>(palloc(natts * sizeof(bool)));
        heap_deform_tuple(newt, desc, new_values, new_nulls);
    }
    // Per column: shown in the images, or named in "redacted".
    bool *shown = static_cast<bool *>(palloc0(natts * sizeof(bool)));
    bool *redacted = static_cast<bool *>(palloc0(natts * sizeof(bool)));
    bool meaningful = false, any_redacted = false;
    bool follows_account = std::strcmp(path_col, "path") != 0;
    for (int i = 0; i < natts; i++) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (att->attisdropped)
            continue;
        const char *name = NameStr(att->attname);
        if (oldt && newt) {
            bool same = old_nulls[i] == new_nulls[i] &&
                        (old_nulls[i] ||
                         datumIsEqual(old_values[i], new_values[i], att->attbyval, att->attlen));
            if (same)
                continue;
            bool account_column = follows_account && (std::strcmp(name, path_col) == 0 ||
                                                      std::strcmp(name, "main_id") == 0 ||
                                                      std::strcmp(name, "account_id") == 0);
            // Bookkeeping timestamps alone are not a configuration change.
            bool bookkeeping = std::strcmp(name, "last_used_at") == 0 ||
                               std::strcmp(name, "last_login_at") == 0 ||
                               std::strcmp(name, "updated_at") == 0;
            if (!account_column && !bookkeeping)
                meaningful = true;
        } else {
            meaningful = true;
            // An inserted or deleted row's account columns are the entry's
            // own main_id and account_path: not repeated in the image (a
            // smaller entry; the log's cost is mostly its bytes).
            if (std::strcmp(name, path_col) == 0 || std::strcmp(name, "main_id") == 0)
                continue;
        }
        if (is_secret_column(name)) {
            if ((oldt && !old_nulls[i]) || (newt && !new_nulls[i]))
                redacted[i] = any_redacted = true;
            continue;
        }
        shown[i] = true;
    }
    if (!meaningful)
        return nullptr;

    JsonbParseState *state = nullptr;
    pushJsonbValue(&state, WJB_BEGIN_OBJECT, nullptr);
    for (int side = 0; side < 2; side++) {
        const Datum *values = side == 0 ? old_values : new_values;
        const bool *nulls = side == 0 ? old_nulls : new_nulls;
        if (values == nullptr)
            continue;
        push_key(&state, side == 0 ? "old" : "new");
        pushJsonbValue(&state, WJB_BEGIN_OBJECT, nullptr);
        for (int i = 0; i < natts; i++) {
            if (!shown[i])
                continue;
            Form_pg_attribute att = TupleDescAttr(desc, i);
            push_key(&state, NameStr(att->attname));
            push_value(&state, WJB_VALUE, values[i], nulls[i], att->atttypid);
        }
        pushJsonbValue(&state, WJB_END_OBJECT, nullptr);
    }
    if (any_redacted) {
        push_key(&state, "redacted");
        pushJsonbValue(&state, WJB_BEGIN_ARRAY, nullptr);
        for (int i = 0; i < natts; i++) {
            if (!redacted[i])
                continue;
            const char *name = NameStr(TupleDescAttr(desc, i)->attname);
            push_string(&state, WJB_ELEM, name, std::strlen(name));
        }
        pushJsonbValue(&state, WJB_END_ARRAY, nullptr);
    }
    return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, nullptr));
}

Jsonb *build_row_key(Relation rel, HeapTuple tuple) {
    Bitmapset *pk = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
    if (pk == nullptr)
        return nullptr;
    TupleDesc desc = RelationGetDescr(rel);
    JsonbParseState *state = nullptr;
    pushJsonbValue(&state, WJB_BEGIN_OBJECT, nullptr);
    int member = -1;
    while ((member = bms_next_member(pk, member)) >= 0) {
        int attnum = member + FirstLowInvalidHeapAttributeNumber;
        if (attnum <= 0 || attnum > desc->natts)
            continue;
        Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);
        bool isnull = true;
        Datum value = heap_getattr(tuple, attnum, desc, &isnull);
        push_key(&state, NameStr(att->attname));
        push_value(&state, WJB_VALUE, value, isnull, att->atttypid);
    }
    bms_free(pk);
    return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, nullptr));
}

}  // namespace tenancy::audit_change
