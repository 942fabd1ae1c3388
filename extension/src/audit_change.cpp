// The audited row's change image and row key, written as jsonb directly.
//
// The first writer built JSON text and parsed it with jsonb_in: that parse
// was a third of the trigger's instructions (callgrind, single-row inserts).
// The second pushed JsonbValues through pushJsonbValue and JsonbValueToJsonb,
// which sort the keys and then copy every value once more: 4,500 of the 9,000
// instructions the change and key of a single-row update cost. Here the
// values are written once into jsonb's on-disk layout (utils/jsonb.h): an
// object is a header, one JEntry per key and per value, then the keys' bytes
// and the values' bytes; every JB_OFFSET_STRIDE'th JEntry holds an offset
// instead of a length; numerics and nested containers start 4-byte aligned
// and their padding counts towards their length. The keys we write are column
// names, sorted here the way jsonb orders keys (shorter first, then bytewise).
// The result is the same bytes convertToJsonb makes of the same value
// (sql/audit_change_jsonb.sql reads wide, nested and typed images back).
//
// Boundary: plain C-style code (no C++ object with a destructor); every
// function may ereport, so callers run them inside pg_call.
#include "audit_change.hpp"
#include "secret_names.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/sysattr.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
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

// --- jsonb's on-disk layout -------------------------------------------------

// Pads with zero bytes to a 4-byte boundary; returns how many.
uint32 pad_to_int(StringInfo buf) {
    int pad = INTALIGN(buf->len) - buf->len;
    for (int i = 0; i < pad; i++)
        appendStringInfoCharMacro(buf, '\0');
    return static_cast<uint32>(pad);
}

// Room for n JEntries, filled in once their values are written; returns its
// offset (the buffer may move while values are appended).
int reserve_jentries(StringInfo buf, int n) {
    int at = buf->len;
    enlargeStringInfo(buf, n * static_cast<int>(sizeof(JEntry)));
    buf->len += n * static_cast<int>(sizeof(JEntry));
    buf->data[buf->len] = '\0';
    return at;
}

void check_length(Size len) {
    if (len > JENTRY_OFFLENMASK)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("an audited value is too long for the audit log (%zu bytes)", len)));
}

JEntry write_string(StringInfo buf, const char *s, size_t len) {
    check_length(len);
    appendBinaryStringInfo(buf, s, static_cast<int>(len));
    return JENTRY_ISSTRING | static_cast<JEntry>(len);
}

JEntry write_numeric(StringInfo buf, Numeric n) {
    uint32 pad = pad_to_int(buf);
    Size len = VARSIZE_ANY(n);
    appendBinaryStringInfo(buf, reinterpret_cast<const char *>(n), static_cast<int>(len));
    return JENTRY_ISNUMERIC | static_cast<JEntry>(pad + len);
}

JEntry write_scalar(StringInfo buf, const JsonbValue *v) {
    switch (v->type) {
        case jbvNull:
            return JENTRY_ISNULL;
        case jbvBool:
            return v->val.boolean ? JENTRY_ISBOOL_TRUE : JENTRY_ISBOOL_FALSE;
        case jbvNumeric:
            return write_numeric(buf, v->val.numeric);
        case jbvString:
            return write_string(buf, v->val.string.val, static_cast<size_t>(v->val.string.len));
        default:
            elog(ERROR, "tenancy: unexpected jsonb scalar type %d", static_cast<int>(v->type));
    }
    return JENTRY_ISNULL;  // not reached
}

// A jsonb value nested as it is: a scalar root as that scalar, a container as
// its bytes (they are position-independent once 4-byte aligned).
JEntry write_jsonb(StringInfo buf, Jsonb *jb) {
    if (JB_ROOT_IS_SCALAR(jb)) {
        JsonbValue v;
        if (!JsonbExtractScalar(&jb->root, &v))
            elog(ERROR, "tenancy: a scalar jsonb without its scalar");
        return write_scalar(buf, &v);
    }
    uint32 pad = pad_to_int(buf);
    Size len = VARSIZE(jb) - VARHDRSZ;
    check_length(pad + len);
    appendBinaryStringInfo(buf, reinterpret_cast<const char *>(&jb->root), static_cast<int>(len));
    return JENTRY_ISCONTAINER | static_cast<JEntry>(pad + len);
}

// Writes value number i of a container and returns its JEntry.
using ValueWriter = JEntry (*)(StringInfo buf, int i, void *arg);

