-- The voice-AI application tables shipped with the extension (issue 19): agents,
-- knowledge bases, flows, channels, campaigns, integrations, contacts,
-- conversations, support agents' availability and the escalation queue.
--
-- Every table is under tenancy.protect() with its resource (25_protect.sql):
-- rows belong to an account (account_path, defaulting to the active one), the
-- main account's id leads the key, writes need the role's "write" permission.
-- On top of protect()'s subtree read, each table here also needs the role's
-- "read" permission on its resource (a RESTRICTIVE policy): a viewer does not
-- read integrations, a member does not read campaigns (20_roles.sql).
-- Public ids are opaque ('agt_<main>_<id>_<random>'), set by a trigger, never
-- chosen by a client; a client cannot write ids, public ids or timestamps
-- (column privileges).

-- Resources that 20_roles.sql does not declare. The escalation queue: who
-- claims escalated conversations and keeps an availability (owner, admin,
-- support agents). Availability rows are written only by
-- tenancy.set_availability() (no role writes the table directly).
SELECT tenancy.define_resource('escalations', ARRAY['owner', 'admin', 'support_agent'],
                               ARRAY['owner', 'admin', 'support_agent']);
SELECT tenancy.define_resource('availability', ARRAY[]::text[], ARRAY['owner', 'admin', 'support_agent']);

-- One id sequence for every voice table (ids are per main account in keys).
CREATE SEQUENCE tenancy.voice_id_seq;

-- ---- tables ------------------------------------------------------------------------------

CREATE TABLE tenancy.agents (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    prompt text NOT NULL DEFAULT '' CHECK (length(prompt) <= 100000),
    voice text CHECK (length(voice) <= 200),
    language text NOT NULL DEFAULT 'en' CHECK (language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$'),
    model jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(model) = 'object'),
    tools jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tools) = 'object'),  -- custom tools by name
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);

CREATE TABLE tenancy.knowledge_bases (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    description text CHECK (length(description) <= 2000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);

-- A knowledge base's documents, as metadata (the content lives in the
-- platform's object store, named by source_uri).
CREATE TABLE tenancy.knowledge_documents (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    knowledge_base_id bigint NOT NULL,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 500),
    content_type text CHECK (length(content_type) <= 200),
    size_bytes bigint CHECK (size_bytes >= 0),
    source_uri text CHECK (length(source_uri) <= 2000),
    metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id),
    FOREIGN KEY (main_id, knowledge_base_id) REFERENCES tenancy.knowledge_bases (main_id, id) ON DELETE CASCADE
);

CREATE TABLE tenancy.flows (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    definition jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(definition) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);

-- Phone numbers and web widgets that reach an agent. No uniqueness across
-- accounts on the number: a unique key would tell a tenant that another one
-- holds it.
CREATE TABLE tenancy.channels (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    kind text NOT NULL CHECK (kind IN ('phone', 'widget')),
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    phone_number text CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    agent_id bigint,
    config jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id),
    CHECK ((kind = 'phone') = (phone_number IS NOT NULL)),
    FOREIGN KEY (main_id, agent_id) REFERENCES tenancy.agents (main_id, id) ON DELETE SET NULL (agent_id)
);

CREATE TABLE tenancy.campaigns (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    agent_id bigint,
    status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'completed')),
    schedule jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(schedule) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id),
    FOREIGN KEY (main_id, agent_id) REFERENCES tenancy.agents (main_id, id) ON DELETE SET NULL (agent_id)
);

