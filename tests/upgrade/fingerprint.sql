-- The fingerprint of an installed tenancy extension: one sorted text line per
-- fact ("object | aspect | value"), so that two installs can be diffed.
--
-- Used by tests/suites/11_upgrade.sh: a fresh install of the default version
-- and an install of an older version followed by ALTER EXTENSION UPDATE must
-- print the same lines. It covers every object that depends on the extension
-- (pg_depend deptype 'e') with its full definition, the extension's schema,
-- the cluster roles the install script makes, the pg_extension_config_dump
-- registrations and the rows of every extension table (the ones the install
-- script seeds: roles, role_permissions, plans, usage_kinds, protected_tables,
-- ...). Columns are compared by name, never by position (ALTER TABLE ADD
-- COLUMN appends). Left out, because they legitimately differ between two
-- installs: oids, sequence positions, random secrets (bytea values are shown
-- as their length), timestamps and snapshots (shown as set or null).
--
-- Run with psql -qAtX -f; it creates one temporary table and nothing else.
\set ON_ERROR_STOP 1
-- Every name outside pg_catalog comes out schema-qualified.
SET search_path = pg_catalog, pg_temp;
SET extra_float_digits = 0;
SET DateStyle = 'ISO, YMD';
CREATE TEMP TABLE fp (k text NOT NULL, a text NOT NULL, v text);

-- An ACL with the owner's default spelled out (NULL and an explicit default
-- mean the same), one grant per entry, sorted.
CREATE FUNCTION pg_temp.acl(acl aclitem[], kind "char", owner oid) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(string_agg(e, ' ' ORDER BY e COLLATE "C"), '(none)')
    FROM (SELECT DISTINCT format('%s:%s%s<-%s',
                                 CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END,
                                 x.privilege_type, CASE WHEN x.is_grantable THEN '*' ELSE '' END,
                                 pg_get_userbyid(x.grantor)) AS e
          FROM aclexplode(coalesce(acl, acldefault(kind, owner))) x) entries
$$;

CREATE TEMP VIEW members AS
SELECT d.classid, d.objid, pg_describe_object(d.classid, d.objid, 0) AS k
FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'tenancy'
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e';

-- Every member, so that an object no section below details still shows.
INSERT INTO fp SELECT k, 'member', classid::regclass::text FROM members;

-- ---- the extension, its schema, its dump registrations ----------------------
INSERT INTO fp
SELECT 'extension tenancy', 'version', extversion || ' relocatable=' || extrelocatable
       || ' schema=' || extnamespace::regnamespace::text || ' owner=' || pg_get_userbyid(extowner)
FROM pg_extension WHERE extname = 'tenancy'
UNION ALL
SELECT 'extension tenancy', 'config_dump ' || c.rel::regclass::text, coalesce(c.cond, '(null)')
FROM pg_extension e,
     unnest(e.extconfig, coalesce(e.extcondition, array_fill(NULL::text, ARRAY[cardinality(e.extconfig)]))) c(rel, cond)
WHERE e.extname = 'tenancy'
UNION ALL
SELECT 'schema ' || n.nspname, 'owner', pg_get_userbyid(n.nspowner)
FROM pg_namespace n JOIN pg_extension e ON e.extnamespace = n.oid AND e.extname = 'tenancy'
UNION ALL
SELECT 'schema ' || n.nspname, 'acl', pg_temp.acl(n.nspacl, 'n', n.nspowner)
FROM pg_namespace n JOIN pg_extension e ON e.extnamespace = n.oid AND e.extname = 'tenancy'
UNION ALL
SELECT 'schema ' || n.nspname, 'comment', obj_description(n.oid, 'pg_namespace')
FROM pg_namespace n JOIN pg_extension e ON e.extnamespace = n.oid AND e.extname = 'tenancy';

-- Objects in the schema that are not members (an upgrade script that made
-- something outside the extension, or a member dropped from it).
INSERT INTO fp
SELECT 'non-member ' || pg_describe_object('pg_class'::regclass, c.oid, 0), 'relkind', c.relkind::text
FROM pg_class c JOIN pg_extension e ON e.extnamespace = c.relnamespace AND e.extname = 'tenancy'
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND NOT EXISTS (SELECT FROM members m WHERE m.classid = 'pg_class'::regclass AND m.objid = c.oid)
UNION ALL
SELECT 'non-member ' || pg_describe_object('pg_proc'::regclass, p.oid, 0), 'prokind', p.prokind::text
FROM pg_proc p JOIN pg_extension e ON e.extnamespace = p.pronamespace AND e.extname = 'tenancy'
WHERE NOT EXISTS (SELECT FROM members m WHERE m.classid = 'pg_proc'::regclass AND m.objid = p.oid);

