// tenancy.account_path: the PostgreSQL glue (I/O, operators, functions,
// btree/hash support, planner support; statistics and the <@/@> estimators
// are in path_selectivity.cpp). The layout and every
// path algorithm live in account_path_codec.hpp (PostgreSQL-free, fuzzed).
//
// Hot functions (comparisons, <@, @>, hash) do no allocation and cannot throw:
// they read the packed varlena in place, in compile-time-checked noexcept
// bodies (hot_body). Every other function runs in tenancy::guard and reports
// errors as SqlError. No function here keeps a C++ object with a destructor
// alive while calling PostgreSQL code that may ereport.
#include "account_path_codec.hpp"
#include "boundary.hpp"

// Some planner headers pull in atomics.h, whose C code uses `register`
// (an error in C++17 for clang, a warning for g++).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wregister"
#ifdef __clang__
#pragma clang diagnostic ignored "-Wregister"
#endif
extern "C" {
#include "common/hashfn.h"
#include "access/stratnum.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_type_d.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/pathnodes.h"
#include "nodes/supportnodes.h"
#include "parser/parse_func.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/selfuncs.h"
#include "utils/sortsupport.h"
}
#pragma GCC diagnostic pop

#include <string>

namespace {

namespace P = tenancy::path;

// A path argument read in place (detoasted only if compressed or external).
struct PathArg {
    struct varlena *raw;
    const uint8_t *data;
    size_t len;
};

// Inline fast path for the common short (1-byte header) value: this runs once
// per row in a policy filter, so it avoids even the detoast function call.
inline PathArg path_from_datum(Datum d) {
    struct varlena *v = reinterpret_cast<struct varlena *>(DatumGetPointer(d));
    if (likely(VARATT_IS_1B(v) && !VARATT_IS_1B_E(v)))  // short inline, not a TOAST pointer
        return PathArg{v, reinterpret_cast<const uint8_t *>(VARDATA_SHORT(v)),
                       VARSIZE_SHORT(v) - VARHDRSZ_SHORT};
    if (unlikely(VARATT_IS_EXTENDED(v)))
        v = pg_detoast_datum_packed(v);
    return PathArg{v, reinterpret_cast<const uint8_t *>(VARDATA_ANY(v)), VARSIZE_ANY_EXHDR(v)};
}

// copyObject() uses typeof, which C++ lacks.
inline void *copy_node(const void *node) {
    return copyObjectImpl(node);
}

// The hot operators (called once per row by a policy filter or an index
// comparison) do not go through tenancy::guard(), whose out-of-line frame
// costs about as much as the comparison itself. Instead their bodies are
// noexcept lambdas, checked at compile time: no C++ exception can exist in
// them, and the only PostgreSQL calls (detoast, pfree) leave no C++ object
// with a destructor behind if they ereport.
template <typename Body>
inline Datum hot_body(Body &&body) {
    static_assert(noexcept(body()), "hot operator bodies must be noexcept");
    return body();
}

inline void free_if_copy(const PathArg &p, Datum d) {
    if (reinterpret_cast<Pointer>(p.raw) != DatumGetPointer(d))
        pfree(p.raw);
}

// A new account_path value with these bytes (palloc; OOM is a clean ereport
// and no C++ object is alive in any caller when it happens).
inline Datum make_path(const uint8_t *data, size_t len) {
    struct varlena *v = static_cast<struct varlena *>(palloc(VARHDRSZ + len));
    SET_VARSIZE(v, VARHDRSZ + len);
    if (len)
        memcpy(VARDATA(v), data, len);
    return PointerGetDatum(v);
}

[[noreturn]] void throw_codec_error(const P::Result &r, const char *what, const char *input,
                                    size_t input_len) {
    int code = r.status == P::Status::Limit ? ERRCODE_INVALID_PARAMETER_VALUE
                                            : ERRCODE_INVALID_TEXT_REPRESENTATION;
    std::string msg = r.status == P::Status::Limit ? "account_path value exceeds its limits"
                                                   : "invalid input syntax for type account_path";
    if (input != nullptr) {
        // Echo short inputs only; an overlong input is cut (at a character
        // boundary, so the message stays valid in the server encoding).
        constexpr int kEcho = 80;
        size_t echo = input_len;
        if (input_len > static_cast<size_t>(kEcho))
            echo = static_cast<size_t>(
                tenancy::pg_call([&] { return pg_mbcliplen(input, kEcho + 1, kEcho); }));
        msg += ": \"";
        msg.append(input, echo);
        if (input_len > kEcho)
            msg += "...";
        msg += "\"";
    } else {
        msg = std::string("invalid ") + what + " for type account_path";
    }
    std::string detail = std::string(r.message) + " at byte " + std::to_string(r.position) + ".";
    std::string hint;
    if (r.status == P::Status::Limit || std::string(r.message) == "label out of range")
        hint = "A path has 1 to " + std::to_string(P::kMaxDepth) + " labels, each from 1 to " +
               std::to_string(P::kMaxLabel) + ".";
    else
        hint = "Write account ids separated by dots, e.g. '17.4031.90211'.";
    throw tenancy::SqlError(code, msg, detail, hint);
}

[[noreturn]] void throw_param(const std::string &msg) {
    throw tenancy::SqlError(ERRCODE_INVALID_PARAMETER_VALUE, msg);
}

void label_to_path_check(int64 value) {
    if (value < 1 || static_cast<uint64_t>(value) > P::kMaxLabel)
        throw_param("account_path label out of range: " + std::to_string(value));
}

// ltree's subpath position rules (negative offset counts from the end,
// negative length leaves that many labels off the end).
void subpath_bounds(int depth, int32 start, int32 len, bool has_len, int *from, int *to) {
    int64 s = start, e;
    if (s < 0)
        s += depth;
    if (!has_len || len == 0)
        e = has_len ? s : depth;
    else if (len < 0)
        e = static_cast<int64>(depth) + len;
    else
        e = s + len;
    if (s < 0 || s >= depth || e <= s)
        throw_param("invalid positions for subpath of a path with " + std::to_string(depth) +
                    " labels");
    if (e > depth)
        e = depth;
    *from = static_cast<int>(s);
    *to = static_cast<int>(e);
}

// Longest common proper ancestor (ltree's lca): the common label prefix of all
// paths, cut to one label less than the shortest; 0 bytes if none.
size_t lca_bytes(const uint8_t *first, int *min_depth_io, const uint8_t *b, size_t nb,
                 size_t prefix) {
    size_t p = P::common_prefix(first, prefix, b, nb);
    int d = P::depth(b, nb);
    if (d < *min_depth_io)
        *min_depth_io = d;
    return p;
}

size_t cut_to_depth(const uint8_t *data, size_t len, int max_labels) {
    if (max_labels <= 0)
        return 0;
    size_t off = P::label_offset(data, len, max_labels);
    return off < len ? off : len;
}

// The bytes of a path stored inline (1-byte or 4-byte header, not compressed,
// not external): no call, no copy. False for anything needing detoast.
inline bool inline_path(Datum d, const uint8_t **data, size_t *len) {
    const struct varlena *v = reinterpret_cast<const struct varlena *>(DatumGetPointer(d));
    if (VARATT_IS_1B(v) && !VARATT_IS_1B_E(v)) {
        *data = reinterpret_cast<const uint8_t *>(VARDATA_1B(v));
        *len = VARSIZE_1B(v) - VARHDRSZ_SHORT;
        return true;
    }
    if (VARATT_IS_4B_U(v)) {
        *data = reinterpret_cast<const uint8_t *>(VARDATA_4B(v));
        *len = VARSIZE_4B(v) - VARHDRSZ;
        return true;
    }
    return false;
}

// Slow path of a binary operator: detoast, apply, free the copies. Kept out
// of line so the fast path stays a leaf function (no register spills).
template <typename Op>
__attribute__((noinline)) Datum binary_slow(FunctionCallInfo fcinfo, Op op) noexcept {
    Datum da = PG_GETARG_DATUM(0), db = PG_GETARG_DATUM(1);
    PathArg a = path_from_datum(da), b = path_from_datum(db);
    Datum r = op(a.data, a.len, b.data, b.len);
    free_if_copy(a, da);
    free_if_copy(b, db);
    return r;
}

// A binary operator on two paths: op(a, na, b, nb) -> Datum, noexcept.
template <typename Op>
inline Datum binary_op(FunctionCallInfo fcinfo, Op op) {
    return hot_body([&]() noexcept -> Datum {
        const uint8_t *a, *b;
        size_t na, nb;
        if (likely(inline_path(PG_GETARG_DATUM(0), &a, &na) &&
                   inline_path(PG_GETARG_DATUM(1), &b, &nb)))
            return op(a, na, b, nb);
        return binary_slow(fcinfo, op);
    });
}

using Bytes = const uint8_t *;

}  // namespace

