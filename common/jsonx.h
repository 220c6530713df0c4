/* jsonx: small helpers on top of jansson for validating input and writing output.
 * Validation messages name the field, as the contract's invalid_field requires. */
#ifndef PARLEY_JSONX_H
#define PARLEY_JSONX_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "perr.h"

#define JX_WHY_LEN 256

/* ---- output ---- */
/* Returns a new malloc'd compact serialization of v (caller frees with free), its length
 * in *len; NULL only when out of memory. */
char *jx_dump(const json_t *v, size_t *len);

/* A growing buffer for writing JSON text directly, for hot paths where building jansson
 * objects costs more than the answer is worth. Any allocation failure sets oom and
 * makes the rest no-ops. */
struct jx_buf {
    char *p; /* NUL-terminated; owned: free(p) */
    size_t len, cap;
    bool oom;
};

void jx_buf_raw(struct jx_buf *b, const char *s, size_t n);
void jx_buf_cstr(struct jx_buf *b, const char *s); /* raw text */
/* s as a quoted, escaped JSON string; bytes that are not valid UTF-8 become U+FFFD. */
void jx_buf_string(struct jx_buf *b, const char *s);
void jx_buf_int(struct jx_buf *b, int64_t v);

/* ---- input ----
 * Each reads field name of obj. Absent (or null, where allowed) leaves *out as it was and
 * returns PERR_OK unless required. A wrong type or range returns PERR_INVALID_FIELD and
 * writes a message naming the field to why (JX_WHY_LEN bytes). Strings are borrowed from
 * obj: valid while obj lives. */
enum perr jx_string(const json_t *obj, const char *name, bool required, size_t min_len,
                    size_t max_len, const char **out, char *why);
enum perr jx_bool(const json_t *obj, const char *name, bool *out, char *why);
enum perr jx_int(const json_t *obj, const char *name, bool required, int64_t min, int64_t max,
                 int64_t *out, char *why);

/* Parses body as a JSON object. On failure returns PERR_BAD_REQUEST with jansson's line,
 * column and text in why. On success *out is a new reference. */
enum perr jx_parse_object(const char *body, size_t len, json_t **out, char *why);

#endif
