# Usage totals on Citus (docs/operations/scale-out.md, "Usage and sign-in
# through the coordinator"): the DBA's usage_rebuild() recomputes every total
# from the records, main account by main account on the shards that hold
# them. Sourced by tests/suites/60_citus.sh (its cluster; 10_tables.sh has
# recorded usage in every account by then).

# Every total as one line, in key order.
cu_totals="SELECT count(*) || ' ' || md5(coalesce(string_agg(concat_ws('|', main_id, grain, bucket, account_path,
                                                                 kind, quantity, records), ','
                                               ORDER BY main_id, grain, bucket, account_path, kind), ''))
           FROM tenancy.usage_totals"
cu_before=$($CC -c "$cu_totals")
# A total gone wrong (a quantity changed, a row lost) is what a rebuild mends.
cu_out=$($CC -c "UPDATE tenancy.usage_totals SET quantity = quantity + 1
                 WHERE main_id = (SELECT min(main_id) FROM tenancy.usage_totals) AND grain = 'month'" \
             -c "DELETE FROM tenancy.usage_totals
                 WHERE main_id = (SELECT max(main_id) FROM tenancy.usage_totals) AND grain = 'day'" 2>&1)
cu_skewed=$($CC -c "$cu_totals")
ct_check usage-totals-skewed-before-rebuild "1 " "$([ "$cu_skewed" != "$cu_before" ] && echo 1) $cu_out"
cu_rows=$($CC -c "SELECT tenancy.usage_rebuild()" 2>&1)
ct_check usage-rebuild-on-citus "${cu_before%% *} $cu_before" "$cu_rows $($CC -c "$cu_totals")"