// An object of n members whose keys are sorted the jsonb way and distinct, or
// (keys == NULL) an array of n elements.
JEntry write_container(StringInfo buf, int n, const char *const *keys, ValueWriter value,
                       void *arg) {
    int base = buf->len;
    pad_to_int(buf);  // counted in the length from base
    uint32 header = static_cast<uint32>(n) | (keys ? JB_FOBJECT : JB_FARRAY);
    appendBinaryStringInfo(buf, reinterpret_cast<const char *>(&header), sizeof(header));
    int slots = keys ? 2 * n : n;
    int jentries = reserve_jentries(buf, slots);
    Size total = 0;
    for (int i = 0; i < slots; i++) {
        JEntry meta;
        if (keys && i < n)
            meta = write_string(buf, keys[i], std::strlen(keys[i]));
        else
            meta = value(buf, keys ? i - n : i, arg);
        total += JBE_OFFLENFLD(meta);
        check_length(total);
        if (i % JB_OFFSET_STRIDE == 0)
            meta = (meta & JENTRY_TYPEMASK) | static_cast<JEntry>(total) | JENTRY_HAS_OFF;
        std::memcpy(buf->data + jentries + i * sizeof(JEntry), &meta, sizeof(JEntry));
    }
    Size len = static_cast<Size>(buf->len - base);
    check_length(len);
    return JENTRY_ISCONTAINER | static_cast<JEntry>(len);
}

Jsonb *finish_jsonb(StringInfo buf) {
    SET_VARSIZE(buf->data, buf->len);
    return reinterpret_cast<Jsonb *>(buf->data);
}

void start_jsonb(StringInfo buf) {
    initStringInfo(buf);
    buf->len = VARHDRSZ;  // the varlena header, set by finish_jsonb
}

// jsonb's key order (lengthCompareJsonbString): shorter first, then bytewise.
bool key_less(const char *a, const char *b) {
    size_t la = std::strlen(a), lb = std::strlen(b);
    if (la != lb)
        return la < lb;
    return std::memcmp(a, b, la) < 0;
}

// --- column values -------------------------------------------------------------

JEntry write_text_output(StringInfo buf, Datum value, Oid typid, bool as_number) {
    Oid output_fn = InvalidOid;
    bool is_varlena = false;
    getTypeOutputInfo(typid, &output_fn, &is_varlena);
    char *out = OidOutputFunctionCall(output_fn, value);
    if (as_number && is_json_number(out))
        return write_numeric(buf, DatumGetNumeric(DirectFunctionCall3(
                                      numeric_in, CStringGetDatum(out),
                                      ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1))));
    return write_string(buf, out, std::strlen(out));
}

// One column value: null, boolean, number (integers, numeric, float unless NaN
// or infinite), nested json/jsonb, else the type's text output as a string.
JEntry write_value(StringInfo buf, Datum value, bool isnull, Oid typid) {
    if (isnull)
        return JENTRY_ISNULL;
    switch (typid) {
        case BOOLOID:
            return DatumGetBool(value) ? JENTRY_ISBOOL_TRUE : JENTRY_ISBOOL_FALSE;
        case INT2OID:
            return write_numeric(buf, int64_to_numeric(DatumGetInt16(value)));
        case INT4OID:
            return write_numeric(buf, int64_to_numeric(DatumGetInt32(value)));
        case INT8OID:
            return write_numeric(buf, int64_to_numeric(DatumGetInt64(value)));
        case NUMERICOID: {
            Numeric n = DatumGetNumeric(value);
            if (numeric_is_nan(n) || numeric_is_inf(n))
                return write_text_output(buf, value, typid, false);
            return write_numeric(buf, n);
        }
        case FLOAT4OID:
        case FLOAT8OID:
            return write_text_output(buf, value, typid, true);
        case TEXTOID:
        case VARCHAROID: {
            text *t = DatumGetTextPP(value);
            return write_string(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
        }
        case JSONBOID:
            return write_jsonb(buf, DatumGetJsonbP(value));
        case JSONOID: {
            char *json_text = TextDatumGetCString(value);
            return write_jsonb(
                buf, DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json_text))));
        }
        default:
            return write_text_output(buf, value, typid, false);
    }
}

// Some columns of one row image, in key order.
struct Columns {
    TupleDesc desc;
    const Datum *values;
    const bool *nulls;
    const int *attno;  // 0-based attribute numbers, in key order
    const char *const *names;
};

JEntry write_column(StringInfo buf, int i, void *arg) {
    const Columns *c = static_cast<const Columns *>(arg);
    int a = c->attno[i];
    return write_value(buf, c->values[a], c->nulls[a], TupleDescAttr(c->desc, a)->atttypid);
}

// Sorts attribute numbers (and their names) into jsonb key order: a table's
// column names are distinct, so no duplicate keys.
void sort_columns(int n, int *attno, const char **names) {
    for (int i = 1; i < n; i++) {
        int a = attno[i];
        const char *name = names[i];
        int j = i;
        for (; j > 0 && key_less(name, names[j - 1]); j--) {
            attno[j] = attno[j - 1];
            names[j] = names[j - 1];
        }
        attno[j] = a;
        names[j] = name;
    }
}

