-- Effective settings and branding: merged from the main account down, a
-- child's value wins, objects merge key by key; who may read them; a child
-- learns values only, nothing else about its ancestors.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS estest;
GRANT USAGE ON SCHEMA estest TO PUBLIC;
CREATE OR REPLACE FUNCTION estest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'acc_[0-9]+_[0-9a-f]+', 'acc_X', 'g');
END $$;
GRANT EXECUTE ON FUNCTION estest.try(text) TO PUBLIC;

-- The merge itself.
SELECT tenancy._jsonb_merge(b::jsonb, o::jsonb) AS merged
FROM (VALUES ('{"a": 1, "b": {"x": 1, "y": 2}}', '{"b": {"y": 3, "z": 4}, "c": 5}'),
             ('{"a": [1, 2]}', '{"a": [3]}'),
             ('{"a": {"x": 1}}', '{"a": "flat"}'),
             ('{"a": "flat"}', '{"a": {"x": 1}}'),
             ('{"logo": "l.png"}', '{"logo": null}'),
             ('{}', '{}')) AS t(b, o);

SELECT tenancy.create_main_account('Brand Holding Ltd', 'o@brand.test', 'o-password') AS co \gset
SELECT tenancy.create_main_account('Other Ltd', 'x@brand.test', 'x-password') AS other \gset
SELECT tenancy.admin_create_api_key(:'co', 'owner') AS co_key \gset
BEGIN;
SELECT tenancy.authenticate(:'co_key') IS NOT NULL AS in_co;
SELECT tenancy.create_account(:'co', 'Reseller Srl') AS reseller \gset
SELECT tenancy.create_account(:'reseller', 'Client Spa') AS client \gset
SELECT tenancy.create_account(:'co', 'Plain Sibling') AS sibling \gset
COMMIT;
SELECT tenancy.admin_create_api_key(:'client', 'client owner') AS client_key \gset
SELECT tenancy.admin_create_api_key(:'client', 'client viewer', 'viewer') AS client_viewer_key \gset
SELECT tenancy.admin_create_api_key(:'client', 'client admin', 'admin') AS client_admin_key \gset

UPDATE tenancy.accounts SET
    settings = '{"locale": "en", "voice": {"speed": 1, "pitch": 0}, "retention_days": 90, "holding_note": "kept upstairs"}',
    branding = '{"name": "Brand", "colors": {"primary": "#111111", "secondary": "#222222"}, "logo_url": "https://brand.example/logo.png"}'
WHERE public_id = :'co';
UPDATE tenancy.accounts SET
    settings = '{"voice": {"speed": 1.2}, "timezone": "Europe/Rome"}',
    branding = '{"name": "Reseller", "colors": {"primary": "#ff0000"}}'
WHERE public_id = :'reseller';
UPDATE tenancy.accounts SET
    settings = '{"locale": "it", "holding_note": null}',
    branding = '{"logo_url": null}'
WHERE public_id = :'client';

SET ROLE tenancy_app;
-- ---- the main account's owner: every account of its tree ----
BEGIN;
SELECT tenancy.authenticate(:'co_key') IS NOT NULL AS owner_in;
SELECT 'main' AS account, tenancy.effective_settings(:'co') AS settings, tenancy.effective_branding(:'co') AS branding;
SELECT 'reseller' AS account, tenancy.effective_settings(:'reseller') AS settings, tenancy.effective_branding(:'reseller') AS branding;
SELECT 'client' AS account, tenancy.effective_settings(:'client') AS settings, tenancy.effective_branding(:'client') AS branding;
SELECT 'sibling' AS account, tenancy.effective_settings(:'sibling') AS settings, tenancy.effective_branding(:'sibling') AS branding;
SELECT estest.try(format('SELECT tenancy.effective_settings(%L)', a)) AS elsewhere
FROM unnest(ARRAY[:'other', 'acc_999999_000000000000', 'nonsense', NULL]) AS a;
COMMIT;

-- ---- the client's own key: the same values, nothing more about its ancestors ----
BEGIN;
SELECT tenancy.authenticate(:'client_key') IS NOT NULL AS client_in;
SELECT tenancy.effective_settings(:'client') AS settings, tenancy.effective_branding(:'client') AS branding;
SELECT (tenancy.effective_settings(:'client')::text || tenancy.effective_branding(:'client')::text)
       ~ ('Brand Holding|Reseller Srl|' || :'co' || '|' || :'reseller') AS names_an_ancestor;
-- an ancestor or a sibling: "not found", exactly as a missing account
SELECT estest.try(format('SELECT tenancy.effective_settings(%L)', a)) AS settings_up,
       estest.try(format('SELECT tenancy.effective_branding(%L)', a)) AS branding_up
FROM unnest(ARRAY[:'reseller', :'co', :'sibling', 'acc_999999_000000000000']) AS a;
-- ancestors' rows stay invisible
SELECT count(*) AS visible_accounts FROM tenancy.accounts;
COMMIT;

-- ---- roles: branding for all, settings for roles that read settings ----
BEGIN;
SELECT tenancy.authenticate(:'client_viewer_key') IS NOT NULL AS viewer_in;
SELECT tenancy.effective_branding(:'client') ->> 'name' AS viewer_branding_name;
SELECT estest.try(format('SELECT tenancy.effective_settings(%L)', :'client')) AS viewer_settings;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'client_admin_key') IS NOT NULL AS admin_in;
SELECT tenancy.effective_settings(:'client') ->> 'locale' AS admin_locale;
COMMIT;
SELECT estest.try(format('SELECT tenancy.effective_settings(%L)', :'client')) AS no_context;

-- ---- an override and its removal, by the client's owner ----
BEGIN;
SELECT tenancy.authenticate(:'client_key') IS NOT NULL AS client_in;
UPDATE tenancy.accounts SET branding = '{"colors": {"secondary": "#00ff00"}}' WHERE public_id = :'client';
SELECT tenancy.effective_branding(:'client') AS overridden;
UPDATE tenancy.accounts SET branding = NULL, settings = NULL WHERE public_id = :'client';
SELECT tenancy.effective_settings(:'client') AS inherits_again, tenancy.effective_branding(:'client') AS branding;
ROLLBACK;
RESET ROLE;

-- ---- the "security" key comes from tenancy.effective_security(account_id) when it exists ----
BEGIN;
DO $$
BEGIN
    IF to_regprocedure('tenancy.effective_security(bigint)') IS NULL THEN
        -- a stand-in for the security settings module's function
        CREATE FUNCTION tenancy.effective_security(account_id bigint) RETURNS jsonb
            LANGUAGE sql STABLE AS $f$ SELECT jsonb_build_object('computed_for', account_id) $f$;
    END IF;
END $$;
SELECT tenancy.authenticate(:'client_key') IS NOT NULL AS client_in;
SELECT tenancy.effective_settings(:'client') -> 'security'
       = tenancy.effective_security((SELECT id FROM tenancy.accounts WHERE public_id = :'client'))
       AS security_from_effective_security;
ROLLBACK;