-- Third-party credentials. A client writes `secret` (write-only: the trigger
-- below seals it into secret_sealed with libsodium secretbox under a subkey of
-- the server key and clears it) and reads only secret_hint (the last 4
-- characters). No client role may read secret_sealed; the DBA sees ciphertext.
CREATE TABLE tenancy.integrations (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    provider text NOT NULL CHECK (provider ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    config jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    secret text CHECK (secret IS NULL),        -- write-only input, always NULL once stored
    secret_sealed bytea,
    secret_hint text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);

CREATE TABLE tenancy.contacts (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    name text CHECK (length(name) <= 200),
    phone text CHECK (phone ~ '^\+?[0-9][0-9 ().-]{2,30}$'),
    email text CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    attributes jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);

-- A transcript is an array of turns, each an object with a string "text"
-- (and usually "speaker", "at").
CREATE FUNCTION tenancy._transcript_ok(t jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT jsonb_typeof(t) = 'array'
           AND NOT EXISTS (SELECT FROM jsonb_array_elements(t) e(turn)
                           WHERE jsonb_typeof(e.turn) <> 'object'
                              OR jsonb_typeof(e.turn -> 'text') IS DISTINCT FROM 'string'
                              OR (e.turn ? 'speaker' AND jsonb_typeof(e.turn -> 'speaker') <> 'string'))
$$;

-- Conversations (call logs). The shape issue19-common.md fixes: part B's
-- triggers (tenancy_10_recording, tenancy_20_phi_redact, tenancy_30_encrypt)
-- run BEFORE INSERT OR UPDATE OF transcript, recording_ref, after
-- tenancy_00_voice_row (triggers fire in name order).
-- Escalation: 'queued' waits for a support agent; tenancy.claim_conversation()
-- moves it to 'claimed' (claimed_by, claimed_at: only that function writes
-- them); 'resolved' ends it.
CREATE TABLE tenancy.conversations (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    agent_id bigint,
    contact_id bigint,
    channel_id bigint,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    duration_s integer GENERATED ALWAYS AS (extract(epoch FROM ended_at - started_at)::integer) STORED,
    status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('queued', 'ringing', 'active', 'completed', 'failed', 'no_answer', 'escalated')),
    transcript jsonb NOT NULL DEFAULT '[]' CHECK (tenancy._transcript_ok(transcript)),
    recording_ref text CHECK (length(recording_ref) <= 2000),
    escalation_state text NOT NULL DEFAULT 'none'
        CHECK (escalation_state IN ('none', 'queued', 'claimed', 'resolved')),
    claimed_by text,
    claimed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id),
    CHECK (ended_at IS NULL OR ended_at >= started_at),
    CHECK (CASE escalation_state WHEN 'claimed' THEN claimed_by IS NOT NULL
                                 WHEN 'resolved' THEN true
                                 ELSE claimed_by IS NULL END),
    FOREIGN KEY (main_id, agent_id) REFERENCES tenancy.agents (main_id, id) ON DELETE SET NULL (agent_id),
    FOREIGN KEY (main_id, contact_id) REFERENCES tenancy.contacts (main_id, id) ON DELETE SET NULL (contact_id),
    FOREIGN KEY (main_id, channel_id) REFERENCES tenancy.channels (main_id, id) ON DELETE SET NULL (channel_id)
);
-- The escalation queue of a subtree: only the few open escalations.
CREATE INDEX conversations_escalations ON tenancy.conversations (account_path, id)
    WHERE escalation_state IN ('queued', 'claimed');

-- Support agents' availability, one row per principal and account.
CREATE TABLE tenancy.support_availability (
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    account_path tenancy.account_path NOT NULL,
    principal text NOT NULL,   -- kind:id, as whoami() names it
    status text NOT NULL CHECK (status IN ('online', 'away', 'offline')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_path, principal)
);

-- ---- row triggers ------------------------------------------------------------------------------