extern "C" {

// ---------------------------------------------------------------- I/O

PG_FUNCTION_INFO_V1(account_path_in);
Datum account_path_in(PG_FUNCTION_ARGS) {
    const char *s = PG_GETARG_CSTRING(0);
    return tenancy::guard([&]() -> Datum {
        uint8_t buf[P::kMaxEncoded];
        size_t n = strlen(s);
        P::Result r = P::parse_text(s, n, buf);
        if (r.status != P::Status::Ok)
            throw_codec_error(r, "text", s, n);
        return make_path(buf, r.length);
    });
}

PG_FUNCTION_INFO_V1(account_path_out);
Datum account_path_out(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        char buf[P::kMaxText + 32];
        size_t n = P::format_text(p.data, p.len, buf);
        PG_RETURN_CSTRING(pnstrdup(buf, n));
    });
}

// Binary form: a version byte (1), then the encoded labels (big-endian,
// self-delimiting; see account_path_codec.hpp), validated strictly.
PG_FUNCTION_INFO_V1(account_path_recv);
Datum account_path_recv(PG_FUNCTION_ARGS) {
    StringInfo buf = reinterpret_cast<StringInfo>(PG_GETARG_POINTER(0));
    return tenancy::guard([&]() -> Datum {
        if (buf->cursor >= buf->len)
            throw tenancy::SqlError(ERRCODE_INVALID_TEXT_REPRESENTATION,
                                    "invalid binary account_path: no data");
        int version = static_cast<uint8_t>(buf->data[buf->cursor]);
        if (version != 1)
            throw tenancy::SqlError(
                ERRCODE_INVALID_TEXT_REPRESENTATION,
                "unsupported account_path binary version " + std::to_string(version));
        const uint8_t *data = reinterpret_cast<const uint8_t *>(buf->data + buf->cursor + 1);
        size_t n = static_cast<size_t>(buf->len - buf->cursor - 1);
        P::Result r = P::validate(data, n);
        if (r.status != P::Status::Ok)
            throw tenancy::SqlError(
                r.status == P::Status::Limit ? ERRCODE_INVALID_PARAMETER_VALUE
                                             : ERRCODE_INVALID_TEXT_REPRESENTATION,
                "invalid binary account_path",
                std::string(r.message) + " at byte " + std::to_string(r.position) + ".");
        buf->cursor = buf->len;
        return make_path(data, n);
    });
}

