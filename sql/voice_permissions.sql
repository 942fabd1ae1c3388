-- Role × resource × action through SQL: for each product role, a credential of
-- that role in a client account tries SELECT, INSERT, UPDATE and DELETE on each
-- voice table (every attempt rolled back), and the escalation calls. The
-- expected matrix is SPEC §3 and issue 19: a member reads call history but
-- changes no agent; a support agent claims escalated calls and writes
-- conversations; a viewer changes nothing; a sub-user edits agents, tools
-- (agents.tools) and knowledge bases but not settings, billing or members.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS vperm;
RESET client_min_messages;
GRANT USAGE ON SCHEMA vperm TO PUBLIC;

SELECT tenancy.create_main_account('Perm agency', 'voice-perm@example.test', 'a long enough password') AS m \gset
SELECT tenancy.admin_create_api_key(:'m', 'agency owner') AS m_key \gset
CREATE TABLE vperm.keys (role text PRIMARY KEY, key text NOT NULL);
CREATE TABLE vperm.ids (name text PRIMARY KEY, value text NOT NULL);
BEGIN;
SELECT tenancy.authenticate(:'m_key') IS NOT NULL AS ok;
SELECT tenancy.create_account(:'m', 'Client') AS c \gset
INSERT INTO vperm.keys SELECT r.name, tenancy.create_api_key(:'c', r.name || ' key', r.name)
FROM tenancy.roles r;
COMMIT;
SELECT string_agg(role, ', ' ORDER BY role) AS roles FROM vperm.keys;
GRANT SELECT ON vperm.keys, vperm.ids TO tenancy_app;

SET client_min_messages = warning;
GRANT tenancy_app TO regress_client;
RESET client_min_messages;
\c - regress_client
\set VERBOSITY terse
-- One row in each table of the client account, written by its owner.
BEGIN;
SELECT tenancy.authenticate((SELECT key FROM vperm.keys WHERE role = 'owner')) IS NOT NULL AS ok;
WITH a AS (INSERT INTO tenancy.agents (name) VALUES ('Agent') RETURNING id),
     kb AS (INSERT INTO tenancy.knowledge_bases (name) VALUES ('KB') RETURNING id),
     doc AS (INSERT INTO tenancy.knowledge_documents (knowledge_base_id, name) SELECT id, 'Doc' FROM kb RETURNING id),
     f AS (INSERT INTO tenancy.flows (name) VALUES ('Flow') RETURNING id),
     ch AS (INSERT INTO tenancy.channels (kind, name) VALUES ('widget', 'Widget') RETURNING id),
     cp AS (INSERT INTO tenancy.campaigns (name) VALUES ('Campaign') RETURNING id),
     i AS (INSERT INTO tenancy.integrations (provider, name, secret) VALUES ('crm', 'CRM', 'crm-secret-0001') RETURNING id),
     ct AS (INSERT INTO tenancy.contacts (name) VALUES ('Contact') RETURNING id),
     cv AS (INSERT INTO tenancy.conversations (direction, escalation_state) VALUES ('inbound', 'queued') RETURNING public_id)
SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM kb) + (SELECT count(*) FROM doc) + (SELECT count(*) FROM f)
     + (SELECT count(*) FROM ch) + (SELECT count(*) FROM cp) + (SELECT count(*) FROM i) + (SELECT count(*) FROM ct)
     + (SELECT count(*) FROM cv) AS rows_written;
SELECT tenancy.set_availability('online') ->> 'status' AS owner_availability;
COMMIT;

