/* reply: building answers (JSON bodies, the contract's error body) and reading request
 * input (body object, query arguments) for the handlers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "hostcheck.h"
#include "jsonx.h"
#include "log.h"
#include "quota.h"
#include "rest.h"
#include "utf8.h"

void rt_json(struct rt_ctx *c, int status, json_t *v)
{
    struct rt_response *res = c->res;

    free(res->body);
    res->body = v ? jx_dump(v, &res->body_len) : NULL;
    json_decref(v);
    if (!res->body) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        res->body = strdup(oom);
        res->body_len = res->body ? strlen(oom) : 0;
        status = 500;
    }
    res->status = status;
    res->content_type = "application/json";
}

void rt_error(struct rt_ctx *c, enum perr e, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    utf8_repair_in_place(msg); /* a path or id from the request may not be UTF-8 */
    rt_json(c, perr_http_status(e),
            json_pack("{s:{s:s, s:s}}", "error", "code", perr_code(e), "message", msg));
}

void rt_quota_error(struct rt_ctx *c, const struct db_quota *q)
{
    char msg[512], at[CLOCK_ISO_LEN];

    quota_resets_at(q->day, at);
    quota_message(q, quota_now_ms(c->r->cfg), msg, sizeof msg);
    rt_json(c, perr_http_status(PERR_QUOTA_EXCEEDED),
            json_pack("{s:{s:s, s:s, s:s}}", "error", "code", perr_code(PERR_QUOTA_EXCEEDED),
                      "message", msg, "resets_at", at));
}

void rt_db_error(struct rt_ctx *c, enum perr e)
{
    if (e == PERR_SESSION_NOT_FOUND)
        rt_error(c, e, "no session with id '%s'; GET /sessions lists them", c->id ? c->id : "");
    else if (e == PERR_INTERNAL)
        rt_error(c, e, "internal error; the server log has the details");
    else
        rt_error(c, PERR_UNAVAILABLE,
                 "the database is not available; try again shortly "
                 "(the server log says why)");
}

int rt_need_db(struct rt_ctx *c)
{
    if (c->db)
        return 0;
    rt_db_error(c, PERR_UNAVAILABLE);
    return -1;
}

bool rt_authorized(struct rt_ctx *c)
{
    const char *key = auth_bearer(c->req->authorization);
    char lookup[AUTH_LOOKUP_HEX + 1];
    struct auth_key *keys = NULL;
    size_t n = 0;
    int64_t active = 0;
    enum perr e;
    int found;

    if (rt_need_db(c))
        return false;
    if ((e = db_keys_active(c->db, &active))) {
        rt_db_error(c, e);
        return false;
    }
    if (active == 0 && !c->r->cfg->require_auth)
        return true;
    if (!key) {
        rt_error(c, PERR_UNAUTHORIZED,
                 "this service needs an API key: send it as "
                 "'Authorization: Bearer KEY' (an administrator makes one with 'parley-rest "
                 "keys add NAME')");
        c->res->challenge = true;
        return false;
    }
    auth_lookup(key, lookup);
    if ((e = db_key_candidates(c->db, lookup, &keys, &n))) { /* one row for a key in use */
        rt_db_error(c, e);
        return false;
    }
    found = auth_verify(keys, n, key);
    if (found >= 0) /* the default author name of what the request stores (SPEC 9) */
        snprintf(c->key_name, sizeof c->key_name, "%s", keys[found].name);
    free(keys);
    if (found < 0) {
        rt_error(c, PERR_UNAUTHORIZED,
                 "the API key is not valid (mistyped or revoked); ask "
                 "an administrator for a key");
        c->res->challenge = true;
        return false;
    }
    return true;
}