PG_FUNCTION_INFO_V1(account_path_send);
Datum account_path_send(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        StringInfoData out;
        pq_begintypsend(&out);
        pq_sendbyte(&out, 1);
        pq_sendbytes(&out, reinterpret_cast<const char *>(p.data), static_cast<int>(p.len));
        PG_RETURN_BYTEA_P(pq_endtypsend(&out));
    });
}

// ---------------------------------------------------------------- comparison

#define PATH_BINARY_FN(name, expr)                                                              \
    PG_FUNCTION_INFO_V1(name);                                                                  \
    Datum name(PG_FUNCTION_ARGS) {                                                              \
        return binary_op(fcinfo, [](Bytes a, size_t na, Bytes b, size_t nb) noexcept -> Datum { \
            return (expr);                                                                      \
        });                                                                                     \
    }

PATH_BINARY_FN(account_path_cmp, Int32GetDatum(P::compare(a, na, b, nb)))
PATH_BINARY_FN(account_path_lt, BoolGetDatum(P::compare(a, na, b, nb) < 0))
PATH_BINARY_FN(account_path_le, BoolGetDatum(P::compare(a, na, b, nb) <= 0))
PATH_BINARY_FN(account_path_gt, BoolGetDatum(P::compare(a, na, b, nb) > 0))
PATH_BINARY_FN(account_path_ge, BoolGetDatum(P::compare(a, na, b, nb) >= 0))
PATH_BINARY_FN(account_path_eq, BoolGetDatum(na == nb && P::bytes_equal(a, b, na)))
PATH_BINARY_FN(account_path_ne, BoolGetDatum(!(na == nb && P::bytes_equal(a, b, na))))
// a <@ b: b's bytes are a prefix of a's.
PATH_BINARY_FN(account_path_descendant, BoolGetDatum(P::is_descendant_or_self(a, na, b, nb)))
// a @> b: a's bytes are a prefix of b's.
PATH_BINARY_FN(account_path_ancestor, BoolGetDatum(P::is_descendant_or_self(b, nb, a, na)))

