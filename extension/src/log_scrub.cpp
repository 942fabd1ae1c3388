// Credential scrubbing of server log text (see log_scrub.hpp).
//
// Rules:
//  * Credential-shaped tokens, anywhere (also inside quotes): "tnc_", "tns_" or
//    "tni_" (any case) not preceded by a letter or digit, then up to the
//    credential's number of "<digits>_" id groups (2, 1, 2), then the secret:
//    the longest run of base64url characters that follows, of any length (a
//    mistyped key is still mostly the key). The secret becomes REDACTED; the
//    prefix and ids stay, so a log still says which key failed.
//  * With literals on (the hook turns it on for text where a secret-carrying
//    function is called, see kSecretFunctions, or PASSWORD '...' appears):
//    every string literal ('...', E'...' with backslash escapes, U&'...',
//    B'...'), dollar-quoted string ($$...$$, $tag$...$tag$) and comment (--
//    and nested /* */) becomes 'REDACTED'. Unterminated ones run to the end of
//    the text.
//  * Double quotes are ambiguous in log text: in SQL they quote an identifier
//    (which may hold an apostrophe: "O'Brien"), but a PL/pgSQL context line
//    wraps a whole statement in them, unescaped (SQL statement "ALTER ROLE
//    "O'x" PASSWORD 'y'"). So the literals are found three times: treating
//    "..." as an identifier, ignoring double quotes, and treating only a
//    "..." without white space as an identifier; the union is scrubbed, so a
//    literal is covered when any of the three readings is right.
//  * Overlapping or touching scrubbed spans merge into one placeholder.
// Nothing here allocates or throws: it runs inside PostgreSQL's error reporting.
#include "log_scrub.hpp"
#include "ascii.hpp"

#include <cstring>

namespace tenancy {

namespace {

constexpr size_t kPlaceholderLen = sizeof kScrubPlaceholder - 1;

// Functions whose call makes every literal of the text a secret: those taking
// passwords, tokens, TOTP secrets or codes. Lower case. So does a PASSWORD
// followed by a literal (CREATE/ALTER ROLE; create_client() runs one).
constexpr const char *kSecretFunctions[] = {
    "login",
    "login_sub_user",
    "change_password",
    "accept_invitation",
    "create_main_account",
    "create_sub_user",
    "update_sub_user",
    "activate_sub_user",
    "create_client",
    "hash_password",
    "verify_password",
    "dummy_password_check",
    "_check_password",
    "password_needs_rehash",
    "authenticate",
    "_secret_hash",
    "_secret_equal",
    "totp",
    "totp_verify",
    "otpauth_uri",
    "verify_mfa",
    "confirm_mfa",
};
constexpr size_t kLongestSecretWord = 21;  // "password_needs_rehash"
// Longest dollar-quote tag, "$" included, searched for; longer ones are taken
// to run to the end (searching is O(text x tag)).
constexpr size_t kMaxDollarTag = 64;

using ascii::is_alnum;
using ascii::is_alpha;
using ascii::is_digit;
using ascii::lower;

bool is_word(unsigned char c) {
    return is_alnum(c) || c == '_';
}
bool is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool is_base64url(unsigned char c) {
    return is_alnum(c) || c == '-' || c == '_';
}
// A character that continues an SQL identifier (so a '$' after it is not a
// dollar quote, and an 'E' after it is not a string prefix).
bool is_ident_cont(unsigned char c) {
    return is_word(c) || c == '$' || c >= 0x80;
}
bool is_dollar_tag_start(unsigned char c) {
    return is_alpha(c) || c == '_' || c >= 0x80;
}
bool is_dollar_tag_cont(unsigned char c) {
    return is_dollar_tag_start(c) || is_digit(c);
}

struct Span {
    size_t start, end;  // [start, end)
    bool literal;       // written as 'REDACTED' rather than REDACTED
};

// How a lexer reads a double quote (see the rules above).
enum class DoubleQuotes { Identifier, Ignored, CompactIdentifier };

// Finds string literals, dollar-quoted strings and comments in order.
class LiteralLexer {
  public:
    LiteralLexer(const char *t, size_t n, DoubleQuotes dq) : t_(t), n_(n), dq_(dq) {}

