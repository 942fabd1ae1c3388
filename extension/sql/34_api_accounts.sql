-- Accounts for the API (issue 18): one account as a JSON document, and
-- update_account(), the only way to change an account's name, branding and settings.
--
-- update_account applies `branding` and `settings` as JSON merge patches
-- (RFC 7396): members of the patch replace the stored ones, objects merge
-- recursively, a JSON null removes a key; SQL NULL leaves the field as it is,
-- a JSON null as the whole patch removes every override (the field is then
-- inherited again). An empty result is stored as NULL. Rules, all here:
--  * settings write (owner, admin), the account in the active subtree;
--  * name 1 to 200 characters (trimmed), no control characters;
--  * branding: only the keys name (1..200 chars), logo_url (http(s) URL up to
--    2048 bytes) and colours (an object of primary, secondary, accent,
--    background, text: "#rgb" or "#rrggbb"), 4 kB of JSON at most;
--  * settings: any object, 16 kB of JSON at most, patches nested 32 deep at most;
--  * the row is locked while it is read, merged and written (no lost update).
-- The accounts table's audit trigger records the change (old and new values
-- of the changed columns). Clients have no UPDATE grant on tenancy.accounts.

-- The account as the API shows it. `parent` is the parent's public id when
-- the caller sees the parent (it is in the active subtree), else null:
-- children never learn about their ancestors.
CREATE FUNCTION tenancy._account_json(a tenancy.accounts) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN jsonb_build_object(
        'id', a.public_id,
        'parent', (SELECT p.public_id FROM tenancy.accounts p
                   WHERE p.main_id = a.main_id AND p.id = a.parent_id
                     AND p.path OPERATOR(tenancy.<@) tenancy.current_path()),
        'name', a.name, 'status', a.status, 'plan', a.plan,
        'branding', coalesce(a.branding, '{}'), 'settings', coalesce(a.settings, '{}'),
        'created_at', a.created_at, 'updated_at', a.updated_at);
END $$;

