-- Identity, part 7: marking outbox mail for a mailer of one's own (the
-- gateway's mailer uses 37_outbox_delivery.sql) and the DBA's purge.

-- ---- outbox helpers for the mailer ----------------------------------------------------------

-- Mark a message delivered (blanks its body) or record a failed attempt.
CREATE FUNCTION tenancy.outbox_mark(id bigint, error text DEFAULT NULL) RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    UPDATE tenancy.outbox o
    SET sent_at = CASE WHEN error IS NULL THEN now() END,
        attempts = o.attempts + 1,
        last_error = error
    WHERE o.id = outbox_mark.id AND o.sent_at IS NULL
$$;

-- ---- housekeeping (DBA) ------------------------------------------------------------------

-- Deletes sessions that ended more than `keep` ago, old login failures,
-- spent or expired invitations and Idempotency-Keys older than 24 hours;
-- returns how many rows went.
CREATE FUNCTION tenancy.purge_identity(keep interval DEFAULT '1 day') RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    DELETE FROM tenancy.sessions s
    WHERE coalesce(s.revoked_at, s.expires_at) < now() - keep
       OR s.expires_at < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM tenancy.login_failures f WHERE f.failed_at < now() - greatest(keep, interval '15 minutes');
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM tenancy.invitations i
    WHERE coalesce(i.accepted_at, i.expires_at) < now() - keep OR i.expires_at < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    -- The gateway's Idempotency-Keys live 24 hours whatever `keep` says
    -- (32_gateway_support.sql).
    RETURN total + tenancy.purge_idempotency();
END $$;
REVOKE ALL ON FUNCTION tenancy.purge_identity(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.purge_identity(interval) TO tenancy_admin;

REVOKE ALL ON FUNCTION tenancy.outbox_mark(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.outbox_mark(bigint, text) TO tenancy_mailer, tenancy_admin;