static int account_path_fastcmp(Datum x, Datum y, SortSupport) {
    PathArg a = path_from_datum(x), b = path_from_datum(y);
    int c = P::compare(a.data, a.len, b.data, b.len);
    free_if_copy(a, x);
    free_if_copy(b, y);
    return c;
}

// Abbreviated key for sorting (index builds, ORDER BY): the first 8 bytes of
// the encoding, zero-padded, as a big-endian number. Byte order is tree order
// and padding sorts a shorter (ancestor) prefix first, so a smaller key means
// a smaller path; equal keys fall back to the full comparison. Paths are
// rarely longer than 8 bytes below the main account, so ties are rare.
static Datum account_path_abbrev_convert(Datum original, SortSupport) {
    PathArg p = path_from_datum(original);
    uint8_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(buf, p.data, p.len < 8 ? p.len : 8);
    free_if_copy(p, original);
    return static_cast<Datum>(P::load_be64(buf));
}

static bool account_path_abbrev_abort(int, SortSupport) {
    return false;
}

PG_FUNCTION_INFO_V1(account_path_sortsupport);
Datum account_path_sortsupport(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        SortSupport ssup = reinterpret_cast<SortSupport>(PG_GETARG_POINTER(0));
        ssup->comparator = account_path_fastcmp;
        if (ssup->abbreviate && sizeof(Datum) == 8) {
            ssup->abbrev_converter = account_path_abbrev_convert;
            ssup->abbrev_abort = account_path_abbrev_abort;
            ssup->abbrev_full_comparator = account_path_fastcmp;
            ssup->comparator = ssup_datum_unsigned_cmp;
        }
        PG_RETURN_VOID();
    });
}

PG_FUNCTION_INFO_V1(account_path_hash);
Datum account_path_hash(PG_FUNCTION_ARGS) {
    return hot_body([&]() noexcept -> Datum {
        Datum d = PG_GETARG_DATUM(0);
        PathArg p = path_from_datum(d);
        Datum h = hash_any(p.data, static_cast<int>(p.len));
        free_if_copy(p, d);
        return h;
    });
}

PG_FUNCTION_INFO_V1(account_path_hash_extended);
Datum account_path_hash_extended(PG_FUNCTION_ARGS) {
    return hot_body([&]() noexcept -> Datum {
        Datum d = PG_GETARG_DATUM(0);
        PathArg p = path_from_datum(d);
        Datum h = hash_any_extended(p.data, static_cast<int>(p.len), PG_GETARG_INT64(1));
        free_if_copy(p, d);
        return h;
    });
}

// ---------------------------------------------------------------- functions

