-- TOTP (RFC 6238) and its helpers: tenancy.totp, totp_verify, new_totp_secret,
-- otpauth_uri.
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- The RFC's seed "12345678901234567890" in base32.
\set seed '''GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ'''

-- RFC 6238 Appendix B, SHA-1, 8 digits.
SELECT unix_time, tenancy.totp(:seed, to_timestamp(unix_time), 8) AS code, expected,
       tenancy.totp(:seed, to_timestamp(unix_time), 8) = expected AS ok
FROM (VALUES (59::bigint, '94287082'), (1111111109, '07081804'), (1111111111, '14050471'),
             (1234567890, '89005924'), (2000000000, '69279037'), (20000000000, '65353130'))
     AS v(unix_time, expected);

-- RFC 4226 Appendix D HOTP values: counter c is the TOTP step at 30*c seconds.
SELECT counter, tenancy.totp(:seed, to_timestamp(30 * counter), 6) AS code, expected,
       tenancy.totp(:seed, to_timestamp(30 * counter), 6) = expected AS ok
FROM (VALUES (0, '755224'), (1, '287082'), (2, '359152'), (3, '969429'), (4, '338314'),
             (5, '254676'), (6, '287922'), (7, '162583'), (8, '399871'), (9, '520489'))
     AS v(counter, expected);

-- The step is 30 s: the last second of step 1 and the first of step 2.
SELECT tenancy.totp(:seed, to_timestamp(59)) AS step1, tenancy.totp(:seed, to_timestamp(60)) AS step2;
-- Sub-second times belong to the step they fall in.
SELECT tenancy.totp(:seed, to_timestamp(59.999999)) = tenancy.totp(:seed, to_timestamp(59)) AS same_step;
-- 7 digits, zero-padded (HOTP counter 0 truncates to 1284755224).
SELECT tenancy.totp(:seed, to_timestamp(0), 7) AS seven, tenancy.totp(:seed, to_timestamp(0), 8) AS eight;
-- Zero padding to the full width: step 37037036 gives 07081804 (above).
SELECT length(tenancy.totp(:seed, to_timestamp(1111111109), 8)) AS width;
-- Default digits is 6, default time is now().
SELECT tenancy.totp(:seed) ~ '^[0-9]{6}$' AS six_digits_now;

-- Base32 as people type it: lower case, spaces, with or without padding.
SELECT tenancy.totp('gezd gnbv gy3t qojq gezd gnbv gy3t qojq', to_timestamp(59), 8) AS spaced_lower,
       tenancy.totp('JBSWY3DPEHPK3PXP', to_timestamp(1700000000)) =
           tenancy.totp('jbswy3dpehpk3pxp', to_timestamp(1700000000)) AS case_insensitive,
       tenancy.totp('MZXW6YQ=', to_timestamp(1700000000)) =
           tenancy.totp('MZXW6YQ', to_timestamp(1700000000)) AS padding_optional;

-- Bad secrets, digits and times: 22023.
SELECT q, pg_temp.err(q) FROM (VALUES
    ($$SELECT tenancy.totp('', now())$$),
    ($$SELECT tenancy.totp('   ', now())$$),
    ($$SELECT tenancy.totp('====', now())$$),
    ($$SELECT tenancy.totp('GEZDGNBV1', now())$$),
    ($$SELECT tenancy.totp('GEZD-GNBV', now())$$),
    ($$SELECT tenancy.totp('GEZDGNBVé', now())$$),
    ($$SELECT tenancy.totp('MZXW6=YQ', now())$$),
    ($$SELECT tenancy.totp('MZXW6YQ==', now())$$),
    ($$SELECT tenancy.totp('A', now())$$),
    ($$SELECT tenancy.totp('ABC', now())$$),
    ($$SELECT tenancy.totp('ABCDEF', now())$$),
    ($$SELECT tenancy.totp('GEZDGNBV', now(), 5)$$),
    ($$SELECT tenancy.totp('GEZDGNBV', now(), 9)$$),
    ($$SELECT tenancy.totp('GEZDGNBV', 'infinity')$$),
    ($$SELECT tenancy.totp('GEZDGNBV', '1969-12-31 23:59:59+00')$$)
) AS t(q);
-- STRICT: NULL in, NULL out.
SELECT tenancy.totp(NULL, now()) IS NULL AS null_secret, tenancy.totp(:seed, NULL) IS NULL AS null_time;

