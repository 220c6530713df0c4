/* names: validating display names and making the default and the LLM forms (names.h).
 * No allocation. */
#include "names.h"

#include <stdio.h>
#include <string.h>

#include "utf8.h"

bool name_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t chars = 0;

    if (!s || len == 0 || !utf8_valid(s, len))
        return false;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (p[i] < 0x20 || p[i] == 0x7f)
            return false;
        if (n == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0)
            return false; /* U+0080..U+009F */
        i += n;
        chars++;
    }
    return chars <= NAME_MAX_CHARS;
}

char *name_guest(char *out, const char *conn_id)
{
    snprintf(out, NAME_LEN, NAME_GUEST "%.4s", conn_id);
    return out;
}

char *name_llm(char *out, const char *name)
{
    const unsigned char *p = (const unsigned char *)name;
    size_t n = 0, len = strlen(name);

    for (size_t i = 0; i < len && n < 64;) {
        size_t k = utf8_seq(p + i, len - i);
        unsigned char c = p[i];
        out[n++] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                           c == '_' || c == '-'
                       ? (char)c
                       : '_';
        i += k ? k : 1;
    }
    if (n == 0)
        out[n++] = '_';
    out[n] = '\0';
    return out;
}