PG_FUNCTION_INFO_V1(account_path_nlevel);
Datum account_path_nlevel(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        PG_RETURN_INT32(P::depth(p.data, p.len));
    });
}

// The path without its last label; NULL for a main account.
PG_FUNCTION_INFO_V1(account_path_parent);
Datum account_path_parent(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        int d = P::depth(p.data, p.len);
        if (d <= 1)
            PG_RETURN_NULL();
        return make_path(p.data, P::label_offset(p.data, p.len, d - 1));
    });
}

// The main account's path (first label).
PG_FUNCTION_INFO_V1(account_path_root);
Datum account_path_root(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        return make_path(p.data, P::label_offset(p.data, p.len, 1));
    });
}

PG_FUNCTION_INFO_V1(account_path_root_id);
Datum account_path_root_id(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        uint64_t v = 0;
        if (!P::decode_label(p.data, p.len, 0, &v))
            PG_RETURN_NULL();
        PG_RETURN_INT64(static_cast<int64>(v));
    });
}

PG_FUNCTION_INFO_V1(account_path_leaf);
Datum account_path_leaf(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        int d = P::depth(p.data, p.len);
        uint64_t v = 0;
        if (d == 0 || !P::decode_label(p.data, p.len, P::label_offset(p.data, p.len, d - 1), &v))
            PG_RETURN_NULL();
        PG_RETURN_INT64(static_cast<int64>(v));
    });
}

static Datum subpath_common(FunctionCallInfo fcinfo, bool has_len) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        int32 start = PG_GETARG_INT32(1);
        int32 len = has_len ? PG_GETARG_INT32(2) : 0;
        int from = 0, to = 0;
        subpath_bounds(P::depth(p.data, p.len), start, len, has_len, &from, &to);
        size_t a = P::label_offset(p.data, p.len, from), b = P::label_offset(p.data, p.len, to);
        return make_path(p.data + a, b - a);
    });
}

PG_FUNCTION_INFO_V1(account_path_subpath2);
Datum account_path_subpath2(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return subpath_common(fcinfo, false); });
}

PG_FUNCTION_INFO_V1(account_path_subpath3);
Datum account_path_subpath3(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return subpath_common(fcinfo, true); });
}

PG_FUNCTION_INFO_V1(account_path_concat);
Datum account_path_concat(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg a = path_from_datum(PG_GETARG_DATUM(0));
        PathArg b = path_from_datum(PG_GETARG_DATUM(1));
        int d = P::depth(a.data, a.len) + P::depth(b.data, b.len);
        if (d > P::kMaxDepth)
            throw_param("account_path too deep: " + std::to_string(d) + " labels (at most " +
                        std::to_string(P::kMaxDepth) + ")");
        struct varlena *v = static_cast<struct varlena *>(palloc(VARHDRSZ + a.len + b.len));
        SET_VARSIZE(v, VARHDRSZ + a.len + b.len);
        memcpy(VARDATA(v), a.data, a.len);
        memcpy(VARDATA(v) + a.len, b.data, b.len);
        PG_RETURN_POINTER(v);
    });
}

PG_FUNCTION_INFO_V1(account_path_append);
Datum account_path_append(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg a = path_from_datum(PG_GETARG_DATUM(0));
        int64 label = PG_GETARG_INT64(1);
        label_to_path_check(label);
        if (P::depth(a.data, a.len) + 1 > P::kMaxDepth)
            throw_param("account_path too deep: more than " + std::to_string(P::kMaxDepth) +
                        " labels");
        uint8_t enc[P::kMaxLabelBytes];
        size_t n = P::encode_label(static_cast<uint64_t>(label), enc);
        struct varlena *v = static_cast<struct varlena *>(palloc(VARHDRSZ + a.len + n));
        SET_VARSIZE(v, VARHDRSZ + a.len + n);
        memcpy(VARDATA(v), a.data, a.len);
        memcpy(VARDATA(v) + a.len, enc, n);
        PG_RETURN_POINTER(v);
    });
}