    bool next(Span &s) {
        while (p_ < n_) {
            unsigned char c = t_[p_];
            unsigned char d = p_ + 1 < n_ ? t_[p_ + 1] : 0;
            if (c == '\'') {
                bool escapes =
                    p_ >= 1 && (t_[p_ - 1] == 'E' || t_[p_ - 1] == 'e') && token_start(p_ - 1);
                return emit(s, p_, quoted_end(p_ + 1, '\'', escapes));
            }
            if (c == '-' && d == '-') {
                const void *nl = std::memchr(t_ + p_, '\n', n_ - p_);
                return emit(s, p_, nl ? static_cast<const char *>(nl) - t_ : n_);
            }
            if (c == '/' && d == '*')
                return emit(s, p_, block_comment_end(p_));
            if (c == '$' && token_start(p_)) {
                size_t q = p_ + 1;
                if (q < n_ && is_dollar_tag_start(t_[q]))
                    while (q < n_ && is_dollar_tag_cont(t_[q]))
                        q++;
                if (q < n_ && t_[q] == '$')
                    return emit(s, p_, dollar_end(p_, q + 1));
            }
            if (c == '"' && dq_ == DoubleQuotes::Identifier) {
                p_ = last_end_ = quoted_end(p_ + 1, '"');
                continue;
            }
            if (c == '"' && dq_ == DoubleQuotes::CompactIdentifier && p_ >= not_compact_before_) {
                size_t end = compact_quoted_end(p_ + 1);
                if (end != 0) {
                    p_ = last_end_ = end;
                    continue;
                }
            }
            p_++;
        }
        return false;
    }

  private:
    bool emit(Span &s, size_t start, size_t end) {
        s = {start, end, true};
        p_ = last_end_ = end;
        return true;
    }
    // Whether a token may start at i: not in the middle of an identifier
    // (which may contain '$'), as right after a quoted string or identifier.
    bool token_start(size_t i) const {
        return i == 0 || i == last_end_ || !is_ident_cont(t_[i - 1]);
    }
    // After the opening quote at q - 1: the end of '...' or "..." (a doubled
    // quote stands for one; with escapes, a backslash escapes the next byte).
    size_t quoted_end(size_t q, char quote, bool escapes = false) const {
        while (q < n_) {
            if (escapes && t_[q] == '\\') {
                q += 2;
            } else if (t_[q] == quote) {
                if (q + 1 < n_ && t_[q + 1] == quote)
                    q += 2;
                else
                    return q + 1;
            } else {
                q++;
            }
        }
        return n_;
    }
    // As quoted_end for "...", but 0 when white space comes first. Double quotes
    // before that white space are then read as ignored, so that each byte is
    // looked at a bounded number of times.
    size_t compact_quoted_end(size_t q) {
        while (q < n_) {
            unsigned char c = t_[q];
            if (is_space(c)) {
                not_compact_before_ = q;
                return 0;
            }
            if (c == '"') {
                if (q + 1 < n_ && t_[q + 1] == '"')
                    q += 2;
                else
                    return q + 1;
            } else {
                q++;
            }
        }
        return n_;
    }
    size_t block_comment_end(size_t q) const {
        size_t depth = 0;
        while (q + 1 < n_) {
            if (t_[q] == '/' && t_[q + 1] == '*') {
                depth++, q += 2;
            } else if (t_[q] == '*' && t_[q + 1] == '/') {
                q += 2;
                if (--depth == 0)
                    return q;
            } else {
                q++;
            }
        }
        return n_;
    }
    // The opening tag is [open, body); the string ends after the same tag. A
    // tag too long to search for cheaply runs to the end of the text.
    size_t dollar_end(size_t open, size_t body) const {
        size_t tag = body - open;
        if (tag > kMaxDollarTag)
            return n_;
        for (size_t q = body; q + tag <= n_; q++) {
            const void *hit = std::memchr(t_ + q, '$', n_ - q);
            if (!hit)
                break;
            q = static_cast<const char *>(hit) - t_;
            if (q + tag <= n_ && std::memcmp(t_ + q, t_ + open, tag) == 0)
                return q + tag;
        }
        return n_;
    }

    const char *t_;
    size_t n_;
    DoubleQuotes dq_;
    size_t p_ = 0;
    size_t last_end_ = 0;  // where the last string, comment or quoted identifier ended
    size_t not_compact_before_ = 0;
};

// Finds the secret part of credential-shaped tokens in order.
class TokenScanner {
  public:
    TokenScanner(const char *t, size_t n) : t_(t), n_(n) {}

    bool next(Span &s) {
        while (p_ + 4 <= n_) {
            const void *hit = find_underscore(p_ + 3);
            if (!hit)
                break;
            size_t u = static_cast<const char *>(hit) - t_;  // the '_' after tnX
            size_t start = u - 3;
            p_ = u + 1;
            int ids = id_groups(start);
            if (ids == 0 || (start > 0 && is_alnum(t_[start - 1])))
                continue;
            size_t q = u + 1;
            for (int i = 0; i < ids; i++) {
                size_t r = q;
                while (r < n_ && is_digit(t_[r]))
                    r++;
                if (r == q || r >= n_ || t_[r] != '_')
                    break;
                q = r + 1;
            }
            size_t e = q;
            while (e < n_ && is_base64url(t_[e]))
                e++;
            p_ = e > p_ ? e : p_;
            if (e > q) {
                s = {q, e, false};
                return true;
            }
        }
        p_ = n_;
        return false;
    }

