-- Security settings per account (PHI protection, call recording, transcript
-- encryption, audit log); what enforces them on transcripts is 53_transcript_protection.sql.
--
-- Stored in accounts.settings under "security": {"phi_protection": bool,
-- "call_recording": bool, "transcript_encryption": bool, "audit_log": bool};
-- a key absent means "inherit". Rules, checked by a trigger on accounts so
-- that a plain UPDATE of settings cannot go around them:
--   * only an owner switches them (a DBA outside a context too), and only
--     where the main account's plan includes the feature (plans' flags);
--   * tighten-only: a descendant may switch a protection on, never off below
--     what an ancestor enforces. For phi_protection, transcript_encryption and
--     audit_log "tight" is on; for call_recording it is off (an ancestor that
--     keeps no recordings forbids them below).
--   * effective value at an account: the protections are on where any
--     ancestor-or-self turned them on (audit_log: on by default where the plan
--     includes it, until the main account turns it off); recording is on only
--     where the main account turned it on and nobody on the way down turned it
--     off; every feature is off where the plan lacks it.

-- Transcript encryption is a plan feature like the others (enterprise only).
ALTER TABLE tenancy.plans ADD COLUMN transcript_encryption boolean NOT NULL DEFAULT false;
UPDATE tenancy.plans SET transcript_encryption = true WHERE name = 'enterprise';

-- effective_security(account_id) finds an account by its id alone.
CREATE INDEX accounts_id ON tenancy.accounts (id);

-- The four names, in the order they are reported.
CREATE FUNCTION tenancy._security_names() RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ARRAY['phi_protection', 'call_recording', 'transcript_encryption', 'audit_log'] $$;

-- The effective settings at path p (no visibility check: internal). Reads the
-- main account's plan and the "security" objects of p's ancestors-or-self.
CREATE FUNCTION tenancy._effective_security(p tenancy.account_path) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    result jsonb;
    -- The main account as a value: Citus routes by it to one shard (the
    -- triggers run this on the shard, where only co-located shards are read).
    mid bigint := tenancy.root_id(p);
