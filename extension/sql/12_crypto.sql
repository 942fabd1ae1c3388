-- Crypto primitives the identity functions build on (extension/src/totp.cpp,
-- password.cpp, phi_sql.cpp). See README "Crypto primitives".

-- TOTP (RFC 6238): HMAC-SHA-1, 30 s step, T0 = Unix epoch.
CREATE FUNCTION tenancy.totp(secret_base32 text, at timestamptz DEFAULT now(), digits int DEFAULT 6)
    RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_totp'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.totp(text, timestamptz, int) IS
    'RFC 6238 TOTP code (HMAC-SHA-1, 30 s step) of a base32 secret at a time';

-- The matched time step (store it to refuse a reused code), or NULL.
CREATE FUNCTION tenancy.totp_verify(secret_base32 text, code text, at timestamptz DEFAULT now(),
                                    "window" int DEFAULT 1, digits int DEFAULT 6)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'tenancy_totp_verify'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.totp_verify(text, text, timestamptz, int, int) IS
    'TOTP time step within +-window steps whose code equals code (constant-time), else NULL';

CREATE FUNCTION tenancy.new_totp_secret() RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_new_totp_secret'
    LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.new_totp_secret() IS
    '160 random bits as unpadded base32, for TOTP enrolment';

CREATE FUNCTION tenancy.otpauth_uri(secret text, account_label text, issuer text DEFAULT 'Tenancy')
    RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_otpauth_uri'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.otpauth_uri(text, text, text) IS
    'otpauth:// URI (Key Uri Format) for authenticator apps';

-- Passwords: argon2id, t=2, m=19 MiB, p=1. Deliberately expensive (COST), so
-- the planner evaluates them after cheaper conditions; never LEAKPROOF.
CREATE FUNCTION tenancy.hash_password(password text) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_hash_password'
    LANGUAGE C VOLATILE PARALLEL SAFE STRICT COST 10000;
COMMENT ON FUNCTION tenancy.hash_password(text) IS
    'argon2id hash (libsodium string format) of a password of 1 to 1024 bytes';

CREATE FUNCTION tenancy.verify_password(password text, hash text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_verify_password'
    LANGUAGE C STABLE PARALLEL SAFE STRICT COST 10000;
COMMENT ON FUNCTION tenancy.verify_password(text, text) IS
    'true when password matches an argon2 hash; false for a mismatch or a malformed hash';

CREATE FUNCTION tenancy.password_needs_rehash(hash text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_password_needs_rehash'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.password_needs_rehash(text) IS
    'true when hash is not argon2id with the current parameters';

CREATE FUNCTION tenancy.dummy_password_check(password text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_dummy_password_check'
    LANGUAGE C VOLATILE PARALLEL SAFE STRICT COST 10000;
COMMENT ON FUNCTION tenancy.dummy_password_check(text) IS
    'costs one verify_password and returns false (logins for unknown principals)';

-- Tokens and digests for API keys and session tokens (fast: never argon2).
CREATE FUNCTION tenancy.random_token(nbytes int DEFAULT 32) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_random_token'
    LANGUAGE C VOLATILE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.random_token(int) IS
    'nbytes (16..64) random bytes as URL-safe base64 without padding';

CREATE FUNCTION tenancy.sha256_hex(data text) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_sha256_hex'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.sha256_hex(text) IS 'SHA-256 of the text''s bytes, lower-case hex';

CREATE FUNCTION tenancy.sha256(data bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_sha256'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.sha256(bytea) IS 'SHA-256 digest (32 bytes)';

-- PHI redaction of transcripts: phone numbers, email addresses, Luhn-valid
-- card numbers become [PHONE], [EMAIL], [CARD].
CREATE FUNCTION tenancy.redact_phi(t text) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_redact_phi'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.redact_phi(text) IS
    'text with phone numbers, email addresses and Luhn-valid card numbers replaced by [PHONE], [EMAIL], [CARD]';
