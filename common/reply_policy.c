/* reply_policy: whether a chat gets an assistant reply under its session's reply_mode, and
 * the @-mention matcher that "mention" uses (reply_policy.h). No state, no allocation; not
 * the place that stores or changes a mode (db_*_sessions.c, rest/h_sessions.c). */
#include "reply_policy.h"

#include <stddef.h>
#include <string.h>

bool policy_mode_valid(const char *mode)
{
    return mode && (strcmp(mode, "always") == 0 || strcmp(mode, "mention") == 0 ||
                    strcmp(mode, "off") == 0);
}

/* Decodes the code point of the valid UTF-8 sequence at s (n bytes, n >= 1 once
 * trimmed to the sequence). Returns -1 for a byte that starts none. */
static long decode(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return s[0];
    if (n == 2 && (s[0] & 0xe0) == 0xc0)
        return (long)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
    if (n == 3 && (s[0] & 0xf0) == 0xe0)
        return (long)(s[0] & 0x0f) << 12 | (long)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
    if (n == 4 && (s[0] & 0xf8) == 0xf0)
        return (long)(s[0] & 0x07) << 18 | (long)(s[1] & 0x3f) << 12 | (long)(s[2] & 0x3f) << 6 |
               (s[3] & 0x3f);
    return -1;
}

/* Whether code point c is a letter, digit or "_" for the word boundary: ASCII exactly;
 * beyond it, everything but the punctuation, space and symbol blocks below. */
static bool word_char(long c)
{
    static const struct {
        long lo, hi;
    } not_word[] = {
        {0x80, 0xa9},     {0xab, 0xb4},     {0xb6, 0xb9},       /* Latin-1 controls, punctuation */
        {0xbb, 0xbf},     {0xd7, 0xd7},     {0xf7, 0xf7},       /* but ª µ º; × ÷ */
        {0x2000, 0x2bff},                                       /* punctuation, arrows, symbols */
        {0x2e00, 0x2e7f},                                       /* supplemental punctuation */
        {0x3000, 0x303f},                                       /* CJK punctuation and space */
        {0xfe10, 0xfe1f}, {0xfe30, 0xfe6f},                     /* vertical, small forms */
        {0xff01, 0xff0f}, {0xff1a, 0xff20},                     /* fullwidth punctuation */
        {0xff3b, 0xff40}, {0xff5b, 0xff65}, {0x1f000, 0x1faff}, /* emoji and pictographs */
    };

    if (c < 0) /* not a character: a boundary */
        return false;
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    for (size_t i = 0; i < sizeof not_word / sizeof not_word[0]; i++)
        if (c >= not_word[i].lo && c <= not_word[i].hi)
            return false;
    return true;
}

/* The code point that ends just before text + at (at > 0). */
static long char_before(const unsigned char *text, size_t at)
{
    size_t start = at - 1;

    while (start > 0 && at - start < 4 && (text[start] & 0xc0) == 0x80)
        start--;
    return decode(text + start, at - start);
}

/* The code point that begins at s. */
static long char_at(const unsigned char *s)
{
    size_t n = 1;

    if (s[0] >= 0xc0)
        while (n < 4 && (s[n] & 0xc0) == 0x80)
            n++;
    return decode(s, n);
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Whether s begins with name, ASCII letters compared without case. */
static bool starts_with(const char *s, const char *name, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!s[i] || lower(s[i]) != lower(name[i]))
            return false;
    return true;
}

bool policy_mentions(const char *text, const char *name)
{
    const unsigned char *t = (const unsigned char *)text;
    size_t len = name ? strlen(name) : 0;

    if (!text || len == 0)
        return false;
    for (const char *at = strchr(text, '@'); at; at = strchr(at + 1, '@')) {
        size_t off = (size_t)(at - text);
        if (off > 0 && word_char(char_before(t, off)))
            continue;
        if (!starts_with(at + 1, name, len))
            continue;
        if (at[1 + len] == '\0' || !word_char(char_at(t + off + 1 + len)))
            return true;
    }
    return false;
}

bool policy_wants_reply(const char *mode, const char *text, const char *model)
{
    if (mode && strcmp(mode, "off") == 0)
        return false;
    if (mode && strcmp(mode, "mention") == 0)
        return policy_mentions(text, "assistant") || policy_mentions(text, model);
    return true;
}
