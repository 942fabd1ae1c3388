// PHI redaction of transcripts (see phi_redaction.hpp).
//
// Rules, applied left to right in one pass:
//  * Email: local part [A-Za-z0-9._%+-] or non-ASCII letters, '@', two or more
//    dot-separated labels (letters, digits, inner '-', non-ASCII letters), the
//    last one (the TLD) two or more letters. Becomes [EMAIL].
//  * Number runs: digit groups joined by one separator (" ", "-", ".", " - ",
//    "(", ")", " (", ") ", ")-"), optionally led by '+' or '('. The longest
//    prefix (in whole groups) that is a card or a phone is replaced:
//      - [CARD]: 13-19 digits, separators only " " or "-", no '+' or '(', and
//        the Luhn checksum holds;
//      - [PHONE]: 7-15 digits (E.164's maximum), unless it is "clearly not a
//        phone": a date (also checked on its own, so a date never merges into
//        a following phone), a decimal number (exactly two groups joined by
//        '.'), an IPv4 address, a year range (1900-2099 twice, joined by '-'),
//        or the run follows a keyword such as "order", "invoice", "ticket",
//        "tracking", "ref", "account" (fillers "number", "no", "#", "is" may
//        sit between). A run led by '+' is always a phone.
//    A card-shaped run (one group, groups of four, or 4-6-5; any separators)
//    of 16-19 digits that fails Luhn is left alone as a whole.
//    A run glued to a word ("ORD-12345678", "A1234567", "12345678abc"), or led
//    by '#', '$', '£' or '€', is not a phone or card.
// Matches consist of ASCII bytes and whole UTF-8 characters only.
#include "phi_redaction.hpp"
#include "ascii.hpp"

#include <cstdint>
#include <cstring>
#include <vector>