-- ---- the cluster roles the install script creates (tenancy_*) ---------------
INSERT INTO fp
SELECT 'role ' || r.rolname, 'attributes',
       format('super=%s inherit=%s createrole=%s createdb=%s login=%s replication=%s bypassrls=%s connlimit=%s config=%s',
              r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication,
              r.rolbypassrls, r.rolconnlimit, coalesce(array_to_string(r.rolconfig, ','), ''))
FROM pg_roles r WHERE r.rolname LIKE 'tenancy\_%'
UNION ALL
SELECT 'role ' || r.rolname, 'member of ' || g.rolname, 'admin=' || m.admin_option
FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid
WHERE r.rolname LIKE 'tenancy\_%' AND g.rolname LIKE 'tenancy\_%'
UNION ALL
SELECT 'role ' || r.rolname, 'comment', shobj_description(r.oid, 'pg_authid')
FROM pg_roles r WHERE r.rolname LIKE 'tenancy\_%' AND shobj_description(r.oid, 'pg_authid') IS NOT NULL;

-- ---- functions and procedures ------------------------------------------------
INSERT INTO fp
SELECT m.k, 'definition', CASE WHEN p.prokind = 'a' THEN NULL ELSE pg_get_functiondef(p.oid) END
FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
UNION ALL
SELECT m.k, 'attributes',
       format('kind=%s volatility=%s security_definer=%s leakproof=%s strict=%s parallel=%s config=%s owner=%s',
              p.prokind, p.provolatile, p.prosecdef, p.proleakproof, p.proisstrict, p.proparallel,
              coalesce(array_to_string(p.proconfig, ','), ''), pg_get_userbyid(p.proowner))
FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
UNION ALL
SELECT m.k, 'acl', pg_temp.acl(p.proacl, 'f', p.proowner)
FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
UNION ALL
SELECT m.k, 'aggregate',
       format('transfn=%s finalfn=%s combinefn=%s stype=%s initval=%s sortop=%s kind=%s',
              a.aggtransfn::regprocedure, a.aggfinalfn, a.aggcombinefn, format_type(a.aggtranstype, NULL),
              a.agginitval, a.aggsortop::regoperator, a.aggkind)
FROM members m JOIN pg_aggregate a ON m.classid = 'pg_proc'::regclass AND a.aggfnoid = m.objid;

