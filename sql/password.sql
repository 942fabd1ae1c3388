-- Passwords (argon2id), random tokens and SHA-256.
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

SELECT tenancy.hash_password('correct horse battery staple') AS h1,
       tenancy.hash_password('correct horse battery staple') AS h2 \gset
-- argon2id with t=2, m=19 MiB, p=1; a fresh salt every time.
SELECT :'h1' ~ '^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$' AS format,
       :'h1' <> :'h2' AS salted;
SELECT tenancy.verify_password('correct horse battery staple', :'h1') AS right_password,
       tenancy.verify_password('correct horse battery staple', :'h2') AS right_password_other_salt,
       tenancy.verify_password('correct horse battery stapl', :'h1') AS wrong_password,
       tenancy.verify_password('Correct horse battery staple', :'h1') AS wrong_case,
       tenancy.verify_password('', :'h1') AS empty_password,
       tenancy.verify_password(repeat('x', 1025), :'h1') AS too_long_password;

-- Non-ASCII passwords are bytes like any other; 1024 bytes is the limit.
SELECT tenancy.verify_password('pässwörd ключ 密码', tenancy.hash_password('pässwörd ключ 密码')) AS utf8,
       tenancy.verify_password(repeat('é', 512), tenancy.hash_password(repeat('é', 512))) AS max_length;

-- Malformed or hostile hashes: false, never an error or a crash.
SELECT label, tenancy.verify_password('secret', h) AS verified
FROM (VALUES
    ('empty', ''),
    ('garbage', 'not a hash'),
    ('bcrypt', '$2b$12$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0'),
    ('truncated', left(:'h1', 40)),
    ('no hash part', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA'),
    ('bad base64', '$argon2id$v=19$m=19456,t=2,p=1$!!!!$!!!!'),
    ('tampered', overlay(:'h1' placing (CASE WHEN right(:'h1', 1) = 'A' THEN 'B' ELSE 'A' END)
                         from length(:'h1') for 1)),
    ('huge memory', '$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$' || repeat('A', 43)),
    ('many passes', '$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHRzYWx0c2FsdA$' || repeat('A', 43)),
    ('zero memory', '$argon2id$v=19$m=0,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$' || repeat('A', 43)),
    ('too long', :'h1' || repeat('A', 200))
) AS t(label, h);

-- Rehash: current parameters no; weaker, stronger, argon2i or garbage yes.
SELECT label, tenancy.password_needs_rehash(h) AS needs_rehash
FROM (VALUES
    ('current', :'h1'),
    ('weaker', '$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$' || repeat('A', 43)),
    ('interactive', '$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$' || repeat('A', 43)),
    ('argon2i', '$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$' || repeat('A', 43)),
    ('garbage', 'not a hash'),
    ('empty', '')
) AS t(label, h);

-- The dummy check always says false, whatever the password.
SELECT tenancy.dummy_password_check('correct horse battery staple') AS dummy,
       tenancy.dummy_password_check('') AS dummy_empty,
       tenancy.dummy_password_check(repeat('x', 5000)) AS dummy_long;

-- hash_password refuses empty and over-long passwords.
SELECT q, pg_temp.err(q) FROM (VALUES
    ($$SELECT tenancy.hash_password('')$$),
    ($$SELECT tenancy.hash_password(repeat('x', 1025))$$),
    ($$SELECT tenancy.hash_password(repeat('é', 513))$$),
    ($$SELECT tenancy.hash_password(repeat('x', 1024)) IS NOT NULL$$)
) AS t(q);
SELECT tenancy.hash_password(NULL) IS NULL AS null_in_null_out,
       tenancy.verify_password(NULL, :'h1') IS NULL AS null_password;

-- None of these is LEAKPROOF; volatility as declared.
SELECT proname, provolatile, proleakproof, proparallel, proisstrict
FROM pg_proc
WHERE pronamespace = 'tenancy'::regnamespace
  AND proname IN ('hash_password', 'verify_password', 'password_needs_rehash', 'dummy_password_check',
                  'random_token', 'sha256_hex', 'sha256', 'totp', 'totp_verify', 'new_totp_secret',
                  'otpauth_uri', 'redact_phi')
ORDER BY proname;

-- Random tokens: URL-safe base64 without padding, 4*n/3 characters rounded up.
SELECT n, length(tenancy.random_token(n)) AS chars,
       tenancy.random_token(n) ~ '^[A-Za-z0-9_-]+$' AS url_safe
FROM unnest(ARRAY[16, 32, 33, 64]) AS n;
SELECT length(tenancy.random_token()) AS default_chars,
       (SELECT count(DISTINCT tenancy.random_token()) FROM generate_series(1, 100)) AS distinct_of_100;
SELECT q, pg_temp.err(q) FROM (VALUES
    ($$SELECT tenancy.random_token(15)$$),
    ($$SELECT tenancy.random_token(65)$$),
    ($$SELECT tenancy.random_token(-1)$$)
) AS t(q);

-- SHA-256: FIPS 180-2 vectors, and agreement with PostgreSQL's own sha256().
SELECT tenancy.sha256_hex('') AS empty,
       tenancy.sha256_hex('abc') AS abc,
       tenancy.sha256_hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq') AS two_blocks;
SELECT tenancy.sha256('\x00ff'::bytea) = pg_catalog.sha256('\x00ff'::bytea) AS same_as_builtin,
       tenancy.sha256_hex('ключ') = encode(pg_catalog.sha256(convert_to('ключ', 'UTF8')), 'hex') AS utf8_bytes,
       length(tenancy.sha256(''::bytea)) AS digest_bytes;