  private:
    const void *find_underscore(size_t from) const {
        return from < n_ ? std::memchr(t_ + from, '_', n_ - from) : nullptr;
    }
    // Number of id groups of the credential prefix at t[i..i+3), or 0.
    int id_groups(size_t i) const {
        if (lower(t_[i]) != 't' || lower(t_[i + 1]) != 'n')
            return 0;
        switch (lower(t_[i + 2])) {
            case 'c':
            case 'i':
                return 2;
            case 's':
                return 1;
            default:
                return 0;
        }
    }

    const char *t_;
    size_t n_;
    size_t p_ = 0;
};

// A source of spans in increasing order, with its current head.
template <class Source>
struct Head {
    Source src;
    Span cur{};
    bool has = false;
    bool on;
    Head(Source s, bool enabled) : src(s), on(enabled) { advance(); }
    void advance() { has = on && src.next(cur); }
};

// The union of all scrubbed spans, merged, in order.
class Spans {
  public:
    Spans(const char *t, size_t n, bool literals)
        : tokens_(TokenScanner(t, n), true),
          dq_(LiteralLexer(t, n, DoubleQuotes::Identifier), literals),
          plain_(LiteralLexer(t, n, DoubleQuotes::Ignored), literals),
          compact_(LiteralLexer(t, n, DoubleQuotes::CompactIdentifier), literals) {}

    bool next(Span &m) {
        if (!first(m))
            return false;
        for (;;) {
            bool grown = absorb(tokens_, m);
            grown = absorb(dq_, m) || grown;
            grown = absorb(plain_, m) || grown;
            grown = absorb(compact_, m) || grown;
            if (!grown)
                return true;
        }
    }

  private:
    template <class H>
    static void pick(H &h, Span &m, bool &found) {
        if (h.has && (!found || h.cur.start < m.start)) {
            m = h.cur;
            found = true;
        }
    }
    bool first(Span &m) {
        bool found = false;
        pick(tokens_, m, found);
        pick(dq_, m, found);
        pick(plain_, m, found);
        pick(compact_, m, found);
        return found;
    }
    // Takes into m every span of h that starts inside or right after it.
    template <class H>
    static bool absorb(H &h, Span &m) {
        bool grown = false;
        while (h.has && h.cur.start <= m.end) {
            if (h.cur.end > m.end)
                m.end = h.cur.end;
            m.literal = m.literal || h.cur.literal;
            if (h.cur.start < m.start)
                m.start = h.cur.start;
            h.advance();
            grown = true;
        }
        return grown;
    }

    Head<TokenScanner> tokens_;
    Head<LiteralLexer> dq_;
    Head<LiteralLexer> plain_;
    Head<LiteralLexer> compact_;
};

// Appends bytes to out while there is room; counts them all.
struct Writer {
    char *out;
    size_t cap;
    size_t len = 0;
    void put(const char *s, size_t n) {
        if (len < cap) {
            size_t room = cap - len;
            std::memcpy(out + len, s, n < room ? n : room);
        }
        len += n;
    }
};

}  // namespace

bool names_secret_function(const char *text, size_t len) noexcept {
    size_t i = 0;
    while (i < len) {
        if (!is_word(text[i])) {
            i++;
            continue;
        }
        size_t start = i;
        while (i < len && is_word(text[i]))
            i++;
        size_t n = i - start;
        if (n > kLongestSecretWord)
            continue;
        char word[kLongestSecretWord];
        for (size_t k = 0; k < n; k++)
            word[k] = static_cast<char>(lower(text[start + k]));
        // What follows: a call's "(" (after a closing '"' of a quoted name),
        // or PASSWORD's literal.
        size_t j = i;
        if (j < len && text[j] == '"')
            j++;
        while (j < len && is_space(text[j]))
            j++;
        if (j >= len)
            continue;
        if (n == 8 && std::memcmp(word, "password", 8) == 0) {
            unsigned char c = text[j];
            if (c == '\'' || c == '$' ||
                ((c == 'E' || c == 'e') && j + 1 < len && text[j + 1] == '\''))
                return true;
            continue;
        }
        if (text[j] != '(')
            continue;
        for (const char *w : kSecretFunctions)
            if (std::strlen(w) == n && std::memcmp(w, word, n) == 0)
                return true;
    }
    return false;
}

size_t scrub_log_text(const char *text, size_t len, bool literals, char *out, size_t cap) noexcept {
    Writer w{out, out ? cap : 0};
    Spans spans(text, len, literals);
    size_t pos = 0;
    Span s;
    while (spans.next(s)) {
        w.put(text + pos, s.start - pos);
        if (s.literal)
            w.put("'", 1);
        w.put(kScrubPlaceholder, kPlaceholderLen);
        if (s.literal)
            w.put("'", 1);
        pos = s.end;
    }
    w.put(text + pos, len - pos);
    return w.len;
}

size_t first_scrub_offset(const char *text, size_t len, bool literals) noexcept {
    Spans spans(text, len, literals);
    Span s;
    return spans.next(s) ? s.start : len;
}

}  // namespace tenancy
