// The C/C++ error boundary (see boundary.hpp) and its SQL-callable self-test.
#include "boundary.hpp"

#include <cstring>
#include <stdexcept>

namespace tenancy {

namespace {
void copy_text(char *dst, size_t size, const char *src) noexcept {
    if (src == nullptr) {
        dst[0] = '\0';
        return;
    }
    size_t n = std::strlen(src);
    if (n >= size)
        n = size - 1;
    std::memcpy(dst, src, n);
    dst[n] = '\0';
}
}  // namespace

void set_pending(PendingError &err, int sqlstate, const char *message, const char *detail,
                 const char *hint) noexcept {
    err.sqlstate = sqlstate;
    copy_text(err.message, sizeof err.message, message);
    copy_text(err.detail, sizeof err.detail, detail);
    copy_text(err.hint, sizeof err.hint, hint);
}

void raise_pending(const PendingError &err) {
    ereport(ERROR, (errcode(err.sqlstate), errmsg("%s", err.message),
                    err.detail[0] ? errdetail("%s", err.detail) : 0,
                    err.hint[0] ? errhint("%s", err.hint) : 0));
    pg_unreachable();
}

void take_postgres_error(PendingError &err, MemoryContext caller_context) {
    MemoryContextSwitchTo(caller_context);
    ErrorData *edata = CopyErrorData();
    FlushErrorState();
    set_pending(err, edata->sqlerrcode, edata->message, edata->detail, edata->hint);
    FreeErrorData(edata);
}

namespace {
// Counts how many C++ destructors ran while an error unwound, so the self-test
// can show that a PostgreSQL error crossing C++ frames still runs them.
int64 destructors_run = 0;

struct UnwindWitness {
    ~UnwindWitness() { ++destructors_run; }
};

std::string run_selftest(const std::string &kind) {
    UnwindWitness witness;
    std::string owned(kind);  // heap-owning object that must be released on every path
    if (kind == "ok")
        return "ok";
    if (kind == "destructors_run")
        return std::to_string(destructors_run);
    if (kind == "sql_error")
        throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "tenancy self-test: SqlError",
                       "raised as a C++ exception", "this is expected");
    if (kind == "runtime_error")
        throw std::runtime_error("tenancy self-test: std::runtime_error");
    if (kind == "bad_alloc")
        throw std::bad_alloc();
    if (kind == "unknown")
        throw 42;
    if (kind == "pg_error") {
        // int4div reports division_by_zero with ereport(ERROR); it must come back
        // as SqlError and unwind this frame (running witness's destructor).
        pg_call([] { return DirectFunctionCall2(int4div, Int32GetDatum(1), Int32GetDatum(0)); });
        return "unreachable";
    }
    throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "unknown self-test kind \"" + owned + "\"");
}
}  // namespace

}  // namespace tenancy

extern "C" {

PG_FUNCTION_INFO_V1(tenancy_boundary_selftest);
Datum tenancy_boundary_selftest(PG_FUNCTION_ARGS) {
    text *kind = PG_GETARG_TEXT_PP(0);
    return tenancy::guard([&]() -> Datum {
        std::string result =
            tenancy::run_selftest(std::string(VARDATA_ANY(kind), VARSIZE_ANY_EXHDR(kind)));
        return tenancy::text_datum(result);
    });
}
}