-- ---- tables, views, sequences (and composite types' relations) --------------
CREATE TEMP VIEW rels AS
SELECT m.k, c.* FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
UNION ALL
SELECT 'type ' || format_type(t.oid, NULL), c.*
FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
JOIN pg_class c ON c.oid = t.typrelid;

INSERT INTO fp
SELECT r.k, 'relation',
       format('kind=%s persistence=%s rls=%s force_rls=%s replident=%s options=%s owner=%s partkey=%s inherits=%s',
              r.relkind, r.relpersistence, r.relrowsecurity, r.relforcerowsecurity, r.relreplident,
              (SELECT coalesce(string_agg(o, ',' ORDER BY o), '') FROM unnest(r.reloptions) o),
              pg_get_userbyid(r.relowner), CASE WHEN r.relkind = 'p' THEN pg_get_partkeydef(r.oid) END,
              (SELECT string_agg(i.inhparent::regclass::text, ',' ORDER BY i.inhseqno)
               FROM pg_inherits i WHERE i.inhrelid = r.oid))
FROM rels r
UNION ALL
SELECT r.k, 'acl', pg_temp.acl(r.relacl, CASE WHEN r.relkind = 'S' THEN 's' ELSE 'r' END::"char", r.relowner)
FROM rels r WHERE r.relkind <> 'c'
UNION ALL
-- Columns by name.
SELECT r.k, 'column ' || a.attname,
       concat_ws(' ', format_type(a.atttypid, a.atttypmod),
                 CASE WHEN a.attnotnull THEN 'NOT NULL' END,
                 CASE WHEN a.attgenerated = 's' THEN 'GENERATED ALWAYS AS (' || pg_get_expr(d.adbin, d.adrelid) || ') STORED'
                      ELSE 'DEFAULT ' || pg_get_expr(d.adbin, d.adrelid) END,
                 CASE a.attidentity WHEN 'a' THEN 'GENERATED ALWAYS AS IDENTITY'
                                    WHEN 'd' THEN 'GENERATED BY DEFAULT AS IDENTITY' END,
                 CASE WHEN a.attcollation <> t.typcollation THEN 'COLLATE ' || a.attcollation::regcollation::text END,
                 CASE WHEN a.attstorage <> t.typstorage THEN 'STORAGE ' || a.attstorage::text END,
                 CASE WHEN a.attstattarget >= 0 THEN 'STATISTICS ' || a.attstattarget END,
                 CASE WHEN a.attcompression <> '' THEN 'COMPRESSION ' || a.attcompression::text END,
                 -- (pg_attver=<number>: set on every column by this machine's server
                 -- build, a different number per table; not a real option)
                 'OPTIONS ' || (SELECT string_agg(o, ',' ORDER BY o) FROM unnest(a.attoptions) o
                                WHERE o NOT LIKE 'pg\_attver=%'),
                 CASE WHEN a.attacl IS NOT NULL THEN 'ACL ' || pg_temp.acl(a.attacl, 'c', r.relowner) END)
FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
UNION ALL
SELECT r.k, 'view', pg_get_viewdef(r.oid)
FROM rels r WHERE r.relkind IN ('v', 'm')
UNION ALL
SELECT r.k, 'constraint ' || c.conname, pg_get_constraintdef(c.oid)
FROM rels r JOIN pg_constraint c ON c.conrelid = r.oid
UNION ALL
SELECT r.k, 'index ' || i.indexrelid::regclass::text,
       pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisclustered THEN ' CLUSTERED' ELSE '' END
       || CASE WHEN i.indisreplident THEN ' REPLICA IDENTITY' ELSE '' END
       || CASE WHEN NOT i.indisvalid THEN ' INVALID' ELSE '' END
FROM rels r JOIN pg_index i ON i.indrelid = r.oid
UNION ALL
SELECT r.k, 'trigger ' || g.tgname, pg_get_triggerdef(g.oid) || ' ENABLED=' || g.tgenabled::text
FROM rels r JOIN pg_trigger g ON g.tgrelid = r.oid AND NOT g.tgisinternal
UNION ALL
SELECT r.k, 'policy ' || p.polname,
       format('cmd=%s permissive=%s roles=%s using=%s check=%s', p.polcmd, p.polpermissive,
              (SELECT string_agg(n, ',' ORDER BY n COLLATE "C")
               FROM unnest(p.polroles) x, LATERAL (SELECT CASE WHEN x = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x) END) r(n)),
              pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
FROM rels r JOIN pg_policy p ON p.polrelid = r.oid
UNION ALL
SELECT r.k, 'rule ' || w.rulename, pg_get_ruledef(w.oid) || ' ENABLED=' || w.ev_enabled::text
FROM rels r JOIN pg_rewrite w ON w.ev_class = r.oid AND w.rulename <> '_RETURN'
UNION ALL
SELECT r.k, 'statistics ' || s.stxname, pg_get_statisticsobjdef(s.oid)
FROM rels r JOIN pg_statistic_ext s ON s.stxrelid = r.oid
UNION ALL
SELECT r.k, 'sequence',
       format('type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
              format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
              (SELECT string_agg(d.refobjid::regclass::text || '.' || a.attname, ',')
               FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
               WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
                 AND d.deptype IN ('a', 'i')))
FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid
UNION ALL
-- Comments on the relation, its columns, indexes, constraints, triggers, policies.
SELECT r.k, 'comment' || CASE WHEN d.objsubid = 0 THEN '' ELSE ' on column ' || a.attname END, d.description
FROM rels r JOIN pg_description d ON d.classoid = 'pg_class'::regclass AND d.objoid = r.oid
LEFT JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = d.objsubid
UNION ALL
SELECT r.k, 'comment on index ' || i.indexrelid::regclass::text, obj_description(i.indexrelid, 'pg_class')
FROM rels r JOIN pg_index i ON i.indrelid = r.oid WHERE obj_description(i.indexrelid, 'pg_class') IS NOT NULL
UNION ALL
SELECT r.k, 'comment on constraint ' || c.conname, obj_description(c.oid, 'pg_constraint')
FROM rels r JOIN pg_constraint c ON c.conrelid = r.oid WHERE obj_description(c.oid, 'pg_constraint') IS NOT NULL
UNION ALL
SELECT r.k, 'comment on trigger ' || g.tgname, obj_description(g.oid, 'pg_trigger')
FROM rels r JOIN pg_trigger g ON g.tgrelid = r.oid WHERE obj_description(g.oid, 'pg_trigger') IS NOT NULL
UNION ALL
SELECT r.k, 'comment on policy ' || p.polname, obj_description(p.oid, 'pg_policy')
FROM rels r JOIN pg_policy p ON p.polrelid = r.oid WHERE obj_description(p.oid, 'pg_policy') IS NOT NULL;

-- ---- types --------------------------------------------------------------------
INSERT INTO fp
SELECT m.k, 'type',
       format('typtype=%s len=%s byval=%s align=%s storage=%s category=%s preferred=%s delim=%s collatable=%s '
              'default=%s notnull=%s input=%s output=%s receive=%s send=%s typmodin=%s typmodout=%s analyze=%s '
              'subscript=%s element=%s basetype=%s owner=%s',
              t.typtype, t.typlen, t.typbyval, t.typalign, t.typstorage, t.typcategory, t.typispreferred,
              t.typdelim, t.typcollation <> 0, t.typdefault, t.typnotnull, t.typinput, t.typoutput, t.typreceive,
              t.typsend, t.typmodin, t.typmodout, t.typanalyze, t.typsubscript,
              CASE WHEN t.typelem <> 0 THEN format_type(t.typelem, NULL) END,
              CASE WHEN t.typbasetype <> 0 THEN format_type(t.typbasetype, t.typtypmod) END,
              pg_get_userbyid(t.typowner))
FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
UNION ALL
SELECT m.k, 'acl', pg_temp.acl(t.typacl, 'T', t.typowner)
FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
UNION ALL
SELECT m.k, 'enum labels', string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
FROM members m JOIN pg_enum e ON m.classid = 'pg_type'::regclass AND e.enumtypid = m.objid
GROUP BY m.k
UNION ALL
SELECT m.k, 'domain constraint ' || c.conname, pg_get_constraintdef(c.oid)
FROM members m JOIN pg_constraint c ON m.classid = 'pg_type'::regclass AND c.contypid = m.objid
UNION ALL
SELECT m.k, 'range', format('subtype=%s opclass=%s canonical=%s subdiff=%s', format_type(r.rngsubtype, NULL),
                            r.rngsubopc::regclass, r.rngcanonical, r.rngsubdiff)
FROM members m JOIN pg_range r ON m.classid = 'pg_type'::regclass AND r.rngtypid = m.objid
UNION ALL
SELECT m.k, 'comment', obj_description(m.objid, 'pg_type')
FROM members m WHERE m.classid = 'pg_type'::regclass AND obj_description(m.objid, 'pg_type') IS NOT NULL;

-- ---- operators, operator classes and families, casts, event triggers --------
INSERT INTO fp
SELECT m.k, 'operator',
       format('kind=%s left=%s right=%s result=%s code=%s commutator=%s negator=%s restrict=%s join=%s '
              'merges=%s hashes=%s owner=%s',
              o.oprkind, format_type(nullif(o.oprleft, 0), NULL), format_type(nullif(o.oprright, 0), NULL),
              format_type(o.oprresult, NULL), o.oprcode::regprocedure,
              nullif(o.oprcom, 0)::regoperator, nullif(o.oprnegate, 0)::regoperator,
              nullif(o.oprrest, 0)::regprocedure, nullif(o.oprjoin, 0)::regprocedure,
              o.oprcanmerge, o.oprcanhash, pg_get_userbyid(o.oprowner))
FROM members m JOIN pg_operator o ON m.classid = 'pg_operator'::regclass AND o.oid = m.objid
UNION ALL
SELECT m.k, 'opclass', format('method=%s type=%s default=%s family=%s keytype=%s owner=%s',
                              am.amname, format_type(c.opcintype, NULL), c.opcdefault,
                              pg_describe_object('pg_opfamily'::regclass, c.opcfamily, 0),
                              format_type(nullif(c.opckeytype, 0), NULL), pg_get_userbyid(c.opcowner))
FROM members m JOIN pg_opclass c ON m.classid = 'pg_opclass'::regclass AND c.oid = m.objid
JOIN pg_am am ON am.oid = c.opcmethod
UNION ALL
SELECT m.k, format('operator %s (%s,%s)', o.amopstrategy, format_type(o.amoplefttype, NULL),
                   format_type(o.amoprighttype, NULL)),
       format('%s purpose=%s sortfamily=%s', o.amopopr::regoperator, o.amoppurpose,
              CASE WHEN o.amopsortfamily <> 0 THEN pg_describe_object('pg_opfamily'::regclass, o.amopsortfamily, 0) END)
FROM members m JOIN pg_amop o ON m.classid = 'pg_opfamily'::regclass AND o.amopfamily = m.objid
UNION ALL
SELECT m.k, format('function %s (%s,%s)', p.amprocnum, format_type(p.amproclefttype, NULL),
                   format_type(p.amprocrighttype, NULL)),
       p.amproc::regprocedure::text
FROM members m JOIN pg_amproc p ON m.classid = 'pg_opfamily'::regclass AND p.amprocfamily = m.objid
UNION ALL
SELECT m.k, 'cast', format('function=%s context=%s method=%s', nullif(c.castfunc, 0)::regprocedure,
                           c.castcontext, c.castmethod)
FROM members m JOIN pg_cast c ON m.classid = 'pg_cast'::regclass AND c.oid = m.objid
UNION ALL
SELECT m.k, 'event trigger', format('event=%s function=%s enabled=%s tags=%s owner=%s', t.evtevent,
                                    t.evtfoid::regprocedure, t.evtenabled, t.evttags, pg_get_userbyid(t.evtowner))
FROM members m JOIN pg_event_trigger t ON m.classid = 'pg_event_trigger'::regclass AND t.oid = m.objid
UNION ALL
-- Comments on any other member (functions, operators, opclasses, ...).
SELECT m.k, 'comment', d.description
FROM members m JOIN pg_description d ON d.classoid = m.classid AND d.objoid = m.objid AND d.objsubid = 0
WHERE m.classid NOT IN ('pg_class'::regclass, 'pg_type'::regclass);

-- ---- the rows of the extension's tables (what the install script seeds) ------
-- Each row as a JSON object (keys sorted, so by column name, not position),
-- with secrets, timestamps and snapshots masked.
DO $rows$
DECLARE
    r record;
    col record;
    expr text;
BEGIN
    FOR r IN SELECT m.k, c.oid FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
             WHERE c.relkind IN ('r', 'p')
    LOOP
        expr := 'to_jsonb(x)';
        FOR col IN SELECT a.attname, t.typname
                   FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                   WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
                     AND t.typname IN ('bytea', 'timestamptz', 'timestamp', 'date', 'time', 'timetz',
                                       'pg_snapshot', 'txid_snapshot', 'xid', 'xid8')
                   ORDER BY a.attname
        LOOP
            expr := format('jsonb_set(%s, %L, to_jsonb(%s))', expr, ARRAY[col.attname],
                           CASE WHEN col.typname = 'bytea'
                                THEN format('''bytea('' || length(x.%I) || '')''', col.attname)
                                ELSE format('CASE WHEN x.%I IS NULL THEN ''null'' ELSE ''set'' END', col.attname)
                           END);
        END LOOP;
        EXECUTE format('INSERT INTO fp SELECT %L, ''rows'', count(*)::text FROM %s', r.k, r.oid::regclass);
        EXECUTE format('INSERT INTO fp SELECT %L, ''row'', (%s)::text FROM %s x', r.k, expr, r.oid::regclass);
    END LOOP;
END
$rows$;

SELECT format('%s | %s | %s', k, a, l.line)
FROM fp, regexp_split_to_table(coalesce(v, '(null)'), E'\n') WITH ORDINALITY AS l(line, n)
ORDER BY k COLLATE "C", a COLLATE "C", v COLLATE "C", n;