-- An opaque public id: prefix, main account, id and 40 random bits (so ids
-- cannot be guessed from a neighbour's). SECURITY DEFINER: the random source
-- is not granted to clients.
CREATE FUNCTION tenancy._voice_public_id(prefix text, main_id bigint, id bigint) RETURNS text
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT format('%s_%s_%s_%s', prefix, main_id, id, encode(tenancy._random_bytes(5), 'hex')) $$;
REVOKE ALL ON FUNCTION tenancy._voice_public_id(text, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._voice_public_id(text, bigint, bigint) TO tenancy_app;

-- Keys: main_id follows account_path (a promoted account's rows get their new
-- main id); a new row gets its id and opaque public id (TG_ARGV[0] is the prefix);
-- an update keeps them and stamps updated_at. References to other voice rows
-- must name rows the writer can see: the foreign keys only tie them to the
-- same main account, and a sibling's row is not the writer's to use (nor to
-- learn of through a foreign key error). Runs as the writer, so row security
-- decides what it sees.
CREATE FUNCTION tenancy._voice_row() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    ref record;
    target regclass;
    visible boolean;
BEGIN
    -- Not a generated column: a composite foreign key holding one cannot SET
    -- NULL on delete, and a deleted agent must leave its call history.
    -- A new row's main_id, when given (on Citus the coordinator sends its
    -- default, the active main account, which routed the row), must be its
    -- path's: a row never sits in another main account's shard.
    IF TG_OP = 'INSERT' AND NEW.main_id IS DISTINCT FROM tenancy.root_id(NEW.account_path)
       AND NEW.main_id IS NOT NULL THEN
        RAISE EXCEPTION 'main_id % is not the main account of the row''s account', NEW.main_id
            USING ERRCODE = '23514';
    END IF;
    NEW.main_id := tenancy.root_id(NEW.account_path);
    IF TG_OP = 'INSERT' THEN
        NEW.id := coalesce(NEW.id, nextval('tenancy.voice_id_seq'));
        NEW.public_id := tenancy._voice_public_id(TG_ARGV[0], NEW.main_id, NEW.id);
        NEW.created_at := now();
    ELSE
        NEW.id := OLD.id;
        NEW.public_id := OLD.public_id;
        NEW.created_at := OLD.created_at;
    END IF;
    NEW.updated_at := now();
    FOR ref IN SELECT r.col, r.tbl FROM (VALUES
            ('conversations', 'agent_id', 'tenancy.agents'), ('conversations', 'contact_id', 'tenancy.contacts'),
            ('conversations', 'channel_id', 'tenancy.channels'), ('channels', 'agent_id', 'tenancy.agents'),
            ('campaigns', 'agent_id', 'tenancy.agents'),
            ('knowledge_documents', 'knowledge_base_id', 'tenancy.knowledge_bases')) r(owner_tbl, col, tbl)
        WHERE r.owner_tbl = TG_TABLE_NAME
    LOOP
        CONTINUE WHEN (to_jsonb(NEW) ->> ref.col) IS NULL
                      OR (TG_OP = 'UPDATE' AND (to_jsonb(NEW) ->> ref.col) IS NOT DISTINCT FROM (to_jsonb(OLD) ->> ref.col)
                          AND NEW.account_path = OLD.account_path);
        target := ref.tbl::regclass;
        EXECUTE format('SELECT EXISTS (SELECT FROM %s x WHERE x.main_id = $1 AND x.id = $2)', target)
            INTO visible USING tenancy.root_id(NEW.account_path), (to_jsonb(NEW) ->> ref.col)::bigint;
        IF NOT visible THEN
            RAISE EXCEPTION '% % not found', replace(replace(ref.col, '_id', ''), '_', ' '), to_jsonb(NEW) ->> ref.col
                USING ERRCODE = '23503';
        END IF;
    END LOOP;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION tenancy._voice_row() FROM PUBLIC;

-- The server subkey integration secrets are sealed under (32_gateway_support.sql
-- derives one subkey per purpose from the context key). Not per main account:
-- rows keep opening after an account is moved or promoted.
CREATE FUNCTION tenancy._integration_key() RETURNS bytea
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT tenancy._derived_key('tenancy integration secrets v1') $$;

-- Seal a written secret, keep only its hint; the clear text never reaches the
-- table, the audit log (an AFTER trigger sees the cleared column) or WAL.
-- SECURITY DEFINER: the server key is readable by no client.
CREATE FUNCTION tenancy._integration_seal() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF NEW.secret IS NOT NULL THEN
        IF length(NEW.secret) NOT BETWEEN 1 AND 4096 THEN
            RAISE EXCEPTION 'an integration secret is 1 to 4096 characters' USING ERRCODE = '22023';
        END IF;
        NEW.secret_sealed := tenancy._secretbox_seal(tenancy._integration_key(), NEW.secret);
        NEW.secret_hint := CASE WHEN length(NEW.secret) >= 12 THEN '...' || right(NEW.secret, 4) ELSE '...' END;
        NEW.secret := NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        NEW.secret_sealed := OLD.secret_sealed;
        NEW.secret_hint := OLD.secret_hint;
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION tenancy._integration_seal(), tenancy._integration_key() FROM PUBLIC;

-- The clear secret, for the platform's own connector processes (superuser
-- only: no client role and not tenancy_admin may call it).
CREATE FUNCTION tenancy._integration_secret(integration text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT tenancy._secretbox_open(tenancy._integration_key(), i.secret_sealed)
    FROM tenancy.integrations i WHERE i.public_id = integration
$$;
REVOKE ALL ON FUNCTION tenancy._integration_secret(text) FROM PUBLIC;

DO $triggers$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('agents', 'agt'), ('knowledge_bases', 'kb'), ('knowledge_documents', 'doc'),
                                   ('flows', 'flow'), ('channels', 'chn'), ('campaigns', 'cmp'),
                                   ('integrations', 'int'), ('contacts', 'ct'), ('conversations', 'conv')) x(tbl, prefix)
    LOOP
        EXECUTE format('CREATE TRIGGER tenancy_00_voice_row BEFORE INSERT OR UPDATE ON tenancy.%I '
                       'FOR EACH ROW EXECUTE FUNCTION tenancy._voice_row(%L)', t.tbl, t.prefix);
    END LOOP;
