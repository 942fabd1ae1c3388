// The emit_log_hook that scrubs credentials from every server log message and
// from its STATEMENT line (the rules are in log_scrub.cpp).
//
// It runs inside error reporting, so it must not ereport, throw or longjmp:
// the core is noexcept and allocation-free, copies are made with
// MCXT_ALLOC_NO_OOM (or malloc), and when memory runs out a field is cut
// before its first secret instead, or its statement hidden.
//
// The STATEMENT line (and csvlog's/jsonlog's query field) is printed from the
// global debug_query_string after the hook returns. The hook points it at a
// scrubbed copy that this file owns: postgres.c sets debug_query_string again
// for every client message and resets it after an error, so the copy outlives
// every reader, and it is only replaced while nothing points at it.
#include "log_scrub_hook.hpp"
#include "log_scrub.hpp"

extern "C" {
#include "postgres.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/memutils.h"
}

#include <cstdlib>
#include <cstring>

namespace tenancy {

namespace {

emit_log_hook_type previous_emit_log_hook = nullptr;
bool log_scrub_enabled = true;

// The scrubbed statement debug_query_string may point at (malloc'd).
char *owned_query = nullptr;
size_t owned_query_cap = 0;

bool has_secret_call(const char *s) {
    return s != nullptr && names_secret_function(s, std::strlen(s));
}

// Replaces *field by its scrubbed copy in the error's memory context (errfinish
// pfrees the fields, so the copy must be palloc'd and the original freed).
void scrub_field(char **field, bool literals, MemoryContext cxt) {
    char *s = *field;
    if (s == nullptr)
        return;
    size_t len = std::strlen(s);
    size_t first = first_scrub_offset(s, len, literals);
    if (first == len)
        return;
    size_t n = scrub_log_text(s, len, literals, nullptr, 0);
    char *copy = nullptr;
    if (n < MaxAllocSize)
        copy = static_cast<char *>(MemoryContextAllocExtended(cxt, n + 1, MCXT_ALLOC_NO_OOM));
    if (copy == nullptr) {
        s[first] = '\0';  // no room for a copy: keep only what precedes the first secret
        return;
    }
    scrub_log_text(s, len, literals, copy, n);
    copy[n] = '\0';
    *field = copy;
    pfree(s);
}

void scrub_statement(ErrorData *edata, bool literals) {
    const char *q = debug_query_string;
    if (q == nullptr || q == owned_query || !check_log_of_query(edata))
        return;
    size_t len = std::strlen(q);
    if (first_scrub_offset(q, len, literals) == len)
        return;
    size_t n = scrub_log_text(q, len, literals, nullptr, 0);
    // debug_query_string does not point at owned_query here, so it may go; a
    // much larger one than needed goes too, not to keep a huge statement's
    // worth of memory for the life of the backend.
    if (n + 1 > owned_query_cap || (owned_query_cap > 65536 && owned_query_cap / 4 > n + 1)) {
        char *fresh = static_cast<char *>(std::malloc(n + 1));
        if (fresh == nullptr) {
            edata->hide_stmt = true;
            return;
        }
        std::free(owned_query);
        owned_query = fresh;
        owned_query_cap = n + 1;
    }
    scrub_log_text(q, len, literals, owned_query, n);
    owned_query[n] = '\0';
    debug_query_string = owned_query;
}

// A bound-parameter list ("$1 = '...', $2 = NULL", which PostgreSQL does not
// translate).
bool has_parameters(const char *s) {
    return s != nullptr && std::strstr(s, "$1 = ") != nullptr;
}

void scrub_emit_log(ErrorData *edata) {
    if (log_scrub_enabled) {
        // Literals are secrets when the statement, or what the error says ran
        // (a context line, an internal query, a "statement: ..." message),
        // calls a secret-carrying function. Then the fields that carry SQL or
        // parameters lose every literal: the statement, internal query and
        // context always, and a message, detail or hint when it holds the call
        // itself or a parameter list (a bind's "parameters: $2 = '...'"), so
        // that an apostrophe in an ordinary message is left alone.
        bool msg = has_secret_call(edata->message), detail = has_secret_call(edata->detail),
             detail_log = has_secret_call(edata->detail_log), hint = has_secret_call(edata->hint);
        bool sql = msg || detail || detail_log || hint || has_secret_call(debug_query_string) ||
                   has_secret_call(edata->context) || has_secret_call(edata->internalquery);
        MemoryContext cxt = edata->assoc_context ? edata->assoc_context : CurrentMemoryContext;
        scrub_field(&edata->message, msg || (sql && has_parameters(edata->message)), cxt);
        scrub_field(&edata->detail, detail || (sql && has_parameters(edata->detail)), cxt);
        scrub_field(&edata->detail_log, detail_log || (sql && has_parameters(edata->detail_log)),
                    cxt);
        scrub_field(&edata->hint, hint || (sql && has_parameters(edata->hint)), cxt);
        scrub_field(&edata->context, sql, cxt);
        scrub_field(&edata->internalquery, sql, cxt);
        scrub_statement(edata, sql);
    }
    if (previous_emit_log_hook)
        previous_emit_log_hook(edata);
}

}  // namespace

void log_scrub_init() {
    DefineCustomBoolVariable(
        "tenancy.log_scrub", "Scrubs credentials and password literals from the server log.",
        "Also from the messages sent to the client that are logged. Only a superuser may turn "
        "it off.",
        &log_scrub_enabled, true, PGC_SUSET, 0, NULL, NULL, NULL);
    previous_emit_log_hook = emit_log_hook;
    emit_log_hook = scrub_emit_log;
}

}  // namespace tenancy