// lca(a, b): ltree semantics (longest common proper ancestor); NULL if none.
PG_FUNCTION_INFO_V1(account_path_lca2);
Datum account_path_lca2(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg a = path_from_datum(PG_GETARG_DATUM(0));
        PathArg b = path_from_datum(PG_GETARG_DATUM(1));
        int min_depth = P::depth(a.data, a.len);
        size_t prefix = lca_bytes(a.data, &min_depth, b.data, b.len, a.len);
        size_t cut = cut_to_depth(a.data, a.len, min_depth - 1);
        if (cut < prefix)
            prefix = cut;
        if (prefix == 0)
            PG_RETURN_NULL();
        return make_path(a.data, prefix);
    });
}

// lca(paths[]): NULL for an empty array, an array with a NULL, or no common
// proper ancestor.
PG_FUNCTION_INFO_V1(account_path_lca_array);
Datum account_path_lca_array(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        ArrayType *arr = PG_GETARG_ARRAYTYPE_P(0);
        Datum *elems;
        bool *nulls;
        int n;
        deconstruct_array(arr, ARR_ELEMTYPE(arr), -1, false, TYPALIGN_INT, &elems, &nulls, &n);
        if (n == 0)
            PG_RETURN_NULL();
        for (int i = 0; i < n; ++i)
            if (nulls[i])
                PG_RETURN_NULL();
        PathArg first = path_from_datum(elems[0]);
        int min_depth = P::depth(first.data, first.len);
        size_t prefix = first.len;
        for (int i = 1; i < n; ++i) {
            PathArg b = path_from_datum(elems[i]);
            prefix = lca_bytes(first.data, &min_depth, b.data, b.len, prefix);
        }
        size_t cut = cut_to_depth(first.data, first.len, min_depth - 1);
        if (cut < prefix)
            prefix = cut;
        if (prefix == 0)
            PG_RETURN_NULL();
        return make_path(first.data, prefix);
    });
}

// The labels as bigint[].
PG_FUNCTION_INFO_V1(account_path_labels);
Datum account_path_labels(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        Datum out[P::kMaxDepth];
        int d = 0;
        size_t pos = 0;
        uint64_t v;
        while (d < P::kMaxDepth) {
            size_t n = P::decode_label(p.data, p.len, pos, &v);
            if (!n)
                break;
            out[d++] = Int64GetDatum(static_cast<int64>(v));
            pos += n;
        }
        PG_RETURN_ARRAYTYPE_P(
            construct_array(out, d, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
    });
}

// A path from its labels (bigint[], main account first).
PG_FUNCTION_INFO_V1(account_path_from_labels);
Datum account_path_from_labels(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        ArrayType *arr = PG_GETARG_ARRAYTYPE_P(0);
        Datum *elems;
        bool *nulls;
        int n;
        deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &n);
        uint8_t buf[P::kMaxEncoded];
        size_t len = 0;
        if (n == 0)
            throw_param("an account_path needs at least one label");
        if (n > P::kMaxDepth)
            throw_param("account_path too deep: " + std::to_string(n) + " labels (at most " +
                        std::to_string(P::kMaxDepth) + ")");
        for (int i = 0; i < n; ++i) {
            if (nulls[i])
                throw tenancy::SqlError(ERRCODE_NULL_VALUE_NOT_ALLOWED,
                                        "account_path labels must not be NULL");
            label_to_path_check(DatumGetInt64(elems[i]));
            len += P::encode_label(static_cast<uint64_t>(DatumGetInt64(elems[i])), buf + len);
        }
        return make_path(buf, len);
    });
}

// Exclusive upper bound of the subtree of P (P's next sibling); the btree
// range [P, subtree_upper(P)) is exactly P's subtree. Its last label may be
// one more than the largest label a path may hold.
PG_FUNCTION_INFO_V1(account_path_subtree_upper);
Datum account_path_subtree_upper(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        uint8_t buf[P::kMaxEncoded + 1];
        if (p.len > P::kMaxEncoded)
            PG_RETURN_NULL();  // corrupt data only
        size_t n = P::subtree_upper(p.data, p.len, buf);
        return make_path(buf, n);
    });
}

