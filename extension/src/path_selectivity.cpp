// tenancy.account_path: planner statistics and selectivity of <@ and @>
// (the subtree of a path, the ancestors of a path).
//
// A subtree is one btree range [P, subtree_upper(P)), so the column's
// histogram bounds it: k histogram bounds inside the range mean the range
// holds between k-1 and k+1 buckets' worth of rows. A bucket is thousands of
// rows on a large table, far coarser than a mid-level or leaf subtree, so
// ANALYZE also stores per-depth tree statistics (a custom typanalyze, slot
// kind kTreeStatsKind): for each depth d, the average share of rows in the
// subtree of a depth-d path (rows of depth >= d over the estimated number of
// distinct depth-d prefixes). The estimate is that average, clamped into the
// interval the histogram allows; MCVs are counted exactly.
//
// Boundary: nothing here throws (no C++ objects with destructors, no
// throwing library calls); PostgreSQL calls that may ereport run in frames
// that own only plain data, inside tenancy::guard for SQL-callable entries.
#include "account_path_codec.hpp"
#include "boundary.hpp"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wregister"
#ifdef __clang__
#pragma clang diagnostic ignored "-Wregister"
#endif
extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_statistic.h"
#include "commands/vacuum.h"
#include "nodes/pathnodes.h"
#include "utils/lsyscache.h"
#include "utils/selfuncs.h"
#include "utils/typcache.h"
}
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>

