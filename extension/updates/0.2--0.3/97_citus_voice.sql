-- 0.2 -> 0.3: the escalation functions in shapes Citus plans (issue 22): the
-- claim's row lock and update name the main account as a value, and the
-- availability upsert computes its values before it and names its key by
-- constraint, as in extension/sql/50_voice.sql. Same behaviour on one node.

-- claim_conversation(conversation): the caller (a role that may write
-- `escalations`) takes a queued escalation of its subtree. The row lock makes
-- concurrent claims queue up: the first wins, each later one finds the row
-- claimed and gets 55000 (409 over REST). Not visible: P0002, like missing.
-- Returns the claimant (kind:id).
CREATE OR REPLACE FUNCTION tenancy.claim_conversation(conversation text) RETURNS text
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
CREATE OR REPLACE FUNCTION tenancy.set_availability(status text) RETURNS jsonb
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