BEGIN
    -- (PL/pgSQL, not SQL: its plan is cached for the session; the triggers call it per row)
    SELECT jsonb_build_object(
        'phi_protection', pl.phi_protection AND coalesce(bool_or(x.phi), false),
        'call_recording', pl.call_recording AND coalesce(bool_or(x.rec) FILTER (WHERE x.lvl = 1), false)
                          AND NOT coalesce(bool_or(NOT x.rec), false),
        'transcript_encryption', pl.transcript_encryption AND coalesce(bool_or(x.enc), false),
        'audit_log', pl.audit_log AND (coalesce(bool_or(x.aud) FILTER (WHERE x.lvl = 1), true)
                                       OR coalesce(bool_or(x.aud) FILTER (WHERE x.lvl > 1), false)))
    FROM tenancy.accounts m
    JOIN tenancy.plans pl ON pl.name = m.plan
    LEFT JOIN LATERAL (
        SELECT tenancy.nlevel(a.path) AS lvl,
               (a.settings #>> '{security,phi_protection}')::boolean AS phi,
               (a.settings #>> '{security,call_recording}')::boolean AS rec,
               (a.settings #>> '{security,transcript_encryption}')::boolean AS enc,
               (a.settings #>> '{security,audit_log}')::boolean AS aud
        FROM tenancy.accounts a
        WHERE a.main_id = mid AND a.id = ANY (tenancy.labels(p))) x ON true
    WHERE m.main_id = mid AND m.id = mid
    GROUP BY pl.phi_protection, pl.call_recording, pl.transcript_encryption, pl.audit_log
    INTO result;
    RETURN result;
END $$;
REVOKE ALL ON FUNCTION tenancy._security_names(), tenancy._effective_security(tenancy.account_path) FROM PUBLIC;

-- Is the caller a DBA (superuser, or a member of tenancy_admin) outside a context?
CREATE FUNCTION tenancy._is_dba_outside_context() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT tenancy._context_field('account') IS NULL
           AND (pg_has_role(session_user, 'tenancy_admin', 'MEMBER')
                OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user))
$$;
REVOKE ALL ON FUNCTION tenancy._is_dba_outside_context() FROM PUBLIC;

-- The effective settings at a row's path, for the transcript triggers: NULL
-- unless the caller may write there (a path in the active subtree, or a DBA
-- outside a context), so calling it directly tells nothing about other
-- tenants. A row outside the caller's subtree is refused by RLS anyway.
CREATE FUNCTION tenancy._security_at(p tenancy.account_path) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF (tenancy.current_path() IS NOT NULL AND p OPERATOR(tenancy.<@) tenancy.current_path())
       OR tenancy._is_dba_outside_context() THEN
        RETURN tenancy._effective_security(p);
    END IF;
    RETURN NULL;
END $$;
-- Executable by every role: the triggers run as the writer, and as the
-- table's owner when a foreign key cascades an account move into the rows.
GRANT EXECUTE ON FUNCTION tenancy._security_at(tenancy.account_path) TO PUBLIC;

-- effective_security(account_id): the four effective booleans of an account of
-- the active subtree (or any account, for a DBA outside a context). An
-- account outside the subtree is "not found", like one that does not exist.
CREATE FUNCTION tenancy.effective_security(account_id bigint) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    p tenancy.account_path;
    main bigint := tenancy.current_main_id();
BEGIN
    IF tenancy._context_field('account') IS NULL AND NOT tenancy._is_dba_outside_context() THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    -- In a context only its main account can hold it: naming that (a value,
    -- not a function call) keeps the lookup on one shard on Citus.
    IF tenancy._context_field('account') IS NOT NULL THEN
        SELECT a.path INTO p FROM tenancy.accounts a
        WHERE a.main_id = main AND a.id = effective_security.account_id;
    ELSE
        SELECT a.path INTO p FROM tenancy.accounts a WHERE a.id = effective_security.account_id;
    END IF;
    IF p IS NULL OR (tenancy._context_field('account') IS NOT NULL
                     AND NOT (p OPERATOR(tenancy.<@) tenancy.current_path())) THEN
        RAISE EXCEPTION 'account % not found', account_id USING ERRCODE = 'P0002';
    END IF;
    RETURN tenancy._effective_security(p);
END $$;

-- ---- switching ------------------------------------------------------------------

-- BEFORE UPDATE OF settings ON accounts: every change of settings->'security'
-- obeys the rules above, whoever makes it (set_security_setting, or a plain
-- UPDATE by an owner's SQL client). Turning PHI protection on queues the
-- re-redaction of the transcripts already stored in the subtree.
CREATE FUNCTION tenancy._security_settings_check() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    old_s jsonb := coalesce(OLD.settings -> 'security', '{}');
    new_s jsonb := NEW.settings -> 'security';
    plan tenancy.plans;
    parent_eff jsonb;
    setting text;
    v jsonb;
BEGIN
    IF new_s IS NOT DISTINCT FROM OLD.settings -> 'security' THEN
        RETURN NEW;
    END IF;
    IF new_s IS NOT NULL AND jsonb_typeof(new_s) <> 'object' THEN
        RAISE EXCEPTION 'settings.security must be a JSON object' USING ERRCODE = '22023';
    END IF;
    new_s := coalesce(new_s, '{}');
    SELECT k INTO setting FROM jsonb_object_keys(new_s) k WHERE k <> ALL (tenancy._security_names()) LIMIT 1;
    IF setting IS NOT NULL THEN
        RAISE EXCEPTION 'unknown security setting "%"', setting USING ERRCODE = '22023',
            HINT = 'Security settings: ' || array_to_string(tenancy._security_names(), ', ') || '.';
    END IF;
    IF tenancy._context_field('account') IS NOT NULL THEN
        PERFORM tenancy._refuse_restricted();
        IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
            RAISE EXCEPTION 'only an owner may change security settings' USING ERRCODE = '42501';
        END IF;
    ELSIF NOT tenancy._is_dba_outside_context() THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    SELECT pl.* INTO plan FROM tenancy.accounts m JOIN tenancy.plans pl ON pl.name = m.plan
    WHERE m.main_id = OLD.main_id AND m.id = OLD.main_id;  -- (NEW's generated columns are not computed yet)
    IF OLD.parent_id IS NOT NULL THEN
        parent_eff := tenancy._effective_security(tenancy.parent(OLD.path));
    END IF;
    FOREACH setting IN ARRAY tenancy._security_names() LOOP
        v := new_s -> setting;
        CONTINUE WHEN v IS NOT DISTINCT FROM old_s -> setting;
        IF v IS NOT NULL AND jsonb_typeof(v) NOT IN ('boolean', 'null') THEN
            RAISE EXCEPTION 'security setting "%" must be true, false or null (inherit)', setting
                USING ERRCODE = '22023';
        END IF;
        IF NOT coalesce((to_jsonb(plan) ->> setting)::boolean, false) THEN
            RAISE EXCEPTION 'plan "%" does not include %', plan.name, replace(setting, '_', ' ')
                USING ERRCODE = '53400',  -- the plan refuses it, as for its limits
                      HINT = 'A plan with this feature (for instance enterprise) lets the owner switch it.';
        END IF;
        IF parent_eff IS NOT NULL AND jsonb_typeof(v) = 'boolean' THEN
            IF setting = 'call_recording' AND v = 'true' AND NOT (parent_eff ->> setting)::boolean THEN
                RAISE EXCEPTION 'call recording is off above this account: a descendant may not turn it on'
                    USING ERRCODE = '55000';
            ELSIF setting <> 'call_recording' AND v = 'false' AND (parent_eff ->> setting)::boolean THEN
                RAISE EXCEPTION '% is enforced by an ancestor account: a descendant may not turn it off',
                    replace(setting, '_', ' ') USING ERRCODE = '55000';
            END IF;
        END IF;
    END LOOP;
    -- Drop JSON nulls: absent means inherit.
    NEW.settings := jsonb_set(coalesce(NEW.settings, '{}'), '{security}', jsonb_strip_nulls(new_s));
    -- The main account's data key exists before the first sealed row: a
    -- statement that inserts a row and reads it back (INSERT ... RETURNING in a
    -- CTE) does not see a key made by its own insert.
    IF (new_s ->> 'transcript_encryption')::boolean THEN
        PERFORM tenancy._transcript_key_id(OLD.main_id);
    END IF;
    IF (new_s ->> 'phi_protection')::boolean
       AND NOT (tenancy._effective_security(OLD.path) ->> 'phi_protection')::boolean THEN
        PERFORM tenancy._queue_redaction(OLD.path);
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION tenancy._security_settings_check() FROM PUBLIC;
CREATE TRIGGER security_settings BEFORE UPDATE OF settings ON tenancy.accounts
    FOR EACH ROW EXECUTE FUNCTION tenancy._security_settings_check();

-- A subtree moved (or promoted) under PHI protection it did not have: its
-- stored transcripts are re-redacted too. Fires per moved account; the queue
-- skips accounts whose ancestor already has a pending job.
CREATE FUNCTION tenancy._security_on_move() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF (tenancy._effective_security(NEW.path) ->> 'phi_protection')::boolean
       AND NOT coalesce((tenancy._effective_security(OLD.path) ->> 'phi_protection')::boolean, false) THEN
        PERFORM tenancy._queue_redaction(NEW.path);
    END IF;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION tenancy._security_on_move() FROM PUBLIC;
CREATE TRIGGER security_on_move AFTER UPDATE OF path ON tenancy.accounts
    FOR EACH ROW WHEN (OLD.path IS DISTINCT FROM NEW.path) EXECUTE FUNCTION tenancy._security_on_move();

-- set_security_setting(account, name, enabled): switch one setting of an
-- account of the active subtree (owner only). NULL `enabled` is refused; to
-- inherit again, remove the key with an UPDATE of settings. Audited as an
-- update of the account (its settings, old and new) by the row audit trigger.
CREATE FUNCTION tenancy.set_security_setting(account text, name text, enabled boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    a := tenancy._visible_account(account);
    IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
        RAISE EXCEPTION 'only an owner may change security settings' USING ERRCODE = '42501';
    END IF;
    IF set_security_setting.name IS NULL OR set_security_setting.name <> ALL (tenancy._security_names()) THEN
        RAISE EXCEPTION 'unknown security setting "%"', set_security_setting.name USING ERRCODE = '22023',
            HINT = 'Security settings: ' || array_to_string(tenancy._security_names(), ', ') || '.';
    END IF;
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must be true or false' USING ERRCODE = '22004';
    END IF;
    UPDATE tenancy.accounts x
    SET settings = jsonb_set(coalesce(x.settings, '{}'), '{security}',
                             coalesce(x.settings -> 'security', '{}') || jsonb_build_object(set_security_setting.name, enabled)),
        updated_at = now()
    WHERE x.main_id = a.main_id AND x.id = a.id;
    RETURN tenancy._effective_security(a.path);
END $$;

-- security_settings(account): {account, effective: {...}, own: {...}} of an
-- account of the active subtree; "own" holds what the account itself set
-- (absent: inherited). Any role that reads the account may read them.
CREATE FUNCTION tenancy.security_settings(account text) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    a := tenancy._visible_account(account);
    RETURN jsonb_build_object('account', a.public_id, 'effective', tenancy._effective_security(a.path),
                              'own', coalesce(a.settings -> 'security', '{}'));
END $$;

-- set_security_settings(account, changes): several switches at once (an
-- object of booleans; JSON null = inherit again), in one update, by the same
-- rules; answers security_settings(account). Owner only.
CREATE FUNCTION tenancy.set_security_settings(account text, changes jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    a := tenancy._visible_account(account);
    IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
        RAISE EXCEPTION 'only an owner may change security settings' USING ERRCODE = '42501';
    END IF;
    IF changes IS NULL OR jsonb_typeof(changes) <> 'object' THEN
        RAISE EXCEPTION 'changes must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF changes <> '{}' THEN
        -- The trigger checks names, values, plan and ancestors.
        UPDATE tenancy.accounts x
        SET settings = jsonb_set(coalesce(x.settings, '{}'), '{security}',
                                 coalesce(x.settings -> 'security', '{}') || changes),
            updated_at = now()
        WHERE x.main_id = a.main_id AND x.id = a.id;
    END IF;
    RETURN tenancy.security_settings(account);
END $$;