// P and every ancestor of P, main account first (the values x with x @> P).
PG_FUNCTION_INFO_V1(account_path_ancestors);
Datum account_path_ancestors(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PathArg p = path_from_datum(PG_GETARG_DATUM(0));
        Datum out[P::kMaxDepth];
        int d = 0;
        size_t pos = 0;
        uint64_t v;
        while (d < P::kMaxDepth) {
            size_t n = P::decode_label(p.data, p.len, pos, &v);
            if (!n)
                break;
            pos += n;
            out[d++] = make_path(p.data, pos);
        }
        Oid path_type = get_fn_expr_argtype(fcinfo->flinfo, 0);
        if (!OidIsValid(path_type))
            path_type = get_element_type(get_func_rettype(fcinfo->flinfo->fn_oid));
        PG_RETURN_ARRAYTYPE_P(construct_array(out, d, path_type, -1, false, TYPALIGN_INT));
    });
}

// ---------------------------------------------------------------- planner

// 0.1's restriction selectivity of <@ and @> (kept for the frozen 0.1 script;
// 0.2 uses path_selectivity.cpp): the operator tried on the column's
// MCVs and histogram (ltree does the same), 0.1% without statistics.
PG_FUNCTION_INFO_V1(account_path_tree_sel);
Datum account_path_tree_sel(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        PlannerInfo *root = reinterpret_cast<PlannerInfo *>(PG_GETARG_POINTER(0));
        Oid op = PG_GETARG_OID(1);
        List *args = reinterpret_cast<List *>(PG_GETARG_POINTER(2));
        int varRelid = PG_GETARG_INT32(3);
        PG_RETURN_FLOAT8(
            generic_restriction_selectivity(root, op, InvalidOid, args, varRelid, 0.001));
    });
}

