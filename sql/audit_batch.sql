-- Statement batches: the row trigger's entries of one statement are written
-- together when its executor finishes (audit.cpp). Every entry is there right
-- after its statement, and goes away exactly with its statement's changes.
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT tenancy.create_main_account('Batch Main', 'owner@batch.test', 'pw-batch-1') AS main \gset
SELECT a.main_id AS main_id, a.path::text AS main_path FROM tenancy.accounts a WHERE a.public_id = :'main' \gset
CREATE SCHEMA batch_test;
CREATE TABLE batch_test.items (id bigint PRIMARY KEY, val integer NOT NULL);
SELECT tenancy.protect('batch_test.items', 'agents');
CREATE TABLE batch_test.other (id bigint PRIMARY KEY, note text);
SELECT tenancy.protect('batch_test.other', 'agents');
CREATE FUNCTION batch_test.entries(tbl text, act text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM tenancy.audit_log WHERE target = tbl AND action = act $$;

-- 2,500 rows in one statement (the buffer is written every 1,000 entries and
-- at the end): every entry is visible to the next statement of the same
-- transaction, ids in row order.
BEGIN;
INSERT INTO batch_test.items (id, val, account_path)
SELECT g, g, (:main_id)::text::tenancy.account_path FROM generate_series(1, 2500) g;
SELECT batch_test.entries('batch_test.items', 'insert') AS inserted;
SELECT array_agg(id ORDER BY id) = array_agg(id ORDER BY (row_key ->> 'id')::bigint) AS ids_in_row_order,
       count(DISTINCT row_key ->> 'id') AS distinct_rows
FROM tenancy.audit_log WHERE target = 'batch_test.items';
COMMIT;
UPDATE batch_test.items SET val = val + 1;
SELECT batch_test.entries('batch_test.items', 'update') AS updated;

-- A statement that fails after its audit trigger buffered entries (a later
-- AFTER trigger raises at its 1,500th row, id 4500, after 1,000 entries were
-- written and 499 buffered): its rows and all its entries are gone, in an exception block as
-- in a transaction.
CREATE FUNCTION batch_test.fail_at_4500() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = 4500 THEN
        RAISE EXCEPTION 'row % refused', NEW.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_fail AFTER INSERT ON batch_test.items FOR EACH ROW EXECUTE FUNCTION batch_test.fail_at_4500();
DO $$
BEGIN
    INSERT INTO batch_test.items (id, val, account_path)
    SELECT g, g, (SELECT path FROM tenancy.accounts WHERE name = 'Batch Main')
    FROM generate_series(3001, 5000) g;
EXCEPTION WHEN raise_exception THEN
    RAISE NOTICE 'caught';
END $$;
BEGIN;
INSERT INTO batch_test.items (id, val, account_path)
SELECT g, g, (:main_id)::text::tenancy.account_path FROM generate_series(3001, 5000) g;
ROLLBACK;
SELECT count(*) AS rows_kept FROM batch_test.items WHERE id > 3000;
SELECT batch_test.entries('batch_test.items', 'insert') AS inserted_still;
DROP TRIGGER zz_fail ON batch_test.items;

-- An AFTER trigger whose exception block writes to another audited table and
-- then fails: that write's entry is rolled back with it, the statement's own
-- entries (buffered meanwhile) stay.
CREATE FUNCTION batch_test.side_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        INSERT INTO batch_test.other (id, note, account_path) VALUES (NEW.id, 'side', NEW.account_path);
        RAISE EXCEPTION 'undo the side write';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER zz_side AFTER INSERT ON batch_test.items FOR EACH ROW EXECUTE FUNCTION batch_test.side_write();
INSERT INTO batch_test.items (id, val, account_path)
SELECT g, g, (:main_id)::text::tenancy.account_path FROM generate_series(6001, 6010) g;
SELECT (SELECT count(*) FROM batch_test.other) AS side_rows,
       batch_test.entries('batch_test.other', 'insert') AS side_entries,
       (SELECT count(*) FROM tenancy.audit_log WHERE target = 'batch_test.items' AND (row_key ->> 'id')::bigint > 6000)
           AS own_entries;
DROP TRIGGER zz_side ON batch_test.items;

-- Statements inside a function (SPI), and COPY (no executor: written at once).
CREATE FUNCTION batch_test.add(n integer) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO batch_test.other (id, note, account_path)
    SELECT 10000 + g, 'from a function', (SELECT path FROM tenancy.accounts WHERE name = 'Batch Main')
    FROM generate_series(1, n) g;
    RETURN (SELECT count(*) FROM tenancy.audit_log WHERE target = 'batch_test.other');
END $$;
SELECT batch_test.add(1200) AS entries_seen_inside;
ALTER TABLE batch_test.other ALTER COLUMN account_path SET DEFAULT (:main_id)::text::tenancy.account_path;
COPY batch_test.other (id, note) FROM stdin;
20001	copied
20002	copied
\.
SELECT batch_test.entries('batch_test.other', 'insert') AS other_inserted;

-- All of it chains and verifies (sealed here or by the background sealer).
SELECT tenancy.audit_seal() >= 0 AS sealed;
SELECT ok, reason FROM tenancy.audit_verify(:'main');
DROP SCHEMA batch_test CASCADE;
