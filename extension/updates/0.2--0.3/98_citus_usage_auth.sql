-- Citus scale-out, 0.2 -> 0.3: the usage and sign-in routes through the
-- coordinator, as in extension/sql/54_usage.sql, 24_authenticate.sql,
-- 301_identity_throttle_audit.sql and 302_identity_sessions.sql: queries name
-- the main account (main_id, the distribution column) so that Citus routes
-- them to one shard; usage_record() reads a new record back as the owner that
-- wrote it; usage_rebuild() names main_id on Citus. (Later than 92 and 94,
-- which define some of these functions too: this part's copy is the final one.)

CREATE OR REPLACE FUNCTION tenancy.record_usage(account text, kind text, quantity numeric,
                                     at timestamptz DEFAULT now(), ref text DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    a tenancy.accounts;
    new_id bigint;
    prior tenancy.usage_records;
    when_at timestamptz := coalesce(record_usage.at, now());
BEGIN
    PERFORM tenancy._require('usage', 'write');
    a := tenancy._visible_account(account);
    IF kind IS NULL OR NOT EXISTS (SELECT FROM tenancy.usage_kinds k WHERE k.kind = record_usage.kind) THEN
        RAISE EXCEPTION 'unknown usage kind "%"', kind USING ERRCODE = '22023',
            HINT = (SELECT 'Known kinds: ' || string_agg(k.kind, ', ' ORDER BY k.kind) FROM tenancy.usage_kinds k);
    END IF;
    IF quantity IS NULL OR quantity = 'NaN' OR quantity < 0 OR quantity > 1e12 OR scale(quantity) > 6 THEN
        RAISE EXCEPTION 'usage quantity must be a number from 0 to 10^12 with at most 6 decimals'
            USING ERRCODE = '22023';
    END IF;
    IF when_at > now() + interval '5 minutes' OR when_at < '2000-01-01' THEN
        RAISE EXCEPTION 'usage time must not be in the future (beyond 5 minutes of clock skew) nor before 2000'
            USING ERRCODE = '22023';
    END IF;
    IF ref IS NOT NULL AND (length(ref) = 0 OR length(ref) > 200) THEN
        RAISE EXCEPTION 'usage ref must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    INSERT INTO tenancy.usage_records AS r (account_path, kind, quantity, at, ref, recorded_by)
    VALUES (a.path, record_usage.kind, record_usage.quantity, when_at, record_usage.ref,
            tenancy._context_field('principal_kind') || ':' || tenancy._context_field('principal_id'))
    -- Only usage_records_ref can conflict (ids come from a sequence); no
    -- conflict target, as on Citus that index gains main_id in front.
    ON CONFLICT DO NOTHING
    RETURNING r.id INTO new_id;
    IF new_id IS NULL THEN
        SELECT * INTO prior FROM tenancy.usage_records r
        WHERE r.main_id = a.main_id AND r.account_path = a.path AND r.kind = record_usage.kind
          AND r.ref = record_usage.ref;
        IF prior.quantity <> record_usage.quantity THEN
            RAISE EXCEPTION 'usage ref "%" is already recorded with another quantity', ref
                USING ERRCODE = '23505';
        END IF;
        new_id := prior.id;
    END IF;
    RETURN format('usg_%s_%s', a.main_id, new_id);
END $$;

CREATE OR REPLACE FUNCTION tenancy.usage_report(account text, "from" timestamptz, "to" timestamptz,
                                     subtree boolean DEFAULT true)
    RETURNS TABLE (kind text, quantity numeric)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    c record;
    use_slice boolean;
BEGIN
    PERFORM tenancy._require('usage', 'read');
    a := tenancy._visible_account(account);
    IF usage_report."from" IS NULL OR usage_report."to" IS NULL
       OR NOT isfinite(usage_report."from") OR NOT isfinite(usage_report."to") THEN
        RAISE EXCEPTION 'usage report range needs finite "from" and "to"' USING ERRCODE = '22023';
    END IF;
    IF usage_report."to" <= usage_report."from" THEN
        RAISE EXCEPTION 'usage report range: "to" must be after "from"' USING ERRCODE = '22023';
    END IF;
    IF usage_report."to" - usage_report."from" > interval '100 years' THEN
        RAISE EXCEPTION 'usage report range is longer than 100 years' USING ERRCODE = '22023';
    END IF;
    c := tenancy._usage_cover(usage_report."from", usage_report."to");
    -- Dynamic SQL: each report is planned for its own path range, so that a
    -- main account's and a leaf's take the plans that suit them. The account
    -- alone: its path; with its subtree: [path, subtree_upper(path)).
    -- The ragged ends: read through (account_path, at), a subtree's ends cost
    -- an index entry per record of the subtree; through (main_id, at), one per
    -- record of the main account in those hours. The planner cannot tell a big
    -- subtree from a small one once <@ has become a btree range, so the choice
    -- is made here: a subtree of more than 100 accounts (counted up to 101)
    -- reads the main account's time slice, filtered by path.
    -- Every table is named with its main_id ($8): on Citus the whole report
    -- is then one router query on the main account's shard (without it, a
    -- union of multi-shard reads that Citus cannot plan); on one node it is
    -- the value main_id is generated from anyway.
    use_slice := coalesce(subtree, true) AND cardinality(c.raw_from) > 0
                 AND (SELECT count(*) FROM (SELECT FROM tenancy.accounts x
                                            WHERE x.main_id = a.main_id AND x.path OPERATOR(tenancy.<@) a.path
                                            LIMIT 101) n) > 100;
    RETURN QUERY EXECUTE replace($q$
        WITH slice AS MATERIALIZED (
            SELECT r.kind, r.quantity, r.account_path FROM tenancy.usage_records r
            WHERE r.main_id = $8 AND $7
              AND ((r.at >= $5[1] AND r.at < $6[1]) OR (r.at >= $5[2] AND r.at < $6[2])))
        SELECT s.kind, sum(s.quantity) FROM (
            SELECT t.kind, t.quantity FROM tenancy.usage_totals t
            WHERE t.main_id = $8 AND t.grain = 'month' AND t.bucket = ANY ($3)
              AND t.@PATH@
            UNION ALL
            SELECT t.kind, t.quantity FROM tenancy.usage_totals t
            WHERE t.main_id = $8 AND t.grain = 'day' AND t.bucket = ANY ($4)
              AND t.@PATH@
            UNION ALL
            SELECT r.kind, r.quantity FROM tenancy.usage_records r
            WHERE NOT $7 AND r.main_id = $8 AND r.@PATH@
              AND ((r.at >= $5[1] AND r.at < $6[1]) OR (r.at >= $5[2] AND r.at < $6[2]))
            UNION ALL
            SELECT r.kind, r.quantity FROM slice r WHERE r.@PATH@
        ) s
        GROUP BY s.kind
        ORDER BY s.kind
    $q$, '@PATH@', CASE WHEN NOT coalesce(subtree, true) THEN 'account_path OPERATOR(tenancy.=) $1'
                         ELSE 'account_path OPERATOR(tenancy.>=) $1 AND account_path OPERATOR(tenancy.<) $2' END)
    USING a.path, tenancy.subtree_upper(a.path), c.months, c.days, c.raw_from, c.raw_to, use_slice, a.main_id;
END $$;

CREATE OR REPLACE FUNCTION tenancy.usage_rebuild() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    LOCK TABLE tenancy.usage_records IN SHARE MODE;
    DELETE FROM tenancy.usage_totals;
    IF tenancy._citus_distributed() THEN
        -- On Citus main_id is a plain column that routes each total (95_citus.sql):
        -- named, the records' and totals' co-located shards fold in place.
        INSERT INTO tenancy.usage_totals (main_id, grain, bucket, account_path, kind, quantity, records)
        SELECT r.main_id, g.grain, date_trunc(g.grain, r.at, 'UTC'), r.account_path, r.kind, sum(r.quantity),
               count(*)
        FROM tenancy.usage_records r CROSS JOIN (VALUES ('day'), ('month')) AS g(grain)
        GROUP BY 1, 2, 3, 4, 5;
    ELSE
        INSERT INTO tenancy.usage_totals (grain, bucket, account_path, kind, quantity, records)
        SELECT g.grain, date_trunc(g.grain, r.at, 'UTC'), r.account_path, r.kind, sum(r.quantity), count(*)
        FROM tenancy.usage_records r CROSS JOIN (VALUES ('day'), ('month')) AS g(grain)
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

CREATE OR REPLACE FUNCTION tenancy._establish_session(kind text, main_id bigint, credential_id bigint,
                                           account_id bigint, scope text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions;
    target tenancy.accounts;
    home_path tenancy.account_path;
    home_id bigint;
    role text;
    principal bigint;
    must_change boolean;
    su tenancy.sub_users;
BEGIN
    SELECT * INTO s FROM tenancy.sessions x WHERE x.id = credential_id;
    IF NOT FOUND OR s.principal_kind <> kind THEN
        RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
    END IF;
    IF s.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'the session has ended' USING ERRCODE = '28000';
    END IF;
    IF s.expires_at <= now() THEN
        RAISE EXCEPTION 'the session has expired' USING ERRCODE = '28000';
    END IF;
    IF account_id IS NULL THEN
        main_id := s.account_main_id;
        account_id := s.account_id;
    END IF;
    SELECT * INTO target FROM tenancy.accounts a
    WHERE a.main_id = _establish_session.main_id AND a.id = _establish_session.account_id;
    IF NOT FOUND THEN
        -- A session-scoped context that switched main account resumes with its
        -- first main id, and a promoted account has a new one; account ids are
        -- globally unique.
        SELECT * INTO target FROM tenancy.accounts a WHERE a.id = _establish_session.account_id;
    END IF;
    IF target.id IS NULL THEN
        RAISE EXCEPTION 'account not found' USING ERRCODE = 'P0002';
    END IF;
    IF kind = 'user' THEN
        SELECT m.account_path, m.account_id, m.role INTO home_path, home_id, role
        FROM tenancy.memberships m
        WHERE m.main_id = target.main_id AND m.user_id = s.user_id AND m.account_path @> target.path
        ORDER BY tenancy.nlevel(m.account_path) DESC
        LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account "%" not found', target.public_id USING ERRCODE = 'P0002';
        END IF;
        principal := s.user_id;
        SELECT u.must_change_password INTO must_change FROM tenancy.users u WHERE u.id = s.user_id;
    ELSE
        SELECT * INTO su FROM tenancy.sub_users x
        WHERE x.main_id = s.sub_user_main_id AND x.id = s.sub_user_id;
        IF NOT FOUND OR su.status <> 'active' THEN
            RAISE EXCEPTION 'the sub-user is inactive' USING ERRCODE = '28000';
        END IF;
        IF NOT (target.path <@ su.account_path) THEN
            RAISE EXCEPTION 'account "%" not found', target.public_id USING ERRCODE = 'P0002';
        END IF;
        home_path := su.account_path;
        home_id := su.main_id;
        role := 'sub_user';
        principal := su.id;
        must_change := su.must_change_password;
    END IF;
    IF EXISTS (SELECT 1 FROM tenancy.accounts a
               WHERE a.main_id = target.main_id AND a.path = ANY (tenancy.ancestors(target.path))
                 AND a.status <> 'active') THEN
        RAISE EXCEPTION 'account is inactive' USING ERRCODE = '28000';
    END IF;
    IF NOT s.mfa_verified THEN
        role := 'mfa_pending';
    ELSIF must_change THEN
        role := 'password_change';
    END IF;
    IF role IN ('mfa_pending', 'password_change') THEN
        -- A path no row lies under: every policy sees nothing.
        PERFORM tenancy._issue_context(scope, kind, principal, s.id, target.id, target.main_id,
            target.public_id, tenancy._nowhere_path(), home_id, tenancy._nowhere_path(), role,
            s.expires_at);
    ELSE
        PERFORM tenancy._issue_context(scope, kind, principal, s.id, target.id, target.main_id,
            target.public_id, target.path, home_id, home_path, role, s.expires_at);
    END IF;
    RETURN target.public_id;
END $$;

CREATE OR REPLACE FUNCTION tenancy.act_as(account text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    target tenancy.accounts := tenancy._find_account(account);
    kind text := tenancy._context_field('principal_kind');
    target_main bigint;
    switched_to text;
    switched_from text := tenancy._context_field('account');
BEGIN
    IF switched_from IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    IF kind = 'user' THEN
        IF target.id IS NULL OR NOT EXISTS (
                SELECT 1 FROM tenancy.memberships m
                WHERE m.main_id = target.main_id AND m.user_id = tenancy._context_field('principal_id')::bigint
                  AND m.account_path @> target.path) THEN
            RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002',
                HINT = 'A user can act in the accounts they are a member of and their descendants.';
        END IF;
        target_main := target.main_id;
    ELSE
        IF target.id IS NULL OR NOT (target.path <@ tenancy._home_path()) THEN
            RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002',
                HINT = 'Only the credential''s account and its descendants can be acted in.';
        END IF;
        target_main := tenancy._context_field('main_id')::bigint;
    END IF;
    switched_to := tenancy._establish(kind, target_main,
                                      tenancy._context_field('credential_id')::bigint, target.id, 'refresh');
    PERFORM tenancy._audit_context_switch(target, switched_from);
    RETURN switched_to;
END $$;

CREATE OR REPLACE FUNCTION tenancy.login(email text, password text, account text DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    login_key text := format('user:%s', lower(coalesce(login.email, '')));
    u tenancy.users;
    target tenancy.accounts;
    token text;
BEGIN
    IF login.email IS NULL OR login.password IS NULL THEN
        RETURN tenancy._login_failed();
    END IF;
    -- Every path below costs one lookup, one argon2 computation and the
    -- audit entries, whether the email exists or not.
    SELECT * INTO u FROM tenancy.users x WHERE lower(x.email) = lower(login.email);
    IF NOT tenancy._throttle_enter(login_key) THEN
        PERFORM tenancy.dummy_password_check(login.password);
        PERFORM tenancy._audit_login_failure(u.id, login.email, 'throttled');
        RETURN tenancy._login_failed();
    END IF;
    IF u.id IS NULL OR u.password_hash IS NULL THEN
        PERFORM tenancy.dummy_password_check(login.password);
        PERFORM tenancy._record_failure(login_key);
        PERFORM tenancy._audit_login_failure(u.id, login.email,
                                             CASE WHEN u.id IS NULL THEN 'unknown_email' ELSE 'no_password' END);
        RETURN tenancy._login_failed();
    END IF;
    IF NOT tenancy.verify_password(login.password, u.password_hash) THEN
        PERFORM tenancy._record_failure(login_key);
        PERFORM tenancy._audit_login_failure(u.id, login.email, 'bad_password');
        RETURN tenancy._login_failed();
    END IF;
    PERFORM tenancy._clear_failures(login_key);
    IF tenancy.password_needs_rehash(u.password_hash) THEN
        UPDATE tenancy.users x SET password_hash = tenancy.hash_password(login.password) WHERE x.id = u.id;
    END IF;

    IF account IS NOT NULL THEN
        target := tenancy._find_account(account);
        IF target.id IS NULL OR NOT EXISTS (
                SELECT 1 FROM tenancy.memberships m
                WHERE m.main_id = target.main_id AND m.user_id = u.id AND m.account_path @> target.path) THEN
            RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
        END IF;
        IF NOT tenancy._chain_active(target.path) THEN
            RAISE EXCEPTION 'account "%" is inactive', target.public_id USING ERRCODE = '28000';
        END IF;
    ELSE
        -- The memberships first, then each one's chain: on Citus a join on
        -- (main_id, id) is co-located, and _chain_active() queries a shard, so
        -- it is not called inside another distributed query.
        FOR target IN
            SELECT a.* FROM tenancy.memberships m
            JOIN tenancy.accounts a ON a.main_id = m.main_id AND a.id = m.account_id
            WHERE m.user_id = u.id
            ORDER BY m.created_at, m.main_id, m.account_id
        LOOP
            EXIT WHEN tenancy._chain_active(target.path);
            target := NULL;
        END LOOP;
        IF target.id IS NULL THEN
            RAISE EXCEPTION 'user has no active account' USING ERRCODE = '28000';
        END IF;
    END IF;
    UPDATE tenancy.users x SET last_login_at = now() WHERE x.id = u.id;
    token := tenancy._new_session('user', u.id, NULL, NULL, target.main_id, target.id, NOT u.mfa_enabled);
    PERFORM tenancy._establish('user', target.main_id,
                               split_part(token, '_', 2)::bigint, target.id, 'transaction');
    PERFORM tenancy._audit_record(target.main_id, target.path, 'login.success', lower(u.email),
        jsonb_build_object('login', 'user', 'mfa_pending', u.mfa_enabled),
        'user', u.id::text, split_part(token, '_', 2)::bigint);
    RETURN token;
END $$;

CREATE OR REPLACE FUNCTION tenancy._audit_login_failure_write(kind text, who bigint, login_name text, main_name text,
                                                   reason text, recent integer, extra jsonb)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    d jsonb := jsonb_strip_nulls(jsonb_build_object('login', kind, 'reason', reason,
                                                    'recent_failures', recent)) || coalesce(extra, '{}');
    mains bigint[];
BEGIN
    IF kind = 'user' THEN
        PERFORM tenancy._audit_login_failure_at(
            ARRAY(SELECT DISTINCT ON (m.main_id) m.account_path
                  FROM tenancy.memberships m WHERE m.user_id = who
                  ORDER BY m.main_id, tenancy.nlevel(m.account_path), m.account_id),
            login_name, d, d);
    ELSE
        -- The owned main accounts first: on Citus _owned_main_ids() queries
        -- memberships, which a query on the accounts' shards cannot do.
        mains := tenancy._owned_main_ids(main_name);
        PERFORM tenancy._audit_login_failure_at(
            ARRAY(SELECT a.path FROM tenancy.accounts a
                  WHERE a.main_id = ANY (mains) AND a.id = a.main_id
                  ORDER BY a.main_id),
            login_name, d,
            d || jsonb_build_object('reason', 'unknown_main_account',
                                    'main_account_email', tenancy._audit_login_name(main_name)));
    END IF;
END $$;

-- New in 0.3: a usage record read back under the usage policies' rules.
CREATE FUNCTION tenancy.usage_record(id text) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    found_json jsonb;
BEGIN
    IF usage_record.id IS NULL OR usage_record.id !~ '^usg_[0-9]{1,18}_[0-9]{1,18}$'
       OR tenancy.current_path() IS NULL OR NOT tenancy.may('usage', 'read') THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_build_object('id', usage_record.id, 'account', a.public_id, 'kind', u.kind,
                              'quantity', u.quantity::text, 'at', u.at, 'ref', u.ref)
    INTO found_json
    FROM tenancy.usage_records u JOIN tenancy.accounts a ON a.main_id = u.main_id AND a.path = u.account_path
    WHERE u.main_id = split_part(usage_record.id, '_', 2)::bigint
      AND u.id = split_part(usage_record.id, '_', 3)::bigint
      AND u.account_path OPERATOR(tenancy.<@) tenancy.current_path();
    RETURN found_json;
END $$;
