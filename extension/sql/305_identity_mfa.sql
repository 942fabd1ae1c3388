-- Identity, part 6: MFA for users: enroll_mfa, confirm_mfa (recovery codes)
-- and verify_mfa (the second factor of a session).

-- ---- MFA (users) ------------------------------------------------------------------------------

-- enroll_mfa(): a new TOTP secret as an otpauth:// URI; MFA is on once
-- confirm_mfa() accepts a code from it.
CREATE FUNCTION tenancy.enroll_mfa() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
    u tenancy.users;
    secret text := tenancy.new_totp_secret();
BEGIN
    PERFORM tenancy._refuse_restricted();
    IF s.principal_kind <> 'user' OR NOT s.mfa_verified THEN
        RAISE EXCEPTION 'MFA enrolment needs a fully verified user session' USING ERRCODE = '42501';
    END IF;
    SELECT * INTO u FROM tenancy.users x WHERE x.id = s.user_id FOR UPDATE;
    IF u.mfa_enabled THEN
        RAISE EXCEPTION 'MFA is already enabled' USING ERRCODE = '55000';
    END IF;
    UPDATE tenancy.users x SET mfa_secret = secret WHERE x.id = u.id;
    RETURN tenancy.otpauth_uri(secret, u.email, 'Tenancy');
END $$;

-- confirm_mfa(code): turns MFA on; returns ten single-use recovery codes
-- (shown once; stored as SHA-256).
CREATE FUNCTION tenancy.confirm_mfa(code text) RETURNS text[]
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
    u tenancy.users;
    step bigint;
    codes text[];
BEGIN
    PERFORM tenancy._refuse_restricted();
    IF s.principal_kind <> 'user' OR NOT s.mfa_verified THEN
        RAISE EXCEPTION 'MFA enrolment needs a fully verified user session' USING ERRCODE = '42501';
    END IF;
    SELECT * INTO u FROM tenancy.users x WHERE x.id = s.user_id FOR UPDATE;
    IF u.mfa_enabled THEN
        RAISE EXCEPTION 'MFA is already enabled' USING ERRCODE = '55000';
    END IF;
    IF u.mfa_secret IS NULL THEN
        RAISE EXCEPTION 'call tenancy.enroll_mfa() first' USING ERRCODE = '55000';
    END IF;
    step := tenancy.totp_verify(u.mfa_secret, coalesce(code, ''), now(), 1);
    IF step IS NULL THEN
        RAISE EXCEPTION 'invalid MFA code' USING ERRCODE = '28000';
    END IF;
    SELECT array_agg(tenancy.random_token(16)) INTO codes FROM generate_series(1, 10);
    DELETE FROM tenancy.mfa_recovery_codes r WHERE r.user_id = u.id;
    INSERT INTO tenancy.mfa_recovery_codes (user_id, code_hash)
    SELECT u.id, tenancy._secret_hash(c) FROM unnest(codes) AS c;
    UPDATE tenancy.users x SET mfa_enabled = true, mfa_last_step = step WHERE x.id = u.id;
    PERFORM tenancy._audit_session_event(s, 'mfa.enroll', lower(u.email),
                                         jsonb_build_object('recovery_codes', cardinality(codes)));
    RETURN codes;
END $$;

-- verify_mfa(code): the second factor of the current session (a TOTP code,
-- each usable once, or a recovery code). Returns true and upgrades the
-- context; a wrong code returns false (not an error, so the count commits);
-- the fifth wrong code of a session revokes it, and 5 wrong codes within 15
-- minutes for a user refuse every code (right ones too) for a cooling period.
CREATE FUNCTION tenancy.verify_mfa(code text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
    u tenancy.users;
    step bigint;
    used boolean := false;
    mfa_key text;
    throttled boolean;
BEGIN
    IF s.principal_kind <> 'user' THEN
        RAISE EXCEPTION 'this call needs a user session' USING ERRCODE = '42501';
    END IF;
    IF s.mfa_verified THEN
        RETURN true;
    END IF;
    SELECT * INTO u FROM tenancy.users x WHERE x.id = s.user_id FOR UPDATE;
    -- Per user, not per session: new logins must not buy new guesses.
    mfa_key := format('mfa:%s', u.id);
    throttled := NOT tenancy._throttle_enter(mfa_key);
    IF throttled THEN
        NULL;  -- no code is checked during the cooling period
    ELSIF code ~ '^[0-9]{6}$' THEN
        step := tenancy.totp_verify(u.mfa_secret, code, now(), 1);
        IF step IS NOT NULL AND step > coalesce(u.mfa_last_step, -1) THEN
            UPDATE tenancy.users x SET mfa_last_step = step WHERE x.id = u.id;
            used := true;
        END IF;
    ELSIF code IS NOT NULL THEN
        UPDATE tenancy.mfa_recovery_codes r SET used_at = now()
        WHERE r.user_id = u.id AND r.code_hash = tenancy._secret_hash(code) AND r.used_at IS NULL;
        used := FOUND;
    END IF;
    IF NOT used THEN
        IF NOT throttled THEN
            PERFORM tenancy._record_failure(mfa_key);
        END IF;
        UPDATE tenancy.sessions x SET mfa_failures = x.mfa_failures + 1,
            revoked_at = CASE WHEN x.mfa_failures + 1 >= 5 THEN now() END
        WHERE x.id = s.id;
        PERFORM tenancy._audit_session_event(s, 'mfa.failure', lower(u.email),
            jsonb_build_object('reason', CASE WHEN throttled THEN 'throttled' ELSE 'invalid_code' END,
                               'session_revoked', s.mfa_failures + 1 >= 5));
        RAISE WARNING 'invalid MFA code or too many attempts' USING ERRCODE = '28000';
        RETURN false;
    END IF;
    PERFORM tenancy._clear_failures(mfa_key);
    PERFORM tenancy._audit_session_event(s, 'mfa.success', lower(u.email),
        jsonb_build_object('method', CASE WHEN code ~ '^[0-9]{6}$' THEN 'totp' ELSE 'recovery_code' END));
    UPDATE tenancy.sessions x SET mfa_verified = true WHERE x.id = s.id;
    PERFORM tenancy._refresh_context();
    RETURN true;
END $$;
