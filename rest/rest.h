/* rest: what the router and its handler files share. Not for the front-ends. */
#ifndef PARLEY_REST_H
#define PARLEY_REST_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "auth.h"
#include "notify.h"
#include "router.h"

struct router {
    const struct cfg *cfg;
    struct notify_sender *notify;
    int64_t started_mono_ms;
    /* request counters for /stats, updated by every worker thread */
    atomic_llong total_requests;
    atomic_llong successful;
    atomic_llong failed;
};

/* One request being answered. */
struct rt_ctx {
    struct router *r;
    struct db *db; /* NULL when the worker has no database */
    const struct rt_request *req;
    struct rt_response *res;
    const char *id; /* the {id} path segment, when the route has one */
    char key_name[sizeof((struct auth_key *)0)->name]; /* the API key's name, "" for none */
};

/* ---- answers (reply.c) ---- */
/* Answers with v serialized (steals v). */
void rt_json(struct rt_ctx *c, int status, json_t *v);
/* Answers with the contract's error body; fmt says what happened and what to do. */
void rt_error(struct rt_ctx *c, enum perr e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Answers 429 quota_exceeded for a message refused over its key's quota (q as
 * db_message_add left it), with resets_at beside code and message. */
void rt_quota_error(struct rt_ctx *c, const struct db_quota *q);
/* Answers 404 session_not_found, or 503 for a database failure. */
void rt_db_error(struct rt_ctx *c, enum perr e);
/* Reads the body as a JSON object into *out (new reference; an empty body is {}).
 * On failure answers 415 or 400 and returns non-zero. */
int rt_body_object(struct rt_ctx *c, json_t **out);
/* The query argument, or NULL. */
const char *rt_arg(const struct rt_ctx *c, const char *name);
/* Reads an integer query argument in [min, max], def when absent. On failure answers 400
 * invalid_field and returns non-zero. */
int rt_arg_int(struct rt_ctx *c, const char *name, int64_t min, int64_t max, int64_t def,
               int64_t *out);
/* Reads a boolean query argument (true, false, 1, 0), def when absent. On failure
 * answers 400 invalid_field and returns non-zero. */
int rt_arg_bool(struct rt_ctx *c, const char *name, bool def, bool *out);
/* Whether m is shown in a history read: superseded replies (SPEC 9) only with all. */
bool rt_message_shown(const struct db_message *m, bool all);
/* rt_message_json's fields, plus an assistant reply's status with all (?all=true: the
 * reader tells the newest reply from the superseded ones). New reference. */
json_t *rt_history_json(const struct db_message *m, bool all);
/* Needs the database: answers 503 and returns non-zero when the worker has none. */
int rt_need_db(struct rt_ctx *c);
/* Whether the request may go on: true when no key is needed (none stored and no
 * --require-auth) or it carries a valid one; otherwise answers 401 (503 without a
 * database) and returns false. Checked on every request, so revocation is immediate. */
bool rt_authorized(struct rt_ctx *c);
/* DNS-rebinding protection (SPEC 6): true when the Host is allowed (hostcheck.h) or keys
 * are required anyway (stored, or --require-auth); otherwise answers 403 forbidden (503
 * without a database) and returns false. */
bool rt_host_allowed(struct rt_ctx *c);

/* ---- JSON of stored rows (reply.c) ---- */
json_t *rt_session_json(const struct db_session *s);
json_t *rt_message_json(const struct db_message *m);

/* ---- handlers: h_meta.c ---- */
void h_root(struct rt_ctx *c);
void h_health(struct rt_ctx *c);
void h_stats(struct rt_ctx *c);
/* ---- h_sessions.c ---- */
void h_session_new(struct rt_ctx *c);
void h_session_list(struct rt_ctx *c);
void h_session_get(struct rt_ctx *c);
/* PATCH /sessions/{id}: reply_mode and title (SPEC 9). */
void h_session_patch(struct rt_ctx *c);
void h_session_delete(struct rt_ctx *c);
void h_session_clear(struct rt_ctx *c);
void h_message_post(struct rt_ctx *c);
/* ---- h_messages.c ---- */
void h_message_search(struct rt_ctx *c);
void h_session_export(struct rt_ctx *c);
/* ---- h_meta.c ---- */
void h_metrics(struct rt_ctx *c);
/* ---- h_static.c ---- */
void h_static(struct rt_ctx *c);
void h_demo(struct rt_ctx *c);
void h_docs(struct rt_ctx *c);
/* GET /openapi.json: schema/openapi.json, embedded at build time. */
void h_openapi(struct rt_ctx *c);

/* The route table's "METHOD /path" strings, for GET /. */
json_t *router_endpoints(void);

#endif