// Index conditions for a btree index on an account_path column:
//   col <@ P  ->  col >= P AND col < tenancy.subtree_upper(P)
//   col @> P  ->  col = ANY (tenancy.ancestors(P))
// P may be a Const (bounds computed now) or any non-volatile expression
// (Param, STABLE function call: bounds computed at executor start). Both
// rewrites are exact, so the original clause is not rechecked.
static List *tree_index_conditions(SupportRequestIndexCondition *req, bool col_is_descendant) {
    if (req->index->relam != BTREE_AM_OID)
        return NIL;
    List *args;
    if (IsA(req->node, OpExpr))
        args = reinterpret_cast<OpExpr *>(req->node)->args;
    else if (IsA(req->node, FuncExpr))
        args = reinterpret_cast<FuncExpr *>(req->node)->args;
    else
        return NIL;
    if (list_length(args) != 2)
        return NIL;
    Node *key = static_cast<Node *>(list_nth(args, req->indexarg));
    Node *other = static_cast<Node *>(list_nth(args, 1 - req->indexarg));
    Oid type = exprType(key);
    if (exprType(other) != type)
        return NIL;
    Oid ge = get_opfamily_member(req->opfamily, type, type, BTGreaterEqualStrategyNumber);
    Oid lt = get_opfamily_member(req->opfamily, type, type, BTLessStrategyNumber);
    Oid eq = get_opfamily_member(req->opfamily, type, type, BTEqualStrategyNumber);
    if (!OidIsValid(ge) || !OidIsValid(lt) || !OidIsValid(eq))
        return NIL;
    Oid schema = get_func_namespace(req->funcid);
    char *schema_name = get_namespace_name(schema);
    if (schema_name == nullptr)
        return NIL;
    Oid argtypes[1] = {type};
    if (IsA(other, Const) && reinterpret_cast<Const *>(other)->constisnull)
        return NIL;

    if (col_is_descendant) {
        Expr *upper;
        if (IsA(other, Const)) {
            Datum u = DirectFunctionCall1(account_path_subtree_upper,
                                          reinterpret_cast<Const *>(other)->constvalue);
            upper = reinterpret_cast<Expr *>(makeConst(type, -1, InvalidOid, -1, u, false, false));
        } else {
            Oid fn = LookupFuncName(
                list_make2(makeString(schema_name), makeString(pstrdup("subtree_upper"))), 1,
                argtypes, true);
            if (!OidIsValid(fn))
                return NIL;
            upper = reinterpret_cast<Expr *>(makeFuncExpr(fn, type, list_make1(copy_node(other)),
                                                          InvalidOid, InvalidOid,
                                                          COERCE_EXPLICIT_CALL));
        }
        Expr *lo = make_opclause(ge, BOOLOID, false, static_cast<Expr *>(copy_node(key)),
                                 static_cast<Expr *>(copy_node(other)), InvalidOid, InvalidOid);
        Expr *hi = make_opclause(lt, BOOLOID, false, static_cast<Expr *>(copy_node(key)), upper,
                                 InvalidOid, InvalidOid);
        req->lossy = false;
        return list_make2(lo, hi);
    }

    Oid array_type = get_array_type(type);
    if (!OidIsValid(array_type))
        return NIL;
    Expr *array;
    if (IsA(other, Const)) {
        Datum fcargs = reinterpret_cast<Const *>(other)->constvalue;
        // account_path_ancestors reads its argument type from flinfo; a
        // direct call has none, so build the array here.
        PathArg p = path_from_datum(fcargs);
        Datum out[P::kMaxDepth];
        int d = 0;
        size_t pos = 0;
        uint64_t v;
        while (d < P::kMaxDepth) {
            size_t n = P::decode_label(p.data, p.len, pos, &v);
            if (!n)
                break;
            pos += n;
            out[d++] = make_path(p.data, pos);
        }
        ArrayType *a = construct_array(out, d, type, -1, false, TYPALIGN_INT);
        array = reinterpret_cast<Expr *>(
            makeConst(array_type, -1, InvalidOid, -1, PointerGetDatum(a), false, false));
    } else {
        Oid fn =
            LookupFuncName(list_make2(makeString(schema_name), makeString(pstrdup("ancestors"))), 1,
                           argtypes, true);
        if (!OidIsValid(fn))
            return NIL;
        array =
            reinterpret_cast<Expr *>(makeFuncExpr(fn, array_type, list_make1(copy_node(other)),
                                                  InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL));
    }
    ScalarArrayOpExpr *saop = makeNode(ScalarArrayOpExpr);
    saop->opno = eq;
    saop->opfuncid = get_opcode(eq);
    saop->useOr = true;
    saop->inputcollid = InvalidOid;
    saop->args = list_make2(copy_node(key), array);
    saop->location = -1;
    req->lossy = false;
    return list_make1(saop);
}

// Support function of the <@ function (a <@ b).
PG_FUNCTION_INFO_V1(account_path_descendant_support);
Datum account_path_descendant_support(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        Node *raw = reinterpret_cast<Node *>(PG_GETARG_POINTER(0));
        if (!IsA(raw, SupportRequestIndexCondition))
            PG_RETURN_POINTER(nullptr);
        auto *req = reinterpret_cast<SupportRequestIndexCondition *>(raw);
        // col <@ P (col on the left) is a subtree; P <@ col makes col an ancestor.
        PG_RETURN_POINTER(tree_index_conditions(req, req->indexarg == 0));
    });
}

// Support function of the @> function (a @> b).
PG_FUNCTION_INFO_V1(account_path_ancestor_support);
Datum account_path_ancestor_support(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        Node *raw = reinterpret_cast<Node *>(PG_GETARG_POINTER(0));
        if (!IsA(raw, SupportRequestIndexCondition))
            PG_RETURN_POINTER(nullptr);
        auto *req = reinterpret_cast<SupportRequestIndexCondition *>(raw);
        PG_RETURN_POINTER(tree_index_conditions(req, req->indexarg == 1));
    });
}

}  // extern "C"