-- get_account(account): the account of the active subtree as a JSON document
-- {id, parent, name, status, plan, branding, settings, created_at,
-- updated_at}; outside the subtree "not found" (P0002) like a missing one.
-- VOLATILE so that it sees a change made earlier in the same statement
-- (`SELECT get_account(x) FROM (SELECT deactivate_account(x) OFFSET 0) d`).
CREATE FUNCTION tenancy.get_account(account text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    RETURN tenancy._account_json(tenancy._visible_account(account));
END $$;

-- RFC 7396 merge patch of target by patch; depth counts nested patch objects.
CREATE FUNCTION tenancy._merge_patch(target jsonb, patch jsonb, field text, depth integer DEFAULT 1)
    RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    IF depth > 32 THEN
        RAISE EXCEPTION '% patch is nested more than 32 objects deep', field USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(target) IS DISTINCT FROM 'object' THEN
        target := '{}';
    END IF;
    FOR k, v IN SELECT e.key, e.value FROM jsonb_each(patch) e LOOP
        IF jsonb_typeof(v) = 'null' THEN
            target := target - k;
        ELSE
            target := jsonb_set(target, ARRAY[k], tenancy._merge_patch(target -> k, v, field, depth + 1));
        END IF;
    END LOOP;
    RETURN target;
END $$;

-- Raise 22023 unless b is a valid branding object.
CREATE FUNCTION tenancy._check_branding(b jsonb) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k text;
    v jsonb;
    ck text;
    cv jsonb;
BEGIN
    FOR k, v IN SELECT e.key, e.value FROM jsonb_each(b) e LOOP
        CASE k
        WHEN 'name' THEN
            IF jsonb_typeof(v) <> 'string' OR length(btrim(v #>> '{}')) = 0 OR length(v #>> '{}') > 200
               OR (v #>> '{}') ~ '[[:cntrl:]]' THEN
                RAISE EXCEPTION 'branding.name must be a string of 1 to 200 characters' USING ERRCODE = '22023';
            END IF;
        WHEN 'logo_url' THEN
            IF jsonb_typeof(v) <> 'string' OR octet_length(v #>> '{}') > 2048
               OR (v #>> '{}') !~ '^https?://[^[:space:][:cntrl:]/?#]+[^[:space:][:cntrl:]]*$' THEN
                RAISE EXCEPTION 'branding.logo_url must be an http(s) URL of at most 2048 bytes'
                    USING ERRCODE = '22023';
            END IF;
        WHEN 'colours' THEN
            IF jsonb_typeof(v) <> 'object' THEN
                RAISE EXCEPTION 'branding.colours must be an object' USING ERRCODE = '22023';
            END IF;
            FOR ck, cv IN SELECT e.key, e.value FROM jsonb_each(v) e LOOP
                IF ck NOT IN ('primary', 'secondary', 'accent', 'background', 'text') THEN
                    RAISE EXCEPTION 'unknown branding colour "%"', left(ck, 64) USING ERRCODE = '22023',
                        HINT = 'Colours: primary, secondary, accent, background, text.';
                END IF;
                IF jsonb_typeof(cv) <> 'string' OR (cv #>> '{}') !~ '^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$' THEN
                    RAISE EXCEPTION 'branding.colours.% must be "#rgb" or "#rrggbb"', ck USING ERRCODE = '22023';
                END IF;
            END LOOP;
        ELSE
            RAISE EXCEPTION 'unknown branding key "%"', left(k, 64) USING ERRCODE = '22023',
                HINT = 'Branding keys: name, logo_url, colours.';
        END CASE;
    END LOOP;
END $$;

-- update_account(account, name, branding, settings): see the top of this
-- file. Returns the account as get_account() shows it.
CREATE FUNCTION tenancy.update_account(account text, name text DEFAULT NULL, branding jsonb DEFAULT NULL,
                                       settings jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    new_name text;
    new_branding jsonb;
    new_settings jsonb;
BEGIN
    PERFORM tenancy._require('settings', 'write');
    a := tenancy._visible_account(account);
    -- Validate the input before taking the lock: a bad request waits for nobody.
    IF name IS NOT NULL THEN
        new_name := tenancy._check_name(name);
        IF new_name ~ '[[:cntrl:]]' THEN
            RAISE EXCEPTION 'account name must not contain control characters' USING ERRCODE = '22023';
        END IF;
    END IF;
    IF branding IS NOT NULL AND jsonb_typeof(branding) NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'branding must be an object (a merge patch) or null' USING ERRCODE = '22023';
    END IF;
    IF settings IS NOT NULL AND jsonb_typeof(settings) NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'settings must be an object (a merge patch) or null' USING ERRCODE = '22023';
    END IF;
    IF octet_length(branding::text) > 4096 THEN
        RAISE EXCEPTION 'branding is larger than 4 kB' USING ERRCODE = '22023';
    END IF;
    IF octet_length(settings::text) > 16384 THEN
        RAISE EXCEPTION 'settings are larger than 16 kB' USING ERRCODE = '22023';
    END IF;

    SELECT * INTO a FROM tenancy.accounts x WHERE x.main_id = a.main_id AND x.id = a.id FOR UPDATE;
    new_branding := a.branding;
    IF branding IS NOT NULL THEN
        new_branding := tenancy._merge_patch(a.branding, branding, 'branding');
        IF new_branding = '{}' OR jsonb_typeof(new_branding) = 'null' THEN
            new_branding := NULL;
        END IF;
        IF new_branding IS NOT NULL THEN
            PERFORM tenancy._check_branding(new_branding);
            IF octet_length(new_branding::text) > 4096 THEN
                RAISE EXCEPTION 'branding would be larger than 4 kB' USING ERRCODE = '22023';
            END IF;
        END IF;
    END IF;
    new_settings := a.settings;
    IF settings IS NOT NULL THEN
        new_settings := tenancy._merge_patch(a.settings, settings, 'settings');
        IF new_settings = '{}' OR jsonb_typeof(new_settings) = 'null' THEN
            new_settings := NULL;
        END IF;
        IF octet_length(new_settings::text) > 16384 THEN
            RAISE EXCEPTION 'settings would be larger than 16 kB' USING ERRCODE = '22023';
        END IF;
    END IF;

    IF coalesce(new_name, a.name) IS DISTINCT FROM a.name OR new_branding IS DISTINCT FROM a.branding
       OR new_settings IS DISTINCT FROM a.settings THEN
        UPDATE tenancy.accounts x
        SET name = coalesce(new_name, x.name), branding = new_branding, settings = new_settings,
            updated_at = now()
        WHERE x.main_id = a.main_id AND x.id = a.id
        RETURNING * INTO a;
    END IF;
    RETURN tenancy._account_json(a);
END $$;

REVOKE ALL ON FUNCTION tenancy._account_json(tenancy.accounts),
    tenancy._merge_patch(jsonb, jsonb, text, integer), tenancy._check_branding(jsonb) FROM PUBLIC;
