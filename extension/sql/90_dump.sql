-- Backup and restore: every tenancy table and sequence is extension
-- configuration, so pg_dump dumps its rows (secrets included: a dump is a
-- superuser's file) and its sequences' positions. README, "Backup and restore".
--
-- Restores run with session_replication_role = replica (PGOPTIONS; only a
-- superuser may set it): pg_restore loads the rows with COPY after CREATE
-- EXTENSION has made the tables with their triggers, and the audit row
-- triggers would otherwise record every restored row as a new insert by the
-- DBA. In replica mode those triggers and the foreign key checks stay quiet
-- (the rows come from a consistent snapshot; pg_dump orders the tables by
-- their foreign keys anyway).
--
-- Keep this file last: a table or sequence added after it is not registered,
-- and tests/suites/18_dump_restore.sh fails until it is.

-- CREATE EXTENSION inserts some rows itself (product roles and permissions,
-- plans, usage kinds, the tables the script itself protect()s (voice, usage),
-- the context signing key, the audit chain key, the sealer's singleton row);
-- the dump holds them too, possibly changed since: a DBA's plan limits, the
-- audit key that MACs the restored chain heads, the sealer's snapshot that
-- says which restored entries are chained, the context key that wraps the
-- transcript data keys (53_transcript_protection.sql; contexts themselves live
-- for a transaction or a backend). During a restore (replica mode) the dumped row replaces
-- the one CREATE EXTENSION made. Outside one, a duplicate stays an error, and for the
-- keys and the sealer a restore not in replica mode is refused with a hint:
-- nothing but CREATE EXTENSION inserts those.
CREATE FUNCTION tenancy._restore_replace_installed() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    same_key text;
    clash boolean;
BEGIN
    SELECT string_agg(format('t.%1$I = ($1).%1$I', a.attname), ' AND ') INTO same_key
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
    WHERE i.indrelid = TG_RELID AND i.indisprimary;
    IF current_setting('session_replication_role') = 'replica' THEN
        EXECUTE format('DELETE FROM %s t WHERE %s', TG_RELID::regclass, same_key) USING NEW;
        RETURN NEW;
    END IF;
    IF TG_TABLE_NAME IN ('context_keys', 'audit_keys', 'audit_sealer') THEN
        EXECUTE format('SELECT EXISTS (SELECT FROM %s t WHERE %s)', TG_RELID::regclass, same_key)
            INTO clash USING NEW;
        IF clash THEN
            RAISE EXCEPTION 'restoring % needs session_replication_role = replica', TG_RELID::regclass
                USING ERRCODE = '55000',
                      HINT = 'Restore a tenancy database into a new database with '
                             'PGOPTIONS=''-c session_replication_role=replica'' (README, "Backup and restore").';
        END IF;
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION tenancy._restore_replace_installed() FROM PUBLIC;

DO $installed$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['roles', 'role_permissions', 'plans', 'context_keys', 'audit_keys', 'audit_sealer',
                             'usage_kinds', 'protected_tables', 'transcript_tables']
    LOOP
        EXECUTE format('CREATE TRIGGER restore_replace_installed BEFORE INSERT ON tenancy.%I '
                       'FOR EACH ROW EXECUTE FUNCTION tenancy._restore_replace_installed()', t);
        -- Fires in replica mode too (that is when it has work to do).
        EXECUTE format('ALTER TABLE tenancy.%I ENABLE ALWAYS TRIGGER restore_replace_installed', t);
    END LOOP;
END
$installed$;

-- A sealer serving the database (tenancy.audit_databases) must not run a round
-- in the middle of a restore: with the chain heads and the log restored but
-- not yet the sealer's snapshot, it would take every restored entry for new
-- and chain it a second time. Heads exist only after a round that recorded
-- its snapshot, so heads without one mean a restore under way: the round is
-- refused (the worker retries later). Once per round, and not in replica
-- mode (the restore's own COPY into audit_chain).
CREATE FUNCTION tenancy._audit_chain_restoring() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT FROM tenancy.audit_heads)
       AND NOT EXISTS (SELECT FROM tenancy.audit_sealer s WHERE s.snap IS NOT NULL) THEN
        RAISE EXCEPTION 'audit sealing waits: a restore of this database is under way (chain heads restored, sealer state not yet)'
            USING ERRCODE = '55000';
    END IF;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_chain_restoring() FROM PUBLIC;
CREATE TRIGGER restoring BEFORE INSERT ON tenancy.audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._audit_chain_restoring();

-- Every table and sequence of the extension, all rows. Listed by name (not
-- found in the catalog) so that each one is a decision. One call per statement:
-- each call updates the pg_extension row.
DO $registered$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY[
        -- 20_roles, 21_context, 22_accounts
        'roles', 'role_permissions', 'context_keys', 'plans', 'accounts', 'account_forwarding', 'users',
        'memberships',
        -- 23_api_keys, 25_protect
        'api_keys', 'api_key_secrets', 'api_key_usage', 'protected_tables',
        -- 300_identity_tables
        'mfa_recovery_codes', 'sub_users', 'sessions', 'outbox', 'invitations', 'login_failures',
        -- 32_gateway_support, 37_outbox_delivery
        'idempotency_keys', 'outbox_failures',
        -- 400_audit_log
        'audit_log', 'audit_chain', 'audit_heads', 'audit_sealer', 'audit_keys',
        -- 50_voice
        'agents', 'knowledge_bases', 'knowledge_documents', 'flows', 'channels', 'campaigns', 'integrations',
        'contacts', 'conversations', 'support_availability',
        -- 53_transcript_protection
        'phi_redaction_jobs', 'transcript_tables', 'transcript_keys',
        -- 54_usage (totals too: a restore in replica mode fires no fold trigger)
        'usage_kinds', 'usage_records', 'usage_totals',
        -- sequences (identity columns' too: ids continue past the restored ones)
        'account_id_seq', 'api_key_id_seq', 'sub_user_id_seq', 'invitation_id_seq', 'audit_seq',
        'users_id_seq', 'sessions_id_seq', 'outbox_id_seq', 'voice_id_seq', 'usage_record_id_seq',
        'phi_redaction_jobs_id_seq', 'transcript_keys_id_seq']
    LOOP
        PERFORM pg_catalog.pg_extension_config_dump(format('tenancy.%I', r)::regclass, '');
    END LOOP;
END
$registered$;
