-- PHI redaction: phone numbers, email addresses and Luhn-valid card numbers.
-- Each row: the input and what is stored.
CREATE FUNCTION pg_temp.r(t text) RETURNS text LANGUAGE sql AS $$ SELECT tenancy.redact_phi(t) $$;

-- Realistic transcript sentences.
SELECT pg_temp.r(t) FROM (VALUES
    ('Sure, you can reach me at +1 (415) 555-0132 after five.'),
    ('My cell is 415-555-0132 and the office is 415.555.0199.'),
    ('Call the clinic on 020 7946 0958 or +44 20 7946 0958, or +44 (0)20 7946 0958.'),
    ('Mon numéro est le 06 12 34 56 78 ou +33 6 12 34 56 78.'),
    ('Ruf mich an: +49-30-1234567, danke!'),
    ('It''s one eight hundred, so 1-800-555-0199 extension 42.'),
    ('Spelled out by the caller: 5 5 5 0 1 3 2.'),
    ('My email is jane.doe+billing@mail.example.co.uk, thanks.'),
    ('Send it to JOHN_SMITH@Example.COM.'),
    ('The card is 4111 1111 1111 1111, expiry 12/27, CVV 123.'),
    ('Charge 5500-0000-0000-0004 please; the Amex is 378282246310005.'),
    ('Patient Zoë (DOB 1985-03-14) called from 555-0132-777 about order 88412231.')
) AS t(t);

-- Cards: separators, lengths 13 to 19, Luhn-valid only.
SELECT t, pg_temp.r(t) FROM (VALUES
    ('4111111111111111'),        -- Visa, no separators
    ('4111-1111-1111-1111'),     -- dashes
    ('4111 1111 1111 1111'),     -- spaces
    ('4222222222222'),           -- 13 digits
    ('6011000990139424'),        -- Discover
    ('4111111111111111110'),     -- 19 digits, Luhn-valid
    ('4111111111111112'),        -- 16 digits, Luhn-invalid: left alone
    ('4111 1111 1111 1112'),     -- grouped, Luhn-invalid: left alone as a whole
    ('1234567890123456789012'),  -- 22 digits: neither card nor phone
    ('4111.1111.1111.1111'),     -- dots are not card separators; card-shaped 16 digits: left alone
    ('card 4111111111111111 and order 4111111111111111') -- a card is a card even after "order"
) AS t(t);

-- Phones: the formats people use, and the 7..15 digit bounds.
SELECT t, pg_temp.r(t) FROM (VALUES
    ('555-0132'),                -- 7 digits: shortest phone
    ('555-013'),                 -- 6 digits: not a phone
    ('5550132'),
    ('(415) 555-0132'),
    ('(415)555-0132'),
    ('+1 415 555 0132'),
    ('+14155550132'),
    ('+44 (0) 20 7946 0958'),
    ('+123456789012345'),        -- 15 digits: E.164 maximum
    ('+1234567890123456'),       -- 16 digits: too long for a phone, not a card
    ('415 - 555 - 0132'),
    ('call 555-0132.'),          -- sentence full stop is not part of it
    ('(call 555-0132)'),
    ('"5550132"'),
    ('tel:+14155550132'),
    ('5 5 5 0 1 3 2 and 5 5 5'),
    ('555 0132 555 0199 555-0111'), -- a list of phones longer than a card: split, all redacted
    ('ID: 12345678 and tel:5550132')
) AS t(t);

-- Clearly not phones: dates, times, amounts, identifiers, order numbers.
SELECT t, pg_temp.r(t) FROM (VALUES
    ('on 2024-01-15 at 10:30:15'),
    ('on 15.01.2024 or 01/15/2024 or 15 01 2024'),
    ('on 2024-01-15 call 555-0132'),      -- a date does not swallow the phone after it
    ('2024-01-15T10:30:00Z'),
    ('between 2019-2023'),
    ('the total is 1234567.89 dollars'),
    ('$1234567 or €1234567 or £1234567'),
    ('1,234,567 people'),
    ('server 192.168.100.200'),
    ('order 12345678'),
    ('Order number: 12345678'),
    ('my order number is 12345678'),
    ('invoice #20240115'),
    ('#12345678'),
    ('tracking no. 1Z9999999999999999'),
    ('ticket 98765432, case 55501320'),
    ('reference ORD-12345678'),
    ('SKU A1234567 and 12345678abc'),
    ('version 1.2.3 build 4567')
) AS t(t);

-- The phone rule does use context: without a keyword an 8-digit number is a phone.
SELECT pg_temp.r('my number is 12345678') AS no_keyword,
       pg_temp.r('phone number 12345678') AS phone_keyword_is_not_an_order_keyword;

-- Emails: plus tags, subdomains, punctuation around them, non-addresses.
SELECT t, pg_temp.r(t) FROM (VALUES
    ('a+b.c@sub.domain.example.org'),
    ('first.last@example.io.'),
    ('<ops-team@corp.example.com>'),
    ('mailto:x_y%z@example.net?subject=hi'),
    ('a@b.com, c@d.org; e@f.net'),
    ('a@b.com-x'),
    ('user@localhost'),
    ('user@host.c'),
    ('user@123.456'),
    ('@handle and foo@ and x@@y.com'),
    ('jane5551234567@example.com'),
    ('...dots@example.com')
) AS t(t);

-- UTF-8: never split a character; non-Latin text around matches survives.
SELECT t, pg_temp.r(t), convert_from(convert_to(pg_temp.r(t), 'UTF8'), 'UTF8') = pg_temp.r(t) AS valid_utf8
FROM (VALUES
    ('josé.garcía@correo.es'),
    ('«ivan@mail.ru»'),
    ('“+7 912 345-67-89”'),
    ('電話は090-1234-5678です'),
    ('メール: taro@example.jp。'),
    ('emoji 📞5550132📞 and 😀a@b.com😀'),
    ('Привет, мой номер 8 (912) 345-67-89.')
) AS t(t);

-- Nothing to redact: returned unchanged. NULL in, NULL out.
SELECT pg_temp.r('No numbers or addresses here, only words and 42 apples.') AS unchanged,
       pg_temp.r('') AS empty,
       tenancy.redact_phi(NULL) IS NULL AS null_in;

-- Idempotent on its own output, and usable on a column.
SELECT pg_temp.r(pg_temp.r(t)) = pg_temp.r(t) AS idempotent
FROM (VALUES ('call +1 (415) 555-0132 or jane@example.com, card 4111 1111 1111 1111')) AS t(t);
CREATE TEMP TABLE transcript(line text);
INSERT INTO transcript VALUES ('agent: can I have your number?'), ('caller: it''s 415 555 0132');
SELECT tenancy.redact_phi(line) FROM transcript ORDER BY line;
