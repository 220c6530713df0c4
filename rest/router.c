/* router: the route table, path matching, and the request counters. Handlers live in
 * h_*.c, one file per resource; answers are built with reply.c. */
#include "router.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "rest.h"

enum access { PRIVATE, PUBLIC }; /* PUBLIC: served without an API key */

struct route {
    const char *method;
    const char *pattern; /* "{id}" matches one path segment */
    void (*handler)(struct rt_ctx *c);
    enum access access;
};

static const struct route routes[] = {
    {"GET", "/", h_root, PUBLIC},
    {"GET", "/health", h_health, PUBLIC},
    {"GET", "/stats", h_stats, PRIVATE},
    {"POST", "/sessions/new", h_session_new, PRIVATE},
    {"GET", "/sessions", h_session_list, PRIVATE},
    {"GET", "/sessions/{id}", h_session_get, PRIVATE},
    {"PATCH", "/sessions/{id}", h_session_patch, PRIVATE},
    {"DELETE", "/sessions/{id}", h_session_delete, PRIVATE},
    {"POST", "/sessions/{id}/clear", h_session_clear, PRIVATE},
    {"POST", "/sessions/{id}/messages", h_message_post, PRIVATE},
    {"GET", "/sessions/{id}/messages", h_message_search, PRIVATE},
    {"GET", "/sessions/{id}/export", h_session_export, PRIVATE},
    {"GET", "/metrics", h_metrics, PRIVATE},
    {"GET", "/demo", h_demo, PUBLIC},
    {"GET", "/docs", h_docs, PUBLIC},
    {"GET", "/openapi.json", h_openapi, PUBLIC},
};

#define N_ROUTES (sizeof routes / sizeof routes[0])

struct router *router_new(const struct cfg *cfg)
{
    struct router *r = calloc(1, sizeof *r);

    if (!r)
        return NULL;
    r->cfg = cfg;
    r->started_mono_ms = clock_mono_ms();
    r->notify = notify_sender_for(cfg);
    if (!r->notify) {
        free(r);
        return NULL;
    }
    return r;
}

void router_free(struct router *r)
{
    if (!r)
        return;
    notify_sender_free(r->notify);
    free(r);
}

void rt_response_cleanup(struct rt_response *res)
{
    if (!res)
        return;
    free(res->body);
    res->body = NULL;
}

json_t *router_endpoints(void)
{
    json_t *list = json_array();
    char line[64];

    for (size_t i = 0; i < N_ROUTES; i++) {
        snprintf(line, sizeof line, "%s %s", routes[i].method, routes[i].pattern);
        json_array_append_new(list, json_string(line));
    }
    return list;
}

/* Matches path against pattern; on success *id points into path at the {id} segment,
 * copied to idbuf (NUL-terminated). */
static int match(const char *pattern, const char *path, char *idbuf, size_t idsize)
{
    const char *p = pattern, *s = path;

    while (*p && *s) {
        if (strncmp(p, "{id}", 4) == 0) {
            size_t n = strcspn(s, "/");
            if (n == 0 || n >= idsize)
                return 0;
            memcpy(idbuf, s, n);
            idbuf[n] = '\0';
            s += n;
            p += 4;
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    return *p == '\0' && *s == '\0';
}

static void count(struct router *r, int status)
{
    atomic_fetch_add(&r->total_requests, 1);
    if (status < 400)
        atomic_fetch_add(&r->successful, 1);
    else
        atomic_fetch_add(&r->failed, 1);
}

void router_handle(struct router *r, struct db *db, const struct rt_request *req,
                   struct rt_response *res)
{
    struct rt_ctx c = {.r = r, .db = db, .req = req, .res = res};
    const char *method = strcmp(req->method, "HEAD") == 0 ? "GET" : req->method;
    char id[128];
    bool path_known = false, literal_known = false;

    memset(res, 0, sizeof *res);
    if (!rt_host_allowed(&c))
        goto out;
    if (req->body_too_large) {
        rt_error(&c, PERR_TOO_LARGE,
                 "the request body is larger than %lld bytes "
                 "(--max-message-size)",
                 (long long)r->cfg->max_message_size);
        goto out;
    }
    for (size_t i = 0; i < N_ROUTES; i++) {
        bool literal = !strstr(routes[i].pattern, "{id}");
        /* A path a literal route names (/sessions/new) is never an {id}. */
        if ((!literal && literal_known) || !match(routes[i].pattern, req->path, id, sizeof id))
            continue;
        path_known = true;
        literal_known = literal_known || literal;
        if (strcmp(routes[i].method, method) != 0) {
            size_t n = strlen(res->allow);
            snprintf(res->allow + n, sizeof res->allow - n, "%s%s", n ? ", " : "",
                     routes[i].method);
            continue;
        }
        c.id = strstr(routes[i].pattern, "{id}") ? id : NULL;
        res->allow[0] = '\0';
        if (routes[i].access == PUBLIC || rt_authorized(&c))
            routes[i].handler(&c);
        goto out;
    }
    if (path_known) {
        rt_error(&c, PERR_METHOD_NOT_ALLOWED, "%s is not allowed on %s; use %s", req->method,
                 req->path, res->allow);
        goto out;
    }
    if (strcmp(method, "GET") == 0) {
        h_static(&c); /* a file of www/, or 404 */
        goto out;
    }
    rt_error(&c, PERR_NOT_FOUND, "no route for %s %s; GET / lists the endpoints", req->method,
             req->path);
out:
    count(r, res->status);
}

/* The value of a hex digit, or -1. */
static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int rt_url_decode(char *s, bool plus_is_space)
{
    char *out = s;

    for (; *s; s++) {
        if (*s == '%') {
            int hi, lo;
            if (!s[1] || !s[2])
                return -1;
            hi = hex_digit(s[1]);
            lo = hex_digit(s[2]);
            if (hi < 0 || lo < 0)
                return -1;
            *out++ = (char)(hi * 16 + lo);
            s += 2;
        } else {
            *out++ = plus_is_space && *s == '+' ? ' ' : *s;
        }
    }
    *out = '\0';
    return 0;
}

void rt_parse_query(char *buf, struct rt_request *req)
{
    char *save = NULL;

    for (char *kv = strtok_r(buf, "&", &save); kv && req->n_args < RT_MAX_ARGS;
         kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (eq)
            *eq = '\0';
        if (rt_url_decode(kv, true) < 0 || (eq && rt_url_decode(eq + 1, true) < 0))
            continue;
        req->args[req->n_args].name = kv;
        req->args[req->n_args].value = eq ? eq + 1 : "";
        req->n_args++;
    }
}