namespace tenancy {

namespace {

constexpr size_t kMinPhoneDigits = 7;
constexpr size_t kMaxPhoneDigits = 15;
constexpr size_t kMinCardDigits = 13;
constexpr size_t kMaxCardDigits = 19;

using ascii::is_alnum;
using ascii::is_alpha;
using ascii::is_digit;
using ascii::lower;

// Decodes one UTF-8 character at t[pos]; returns its length, or 0 when the
// bytes there are not a well-formed character.
size_t decode_utf8(std::string_view t, size_t pos, uint32_t &cp) {
    unsigned char c = static_cast<unsigned char>(t[pos]);
    size_t len;
    uint32_t min;
    if (c < 0x80) {
        cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (pos + len > t.size())
        return 0;
    for (size_t i = 1; i < len; ++i) {
        unsigned char cc = static_cast<unsigned char>(t[pos + i]);
        if ((cc & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

// A non-ASCII character that can be part of a word (letters of other
// scripts), as opposed to punctuation, symbols, spaces and emoji.
bool is_word_codepoint(uint32_t cp) {
    if (cp < 0xC0 || cp == 0xD7 || cp == 0xF7)
        return false;
    if (cp >= 0x2000 && cp <= 0x2BFF)
        return false;  // punctuation, symbols, arrows
    if (cp >= 0x3000 && cp <= 0x303F)
        return false;  // CJK punctuation
    if (cp >= 0xE000 && cp <= 0xF8FF)
        return false;  // private use
    if (cp >= 0xFE30 && cp <= 0xFE4F)
        return false;  // CJK compatibility forms
    if (cp == 0xFEFF)
        return false;
    if (cp >= 0xFF00 && cp <= 0xFF20)
        return false;  // fullwidth punctuation
    if (cp >= 0xFF3B && cp <= 0xFF40)
        return false;
    if (cp >= 0xFF5B && cp <= 0xFF65)
        return false;
    if (cp >= 0x1F000)
        return false;  // emoji and beyond
    return true;
}

// Length of the non-ASCII word character starting at pos, or 0.
size_t word_char_at(std::string_view t, size_t pos) {
    uint32_t cp;
    size_t len = decode_utf8(t, pos, cp);
    return (len > 1 && is_word_codepoint(cp)) ? len : 0;
}

// Length of the non-ASCII word character ending just before end (not going
// below low), or 0.
size_t word_char_before(std::string_view t, size_t end, size_t low) {
    size_t start = end;
    while (start > low && end - start < 4) {
        --start;
        if ((static_cast<unsigned char>(t[start]) & 0xC0) != 0x80)
            break;
    }
    if (start == end)
        return 0;
    size_t len = word_char_at(t, start);
    return (len == end - start) ? len : 0;
}

bool is_local_ascii(unsigned char c) {
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

struct Span {
    size_t begin, end;
};

// The email around the '@' at `at`, not reaching below `low`.
bool email_at(std::string_view t, size_t at, size_t low, Span &span) {
    size_t begin = at;
    while (begin > low) {
        unsigned char c = static_cast<unsigned char>(t[begin - 1]);
        if (c < 0x80) {
            if (!is_local_ascii(c))
                break;
            --begin;
        } else {
            size_t len = word_char_before(t, begin, low);
            if (len == 0)
                break;
            begin -= len;
        }
    }
    while (begin < at && t[begin] == '.')
        ++begin;
    if (begin == at)
        return false;

    // Domain labels; remember the end of the last label that can be a TLD.
    size_t n = t.size(), pos = at + 1, end = 0;
    int labels = 0;
    while (pos < n) {
        size_t label_begin = pos;
        while (pos < n) {
            unsigned char c = static_cast<unsigned char>(t[pos]);
            if (c < 0x80) {
                if (!is_alnum(c) && c != '-')
                    break;
                ++pos;
            } else {
                size_t len = word_char_at(t, pos);
                if (len == 0)
                    break;
                pos += len;
            }
        }
        size_t label_end = pos;
        while (label_end > label_begin && t[label_end - 1] == '-')
            --label_end;
        if (label_end == label_begin || t[label_begin] == '-')
            break;
        ++labels;
        bool tld_like = true;  // letters only (any non-ASCII word character counts)
        for (size_t i = label_begin; i < label_end; ++i) {
            unsigned char c = static_cast<unsigned char>(t[i]);
            if (c < 0x80 && !is_alpha(c))
                tld_like = false;
        }
        if (labels >= 2 && tld_like && label_end - label_begin >= 2)
            end = label_end;
        if (labels >= 2 && !tld_like) {
            // "a@b.com-x": the TLD is the letters before the '-'.
            size_t hyphen = label_begin;
            while (hyphen < label_end && t[hyphen] != '-')
                ++hyphen;
            bool letters = hyphen < label_end && hyphen - label_begin >= 2;
            for (size_t i = label_begin; letters && i < hyphen; ++i) {
                unsigned char c = static_cast<unsigned char>(t[i]);
                if (c < 0x80 && !is_alpha(c))
                    letters = false;
            }
            if (letters)
                end = hyphen;
            break;
        }
        if (label_end < pos)
            break;  // stopped at a trailing '-'
        if (pos + 1 < n && t[pos] == '.' &&
            (is_alnum(static_cast<unsigned char>(t[pos + 1])) || word_char_at(t, pos + 1) > 0)) {
            ++pos;
            continue;
        }
        break;
    }
    if (end == 0)
        return false;
    span = {begin, end};
    return true;
}

std::vector<Span> find_emails(std::string_view t) {
    std::vector<Span> spans;
    size_t low = 0;
    for (size_t pos = 0; pos < t.size(); ++pos) {
        if (t[pos] != '@')
            continue;
        Span s;
        if (email_at(t, pos, low, s)) {
            spans.push_back(s);
            low = s.end;
            pos = s.end - 1;
        }
    }
    return spans;
}

// Can a number start at pos (not glued to a word, not money, not "#123")?
bool number_can_start(std::string_view t, size_t pos) {
    if (pos == 0)
        return true;
    unsigned char c = static_cast<unsigned char>(t[pos - 1]);
    if (is_alnum(c) || c == '_' || c == '#' || c == '$' || c == '+')
        return false;
    if ((c == '-' || c == '/' || c == '.') && pos >= 2 &&
        is_alnum(static_cast<unsigned char>(t[pos - 2])))
        return false;  // ORD-123, v1.2, 12/34
    if (c == ':' && pos >= 2 && is_digit(static_cast<unsigned char>(t[pos - 2])))
        return false;  // 10:30 (but "tel:+1..." and "ID: 123" may start)
    if (pos >= 2 && t.compare(pos - 2, 2, "\xC2\xA3") == 0)
        return false;  // £
    if (pos >= 3 && t.compare(pos - 3, 3, "\xE2\x82\xAC") == 0)
        return false;  // €
    return true;
}

// Does a number ending at end stop there (not glued to a following word)?
bool number_can_end(std::string_view t, size_t end) {
    if (end >= t.size())
        return true;
    unsigned char c = static_cast<unsigned char>(t[end]);
    if (is_alnum(c) || c == '_')
        return false;
    if ((c == '-' || c == '/' || c == '.' || c == ':') && end + 1 < t.size() &&
        is_alnum(static_cast<unsigned char>(t[end + 1])))
        return false;
    return true;
}

size_t digits_from(std::string_view t, size_t pos, size_t limit) {
    size_t end = pos;
    while (end < limit && is_digit(static_cast<unsigned char>(t[end])))
        ++end;
    return end;
}

unsigned long value_of(std::string_view t, size_t begin, size_t end) {
    unsigned long v = 0;
    for (size_t i = begin; i < end && i < begin + 9; ++i)
        v = v * 10 + (t[i] - '0');
    return v;
}

// A date at pos: YYYY-M-D or D-M-YYYY / M-D-YYYY (or two-digit years), with
// '-', '.', '/' (or ' ' for four-digit years) used twice, values plausible.
// Returns its end, or 0.
size_t date_at(std::string_view t, size_t pos, size_t limit) {
    size_t g[3][2];
    size_t p = pos;
    char sep = 0;
    for (int i = 0; i < 3; ++i) {
        size_t e = digits_from(t, p, limit);
        if (e == p || e - p > 4)
            return 0;
        g[i][0] = p, g[i][1] = e;
        if (i == 2) {
            p = e;
            break;
        }
        if (e + 1 >= limit)
            return 0;
        char s = t[e];
        if (s != '-' && s != '.' && s != '/' && s != ' ')
            return 0;
        if (i == 0)
            sep = s;
        if (s != sep)
            return 0;
        p = e + 1;
    }
    if (!number_can_end(t, p) || (p < limit && is_digit(static_cast<unsigned char>(t[p]))))
        return 0;
    size_t len[3];
    unsigned long v[3];
    for (int i = 0; i < 3; ++i)
        len[i] = g[i][1] - g[i][0], v[i] = value_of(t, g[i][0], g[i][1]);
    auto year_ok = [&](int i) {
        return (len[i] == 4 && v[i] >= 1900 && v[i] <= 2099) || (len[i] == 2 && sep != ' ');
    };
    if (len[0] == 4 && year_ok(0) && len[1] <= 2 && len[2] <= 2 && v[1] >= 1 && v[1] <= 12 &&
        v[2] >= 1 && v[2] <= 31)
        return p;
    if (len[0] <= 2 && len[1] <= 2 && year_ok(2) && v[0] >= 1 && v[1] >= 1 && v[0] <= 31 &&
        v[1] <= 31 && (v[0] <= 12 || v[1] <= 12))
        return p;
    return 0;
}

// Separators allowed between digit groups, longest first.
const char *const kSeparators[] = {" - ", ") -", " (", ") ", ")-", " -",
                                   "- ",  " ",   "-",  ".",  "(",  ")"};

bool word_is(std::string_view t, size_t begin, size_t end, const char *const *words) {
    for (const char *const *w = words; *w; ++w) {
        size_t len = std::strlen(*w);
        if (len != end - begin)
            continue;
        bool same = true;
        for (size_t i = 0; i < len && same; ++i)
            same = lower(static_cast<unsigned char>(t[begin + i])) == (unsigned char)(*w)[i];
        if (same)
            return true;
    }
    return false;
}

const char *const kNumberKeywords[] = {
    "order",      "orders",       "invoice", "ref",         "reference",   "ticket",   "case",
    "tracking",   "confirmation", "booking", "reservation", "transaction", "txn",      "account",
    "acct",       "policy",       "claim",   "serial",      "sku",         "id",       "pin",
    "zip",        "postcode",     "item",    "part",        "model",       "receipt",  "shipment",
    "parcel",     "package",      "batch",   "lot",         "record",      "customer", "member",
    "membership", "iban",         "routing", nullptr};
const char *const kFillers[] = {"no",  "nr", "num",  "number", "nbr",  "is",
                                "was", "my", "your", "the",    nullptr};

// Do the words before pos say this number is an order/ticket/... number?
bool keyword_before(std::string_view t, size_t pos) {
    size_t p = pos;
    for (int words = 0; words < 4; ++words) {
        while (p > 0 && (t[p - 1] == ' ' || t[p - 1] == '\t' || t[p - 1] == ':' ||
                         t[p - 1] == '#' || t[p - 1] == '.' || t[p - 1] == '-'))
            --p;
        size_t end = p;
        while (p > 0 && end - p <= 16 && is_alpha(static_cast<unsigned char>(t[p - 1])))
            --p;
        if (p == end || end - p > 16)
            return false;
        if (word_is(t, p, end, kNumberKeywords))
            return true;
        if (!word_is(t, p, end, kFillers))
            return false;
    }
    return false;
}

// NotPhone: the run is clearly something else; no shorter prefix is tried.
enum class Kind { None, NotPhone, Phone, Card };

struct Group {
    size_t begin, end;
    const char *sep_before;  // nullptr for the first group
};

}  // namespace

bool luhn_valid(std::string_view s) {
    int sum = 0, count = 0;
    for (size_t i = s.size(); i-- > 0;) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (!is_digit(c))
            continue;
        int d = c - '0';
        if (count % 2 == 1) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
        ++count;
    }
    return count > 0 && sum % 10 == 0;
}

namespace {

// Grouped as cards are printed: one group, groups of four (the last may be
// shorter), or Amex-style 4-6-4/4-6-5. Separators do not matter here.
bool card_shaped(const std::vector<Group> &groups) {
    size_t count = groups.size();
    if (count == 1)
        return true;
    auto len = [&](size_t i) { return groups[i].end - groups[i].begin; };
    if (count == 3 && len(0) == 4 && len(1) == 6 && (len(2) == 4 || len(2) == 5))
        return true;
    for (size_t i = 0; i + 1 < count; ++i)
        if (len(i) != 4)
            return false;
    return len(count - 1) <= 4;
}

Kind classify(std::string_view t, const std::vector<Group> &groups, size_t count, bool plus,
              bool paren, bool keyword) {
    bool whole = count == groups.size();
    size_t digits = 0;
    bool card_seps = true, all_dots = true;
    std::string all;
    for (size_t i = 0; i < count; ++i) {
        digits += groups[i].end - groups[i].begin;
        all.append(t.substr(groups[i].begin, groups[i].end - groups[i].begin));
        if (i > 0) {
            const char *s = groups[i].sep_before;
            if (std::strcmp(s, " ") != 0 && std::strcmp(s, "-") != 0)
                card_seps = false;
            if (std::strcmp(s, ".") != 0)
                all_dots = false;
        }
    }
    if (!plus && !paren && card_seps && digits >= kMinCardDigits && digits <= kMaxCardDigits &&
        luhn_valid(all))
        return Kind::Card;
    // A card-shaped run of 16-19 digits that fails Luhn: not a card, and too
    // long for a phone; its first groups are not taken as a phone either.
    if (whole && !plus && !paren && digits > kMaxPhoneDigits && card_shaped(groups))
        return Kind::NotPhone;
    if (digits < kMinPhoneDigits || digits > kMaxPhoneDigits)
        return Kind::None;
    if (plus)
        return Kind::Phone;
    if (keyword)
        return Kind::NotPhone;
    if (count == 2 && all_dots)
        return Kind::NotPhone;     // 1234567.89
    if (count == 4 && all_dots) {  // 192.168.100.200
        bool ip = true;
        for (size_t i = 0; i < 4; ++i)
            ip = ip && groups[i].end - groups[i].begin <= 3 &&
                 value_of(t, groups[i].begin, groups[i].end) <= 255;
        if (ip)
            return Kind::NotPhone;
    }
    if (count == 2 && groups[0].end - groups[0].begin == 4 &&
        groups[1].end - groups[1].begin == 4 && std::strchr(groups[1].sep_before, '-') != nullptr &&
        std::strchr(groups[1].sep_before, '(') == nullptr &&
        std::strchr(groups[1].sep_before, ')') == nullptr) {  // 2019-2023
        unsigned long a = value_of(t, groups[0].begin, groups[0].end);
        unsigned long b = value_of(t, groups[1].begin, groups[1].end);
        if (a >= 1900 && a <= 2099 && b >= 1900 && b <= 2099)
            return Kind::NotPhone;
    }
    return Kind::Phone;
}

}  // namespace

std::string redact_phi(std::string_view t) {
    const std::vector<Span> emails = find_emails(t);
    std::string out;
    out.reserve(t.size() + 16);
    size_t next_email = 0;
    size_t pos = 0, n = t.size();
    std::vector<Group> groups;
    while (pos < n) {
        if (next_email < emails.size() && pos == emails[next_email].begin) {
            out.append("[EMAIL]");
            pos = emails[next_email].end;
            ++next_email;
            continue;
        }
        size_t limit = next_email < emails.size() ? emails[next_email].begin : n;
        unsigned char c = static_cast<unsigned char>(t[pos]);

        // Where does a digit run start: after an optional '+' or '('.
        bool plus = false, paren = false;
        size_t first = pos;
        if (c == '+' || c == '(') {
            if (pos + 1 < limit && is_digit(static_cast<unsigned char>(t[pos + 1])) &&
                number_can_start(t, pos)) {
                plus = c == '+';
                paren = c == '(';
                first = pos + 1;
            } else {
                out.push_back(static_cast<char>(c));
                ++pos;
                continue;
            }
        } else if (!is_digit(c)) {
            out.push_back(static_cast<char>(c));
            ++pos;
            continue;
        }

        if (!number_can_start(t, pos)) {
            // Part of a word or an amount: copy the digits and move on.
            size_t end = digits_from(t, first, limit);
            out.append(t.substr(pos, end - pos));
            pos = end;
            continue;
        }
        if (!plus && !paren) {
            size_t date_end = date_at(t, pos, limit);
            if (date_end != 0) {
                out.append(t.substr(pos, date_end - pos));
                pos = date_end;
                continue;
            }
        }

        // Collect the groups, at most 19 digits (the longest card) after the
        // first group.
        groups.clear();
        size_t p = first, digits = 0;
        const char *sep = nullptr;
        for (;;) {
            size_t e = digits_from(t, p, limit);
            if (!groups.empty() && digits + (e - p) > kMaxCardDigits)
                break;
            groups.push_back({p, e, sep});
            digits += e - p;
            sep = nullptr;
            for (const char *s : kSeparators) {
                size_t len = std::strlen(s);
                if (e + len < limit && t.compare(e, len, s) == 0 &&
                    is_digit(static_cast<unsigned char>(t[e + len]))) {
                    sep = s;
                    p = e + len;
                    break;
                }
            }
            if (sep == nullptr)
                break;
        }

        bool keyword = keyword_before(t, pos);
        size_t run_end = groups.back().end;
        Kind kind = Kind::None;
        size_t count = groups.size();
        if (!number_can_end(t, run_end))
            --count;  // glued to a word: only shorter prefixes
        for (; count > 0; --count) {
            kind = classify(t, groups, count, plus, paren, keyword);
            if (kind != Kind::None)
                break;
        }
        if (kind == Kind::None || kind == Kind::NotPhone) {
            out.append(t.substr(pos, run_end - pos));
            pos = run_end;
            continue;
        }
        out.append(kind == Kind::Card ? "[CARD]" : "[PHONE]");
        pos = groups[count - 1].end;
    }
    return out;
}

bool is_valid_utf8(std::string_view bytes) {
    size_t pos = 0;
    while (pos < bytes.size()) {
        uint32_t cp;
        size_t len = decode_utf8(bytes, pos, cp);
        if (len == 0)
            return false;
        pos += len;
    }
    return true;
}

}  // namespace tenancy