END
$triggers$;
CREATE TRIGGER tenancy_05_seal BEFORE INSERT OR UPDATE ON tenancy.integrations
    FOR EACH ROW EXECUTE FUNCTION tenancy._integration_seal();

-- ---- protection, privileges ----------------------------------------------------------------

DO $protect$
DECLARE
    t record;
    cols text;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('agents', 'agents'), ('knowledge_bases', 'knowledge_bases'),
                                   ('knowledge_documents', 'knowledge_bases'), ('flows', 'flows'),
                                   ('channels', 'channels'), ('campaigns', 'campaigns'),
                                   ('integrations', 'integrations'), ('contacts', 'contacts'),
                                   ('conversations', 'conversations'),
                                   ('support_availability', 'availability')) x(tbl, resource)
    LOOP
        EXECUTE format('ALTER TABLE tenancy.%I OWNER TO tenancy_owner', t.tbl);
        PERFORM tenancy.protect(format('tenancy.%I', t.tbl)::regclass, t.resource);
        -- Reading needs the role's read permission too (RESTRICTIVE: ANDed with
        -- protect()'s subtree policies, for every command).
        EXECUTE format('CREATE POLICY voice_read_permission ON tenancy.%I AS RESTRICTIVE FOR ALL '
                       'USING (tenancy.may(%L, ''read''))', t.tbl, t.resource);
        -- Column privileges: no client writes ids, public ids or timestamps;
        -- nor the claim (claim_conversation) or a sealed secret.
        EXECUTE format('REVOKE ALL ON tenancy.%I FROM PUBLIC, tenancy_app', t.tbl);
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
        FROM pg_attribute a
        WHERE a.attrelid = format('tenancy.%I', t.tbl)::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname NOT IN ('secret', 'secret_sealed');
        EXECUTE format('GRANT SELECT (%s) ON tenancy.%I TO tenancy_app', cols, t.tbl);
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
        FROM pg_attribute a
        WHERE a.attrelid = format('tenancy.%I', t.tbl)::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attgenerated = ''
          AND a.attname NOT IN ('main_id', 'id', 'public_id', 'created_at', 'updated_at', 'claimed_by',
                                'claimed_at', 'secret_sealed', 'secret_hint');
        EXECUTE format('GRANT INSERT (%1$s), UPDATE (%1$s), DELETE ON tenancy.%2$I TO tenancy_app', cols, t.tbl);
        EXECUTE format('GRANT SELECT ON tenancy.%I TO tenancy_admin', t.tbl);
    END LOOP;
