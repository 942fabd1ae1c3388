-- Property tests: random paths (fixed seed) checked against a reference
-- implemented in SQL over bigint[] (the labels). Every check counts the
-- cases that disagree with the reference: all counts must be 0.
SET search_path = tenancy, public;
SELECT setseed(0.4031);

-- Labels are drawn mostly from a few small ids (so prefixes are shared and
-- subtrees are non-trivial) and sometimes from the byte-length boundaries.
CREATE TEMP TABLE samples AS
SELECT i, (SELECT array_agg(CASE WHEN random() < 0.8 THEN 1 + floor(random() * 3)::bigint
                                 ELSE (ARRAY[1, 255, 256, 65535, 65536, 16777216, 4294967295,
                                             4294967296, 72057594037927936, 9223372036854775806]::bigint[])
                                      [1 + floor(random() * 10)::int] END)
           FROM generate_series(1, 1 + floor(random() * 6)::int + i * 0)) AS l
FROM generate_series(1, 600) i;
ALTER TABLE samples ADD COLUMN p account_path;
UPDATE samples SET p = to_account_path(l);
SELECT count(*) AS samples, count(DISTINCT p) AS distinct_paths, max(nlevel(p)) AS max_depth FROM samples;

-- Reference lca over label arrays: common prefix, cut to one less than the shorter.
CREATE FUNCTION pg_temp.ref_lca(a bigint[], b bigint[]) RETURNS bigint[] LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN k = 0 THEN NULL ELSE a[1:k] END
    FROM (SELECT least(coalesce((SELECT min(i) - 1 FROM generate_series(1, least(cardinality(a), cardinality(b))) i
                                 WHERE a[i] <> b[i]), least(cardinality(a), cardinality(b))),
                       least(cardinality(a), cardinality(b)) - 1) AS k) s
$$;

-- Text -> binary -> text, labels, nlevel, parent, root, leaf, ancestors.
SELECT count(*) FILTER (WHERE p::text <> array_to_string(l, '.')) AS text_form,
       count(*) FILTER (WHERE array_to_string(l, '.')::account_path <> p) AS text_parse,
       count(*) FILTER (WHERE labels(p) <> l) AS labels,
       count(*) FILTER (WHERE nlevel(p) <> cardinality(l)) AS nlevel,
       count(*) FILTER (WHERE parent(p) IS DISTINCT FROM
                              CASE WHEN cardinality(l) > 1 THEN to_account_path(l[1:cardinality(l) - 1]) END) AS parent,
       count(*) FILTER (WHERE root_id(p) <> l[1] OR root(p) <> to_account_path(l[1:1])) AS root,
       count(*) FILTER (WHERE leaf(p) <> l[cardinality(l)]) AS leaf,
       count(*) FILTER (WHERE ancestors(p) <> ARRAY(SELECT to_account_path(l[1:k])
                                                   FROM generate_series(1, cardinality(l)) k ORDER BY k)) AS ancestors,
       count(*) FILTER (WHERE p >= subtree_upper(p)) AS upper_after,
       count(*) FILTER (WHERE (account_path_hash_extended(p, 0) & 4294967295)
                              <> (account_path_hash(p)::bigint & 4294967295)) AS hash_seed0
FROM samples;

-- Binary: send/recv through COPY BINARY gives back every value.
CREATE TEMP TABLE copied (i int, p account_path);
DO $$
DECLARE f text := current_setting('data_directory') || '/tenancy_account_path_props_' || pg_backend_pid() || '.bin';
BEGIN
    EXECUTE format('COPY (SELECT i, p FROM samples) TO %L (FORMAT binary)', f);
    EXECUTE format('COPY copied FROM %L (FORMAT binary)', f);
END $$;
SELECT count(*) AS copied, count(*) FILTER (WHERE s.p = c.p AND s.p::text = c.p::text) AS equal
FROM samples s JOIN copied c USING (i);