namespace {

namespace P = tenancy::path;

// Private pg_statistic slot kind (PostgreSQL leaves 10000-30000 to private
// use): stanumbers[d-1] = average fraction of the column's non-null rows in
// the subtree of a depth-d path.
constexpr int16 kTreeStatsKind = 17021;

// As before the estimators existed: the selectivity with no statistics.
constexpr double kDefaultSel = 0.001;

struct Bytes {
    const uint8_t *data;
    size_t len;
};

// The payload of a path Datum (detoasted if needed; the copy is left to the
// memory context).
inline Bytes path_bytes(Datum d) {
    struct varlena *v =
        pg_detoast_datum_packed(reinterpret_cast<struct varlena *>(DatumGetPointer(d)));
    return Bytes{reinterpret_cast<const uint8_t *>(VARDATA_ANY(v)), VARSIZE_ANY_EXHDR(v)};
}

inline bool bytes_less(const Bytes &a, const Bytes &b) noexcept {
    return P::compare(a.data, a.len, b.data, b.len) < 0;
}

// ---------------------------------------------------------------- ANALYZE

// std_typanalyze's compute function for this type (compute_scalar_stats, not
// exported): the same for every column of the type, so one static suffices.
AnalyzeAttrComputeStatsFunc std_compute_stats = nullptr;

// Duj1, the estimator ANALYZE uses for n_distinct (Haas and Stokes): n sampled
// rows out of N, d distinct values among them, f1 of which seen once.
double estimate_distinct(double n, double d, double f1, double N) {
    if (n <= 0 || d <= 0)
        return 0;
    if (n >= N)
        return d;
    double D;
    if (f1 >= n)
        D = N;  // every sampled value unique: assume all are
    else
        D = n * d / (n - f1 + f1 * n / N);
    return std::min(std::max(D, d), N);
}

void compute_tree_stats(VacAttrStats *stats, AnalyzeAttrFetchFunc fetchfunc, int samplerows,
                        double totalrows) {
    std_compute_stats(stats, fetchfunc, samplerows, totalrows);
    if (!stats->stats_valid || samplerows <= 0)
        return;
    int slot = 0;
    while (slot < STATISTIC_NUM_SLOTS && stats->stakind[slot] != 0)
        ++slot;
    if (slot == STATISTIC_NUM_SLOTS)
        return;

    Bytes *rows = static_cast<Bytes *>(palloc(sizeof(Bytes) * samplerows));
    int n = 0;
    for (int i = 0; i < samplerows; ++i) {
        bool isnull;
        Datum d = fetchfunc(stats, i, &isnull);
        if (isnull)
            continue;
        rows[n++] = path_bytes(d);
        vacuum_delay_point();
    }
    if (n == 0)
        return;
    std::sort(rows, rows + n, bytes_less);

    // Sorted, the rows sharing a depth-d prefix are consecutive among the rows
    // of depth >= d (a row between them would lie in that subtree). One pass
    // counts, per depth, the rows, the distinct prefixes and the prefixes
    // seen once.
    double ge[P::kMaxDepth] = {}, distinct[P::kMaxDepth] = {}, singles[P::kMaxDepth] = {};
    Bytes run[P::kMaxDepth];
    int run_len[P::kMaxDepth] = {};
    int max_depth = 0;
    for (int i = 0; i < n; ++i) {
        size_t pos = 0;
        uint64_t v;
        for (int d = 0; d < P::kMaxDepth; ++d) {
            size_t step = P::decode_label(rows[i].data, rows[i].len, pos, &v);
            if (!step)
                break;
            pos += step;
            Bytes prefix{rows[i].data, pos};
            ge[d] += 1;
            if (run_len[d] > 0 && run[d].len == pos &&
                P::bytes_equal(run[d].data, prefix.data, pos)) {
                ++run_len[d];
            } else {
                if (run_len[d] == 1)
                    singles[d] += 1;
                distinct[d] += 1;
                run[d] = prefix;
                run_len[d] = 1;
            }
            if (d + 1 > max_depth)
                max_depth = d + 1;
        }
    }
    for (int d = 0; d < max_depth; ++d)
        if (run_len[d] == 1)
            singles[d] += 1;

    // Rows of the table (non-null) that the sample stands for.
    double total_nonnull = totalrows * n / samplerows;
    MemoryContext old = MemoryContextSwitchTo(stats->anl_context);
    float4 *numbers = static_cast<float4 *>(palloc(sizeof(float4) * max_depth));
    MemoryContextSwitchTo(old);
    for (int d = 0; d < max_depth; ++d) {
        double N = total_nonnull * ge[d] / n;
        double D = estimate_distinct(ge[d], distinct[d], singles[d], N);
        numbers[d] = D > 0 ? static_cast<float4>((ge[d] / n) / D) : 0;
    }
    stats->stakind[slot] = kTreeStatsKind;
    stats->staop[slot] = InvalidOid;
    stats->stacoll[slot] = InvalidOid;
    stats->stanumbers[slot] = numbers;
    stats->numnumbers[slot] = max_depth;
}

// ---------------------------------------------------------------- estimates

// Fraction of rows x with x <@ p: MCVs exactly, the rest from the histogram
// range [p, subtree_upper(p)) and the tree statistics.
double subtree_selectivity(VariableStatData *vardata, FmgrInfo *opproc, Datum constval,
                           bool varonleft) {
    HeapTuple tuple = vardata->statsTuple;
    double nullfrac = reinterpret_cast<Form_pg_statistic>(GETSTRUCT(tuple))->stanullfrac;
    double sumcommon = 0;
    double mcv_sel = mcv_selectivity(vardata, opproc, InvalidOid, constval, varonleft, &sumcommon);
    double other = std::max(0.0, 1.0 - nullfrac - sumcommon);

    Bytes p = path_bytes(constval);
    int depth = P::depth(p.data, p.len);
    uint8_t upper_buf[P::kMaxEncoded + 1];
    if (depth == 0 || p.len > P::kMaxEncoded)
        return kDefaultSel;
    Bytes upper{upper_buf, P::subtree_upper(p.data, p.len, upper_buf)};

    // Tree statistics: the average subtree of a path this deep.
    bool have_tree = false;
    double tree_sel = 0;
    AttStatsSlot tslot;
    if (get_attstatsslot(&tslot, tuple, kTreeStatsKind, InvalidOid, ATTSTATSSLOT_NUMBERS)) {
        if (tslot.nnumbers > 0) {
            have_tree = true;
            // Deeper than anything sampled: a lone path (the floor below).
            tree_sel = depth <= tslot.nnumbers ? tslot.numbers[depth - 1] * (1.0 - nullfrac) : 0;
        }
        free_attstatsslot(&tslot);
    }

    // The node itself is one distinct value: a floor for a tiny subtree.
    bool isdefault;
    double nd = get_variable_numdistinct(vardata, &isdefault);
    double floor_sel = nd >= 1 ? (1.0 - nullfrac) / nd : 0;

    double sel;
    AttStatsSlot hslot;
    if (get_attstatsslot(&hslot, tuple, STATISTIC_KIND_HISTOGRAM, InvalidOid,
                         ATTSTATSSLOT_VALUES) &&
        hslot.nvalues >= 2) {
        // Bounds b with p <= b < upper (binary searches in tree order).
        int nb = hslot.nvalues;
        auto lower_bound = [&](const Bytes &key) {
            int lo = 0, hi = nb;
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                Bytes b = path_bytes(hslot.values[mid]);
                if (P::compare(b.data, b.len, key.data, key.len) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            return lo;
        };
        int k = lower_bound(upper) - lower_bound(p);
        double nbins = nb - 1;
        double hist_lo = mcv_sel + other * std::max(k - 1, 0) / nbins;
        double hist_hi = mcv_sel + other * std::min((k + 1) / nbins, 1.0);
        if (have_tree)
            sel = std::min(std::max(tree_sel, hist_lo), hist_hi);
        else if (k > 0)
            sel = mcv_sel + other * k / nbins;
        else  // within one bucket, size unknown: between one row and a bucket
            sel = mcv_sel + std::sqrt(floor_sel * other / nbins);
        free_attstatsslot(&hslot);
    } else {
        // No histogram: every value was an MCV (or too few to bucket).
        sel = mcv_sel + (have_tree ? std::min(tree_sel, other) : other * kDefaultSel);
    }
    sel = std::max(sel, std::min(floor_sel, other + mcv_sel));
    CLAMP_PROBABILITY(sel);
    return sel;
}

// Fraction of rows x with x @> p: x is one of p's depth(p) prefixes, so the
// sum of their equality selectivities.
double ancestors_selectivity(VariableStatData *vardata, Datum constval) {
    TypeCacheEntry *tc = lookup_type_cache(vardata->atttype, TYPECACHE_EQ_OPR);
    if (!OidIsValid(tc->eq_opr))
        return kDefaultSel;
    Bytes p = path_bytes(constval);
    double sel = 0;
    size_t pos = 0;
    uint64_t v;
    for (int d = 0; d < P::kMaxDepth; ++d) {
        size_t step = P::decode_label(p.data, p.len, pos, &v);
        if (!step)
            break;
        pos += step;
        struct varlena *prefix = static_cast<struct varlena *>(palloc(VARHDRSZ + pos));
        SET_VARSIZE(prefix, VARHDRSZ + pos);
        memcpy(VARDATA(prefix), p.data, pos);
        sel += var_eq_const(vardata, tc->eq_opr, InvalidOid, PointerGetDatum(prefix), false, true,
                            false);
        pfree(prefix);
    }
    CLAMP_PROBABILITY(sel);
    return sel;
}

// A restriction estimator for the operator op (<@ when descendant_op, else
// @>): col <@ P and P @> col are subtrees; col @> P and P <@ col ancestors.
Datum tree_selectivity(FunctionCallInfo fcinfo, bool descendant_op) {
    PlannerInfo *root = reinterpret_cast<PlannerInfo *>(PG_GETARG_POINTER(0));
    Oid op = PG_GETARG_OID(1);
    List *args = reinterpret_cast<List *>(PG_GETARG_POINTER(2));
    int varRelid = PG_GETARG_INT32(3);
    VariableStatData vardata;
    Node *other;
    bool varonleft;
    if (!get_restriction_variable(root, args, varRelid, &vardata, &other, &varonleft))
        PG_RETURN_FLOAT8(kDefaultSel);
    double sel = kDefaultSel;
    if (IsA(other, Const) && HeapTupleIsValid(vardata.statsTuple) &&
        reinterpret_cast<Const *>(other)->consttype == vardata.atttype) {
        Const *c = reinterpret_cast<Const *>(other);
        if (c->constisnull) {
            sel = 0;
        } else if (descendant_op == varonleft) {
            FmgrInfo opproc;
            fmgr_info(get_opcode(op), &opproc);
            sel = subtree_selectivity(&vardata, &opproc, c->constvalue, varonleft);
        } else {
            sel = ancestors_selectivity(&vardata, c->constvalue);
        }
    }
    ReleaseVariableStats(vardata);
    PG_RETURN_FLOAT8(sel);
}

}  // namespace

extern "C" {

// typanalyze: the standard statistics plus the per-depth tree statistics.
PG_FUNCTION_INFO_V1(account_path_typanalyze);
Datum account_path_typanalyze(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        VacAttrStats *stats = reinterpret_cast<VacAttrStats *>(PG_GETARG_POINTER(0));
        if (!std_typanalyze(stats))
            PG_RETURN_BOOL(false);
        std_compute_stats = stats->compute_stats;
        stats->compute_stats = compute_tree_stats;
        PG_RETURN_BOOL(true);
    });
}

// RESTRICT of <@.
PG_FUNCTION_INFO_V1(account_path_descendant_sel);
Datum account_path_descendant_sel(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tree_selectivity(fcinfo, true); });
}

// RESTRICT of @>.
PG_FUNCTION_INFO_V1(account_path_ancestor_sel);
Datum account_path_ancestor_sel(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tree_selectivity(fcinfo, false); });
}

}  // extern "C"