END
$protect$;
-- The DBA reads integrations' ciphertext, never the clear secret.
ALTER SEQUENCE tenancy.voice_id_seq OWNER TO tenancy_owner;
GRANT USAGE ON SEQUENCE tenancy.voice_id_seq TO tenancy_app;

-- ---- escalation queue and availability ----------------------------------------------------

-- The context's principal as kind:id ('user:12', 'api_key:key_3_7').
CREATE FUNCTION tenancy._principal_ref() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT (w.p ->> 'kind') || ':' || (w.p ->> 'id') FROM (SELECT tenancy.whoami() -> 'principal' AS p) w $$;
REVOKE ALL ON FUNCTION tenancy._principal_ref() FROM PUBLIC;

-- claim_conversation(conversation): the caller (a role that may write
-- `escalations`) takes a queued escalation of its subtree. The row lock makes
-- concurrent claims queue up: the first wins, each later one finds the row
-- claimed and gets 55000 (409 over REST). Not visible: P0002, like missing.
-- Returns the claimant (kind:id).
CREATE FUNCTION tenancy.claim_conversation(conversation text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    c record;
    me text;
    -- Values, not calls, in the statements below: Citus locks and updates a
    -- row only on a shard it chooses when planning (the main account).
    mid bigint := tenancy.current_main_id();
    claimed timestamptz := now();
BEGIN
    PERFORM tenancy._require('escalations', 'write');
    me := tenancy._principal_ref();
    SELECT x.main_id, x.id, x.escalation_state, x.claimed_by INTO c
    FROM tenancy.conversations x
    WHERE x.main_id = mid AND x.public_id = conversation AND x.account_path <@ tenancy.current_path()
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversation "%" not found', conversation USING ERRCODE = 'P0002';
    END IF;
    IF c.escalation_state = 'claimed' THEN
        RAISE EXCEPTION 'conversation "%" is already claimed', conversation USING ERRCODE = '55000';
    ELSIF c.escalation_state <> 'queued' THEN
        RAISE EXCEPTION 'conversation "%" is not waiting in the escalation queue (state %)',
            conversation, c.escalation_state USING ERRCODE = '55000';
    END IF;
    UPDATE tenancy.conversations x SET escalation_state = 'claimed', claimed_by = me, claimed_at = claimed
    WHERE x.main_id = c.main_id AND x.id = c.id;
    RETURN me;
END $$;

-- set_availability(status): the caller's availability in its active account
-- (online, away, offline), for roles that take escalations. Returns the row.
CREATE FUNCTION tenancy.set_availability(status text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    saved tenancy.support_availability;
    here tenancy.account_path;
    me text;
    stamp timestamptz := now();
BEGIN
    PERFORM tenancy._require('escalations', 'write');
    IF status IS NULL OR status NOT IN ('online', 'away', 'offline') THEN
        RAISE EXCEPTION 'availability status must be online, away or offline' USING ERRCODE = '22023';
    END IF;
    -- Values computed before the upsert: Citus refuses a non-IMMUTABLE call
    -- in its DO UPDATE.
    here := tenancy.current_path();
    me := tenancy._principal_ref();
    -- The constraint by name: on Citus the key also leads with main_id (95_citus.sql).
    INSERT INTO tenancy.support_availability AS s (account_path, principal, status, updated_at)
    VALUES (here, me, set_availability.status, stamp)
    ON CONFLICT ON CONSTRAINT support_availability_pkey
        DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
    RETURNING * INTO saved;
    RETURN jsonb_build_object('principal', saved.principal, 'account', tenancy.current_account(),
                              'status', saved.status, 'updated_at', saved.updated_at);
END $$;
