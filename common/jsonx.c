/* jsonx: jansson helpers shared by REST and the broker. Not a JSON library. */
#include "jsonx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

char *jx_dump(const json_t *v, size_t *len)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(6));

    if (s && len)
        *len = strlen(s);
    return s;
}

enum perr jx_string(const json_t *obj, const char *name, bool required, size_t min_len,
                    size_t max_len, const char **out, char *why)
{
    json_t *v = json_object_get(obj, name);
    size_t n;

    if (!v || (json_is_null(v) && !required)) {
        if (!required)
            return PERR_OK;
        snprintf(why, JX_WHY_LEN, "field '%s' is required", name);
        return PERR_INVALID_FIELD;
    }
    if (!json_is_string(v)) {
        snprintf(why, JX_WHY_LEN, "field '%s' must be a string", name);
        return PERR_INVALID_FIELD;
    }
    n = utf8_chars(json_string_value(v), json_string_length(v));
    if (n < min_len || n > max_len) {
        if (min_len > 0 && n < min_len && min_len == 1)
            snprintf(why, JX_WHY_LEN, "field '%s' must be a non-empty string", name);
        else
            snprintf(why, JX_WHY_LEN, "field '%s' must be %zu to %zu characters long", name,
                     min_len, max_len);
        return PERR_INVALID_FIELD;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(why, JX_WHY_LEN, "field '%s' must not contain NUL characters", name);
        return PERR_INVALID_FIELD;
    }
    *out = json_string_value(v);
    return PERR_OK;
}

enum perr jx_bool(const json_t *obj, const char *name, bool *out, char *why)
{
    json_t *v = json_object_get(obj, name);

    if (!v || json_is_null(v))
        return PERR_OK;
    if (!json_is_boolean(v)) {
        snprintf(why, JX_WHY_LEN, "field '%s' must be true or false", name);
        return PERR_INVALID_FIELD;
    }
    *out = json_is_true(v);
    return PERR_OK;
}

enum perr jx_int(const json_t *obj, const char *name, bool required, int64_t min, int64_t max,
                 int64_t *out, char *why)
{
    json_t *v = json_object_get(obj, name);

    if (!v || json_is_null(v)) {
        if (!required)
            return PERR_OK;
        snprintf(why, JX_WHY_LEN, "field '%s' is required", name);
        return PERR_INVALID_FIELD;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        snprintf(why, JX_WHY_LEN, "field '%s' must be an integer from %lld to %lld", name,
                 (long long)min, (long long)max);
        return PERR_INVALID_FIELD;
    }
    *out = json_integer_value(v);
    return PERR_OK;
}

enum perr jx_parse_object(const char *body, size_t len, json_t **out, char *why)
{
    json_error_t err;
    /* NUL is valid JSON (\u0000); the field readers refuse it by name */
    json_t *v = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);

    if (!v) {
        snprintf(why, JX_WHY_LEN, "invalid JSON at line %d, column %d: %s", err.line, err.column,
                 err.text);
        return PERR_BAD_REQUEST;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        snprintf(why, JX_WHY_LEN, "the body must be a JSON object");
        return PERR_BAD_REQUEST;
    }
    *out = v;
    return PERR_OK;
}

/* ---- jx_buf ---- */

void jx_buf_raw(struct jx_buf *b, const char *s, size_t n)
{
    char *grown;

    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (!(grown = realloc(b->p, cap))) {
            b->oom = true;
            return;
        }
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void jx_buf_cstr(struct jx_buf *b, const char *s)
{
    jx_buf_raw(b, s, strlen(s));
}

void jx_buf_string(struct jx_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *run = p, *end = p + strlen(s);

    jx_buf_raw(b, "\"", 1);
    while (*p) {
        size_t n = utf8_seq(p, (size_t)(end - p));
        if (n > 1 || (n == 1 && *p >= 0x20 && *p != '"' && *p != '\\')) {
            p += n; /* plain: stays in the current run */
            continue;
        }
        jx_buf_raw(b, (const char *)run, (size_t)(p - run));
        if (n == 0) {
            jx_buf_raw(b, "\xef\xbf\xbd", 3); /* U+FFFD for a byte that is not UTF-8 */
        } else if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            jx_buf_raw(b, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            jx_buf_raw(b, esc, 6);
        }
        run = ++p;
    }
    jx_buf_raw(b, (const char *)run, (size_t)(p - run));
    jx_buf_raw(b, "\"", 1);
}

void jx_buf_int(struct jx_buf *b, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%lld", (long long)v);

    jx_buf_raw(b, num, (size_t)n);
}
