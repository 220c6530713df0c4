/* h_meta: GET /, GET /health and GET /stats: what the service is and how it is doing. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "rest.h"

/* Copies the host part of a Host header ("example.com:8000", "[::1]:8000") into out.
 * Returns 0, or -1 when there is none or it has characters a hostname cannot have. */
static int host_only(const char *host, char *out, size_t size)
{
    size_t n;

    if (!host || !*host)
        return -1;
    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (!end)
            return -1;
        n = (size_t)(end - host) + 1;
    } else {
        n = strcspn(host, ":");
    }
    if (n == 0 || n >= size)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char ch = host[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == ':' || ch == '[' || ch == ']'))
            return -1;
    }
    memcpy(out, host, n);
    out[n] = '\0';
    return 0;
}

void h_root(struct rt_ctx *c)
{
    const struct cfg *cfg = c->r->cfg;
    char host[256], url[320];

    if (cfg->public_ws_url) {
        snprintf(url, sizeof url, "%s", cfg->public_ws_url);
    } else {
        if (host_only(c->req->host, host, sizeof host) < 0)
            snprintf(host, sizeof host, "%s", cfg->bind ? cfg->bind : "127.0.0.1");
        /* an HTTPS parley-rest (--tls-cert) goes with a wss:// broker */
        snprintf(url, sizeof url, "%s://%s:%d/ws", cfg->tls_cert ? "wss" : "ws", host,
                 cfg->ws_port);
    }
    rt_json(c, 200,
            json_pack("{s:s, s:s, s:o, s:s}", "name", "parley", "version", PARLEY_VERSION,
                      "endpoints", router_endpoints(), "ws_url", url));
}

static int64_t uptime_s(const struct router *r)
{
    return (clock_mono_ms() - r->started_mono_ms) / 1000;
}

/* The live brokers for /health: [{node_id, connections, started_at, last_seen_ms}] by
 * node_id (a new reference). */
static json_t *brokers_json(const struct db_live *live)
{
    json_t *a = json_array();

    for (size_t i = 0; a && i < live->n_nodes; i++) {
        const struct db_live_node *n = &live->nodes[i];
        json_array_append_new(a, json_pack("{s:s, s:I, s:s, s:I}", "node_id", n->node_id,
                                           "connections", (json_int_t)n->connections, "started_at",
                                           n->started_at, "last_seen_ms",
                                           (json_int_t)n->last_seen_ms));
    }
    return a;
}

void h_health(struct rt_ctx *c)
{
    struct db_live live = {0};
    bool db_ok =
        c->db && db_ping(c->db) == PERR_OK && db_live_read(c->db, clock_now_ms(), &live) == PERR_OK;

    rt_json(c, db_ok ? 200 : 503,
            json_pack("{s:s, s:s, s:{s:b, s:I}, s:o, s:I}", "status",
                      db_ok && live.up ? "healthy" : "degraded", "database", db_ok ? "ok" : "error",
                      "broker", "up", live.up, "connections", (json_int_t)live.connections,
                      "brokers", brokers_json(&live), "uptime_s", (json_int_t)uptime_s(c->r)));
    db_live_cleanup(&live);
}

/* The stored counters and the brokers' live figures, for /stats and /metrics; false when
 * the request was answered with an error. live: free with db_live_cleanup either way. */
static bool read_figures(struct rt_ctx *c, struct db_stats *st, struct db_live *live)
{
    enum perr e;

    if (rt_need_db(c))
        return false;
    if ((e = db_stats_read(c->db, st)) || (e = db_live_read(c->db, clock_now_ms(), live))) {
        db_live_cleanup(live);
        rt_db_error(c, e);
        return false;
    }
    return true;
}

void h_stats(struct rt_ctx *c)
{
    struct router *r = c->r;
    struct db_stats st = {0};
    struct db_live live = {0};

    if (!read_figures(c, &st, &live))
        return;
    /* This request counts as one of the total; it is successful unless it fails here. */
    rt_json(c, 200,
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:s}", "uptime_s",
                      (json_int_t)uptime_s(r), "total_requests",
                      (json_int_t)atomic_load(&r->total_requests) + 1, "successful",
                      (json_int_t)atomic_load(&r->successful) + 1, "failed",
                      (json_int_t)atomic_load(&r->failed), "active_sessions",
                      (json_int_t)live.active_sessions, "websocket_connections",
                      (json_int_t)live.connections, "brokers", (json_int_t)live.n_nodes,
                      "total_sessions_created", (json_int_t)st.sessions_created, "messages_total",
                      (json_int_t)st.messages_total, "avg_response_time",
                      st.replies_total ? st.reply_ms_total / 1000.0 / st.replies_total : 0.0,
                      "model", cfg_model_name(r->cfg)));
    db_live_cleanup(&live);
}

/* Appends to buf (size bytes, *len used) as printf. Returns 0, or -1 when it does not fit. */
static int append(char *buf, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int append(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf + *len, size - *len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - *len)
        return -1;
    *len += (size_t)n;
    return 0;
}

