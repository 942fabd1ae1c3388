-- Key rotation: the server key that signs contexts (DBA), API keys with a
-- grace period (applications), and an account's maximum API key lifetime.
-- Operator's guide: docs/operations/key-rotation.md.

-- ---- the context-signing key ----------------------------------------------------

-- Makes every backend reload tenancy.context_keys (context.cpp): a relcache
-- invalidation of the table, sent at commit. Internal.
CREATE FUNCTION tenancy._context_keys_changed() RETURNS void
    AS 'MODULE_PATHNAME', 'tenancy_context_keys_changed' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION tenancy._context_keys_changed() FROM PUBLIC;

-- rotate_context_key(grace): a new key signs every context from now on; the
-- keys signing until now retire after `grace` (at the latest), and then
-- verify nothing. A context token is bound to the transaction it was issued
-- in, and an API key's lasts at most 12 hours, so the default grace outlives
-- every token signed before the rotation; a session-scoped context gets a
-- token from the new key at its next transaction. grace => '0' retires the
-- old keys at once (a key that may have leaked): contexts they signed, even
-- in transactions under way, are no context from their next statement on.
-- Retired keys are deleted at the next rotation, except key 1, the root of
-- the derived keys (32_gateway_support.sql), whose row stays, marked. The
-- rotation is recorded in the installation's audit chain (main_id 0), without
-- key material. Returns the new key's id.
CREATE FUNCTION tenancy.rotate_context_key(grace interval DEFAULT interval '12 hours') RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    retire timestamptz := now() + grace;
    retiring integer[];
    new_id integer;
BEGIN
    IF grace IS NULL OR grace < interval '0' OR grace > interval '7 days' THEN
        RAISE EXCEPTION 'grace must be between 0 and 7 days' USING ERRCODE = '22023';
    END IF;
    -- One rotation at a time; the extension's key reads (ACCESS SHARE) never wait.
    LOCK TABLE tenancy.context_keys IN EXCLUSIVE MODE;
    DELETE FROM tenancy.context_keys c WHERE c.retire_at <= now() AND c.id <> 1;
    WITH r AS (
        UPDATE tenancy.context_keys c SET retire_at = least(coalesce(c.retire_at, 'infinity'), retire)
        WHERE c.retire_at IS NULL OR c.retire_at > now()
        RETURNING c.id)
    SELECT array_agg(r.id ORDER BY r.id) INTO retiring FROM r;
    -- The extension keeps at most 16 live keys (context.cpp).
    IF (SELECT count(*) FROM tenancy.context_keys c WHERE c.retire_at > now()) >= 8 THEN
        RAISE EXCEPTION 'too many context keys are still in their grace period' USING ERRCODE = '53400',
            HINT = 'Wait until one retires, or rotate with a shorter grace.';
    END IF;
    SELECT coalesce(max(c.id), 0) + 1 INTO new_id FROM tenancy.context_keys c;
    IF new_id > 32767 THEN
        RAISE EXCEPTION 'context key ids are exhausted' USING ERRCODE = '53400';
    END IF;
    INSERT INTO tenancy.context_keys (id, secret) VALUES (new_id, tenancy._random_bytes(32));
    PERFORM tenancy._context_keys_changed();
    PERFORM tenancy._audit_record(0, NULL, 'context_key.rotate', 'context_key:' || new_id,
        jsonb_build_object('key_id', new_id, 'retiring', coalesce(to_jsonb(retiring), '[]'),
                           'retire_at', retire, 'grace', grace::text));
    RETURN new_id;
