// PHI redaction of conversation transcripts (jsonb turns {speaker, text, at}):
// the BEFORE row trigger tenancy_20_phi_redact and tenancy.redact_transcript().
//
// Strings redacted: the value of every "text" member and every string element
// of an array (at any depth); "speaker", "at" and other members are left alone.
// Three passes keep the C/C++ boundary rules (boundary.hpp): the jsonb is walked
// in C frames inside pg_call (no C++ object there), the texts are redacted in
// C++ (no PostgreSQL call there), and the result is built in C frames again.
#include "boundary.hpp"
#include "phi_redaction.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
}

#include <string>
#include <string_view>
#include <vector>

namespace {

// A transcript string inside a jsonb (points into the jsonb's own bytes), or a
// replacement (points into a C++ string that outlives the rebuild).
struct Slice {
    const char *data;
    int len;
};

bool is_transcript_string(JsonbIteratorToken token, const JsonbValue &v, bool key_is_text) {
    return v.type == jbvString && (token == WJB_ELEM || (token == WJB_VALUE && key_is_text));
}

// Pass 1 (C frames only): the transcript strings, in iteration order, in a
// palloc'd array.
int collect_texts(Jsonb *jb, Slice **out) {
    int n = 0, cap = 16;
    Slice *texts = static_cast<Slice *>(palloc(sizeof(Slice) * cap));
    JsonbIterator *it = JsonbIteratorInit(&jb->root);
    JsonbValue v;
    JsonbIteratorToken token;
    bool key_is_text = false;
    while ((token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE) {
        if (token == WJB_KEY) {
            key_is_text = v.val.string.len == 4 && memcmp(v.val.string.val, "text", 4) == 0;
            continue;
        }
        if (is_transcript_string(token, v, key_is_text)) {
            if (n == cap) {
                cap *= 2;
                texts = static_cast<Slice *>(repalloc(texts, sizeof(Slice) * cap));
            }
            texts[n].data = v.val.string.val;
            texts[n].len = v.val.string.len;
            n++;
        }
    }
    *out = texts;
    return n;
}

// Pass 3 (C frames only): jb again, with the i-th transcript string replaced
// by repl[i].
Jsonb *rebuild(Jsonb *jb, const Slice *repl) {
    JsonbParseState *state = nullptr;
    JsonbValue *res = nullptr;
    JsonbIterator *it = JsonbIteratorInit(&jb->root);
    JsonbValue v;
    JsonbIteratorToken token;
    bool key_is_text = false;
    int i = 0;
    while ((token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE) {
        if (token == WJB_KEY)
            key_is_text = v.val.string.len == 4 && memcmp(v.val.string.val, "text", 4) == 0;
        else if (is_transcript_string(token, v, key_is_text)) {
            v.val.string.val = const_cast<char *>(repl[i].data);
            v.val.string.len = repl[i].len;
            i++;
        }
        res = pushJsonbValue(
            &state, token,
            (token == WJB_KEY || token == WJB_VALUE || token == WJB_ELEM) ? &v : nullptr);
    }
    if (res->type == jbvArray)
        res->val.array.rawScalar = JB_ROOT_IS_SCALAR(jb);
    return JsonbValueToJsonb(res);
}

// jb with its transcript strings redacted; jb itself when nothing changed.
// Runs inside guard(): PostgreSQL calls go through pg_call.
Jsonb *redact_jsonb(Jsonb *jb) {
    Slice *texts = nullptr;
    int n = tenancy::pg_call([&] { return collect_texts(jb, &texts); });
    std::vector<std::string> redacted;
    redacted.reserve(n);
    bool changed = false;
    for (int i = 0; i < n; i++) {
        std::string_view original(texts[i].data, texts[i].len);
        redacted.push_back(tenancy::redact_phi(original));
        changed = changed || redacted.back() != original;
    }
    if (!changed)
        return jb;
    for (int i = 0; i < n; i++) {
        if (redacted[i].size() > JENTRY_OFFLENMASK)
            throw tenancy::SqlError(ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                                    "redacted transcript text is too long");
        texts[i].data = redacted[i].data();
        texts[i].len = static_cast<int>(redacted[i].size());
    }
    return tenancy::pg_call([&] { return rebuild(jb, texts); });
}

}  // namespace

extern "C" {

// tenancy.redact_transcript(jsonb) -> jsonb: what the trigger stores.
PG_FUNCTION_INFO_V1(tenancy_redact_transcript);
Datum tenancy_redact_transcript(PG_FUNCTION_ARGS) {
    Jsonb *jb = PG_GETARG_JSONB_P(0);
    return tenancy::guard([&]() -> Datum { return PointerGetDatum(redact_jsonb(jb)); });
}

// BEFORE INSERT OR UPDATE row trigger: redacts the jsonb column named by the
// trigger's argument (default "transcript") before the row is written. The
// trigger's WHEN clause decides whether the row's account has PHI protection.
PG_FUNCTION_INFO_V1(tenancy_transcript_phi_redact);
Datum tenancy_transcript_phi_redact(PG_FUNCTION_ARGS) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("tenancy._transcript_phi_redact() must be called as a trigger")));
    TriggerData *td = reinterpret_cast<TriggerData *>(fcinfo->context);
    if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
        TRIGGER_FIRED_BY_DELETE(td->tg_event) || TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("tenancy._transcript_phi_redact() must be a BEFORE INSERT OR UPDATE "
                               "row trigger")));
    HeapTuple tuple = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
    TupleDesc desc = RelationGetDescr(td->tg_relation);
    const char *column = td->tg_trigger->tgnargs > 0 ? td->tg_trigger->tgargs[0] : "transcript";
    int attnum = SPI_fnumber(desc, column);
    if (attnum <= 0 || TupleDescAttr(desc, attnum - 1)->atttypid != JSONBOID)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                        errmsg("table %s has no jsonb column \"%s\" to redact",
                               RelationGetRelationName(td->tg_relation), column)));
    bool isnull;
    Datum value = heap_getattr(tuple, attnum, desc, &isnull);
    if (isnull)
        return PointerGetDatum(tuple);
    Jsonb *jb = DatumGetJsonbP(value);
    Datum redacted = tenancy::guard([&]() -> Datum { return PointerGetDatum(redact_jsonb(jb)); });
    if (DatumGetPointer(redacted) == reinterpret_cast<Pointer>(jb))
        return PointerGetDatum(tuple);
    bool replace_null = false;
    return PointerGetDatum(
        heap_modify_tuple_by_cols(tuple, desc, 1, &attnum, &redacted, &replace_null));
}
}