/* A metric family's HELP and TYPE lines. */
static int family(char *buf, size_t size, size_t *len, const char *name, const char *type,
                  const char *help)
{
    return append(buf, size, len, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One Prometheus sample line with its HELP and TYPE lines. */
static int metric(char *buf, size_t size, size_t *len, const char *name, const char *type,
                  const char *help, double value)
{
    return family(buf, size, len, name, type, help) ||
           append(buf, size, len, "%s %.17g\n", name, value);
}

/* A sample of a per-broker family, labelled node="NODE_ID". Node ids are plain (A-Z a-z
 * 0-9 . _ : -), but a row written by something else could hold anything: a backslash,
 * quote or newline is escaped as the text format wants. */
static int node_sample(char *buf, size_t size, size_t *len, const char *name, const char *node,
                       double value)
{
    char label[2 * DB_NODE_ID_LEN], *o = label;

    for (const char *p = node; *p; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n')
            *o++ = '\\';
        *o++ = *p == '\n' ? 'n' : *p;
    }
    *o = '\0';
    return append(buf, size, len, "%s{node=\"%s\"} %.17g\n", name, label, value);
}

/* The per-broker families: one sample per live broker. */
static int node_metrics(char *buf, size_t size, size_t *len, const struct db_live *live)
{
    if (family(buf, size, len, "parley_broker_connections", "gauge",
               "WebSocket connections open at this broker."))
        return -1;
    for (size_t i = 0; i < live->n_nodes; i++)
        if (node_sample(buf, size, len, "parley_broker_connections", live->nodes[i].node_id,
                        (double)live->nodes[i].connections))
            return -1;
    if (family(buf, size, len, "parley_broker_last_seen_seconds", "gauge",
               "Age of this broker's last heartbeat."))
        return -1;
    for (size_t i = 0; i < live->n_nodes; i++)
        if (node_sample(buf, size, len, "parley_broker_last_seen_seconds", live->nodes[i].node_id,
                        live->nodes[i].last_seen_ms / 1000.0))
            return -1;
    return 0;
}

void h_metrics(struct rt_ctx *c)
{
    struct router *r = c->r;
    struct db_stats st = {0};
    struct db_live live = {0};
    size_t len = 0, size;
    char *buf;

    if (!read_figures(c, &st, &live))
        return;
    /* the fixed families, then two samples per live broker of at most 2 * 64 + 80 bytes */
    size = 4096 + live.n_nodes * 2 * (2 * DB_NODE_ID_LEN + 80);
    if (!(buf = malloc(size))) {
        db_live_cleanup(&live);
        rt_error(c, PERR_INTERNAL, "out of memory");
        return;
    }
    if (metric(buf, size, &len, "parley_uptime_seconds", "gauge",
               "Seconds since this REST process started.", (double)uptime_s(r)) ||
        metric(buf, size, &len, "parley_http_requests_total", "counter",
               "HTTP requests answered by this REST process.",
               (double)atomic_load(&r->total_requests)) ||
        metric(buf, size, &len, "parley_http_requests_failed_total", "counter",
               "HTTP requests answered with a status of 400 or more.",
               (double)atomic_load(&r->failed)) ||
        metric(buf, size, &len, "parley_sessions_created_total", "counter",
               "Sessions created since the database was made.", (double)st.sessions_created) ||
        metric(buf, size, &len, "parley_messages", "gauge", "Messages stored now.",
               (double)st.messages_total) ||
        metric(buf, size, &len, "parley_assistant_replies_total", "counter",
               "Assistant replies stored.", (double)st.replies_total) ||
        metric(buf, size, &len, "parley_assistant_reply_seconds_total", "counter",
               "Time spent producing the stored assistant replies.", st.reply_ms_total / 1000.0) ||
        metric(buf, size, &len, "parley_broker_up", "gauge",
               "1 when a broker published its figures in the last 3 seconds.", live.up) ||
        metric(buf, size, &len, "parley_brokers", "gauge",
               "Brokers that published their figures in the last 3 seconds.",
               (double)live.n_nodes) ||
        metric(buf, size, &len, "parley_websocket_connections", "gauge",
               "WebSocket connections open at the live brokers, summed.",
               (double)live.connections) ||
        metric(buf, size, &len, "parley_active_sessions", "gauge",
               "Sessions with at least one live member.", (double)live.active_sessions) ||
        node_metrics(buf, size, &len, &live)) {
        free(buf);
        db_live_cleanup(&live);
        rt_error(c, PERR_INTERNAL, "the metrics did not fit their buffer; this is a bug");
        return;
    }
    db_live_cleanup(&live);
    free(c->res->body);
    c->res->body = buf;
    c->res->body_len = len;
    c->res->status = 200;
    c->res->content_type = "text/plain; version=0.0.4; charset=utf-8";
}
