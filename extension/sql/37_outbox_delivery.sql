-- Outbox delivery (issue 20): what the gateway's mailer calls to claim, send
-- and mark tenancy.outbox rows, and the failures an account's owners can read.
--
-- Every mail_* function is for the gateway only (tenancy._require_gateway,
-- 20_roles.sql): EXECUTE goes to tenancy_app and the function checks
-- session_user. The outbox itself stays unreadable to clients.
--
-- Delivery protocol (gateway/mailer.cpp):
--   1. mail_claim(claimer, batch, lease): due rows, FOR UPDATE SKIP LOCKED,
--      leased to the claimer until now() + lease; committed at once, so the
--      row lock lasts only the claim and the lease keeps other mailers off.
--   2. the mailer sends each message over SMTP, outside any transaction;
--   3. mail_sent / mail_retry / mail_failed(id, claimer, ...) in its own
--      short transaction per message, only while the claimer still holds it.
-- A crash between the server's 250 and mail_sent leaves the row claimed; when
-- its lease ends (or the same claimer starts again) it is sent once more with
-- the same Message-ID: at most a duplicate the recipient's software can tell.

-- ---- outbox: structure for templates, leases and retries ----------------------------------
-- kind and data let the mailer render a text and an HTML alternative with a
-- link (the public base URL is the gateway's configuration); body stays the
-- plain text written with the change, for the DBA and kinds the mailer does
-- not know. data may carry the mail's secret (token, temporary password): it
-- is blanked with the body once the row is sent or has failed for good.
ALTER TABLE tenancy.outbox
    ADD COLUMN kind text CHECK (kind IN ('invitation', 'sub_user_credentials')),
    ADD COLUMN account_path tenancy.account_path
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE ON DELETE SET NULL,
    ADD COLUMN data jsonb CHECK (data IS NULL OR jsonb_typeof(data) = 'object'),
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN claimed_by text CHECK (octet_length(claimed_by) <= 200),
    ADD COLUMN lease_until timestamptz,
    ADD COLUMN failed_at timestamptz,
    ADD CHECK (sent_at IS NULL OR failed_at IS NULL);
CREATE INDEX outbox_due ON tenancy.outbox (next_attempt_at, id)
    WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_account_path ON tenancy.outbox (account_path) WHERE account_path IS NOT NULL;

-- A row done with (sent or failed for good) keeps no secret.
CREATE FUNCTION tenancy._outbox_blank_done() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.sent_at IS NOT NULL OR NEW.failed_at IS NOT NULL THEN
        NEW.body := '';
        NEW.data := NULL;
        NEW.claimed_by := NULL;
        NEW.lease_until := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER blank_done_mail BEFORE INSERT OR UPDATE ON tenancy.outbox
    FOR EACH ROW EXECUTE FUNCTION tenancy._outbox_blank_done();

-- The one writer of the outbox (invite, activate_sub_user in 30x_identity_*.sql):
-- in the caller's transaction, so a mail exists iff its change committed.
CREATE FUNCTION tenancy._enqueue_mail(kind text, account_path tenancy.account_path, recipient text,
                                      subject text, body text, data jsonb)
    RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    INSERT INTO tenancy.outbox (main_id, account_path, kind, recipient, subject, body, data)
    VALUES (tenancy.root_id(account_path), account_path, kind, recipient, subject, body, data)
    RETURNING id
$$;

-- ---- failures an account's owners can read ---------------------------------------------------
-- One row per mail that failed for good (the server answered 5xx): who, what
-- subject, the server's answer, when. Never the body. Owners and admins
-- (members read) of the account or an ancestor see it; they can re-invite or
-- re-activate.
CREATE TABLE tenancy.outbox_failures (
    outbox_id bigint PRIMARY KEY,
    account_path tenancy.account_path NOT NULL
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE ON DELETE CASCADE,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    recipient text NOT NULL,
    subject text NOT NULL,
    error text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_failures_account_path ON tenancy.outbox_failures (account_path);
ALTER TABLE tenancy.outbox_failures OWNER TO tenancy_owner;
ALTER TABLE tenancy.outbox_failures ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.outbox_failures FROM PUBLIC;
CREATE POLICY subtree_read ON tenancy.outbox_failures FOR SELECT
    USING (account_path <@ tenancy.current_path() AND tenancy.may('members', 'read'));
GRANT SELECT ON tenancy.outbox_failures TO tenancy_app, tenancy_admin;

-- ---- helpers (internal) ------------------------------------------------------------------------

-- Message-ID of an outbox row: the same on every send of it, distinct across
-- installations (the installation part is derived from the server secret, so
-- a restored dump keeps it).
CREATE FUNCTION tenancy._mail_message_id(id bigint) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT format('<outbox-%s.%s@tenancy>', id,
                  encode(substring(tenancy._derived_key('tenancy mail message-id') FROM 1 FOR 8), 'hex'))
$$;

-- The branding a mail for this account shows: each top-level key of
-- accounts.branding from the nearest account on the path that sets it
-- (the account's own, else its parent's, ...), plus the account's name.
CREATE FUNCTION tenancy._mail_branding(p tenancy.account_path) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN coalesce((SELECT jsonb_object_agg(b.key, b.value ORDER BY tenancy.nlevel(a.path))
                     FROM tenancy.accounts a, jsonb_each(a.branding) b
                     WHERE a.main_id = tenancy.root_id(p) AND a.path @> p AND a.branding IS NOT NULL),
                    '{}'::jsonb)
           || jsonb_build_object('account_name', (SELECT a.name FROM tenancy.accounts a
                                                  WHERE a.main_id = tenancy.root_id(p) AND a.path = p));
END $$;

-- 22023 unless the claimer names itself (1-200 bytes).
CREATE FUNCTION tenancy._mail_check_claimer(claimer text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF claimer IS NULL OR octet_length(claimer) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a mailer names itself with 1 to 200 bytes' USING ERRCODE = '22023';
    END IF;
END $$;

-- ---- the mailer's calls (gateway only) ---------------------------------------------------------

-- mail_claim(claimer, batch, lease): up to `batch` due rows (not sent, not
-- failed, next_attempt_at reached, lease free or already the claimer's), oldest
-- due first, skipping rows another transaction holds; each is leased to the
-- claimer until now() + lease. A claimer that restarts under the same name
-- takes its own leased rows back at once. Returns what the mail needs:
-- recipient, subject, the plain body, kind and data (may hold the secret), the
-- effective branding and the Message-ID.
CREATE FUNCTION tenancy.mail_claim(claimer text, batch integer, lease interval)
    RETURNS TABLE (id bigint, kind text, recipient text, subject text, body text, data jsonb,
                   branding jsonb, message_id text, attempts integer, created_at timestamptz)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    PERFORM tenancy._require_gateway('tenancy.mail_claim()');
    PERFORM tenancy._mail_check_claimer(claimer);
    IF batch IS NULL OR batch NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'batch must be 1 to 1000' USING ERRCODE = '22023';
    END IF;
    IF lease IS NULL OR lease < interval '1 second' OR lease > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be 1 second to 1 day' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT o.id FROM tenancy.outbox o
        WHERE o.sent_at IS NULL AND o.failed_at IS NULL AND o.next_attempt_at <= now()
          AND (o.lease_until IS NULL OR o.lease_until <= now() OR o.claimed_by = claimer)
        ORDER BY o.next_attempt_at, o.id
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE tenancy.outbox o SET claimed_by = claimer, lease_until = now() + lease
        FROM due WHERE o.id = due.id
        RETURNING o.*
    )
    SELECT c.id, c.kind, c.recipient, c.subject, c.body, c.data,
           CASE WHEN c.account_path IS NULL THEN '{}'::jsonb ELSE tenancy._mail_branding(c.account_path) END,
           tenancy._mail_message_id(c.id), c.attempts, c.created_at
    FROM claimed c ORDER BY c.id;
END $$;

-- mail_sent(id, claimer): the server accepted the message (250). Sets
-- sent_at (the trigger blanks body and data). False when the row is not the
-- claimer's any more (its lease ended and another mailer took it) or is done.
CREATE FUNCTION tenancy.mail_sent(id bigint, claimer text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    PERFORM tenancy._require_gateway('tenancy.mail_sent()');
    UPDATE tenancy.outbox o
    SET sent_at = now(), attempts = o.attempts + 1, last_error = NULL
    WHERE o.id = mail_sent.id AND o.claimed_by = claimer AND o.sent_at IS NULL AND o.failed_at IS NULL;
    RETURN FOUND;
END $$;

-- mail_retry(id, claimer, error, base, cap): a temporary failure (4xx,
-- connection refused, timeout). The next attempt waits base * 2^attempts
-- (at most cap), times a random factor in [0.5, 1) so mailers that failed
-- together do not retry together. Returns when; NULL when the row is not the
-- claimer's any more.
CREATE FUNCTION tenancy.mail_retry(id bigint, claimer text, error text,
                                   base interval DEFAULT '30 seconds', cap interval DEFAULT '1 hour')
    RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    next_at timestamptz;
BEGIN
    PERFORM tenancy._require_gateway('tenancy.mail_retry()');
    IF base IS NULL OR cap IS NULL OR base <= interval '0' OR cap < base THEN
        RAISE EXCEPTION 'need 0 < base <= cap' USING ERRCODE = '22023';
    END IF;
    UPDATE tenancy.outbox o
    SET attempts = o.attempts + 1,
        last_error = left(coalesce(error, 'unknown error'), 1000),
        next_attempt_at = now() + least(cap, base * power(2, least(o.attempts, 30)))
                                  * (0.5 + random() / 2),
        claimed_by = NULL, lease_until = NULL
    WHERE o.id = mail_retry.id AND o.claimed_by = claimer AND o.sent_at IS NULL AND o.failed_at IS NULL
    RETURNING o.next_attempt_at INTO next_at;
    RETURN next_at;
END $$;

-- mail_failed(id, claimer, error): a permanent failure (5xx). The row is
-- done (failed_at; body and data blanked) and a row the account's owners
-- can read goes to tenancy.outbox_failures with the server's answer. The
-- account is the mail's (an invitation's account, a sub-user's main account);
-- a row that names none (written before this file) falls back to its main
-- account. False when the row is not the claimer's any more.
CREATE FUNCTION tenancy.mail_failed(id bigint, claimer text, error text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    o tenancy.outbox;
    msg text := left(coalesce(error, 'unknown error'), 1000);
BEGIN
    PERFORM tenancy._require_gateway('tenancy.mail_failed()');
    UPDATE tenancy.outbox x
    SET failed_at = now(), attempts = x.attempts + 1, last_error = msg
    WHERE x.id = mail_failed.id AND x.claimed_by = claimer AND x.sent_at IS NULL AND x.failed_at IS NULL
    RETURNING x.* INTO o;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- The mail's account, or its main account once the account is gone.
    IF o.account_path IS NULL THEN
        SELECT a.path INTO o.account_path FROM tenancy.accounts a WHERE a.main_id = o.main_id AND a.id = o.main_id;
    END IF;
    IF o.account_path IS NULL THEN
        RETURN true;
    END IF;
    -- On Citus main_id is a plain column that routes the row (95_citus.sql).
    IF tenancy._citus_distributed() THEN
        INSERT INTO tenancy.outbox_failures (main_id, outbox_id, account_path, recipient, subject, error, failed_at)
        VALUES (tenancy.root_id(o.account_path), o.id, o.account_path, o.recipient, o.subject, msg, o.failed_at);
    ELSE
        INSERT INTO tenancy.outbox_failures (outbox_id, account_path, recipient, subject, error, failed_at)
        VALUES (o.id, o.account_path, o.recipient, o.subject, msg, o.failed_at);
    END IF;
    RETURN true;
END $$;

-- mail_queue(): rows waiting (not sent, not failed) and the age in seconds
-- of the oldest of them (0 when none), for /metrics.
CREATE FUNCTION tenancy.mail_queue(OUT depth bigint, OUT oldest_age_s double precision)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    PERFORM tenancy._require_gateway('tenancy.mail_queue()');
    SELECT count(*), coalesce(extract(epoch FROM now() - min(o.created_at)), 0)::double precision
    INTO depth, oldest_age_s
    FROM tenancy.outbox o WHERE o.sent_at IS NULL AND o.failed_at IS NULL;
END $$;

-- ---- function privileges ------------------------------------------------------------------------

REVOKE ALL ON FUNCTION tenancy._outbox_blank_done(),
    tenancy._enqueue_mail(text, tenancy.account_path, text, text, text, jsonb),
    tenancy._mail_message_id(bigint), tenancy._mail_branding(tenancy.account_path),
    tenancy._mail_check_claimer(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.mail_claim(text, integer, interval), tenancy.mail_sent(bigint, text),
    tenancy.mail_retry(bigint, text, text, interval, interval), tenancy.mail_failed(bigint, text, text),
    tenancy.mail_queue() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.mail_claim(text, integer, interval), tenancy.mail_sent(bigint, text),
    tenancy.mail_retry(bigint, text, text, interval, interval), tenancy.mail_failed(bigint, text, text),
    tenancy.mail_queue() TO tenancy_app;
