// The C/C++ error boundary.
//
// PostgreSQL reports errors with ereport(ERROR), which is a longjmp: it skips
// C++ destructors. A C++ exception that reaches a PostgreSQL frame is undefined
// behaviour. So the two error worlds meet only here:
//
//  * guard(body) wraps every SQL-callable function. It runs C++ code, catches
//    every exception, copies the message into a fixed buffer (no allocation,
//    nothing that can throw or longjmp), leaves the try scope so every C++
//    object of body is destroyed, and only then calls ereport(ERROR).
//
//  * pg_call(fn) runs a PostgreSQL function that may ereport(ERROR) from C++
//    code. The error is caught with PG_TRY in a frame that owns no C++ object,
//    flushed, and rethrown as SqlError carrying the original SQLSTATE, so the
//    C++ frames above unwind normally and guard() re-raises it.
//
// fn passed to pg_call must itself create no object with a non-trivial
// destructor: between its longjmp and the PG_TRY there must be only C frames.
#pragma once

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "utils/builtins.h"
}

#include <exception>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

namespace tenancy {

// A C++ error that becomes ereport(ERROR) with this SQLSTATE at the boundary.
class SqlError : public std::exception {
  public:
    SqlError(int sqlstate, std::string message, std::string detail = {}, std::string hint = {})
        : sqlstate_(sqlstate),
          message_(std::move(message)),
          detail_(std::move(detail)),
          hint_(std::move(hint)) {}
    int sqlstate() const noexcept { return sqlstate_; }
    const char *what() const noexcept override { return message_.c_str(); }
    const std::string &detail() const noexcept { return detail_; }
    const std::string &hint() const noexcept { return hint_; }

  private:
    int sqlstate_;
    std::string message_;
    std::string detail_;
    std::string hint_;
};

// An error on its way out of C++: fixed-size, trivially destructible, so it can
// live in a frame that ereport() longjmps out of.
struct PendingError {
    int sqlstate = 0;
    char message[1024];
    char detail[1024];
    char hint[512];
};
static_assert(std::is_trivially_destructible<PendingError>::value,
              "PendingError must survive a longjmp");

// Fill err without allocating or throwing; texts are truncated to the buffers.
void set_pending(PendingError &err, int sqlstate, const char *message, const char *detail = nullptr,
                 const char *hint = nullptr) noexcept;

// Report err with ereport(ERROR). Call only where no C++ destructor is pending.
[[noreturn]] void raise_pending(const PendingError &err);

// Copy the current PostgreSQL error into err and clear PostgreSQL's error state
// (for use inside PG_CATCH only).
void take_postgres_error(PendingError &err, MemoryContext caller_context);

template <typename Body>
Datum guard(Body &&body) {
    PendingError err;
    try {
        return body();
    } catch (const SqlError &e) {
        set_pending(err, e.sqlstate(), e.what(), e.detail().empty() ? nullptr : e.detail().c_str(),
                    e.hint().empty() ? nullptr : e.hint().c_str());
    } catch (const std::bad_alloc &) {
        set_pending(err, ERRCODE_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception &e) {
        set_pending(err, ERRCODE_INTERNAL_ERROR, e.what());
    } catch (...) {
        set_pending(err, ERRCODE_INTERNAL_ERROR, "unknown C++ exception in tenancy");
    }
    raise_pending(err);
}

template <typename Fn>
auto pg_call(Fn &&fn) -> decltype(fn()) {
    using Result = decltype(fn());
    static_assert(
        std::is_void<Result>::value || std::is_scalar<Result>::value,
        "pg_call returns scalars only (Datum, pointers, numbers): they survive a longjmp");
    PendingError err;
    MemoryContext caller_context = CurrentMemoryContext;
    volatile bool failed = false;
    if constexpr (std::is_void<Result>::value) {
        PG_TRY();
        { fn(); }
        PG_CATCH();
        {
            take_postgres_error(err, caller_context);
            failed = true;
        }
        PG_END_TRY();
        if (failed)
            throw SqlError(err.sqlstate, err.message, err.detail, err.hint);
    } else {
        // volatile: assigned after setjmp, read after a possible longjmp.
        volatile Result result{};
        PG_TRY();
        { result = fn(); }
        PG_CATCH();
        {
            take_postgres_error(err, caller_context);
            failed = true;
        }
        PG_END_TRY();
        if (failed)
            throw SqlError(err.sqlstate, err.message, err.detail, err.hint);
        return result;
    }
}

// A text Datum built from C++ bytes; palloc failure becomes a SqlError.
inline Datum text_datum(const char *data, size_t len) {
    return pg_call([&] { return PointerGetDatum(cstring_to_text_with_len(data, (int)len)); });
}
inline Datum text_datum(const std::string &s) {
    return text_datum(s.data(), s.size());
}

}  // namespace tenancy