END $$;
REVOKE ALL ON FUNCTION tenancy.rotate_context_key(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.rotate_context_key(interval) TO tenancy_admin;

-- ---- API keys -------------------------------------------------------------------

-- rotate_api_key(key_id, grace): a new key with the old one's account, name
-- and role (and, if the old one had an expiry, the same lifetime from now);
-- the old key keeps authenticating until now() + grace (its expires_at,
-- never later than it already was), then is refused. Both stay in the key
-- list: the old one with rotated_at and replaced_by. Who may: whoever may
-- revoke the key (api_keys write, the key in the active subtree). A revoked
-- key, or one already rotated, cannot be rotated (55000): rotate its
-- replacement. Returns the full new key, shown this once.
CREATE FUNCTION tenancy.rotate_api_key(key_id text, grace interval DEFAULT interval '1 day') RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    parts text[] := tenancy._id_parts(key_id, 'key', 2, 0);
    k tenancy.api_keys;
    a tenancy.accounts;
    new_key text;
    new_expiry timestamptz;
BEGIN
    PERFORM tenancy._require('api_keys', 'write');
    IF grace IS NULL OR grace < interval '0' OR grace > interval '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 and 30 days' USING ERRCODE = '22023';
    END IF;
    IF parts IS NOT NULL THEN
        SELECT * INTO k FROM tenancy.api_keys x
        WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint
          AND x.account_path <@ tenancy.current_path()
        FOR UPDATE;
    END IF;
    IF k.id IS NULL THEN
        RAISE EXCEPTION 'API key "%" not found', key_id USING ERRCODE = 'P0002';
    END IF;
    IF k.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'API key "%" has been revoked', key_id USING ERRCODE = '55000';
    END IF;
    IF k.rotated_at IS NOT NULL THEN
        RAISE EXCEPTION 'API key "%" has already been rotated', key_id USING ERRCODE = '55000',
            HINT = format('Rotate its replacement, key_%s_%s.', k.main_id, k.replaced_by);
    END IF;
    SELECT * INTO a FROM tenancy.accounts x WHERE x.main_id = k.main_id AND x.id = k.account_id;
    IF k.expires_at IS NOT NULL THEN
        new_expiry := now() + (k.expires_at - k.created_at);
    END IF;
    -- Marked first: a key in its grace period does not count against the
    -- plan's limit (_make_api_key), so a full account can still rotate.
    UPDATE tenancy.api_keys x
    SET rotated_at = now(), expires_at = least(coalesce(x.expires_at, 'infinity'), now() + grace)
    WHERE x.main_id = k.main_id AND x.id = k.id;
    new_key := tenancy._make_api_key(a, k.name, k.role, new_expiry);
    UPDATE tenancy.api_keys x SET replaced_by = (tenancy._id_parts(new_key, 'tnc', 2, 43))[2]::bigint
    WHERE x.main_id = k.main_id AND x.id = k.id;
    RETURN new_key;
END $$;

-- rotate_api_key_json(key_id, grace): rotate_api_key answered as the gateway
-- returns it: the new key (in full, this once) and the old one's end of grace.
CREATE FUNCTION tenancy.rotate_api_key_json(key_id text, grace interval DEFAULT interval '1 day')
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    full_key text := tenancy.rotate_api_key(key_id, grace);
    parts text[] := tenancy._id_parts(full_key, 'tnc', 2, 43);
    k tenancy.api_keys;
    old tenancy.api_keys;
BEGIN
    SELECT * INTO STRICT k FROM tenancy.api_keys x
    WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint;
    SELECT * INTO STRICT old FROM tenancy.api_keys x
    WHERE x.main_id = k.main_id AND x.replaced_by = k.id;
    RETURN jsonb_build_object('id', k.public_id, 'key', full_key, 'prefix', k.prefix, 'name', k.name,
                              'role', k.role, 'expires_at', k.expires_at, 'created_at', k.created_at,
                              'replaces', jsonb_build_object('id', old.public_id, 'expires_at', old.expires_at));
END $$;

-- ---- maximum key lifetime ---------------------------------------------------------

-- settings.api_keys.max_lifetime_days (a whole number, 1 to 3650): keys of the
-- account and its descendants older than that are refused at authentication
-- (24_authenticate.sql), and their contexts end by then. Set by an owner
-- through update_account (PATCH /v1/accounts/{id}, settings) or by a DBA.
-- Inherited and tighten-only: the strictest value on an account's ancestor
-- line applies, and a descendant may not set a longer one than its ancestors.
CREATE FUNCTION tenancy._api_key_settings_check() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    new_s jsonb := NEW.settings -> 'api_keys';
    v jsonb;
    other text;
    above float8;
BEGIN
    IF new_s IS NOT DISTINCT FROM OLD.settings -> 'api_keys' THEN
        RETURN NEW;
    END IF;
    IF new_s IS NOT NULL AND jsonb_typeof(new_s) <> 'object' THEN
        RAISE EXCEPTION 'settings.api_keys must be a JSON object' USING ERRCODE = '22023';
    END IF;
    SELECT k INTO other FROM jsonb_object_keys(coalesce(new_s, '{}')) k WHERE k <> 'max_lifetime_days' LIMIT 1;
    IF other IS NOT NULL THEN
        RAISE EXCEPTION 'unknown API key setting "%"', other USING ERRCODE = '22023',
            HINT = 'API key settings: max_lifetime_days.';
    END IF;
    v := new_s -> 'max_lifetime_days';
    IF jsonb_typeof(v) = 'null' THEN
        v := NULL;
    END IF;
    IF v IS NOT NULL AND (jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]{1,4}$'
                          OR v::text::integer NOT BETWEEN 1 AND 3650) THEN
        RAISE EXCEPTION 'settings.api_keys.max_lifetime_days must be a whole number of days from 1 to 3650'
            USING ERRCODE = '22023';
    END IF;
    IF tenancy._context_field('account') IS NOT NULL THEN
        PERFORM tenancy._refuse_restricted();
        IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
            RAISE EXCEPTION 'only an owner may change the API key settings' USING ERRCODE = '42501';
        END IF;
    ELSIF NOT tenancy._is_dba_outside_context() THEN
        RAISE EXCEPTION 'only an owner may change the API key settings' USING ERRCODE = '42501';
    END IF;
    IF v IS NOT NULL THEN
        SELECT min((a.settings #>> '{api_keys,max_lifetime_days}')::float8) INTO above
        FROM tenancy.accounts a
        WHERE a.main_id = OLD.main_id AND a.path = ANY (tenancy.ancestors(NEW.path)) AND a.path <> NEW.path
          AND jsonb_typeof(a.settings #> '{api_keys,max_lifetime_days}') = 'number';
        IF above IS NOT NULL AND v::text::integer > above THEN
            RAISE EXCEPTION 'max_lifetime_days may not exceed the % days an ancestor account sets', above
                USING ERRCODE = '22023';
        END IF;
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION tenancy._api_key_settings_check() FROM PUBLIC;
CREATE TRIGGER api_key_settings_check BEFORE UPDATE OF settings ON tenancy.accounts
    FOR EACH ROW EXECUTE FUNCTION tenancy._api_key_settings_check();