-- totp_verify returns the matched step: 1 for the code 287082 at t = 59
-- (step 1), within the default window of one step either side.
SELECT tenancy.totp_verify(:seed, '287082', to_timestamp(59)) AS exact,
       tenancy.totp_verify(:seed, '287082', to_timestamp(89)) AS one_step_late,
       tenancy.totp_verify(:seed, '287082', to_timestamp(29)) AS one_step_early,
       tenancy.totp_verify(:seed, '287082', to_timestamp(90)) AS two_steps_late,
       tenancy.totp_verify(:seed, '287082', to_timestamp(90), 2) AS window_two,
       tenancy.totp_verify(:seed, '287082', to_timestamp(89), 0) AS window_zero,
       tenancy.totp_verify(:seed, '755224', to_timestamp(0), 0) AS step_zero,
       tenancy.totp_verify(:seed, '755224', to_timestamp(30)) AS step_zero_from_one;
-- A wrong code, and codes that are not exactly six digits: NULL, no error.
SELECT code, tenancy.totp_verify(:seed, code, to_timestamp(59)) AS step
FROM unnest(ARRAY['287083', '', '28708', '2870822', ' 287082', '287082 ', 'abcdef', '２８７０８２',
                  '+87082', '-87082']) AS code;
-- Eight-digit codes with the digits argument.
SELECT tenancy.totp_verify(:seed, '94287082', to_timestamp(59), 1, 8) AS eight_digits,
       tenancy.totp_verify(:seed, '287082', to_timestamp(59), 1, 8) AS six_when_eight_expected;
-- Near the epoch, steps below 0 are not tried (no error).
SELECT tenancy.totp_verify(:seed, '755224', to_timestamp(0), 3) AS at_epoch;
-- Bad window, digits, secret: 22023; NULL arguments: NULL.
SELECT q, pg_temp.err(q) FROM (VALUES
    ($$SELECT tenancy.totp_verify('GEZDGNBV', '123456', now(), -1)$$),
    ($$SELECT tenancy.totp_verify('GEZDGNBV', '123456', now(), 11)$$),
    ($$SELECT tenancy.totp_verify('GEZDGNBV', '123456', now(), 1, 10)$$),
    ($$SELECT tenancy.totp_verify('GEZDGNB!', '123456', now())$$)
) AS t(q);
SELECT tenancy.totp_verify(NULL, '123456') IS NULL AS null_secret,
       tenancy.totp_verify(:seed, NULL) IS NULL AS null_code;

-- Fresh secrets: 160 bits, unpadded base32, different every time, usable.
SELECT tenancy.new_totp_secret() AS s1, tenancy.new_totp_secret() AS s2 \gset
SELECT :'s1' ~ '^[A-Z2-7]{32}$' AS well_formed, :'s1' <> :'s2' AS differ;
SELECT tenancy.totp_verify(:'s1', tenancy.totp(:'s1', to_timestamp(1700000000)),
                           to_timestamp(1700000000)) = 1700000000 / 30 AS round_trip;

-- otpauth URIs: label and issuer percent-encoded, secret normalised.
SELECT tenancy.otpauth_uri('jbsw y3dp ehpk 3pxp', 'alice@example.com');
SELECT tenancy.otpauth_uri('mzxw 6yq=', 'Zoë Müller/ops', 'Acme & Co: EU?');
SELECT q, pg_temp.err(q) FROM (VALUES
    ($$SELECT tenancy.otpauth_uri('', 'alice')$$),
    ($$SELECT tenancy.otpauth_uri('JBSWY3DP', '')$$),
    ($$SELECT tenancy.otpauth_uri('JBSWY3DP', 'alice', '')$$),
    ($$SELECT tenancy.otpauth_uri('JBSWY3D0', 'alice')$$),
    ($$SELECT tenancy.otpauth_uri('JBSWY3DPEHPK3PXP====', 'alice')$$)
) AS t(q);