bool rt_host_allowed(struct rt_ctx *c)
{
    const char *host = c->req->host;
    int64_t active = 0;
    enum perr e;

    if (host_allowed(c->r->cfg, host) || c->r->cfg->require_auth)
        return true;
    if (rt_need_db(c))
        return false;
    if ((e = db_keys_active(c->db, &active))) {
        rt_db_error(c, e);
        return false;
    }
    if (active > 0)
        return true;
    rt_error(c, PERR_FORBIDDEN,
             "this service has no API key, so it answers only requests for loopback hosts "
             "or its own names (DNS rebinding protection), not Host '%.64s'; add "
             "--allowed-host %.64s (or --public-url) or configure an API key "
             "('parley-rest keys add NAME')",
             host, host);
    return false;
}

/* Whether the Content-Type is application/json, parameters (charset) aside. */
static int is_json_type(const char *ct)
{
    size_t n = strcspn(ct, ";");

    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return n == 16 && strncasecmp(ct, "application/json", 16) == 0;
}

int rt_body_object(struct rt_ctx *c, json_t **out)
{
    const struct rt_request *req = c->req;
    char why[JX_WHY_LEN];
    enum perr e;

    if (req->body_len == 0) {
        *out = json_object();
        return 0;
    }
    if (!req->content_type || !is_json_type(req->content_type)) {
        rt_error(c, PERR_UNSUPPORTED_MEDIA,
                 "send the body as JSON with Content-Type: "
                 "application/json (got %s)",
                 req->content_type ? req->content_type : "none");
        return -1;
    }
    if ((e = jx_parse_object(req->body, req->body_len, out, why))) {
        rt_error(c, e, "%s", why);
        return -1;
    }
    return 0;
}

const char *rt_arg(const struct rt_ctx *c, const char *name)
{
    for (size_t i = 0; i < c->req->n_args; i++)
        if (strcmp(c->req->args[i].name, name) == 0)
            return c->req->args[i].value;
    return NULL;
}

int rt_arg_int(struct rt_ctx *c, const char *name, int64_t min, int64_t max, int64_t def,
               int64_t *out)
{
    const char *v = rt_arg(c, name);

    if (!v) {
        *out = def;
        return 0;
    }
    if (cfg_parse_int(v, min, max, out) < 0) {
        rt_error(c, PERR_INVALID_FIELD,
                 "query parameter '%s' must be an integer from %lld "
                 "to %lld",
                 name, (long long)min, (long long)max);
        return -1;
    }
    return 0;
}

int rt_arg_bool(struct rt_ctx *c, const char *name, bool def, bool *out)
{
    const char *v = rt_arg(c, name);

    if (!v) {
        *out = def;
        return 0;
    }
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
        *out = true;
    } else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *out = false;
    } else {
        rt_error(c, PERR_INVALID_FIELD, "query parameter '%s' must be true or false", name);
        return -1;
    }
    return 0;
}

bool rt_message_shown(const struct db_message *m, bool all)
{
    return all || !m->status || strcmp(m->status, "superseded") != 0;
}

json_t *rt_history_json(const struct db_message *m, bool all)
{
    json_t *o = rt_message_json(m);

    if (o && all && m->status)
        json_object_set_new(o, "status", json_string(m->status));
    return o;
}

json_t *rt_session_json(const struct db_session *s)
{
    json_t *o = json_pack("{s:s, s:s?, s:s, s:s, s:I, s:I, s:s, s:s}", "session_id", s->id, "title",
                          s->title, "model", s->model ? s->model : "", "reply_mode",
                          s->reply_mode[0] ? s->reply_mode : POLICY_DEFAULT, "message_count",
                          (json_int_t)s->message_count, "clients", (json_int_t)s->clients,
                          "created_at", s->created_at, "updated_at", s->updated_at);

    if (o && s->channel)
        json_object_set_new(o, "channel", json_string(s->channel));
    return o;
}

json_t *rt_message_json(const struct db_message *m)
{
    json_t *o =
        json_pack("{s:I, s:I, s:s, s:s, s:s}", "id", (json_int_t)m->id, "seq", (json_int_t)m->seq,
                  "role", m->role, "content", m->content, "created_at", m->created_at);

    if (o && m->author_name) /* who said it (SPEC 9); none for replies */
        json_object_set_new(
            o, "author",
            json_pack("{s:s, s:s?}", "name", m->author_name, "connection_id", m->connection_id));
    return o;
}
