/* utf8: validating, cutting and repairing UTF-8 text (see utf8.h). No allocation except
 * utf8_repair's copy; no knowledge of JSON. */
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
    size_t len;

    if (n == 0)
        return 0;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3;
        if (s[0] == 0xE0)
            lo = 0xA0; /* overlong */
        else if (s[0] == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4;
        if (s[0] == 0xF0)
            lo = 0x90; /* overlong */
        else if (s[0] == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

bool utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0 || p[i] == 0)
            return false;
        i += n;
    }
    return true;
}

size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

size_t utf8_cut(const char *s, size_t len, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0)
            n = 1; /* an invalid byte stands alone */
        if (i + n > max)
            break;
        i += n;
    }
    return i;
}

char *utf8_repair(const char *s, size_t len, size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)s;
    char *out = malloc(len * 3 + 1); /* each invalid byte may become 3 bytes */
    size_t o = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            if (p[i] != 0) {
                memcpy(out + o, p + i, n);
                o += n;
            }
            i += n;
        }
    }
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return out;
}

void utf8_repair_in_place(char *s)
{
    unsigned char *p = (unsigned char *)s;
    size_t len = strlen(s);

    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0) {
            p[i++] = '?';
            continue;
        }
        i += n;
    }
}

const char *utf8_shown(char *buf, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s), i = 0, o = 0, chars = 0;

    while (i < len && chars < UTF8_SHOWN_CHARS) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0) {
            buf[o++] = '?';
            i++;
        } else {
            memcpy(buf + o, p + i, n);
            o += n;
            i += n;
        }
        chars++;
    }
    if (i < len) {
        memcpy(buf + o, "\xE2\x80\xA6", 3); /* … */
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}
