-- The audit row trigger on tables: _audit_attach(), and the tables installed before it.

-- Installs the audit trigger on a table whose rows carry their account in
-- `path_column` (and main_id). Called by protect().
CREATE FUNCTION tenancy._audit_attach(tbl regclass, path_column text DEFAULT 'account_path') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = tbl AND t.tgname = 'tenancy_audit') THEN
        EXECUTE format('DROP TRIGGER tenancy_audit ON %s', tbl);
    END IF;
    EXECUTE format('CREATE TRIGGER tenancy_audit AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION tenancy._audit_trigger(%L)', tbl, path_column);
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_attach(regclass, text) FROM PUBLIC;

SELECT tenancy._audit_attach('tenancy.accounts', 'path');
SELECT tenancy._audit_attach('tenancy.memberships');
SELECT tenancy._audit_attach('tenancy.api_keys');
-- Provisioning within an account: sub-users (created, activated, edited,
-- deactivated, deleted; password hashes only named under "redacted", last
-- login bookkeeping not recorded) and invitations (sent, accepted, revoked;
-- the token hash only named).
SELECT tenancy._audit_attach('tenancy.sub_users');
SELECT tenancy._audit_attach('tenancy.invitations');
SELECT tenancy._audit_attach(p.tbl) FROM tenancy.protected_tables p;