-- The statements each role tries, per table.
CREATE TEMP TABLE attempts (tbl text, action text, q text);
INSERT INTO attempts VALUES
    ('agents', 'select', 'SELECT * FROM tenancy.agents'),
    ('agents', 'insert', 'INSERT INTO tenancy.agents (name) VALUES (''new'')'),
    ('agents', 'update', 'UPDATE tenancy.agents SET tools = ''{"t": {"url": "https://x.test/t"}}'''),
    ('agents', 'delete', 'DELETE FROM tenancy.agents'),
    ('knowledge_bases', 'select', 'SELECT * FROM tenancy.knowledge_bases'),
    ('knowledge_bases', 'insert', 'INSERT INTO tenancy.knowledge_bases (name) VALUES (''new'')'),
    ('knowledge_bases', 'update', 'UPDATE tenancy.knowledge_bases SET name = ''x'''),
    ('knowledge_bases', 'delete', 'DELETE FROM tenancy.knowledge_bases'),
    ('knowledge_documents', 'select', 'SELECT * FROM tenancy.knowledge_documents'),
    ('knowledge_documents', 'insert', 'INSERT INTO tenancy.knowledge_documents (knowledge_base_id, name) SELECT id, ''new'' FROM tenancy.knowledge_bases'),
    ('knowledge_documents', 'update', 'UPDATE tenancy.knowledge_documents SET name = ''x'''),
    ('knowledge_documents', 'delete', 'DELETE FROM tenancy.knowledge_documents'),
    ('flows', 'select', 'SELECT * FROM tenancy.flows'),
    ('flows', 'insert', 'INSERT INTO tenancy.flows (name) VALUES (''new'')'),
    ('flows', 'update', 'UPDATE tenancy.flows SET name = ''x'''),
    ('flows', 'delete', 'DELETE FROM tenancy.flows'),
    ('channels', 'select', 'SELECT * FROM tenancy.channels'),
    ('channels', 'insert', 'INSERT INTO tenancy.channels (kind, name) VALUES (''widget'', ''new'')'),
    ('channels', 'update', 'UPDATE tenancy.channels SET name = ''x'''),
    ('channels', 'delete', 'DELETE FROM tenancy.channels'),
    ('campaigns', 'select', 'SELECT * FROM tenancy.campaigns'),
    ('campaigns', 'insert', 'INSERT INTO tenancy.campaigns (name) VALUES (''new'')'),
    ('campaigns', 'update', 'UPDATE tenancy.campaigns SET status = ''running'''),
    ('campaigns', 'delete', 'DELETE FROM tenancy.campaigns'),
    ('integrations', 'select', 'SELECT public_id, secret_hint FROM tenancy.integrations'),
    ('integrations', 'insert', 'INSERT INTO tenancy.integrations (provider, name, secret) VALUES (''crm'', ''new'', ''s3cr3t-value'')'),
    ('integrations', 'update', 'UPDATE tenancy.integrations SET secret = ''rotated-value'''),
    ('integrations', 'delete', 'DELETE FROM tenancy.integrations'),
    ('contacts', 'select', 'SELECT * FROM tenancy.contacts'),
    ('contacts', 'insert', 'INSERT INTO tenancy.contacts (name) VALUES (''new'')'),
    ('contacts', 'update', 'UPDATE tenancy.contacts SET attributes = ''{"x": 1}'''),
    ('contacts', 'delete', 'DELETE FROM tenancy.contacts'),
    ('conversations', 'select', 'SELECT * FROM tenancy.conversations'),
    ('conversations', 'insert', 'INSERT INTO tenancy.conversations (direction) VALUES (''outbound'')'),
    ('conversations', 'update', 'UPDATE tenancy.conversations SET transcript = ''[{"speaker": "agent", "text": "note"}]'''),
    ('conversations', 'delete', 'DELETE FROM tenancy.conversations'),
    ('support_availability', 'select', 'SELECT * FROM tenancy.support_availability'),
    ('support_availability', 'insert', 'INSERT INTO tenancy.support_availability (principal, status) VALUES (''user:1'', ''online'')'),
    ('support_availability', 'update', 'UPDATE tenancy.support_availability SET status = ''away'''),
    ('support_availability', 'delete', 'DELETE FROM tenancy.support_availability'),
    ('escalations', 'claim', 'SELECT tenancy.claim_conversation(public_id) FROM tenancy.conversations'),
    ('escalations', 'availability', 'SELECT tenancy.set_availability(''away'')');