-- Every pair: <@, @>, =, <>, the order operators and lca against the reference.
-- bigint[] compares element by element and a prefix first: exactly tree order.
SELECT count(*) AS pairs, count(*) FILTER (WHERE a.p <@ b.p) AS related, count(lca(a.p, b.p)) AS with_lca,
       count(*) FILTER (WHERE (a.p <@ b.p) <> (cardinality(b.l) <= cardinality(a.l) AND a.l[1:cardinality(b.l)] = b.l)) AS descendant,
       count(*) FILTER (WHERE (a.p @> b.p) <> (cardinality(a.l) <= cardinality(b.l) AND b.l[1:cardinality(a.l)] = a.l)) AS ancestor,
       count(*) FILTER (WHERE (a.p = b.p) <> (a.l = b.l) OR (a.p <> b.p) <> (a.l <> b.l)) AS equality,
       count(*) FILTER (WHERE (a.p < b.p) <> (a.l < b.l) OR (a.p <= b.p) <> (a.l <= b.l)
                           OR (a.p > b.p) <> (a.l > b.l) OR (a.p >= b.p) <> (a.l >= b.l)) AS ordering,
       count(*) FILTER (WHERE sign(account_path_cmp(a.p, b.p)) <> sign(btarraycmp(a.l, b.l))) AS cmp,
       count(*) FILTER (WHERE (a.p = b.p) AND account_path_hash(a.p) <> account_path_hash(b.p)) AS hash,
       count(*) FILTER (WHERE lca(a.p, b.p) IS DISTINCT FROM to_account_path(pg_temp.ref_lca(a.l, b.l))) AS lca,
       count(*) FILTER (WHERE (a.p <@ b.p) <> (a.p >= b.p AND a.p < subtree_upper(b.p))) AS subtree_range
FROM samples a CROSS JOIN (SELECT * FROM samples WHERE i <= 300) b;

-- lca over arrays, against the reference (groups of paths as a 2-D array
-- padded with 0, which no label is).
CREATE FUNCTION pg_temp.ref_lca_all(ls bigint[][]) RETURNS bigint[] LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE k int; n int := array_length(ls, 1); m int; j int;
BEGIN
    m := NULL;
    FOR j IN 1 .. n LOOP
        m := least(coalesce(m, 1000), (SELECT count(*) FROM unnest(ls[j:j][:]) x WHERE x <> 0)::int);
    END LOOP;
    k := 0;
    WHILE k < m - 1 AND (SELECT count(DISTINCT ls[g.r][k + 1]) FROM generate_series(1, n) AS g(r)) = 1 LOOP
        k := k + 1;
    END LOOP;
    IF k = 0 THEN RETURN NULL; END IF;
    RETURN ARRAY(SELECT ls[1][x] FROM generate_series(1, k) x ORDER BY x);
END $$;
SELECT count(*) AS groups, count(lca(ps)) AS with_lca,
       count(*) FILTER (WHERE lca(ps) IS DISTINCT FROM to_account_path(pg_temp.ref_lca_all(padded))) AS lca_array
FROM (SELECT array_agg(p) AS ps,
             array_agg(l || array_fill(0::bigint, ARRAY[7 - cardinality(l)])) AS padded
      FROM samples GROUP BY l[1], i % 7, nlevel(p) > 2) q;

-- Order consistency: in sort order every subtree is one contiguous range.
CREATE TEMP TABLE ranked AS
SELECT p, row_number() OVER (ORDER BY p) AS rn FROM (SELECT DISTINCT p FROM samples) d;
SELECT count(*) AS subtrees,
       count(*) FILTER (WHERE n <> hi - lo + 1) AS not_contiguous
FROM (SELECT b.p, count(*) AS n, min(a.rn) AS lo, max(a.rn) AS hi
      FROM ranked b JOIN ranked a ON a.p <@ b.p GROUP BY b.p) s;
-- Sorting (sortsupport) and the label order agree.
SELECT count(*) FILTER (WHERE r1 <> r2) AS sort_mismatch
FROM (SELECT row_number() OVER (ORDER BY p) AS r1, row_number() OVER (ORDER BY l) AS r2
      FROM (SELECT DISTINCT p, l FROM samples) d) s;

-- subpath round trips (ltree's position rules).
SELECT count(*) AS cases,
       count(*) FILTER (WHERE subpath(p, 0, k) || subpath(p, k) <> p) AS split_join,
       count(*) FILTER (WHERE labels(subpath(p, k)) <> l[k + 1:]) AS from_offset,
       count(*) FILTER (WHERE labels(subpath(p, -k)) <> l[n - k + 1:]) AS negative_offset,
       count(*) FILTER (WHERE labels(subpath(p, 0, -k)) <> l[1:n - k]) AS negative_len,
       count(*) FILTER (WHERE labels(subpath(p, k, 1)) <> l[k + 1:k + 1]) AS one_label,
       count(*) FILTER (WHERE subpath(p, 0, k) || l[k + 1] <> subpath(p, 0, k + 1)) AS append
FROM (SELECT p, l, cardinality(l) AS n, k FROM samples, generate_series(1, 6) k
      WHERE k < cardinality(l)) s;