// The top level of a change: "new", "old" (row images) and "redacted" (an
// array of column names), in that key order, each when present.
struct ChangeParts {
    Columns image[2];  // new, old
    const char *const *redacted;
    int n_shown, n_redacted;
    int member_kind[3];  // per top-level member: 0 new, 1 old, 2 redacted
};

JEntry write_redacted_name(StringInfo buf, int i, void *arg) {
    const char *name = static_cast<const ChangeParts *>(arg)->redacted[i];
    return write_string(buf, name, std::strlen(name));
}

JEntry write_change_member(StringInfo buf, int i, void *arg) {
    ChangeParts *p = static_cast<ChangeParts *>(arg);
    int kind = p->member_kind[i];
    if (kind == 2)
        return write_container(buf, p->n_redacted, nullptr, write_redacted_name, p);
    return write_container(buf, p->n_shown, p->image[kind].names, write_column, &p->image[kind]);
}

}  // namespace

RowValues deform_row(TupleDesc desc, HeapTuple tuple) {
    RowValues r;
    r.values = static_cast<Datum *>(palloc(desc->natts * sizeof(Datum)));
    r.nulls = static_cast<bool *>(palloc(desc->natts * sizeof(bool)));
    heap_deform_tuple(tuple, desc, r.values, r.nulls);
    return r;
}

Jsonb *build_change(TupleDesc desc, const RowValues *oldr, const RowValues *newr,
                    const char *path_col) {
    int natts = desc->natts;
    const Datum *old_values = oldr ? oldr->values : nullptr;
    const bool *old_nulls = oldr ? oldr->nulls : nullptr;
    const Datum *new_values = newr ? newr->values : nullptr;
    const bool *new_nulls = newr ? newr->nulls : nullptr;
    // The columns shown in the images, and those only named in "redacted".
    int *shown = static_cast<int *>(palloc(natts * sizeof(int)));
    const char **shown_names = static_cast<const char **>(palloc(natts * sizeof(char *)));
    const char **redacted = static_cast<const char **>(palloc(natts * sizeof(char *)));
    int n_shown = 0, n_redacted = 0;
    bool meaningful = false;
    bool follows_account = std::strcmp(path_col, "path") != 0;
    for (int i = 0; i < natts; i++) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (att->attisdropped)
            continue;
        const char *name = NameStr(att->attname);
        if (oldr && newr) {
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
        // Columns that may hold credentials: never copied into the log.
        if (is_secret_name(name, std::strlen(name))) {
            if ((oldr && !old_nulls[i]) || (newr && !new_nulls[i]))
                redacted[n_redacted++] = name;
            continue;
        }
        shown[n_shown] = i;
        shown_names[n_shown++] = name;
    }
    if (!meaningful)
        return nullptr;
    sort_columns(n_shown, shown, shown_names);
    // "redacted" is an array: its names stay in column order.

    ChangeParts parts;
    parts.image[0] = Columns{desc, new_values, new_nulls, shown, shown_names};
    parts.image[1] = Columns{desc, old_values, old_nulls, shown, shown_names};
    parts.redacted = redacted;
    parts.n_shown = n_shown;
    parts.n_redacted = n_redacted;
    const char *keys[3];
    int members = 0;
    if (newr) {
        parts.member_kind[members] = 0;
        keys[members++] = "new";
    }
    if (oldr) {
        parts.member_kind[members] = 1;
        keys[members++] = "old";
    }
    if (n_redacted > 0) {
        parts.member_kind[members] = 2;
        keys[members++] = "redacted";
    }
    StringInfoData buf;
    start_jsonb(&buf);
    write_container(&buf, members, keys, write_change_member, &parts);
    return finish_jsonb(&buf);
}

Jsonb *build_row_key(Relation rel, const RowValues *row) {
    Bitmapset *pk = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
    if (pk == nullptr)
        return nullptr;
    TupleDesc desc = RelationGetDescr(rel);
    int n = bms_num_members(pk);
    int *attno = static_cast<int *>(palloc(n * sizeof(int)));
    const char **names = static_cast<const char **>(palloc(n * sizeof(char *)));
    int count = 0;
    int member = -1;
    while ((member = bms_next_member(pk, member)) >= 0) {
        int attnum = member + FirstLowInvalidHeapAttributeNumber;
        if (attnum <= 0 || attnum > desc->natts)
            continue;
        attno[count] = attnum - 1;
        names[count++] = NameStr(TupleDescAttr(desc, attnum - 1)->attname);
    }
    bms_free(pk);
    sort_columns(count, attno, names);
    Columns key{desc, row->values, row->nulls, attno, names};
    StringInfoData buf;
    start_jsonb(&buf);
    write_container(&buf, count, names, write_column, &key);
    return finish_jsonb(&buf);
}

}  // namespace tenancy::audit_change
