/* crest: the client's REST calls (libcurl easy interface, one blocking request at a time).
 *
 * Used for what the WebSocket protocol does not carry: /stats, /health, /sessions and
 * history. A request waits at most --timeout seconds (10 in interactive use). */
#ifndef PARLEY_CLIENT_CREST_H
#define PARLEY_CLIENT_CREST_H

#include <jansson.h>
#include <stddef.h>

struct crest {
    const char *base;    /* e.g. http://127.0.0.1:8000, no trailing slash needed; borrowed */
    const char *api_key; /* may be NULL; borrowed */
    long timeout_s;
};

/* One answer: status and body. */
struct crest_reply {
    long status; /* HTTP status */
    char *body;  /* owned, NUL-terminated */
    size_t len;
    json_t *json; /* new reference when the body parsed as JSON, else NULL */
};

/* ---- setup (once per process) ---- */
int crest_global_init(void);
void crest_global_cleanup(void);

/* ---- requests ---- */
/* Sends method path (relative to base) with body (JSON text, or NULL for none). Returns 0
 * when an HTTP answer came back (any status) with *out filled (free with crest_reply_cleanup),
 * or -1 with a readable reason in err. */
int crest_call(const struct crest *c, const char *method, const char *path, const char *body,
               struct crest_reply *out, char *err, size_t errlen);
void crest_reply_cleanup(struct crest_reply *r);
/* The error message of a JSON error body ({"error": {"message"}}), or a fallback naming the
 * status; borrowed from r (valid until crest_reply_cleanup) or static. */
const char *crest_error_text(const struct crest_reply *r);
/* base + path as a full URL into out. */
void crest_url(const struct crest *c, const char *path, char *out, size_t size);

#endif