-- Did the statement act on at least one row? Rolled back either way. Row
-- security hides rows from SELECT, UPDATE and DELETE (0 rows: no) and
-- refuses INSERT (42501: no); any other error is shown as is.
CREATE FUNCTION pg_temp.allowed(role text, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tenancy.authenticate((SELECT key FROM vperm.keys k WHERE k.role = allowed.role));
    BEGIN
        EXECUTE q;
        GET DIAGNOSTICS n = ROW_COUNT;
        RAISE EXCEPTION USING ERRCODE = 'P0099', MESSAGE = n::text;
    EXCEPTION WHEN OTHERS THEN
        PERFORM tenancy.reset();
        IF SQLSTATE = 'P0099' THEN
            RETURN CASE WHEN SQLERRM::bigint > 0 THEN 'yes' ELSE 'no' END;
        ELSIF SQLSTATE = '42501' THEN
            RETURN 'no';
        END IF;
        RETURN SQLSTATE || ' ' || SQLERRM;
    END;
END $$;

CREATE TEMP TABLE matrix AS
SELECT k.role, a.tbl, a.action, pg_temp.allowed(k.role, a.q) AS allowed
FROM vperm.keys k, attempts a;

-- Nothing but yes or no.
SELECT * FROM matrix WHERE allowed NOT IN ('yes', 'no');

-- The matrix, one line per role and table: S I U D for what the role may do.
SELECT role, tbl,
       string_agg(CASE WHEN allowed = 'yes' THEN upper(left(action, 1)) ELSE '-' END, ''
                  ORDER BY array_position(ARRAY['select', 'insert', 'update', 'delete'], action)) AS siud
FROM matrix WHERE tbl <> 'escalations'
GROUP BY role, tbl
ORDER BY array_position(ARRAY['owner', 'admin', 'member', 'support_agent', 'viewer', 'sub_user'], role), tbl;
-- The escalation queue: who claims a queued call and keeps an availability.
SELECT role, string_agg(action || ': ' || allowed, ', ' ORDER BY action) AS escalations
FROM matrix WHERE tbl = 'escalations'
GROUP BY role
ORDER BY array_position(ARRAY['owner', 'admin', 'member', 'support_agent', 'viewer', 'sub_user'], role);

-- The same matrix stated from the issue's sentences, compared cell by cell
-- (no row: they agree).
CREATE TEMP TABLE issue_rules (role text, tbl text, may text);
INSERT INTO issue_rules
SELECT r, t, 'SIUD' FROM unnest(ARRAY['owner', 'admin']) r,
    unnest(ARRAY['agents', 'knowledge_bases', 'knowledge_documents', 'flows', 'channels', 'campaigns',
                 'integrations', 'contacts', 'conversations']) t
UNION ALL SELECT r, 'support_availability', 'S---' FROM unnest(ARRAY['owner', 'admin', 'support_agent']) r
-- a member reads call history (conversations, contacts) and agent configuration; changes no agent
UNION ALL SELECT 'member', t, 'S---' FROM unnest(ARRAY['agents', 'flows', 'contacts']) t
UNION ALL SELECT 'member', 'conversations', 'SIUD'
-- a support agent writes conversations; reads agents and contacts
UNION ALL SELECT 'support_agent', t, 'S---' FROM unnest(ARRAY['agents', 'contacts']) t
UNION ALL SELECT 'support_agent', 'conversations', 'SIUD'
-- a viewer changes nothing
UNION ALL SELECT 'viewer', t, 'S---' FROM unnest(ARRAY['agents', 'flows', 'contacts', 'conversations']) t
-- a sub-user edits agents (and their tools) and knowledge bases; reads call history
UNION ALL SELECT 'sub_user', t, 'SIUD' FROM unnest(ARRAY['agents', 'knowledge_bases', 'knowledge_documents']) t
UNION ALL SELECT 'sub_user', t, 'S---' FROM unnest(ARRAY['contacts', 'conversations']) t;
WITH observed AS (
    SELECT role, tbl,
           string_agg(CASE WHEN allowed = 'yes' THEN upper(left(action, 1)) ELSE '-' END, ''
                      ORDER BY array_position(ARRAY['select', 'insert', 'update', 'delete'], action)) AS may
    FROM matrix WHERE tbl <> 'escalations' GROUP BY role, tbl),
stated AS (
    SELECT k.role, t.tbl, coalesce(i.may, '----') AS may
    FROM vperm.keys k CROSS JOIN (SELECT DISTINCT tbl FROM observed) t
    LEFT JOIN issue_rules i ON i.role = k.role AND i.tbl = t.tbl)
SELECT 'observed, not stated' AS side, * FROM (SELECT * FROM observed EXCEPT SELECT * FROM stated) x
UNION ALL
SELECT 'stated, not observed', * FROM (SELECT * FROM stated EXCEPT SELECT * FROM observed) y;

-- Sub-users cannot reach settings, billing or members (roles 20_roles.sql
-- already keeps from them; here through the same credential).
SELECT pg_temp.allowed('sub_user', 'UPDATE tenancy.accounts SET settings = ''{}''') AS sub_user_settings,
       pg_temp.allowed('sub_user', 'SELECT * FROM tenancy.memberships') AS sub_user_reads_members;
