/* main_mhd: parley-rest, the REST router served by libmicrohttpd.
 *
 * MHD runs a pool of worker threads (--threads, default one per core), each polling its
 * share of the connections with epoll. The access handler is called several times per
 * request: the first call allocates the request state, the next ones gather the body up
 * to --max-message-size, the last one answers through the router. Each worker thread
 * opens its own database connection on first use (closed when the thread exits).
 * A WebSocket upgrade on /ws is not the router's: it is relayed to the broker (ws_relay.c),
 * like body reading a front-end's job.
 * SIGINT and SIGTERM stop the daemon, finishing requests in flight, and exit 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "db.h"
#include "keys_cmd.h"
#include "log.h"
#include "router.h"
#include "ws_relay.h"

#define CONNECTION_TIMEOUT_S 30

/* Per-request state, from the first access-handler call to request completion. */
struct request_state {
    char *uri;           /* the request target as sent (path and query) */
    bool seen;           /* the access handler has been called */
    struct wsr_conn *ws; /* a relayed WebSocket upgrade's state */
    char *body;
    size_t len;
    bool too_large;
    int64_t started_ms;
};

/* A connection's own state (MHD_OPTION_NOTIFY_CONNECTION): the request state uri_logged
 * made that MHD has not completed yet. MHD calls request_completed only for requests it
 * handed to access_handler, so one it refused itself after the request line (a malformed
 * header: 400) is freed here, by the next request's or when the connection closes. */
struct conn_state {
    struct request_state *pending;
};

struct server {
    struct cfg cfg;
    struct router *router;
    pthread_key_t db_key; /* each worker thread's struct db */
    struct wsrelay *relay;
};

static void close_thread_db(void *db)
{
    db_close(db);
}

/* The calling worker thread's database connection, opened on first use; NULL if the
 * database cannot be opened (the router then answers 503). */
static struct db *thread_db(struct server *srv)
{
    struct db *db = pthread_getspecific(srv->db_key);

    if (!db) {
        db = db_open(srv->cfg.db_path);
        if (db)
            pthread_setspecific(srv->db_key, db);
    }
    return db;
}

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    struct rt_request *req = cls;

    if (req->n_args < RT_MAX_ARGS) {
        req->args[req->n_args].name = key;
        req->args[req->n_args].value = value ? value : "";
        req->n_args++;
    }
    return MHD_YES;
}

static enum MHD_Result send_response(struct MHD_Connection *conn, struct rt_response *res)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_buffer(res->body_len, res->body, MHD_RESPMEM_MUST_FREE);
    if (!r)
        return MHD_NO;
    res->body = NULL; /* MHD owns it now */
    if (res->content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res->content_type);
    if (res->allow[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, res->allow);
    if (res->challenge)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (res->disposition[0])
        MHD_add_response_header(r, "Content-Disposition", res->disposition);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    ret = MHD_queue_response(conn, (unsigned)res->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result answer(struct server *srv, struct MHD_Connection *conn, const char *url,
                              const char *method, struct request_state *rs)
{
    struct rt_request req = {0};
    struct rt_response res;
    enum MHD_Result ret;

    req.method = method;
    req.path = url;
    req.content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    req.authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    req.host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Host");
    req.body = rs->body ? rs->body : "";
    req.body_len = rs->len;
    req.body_too_large = rs->too_large;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_arg, &req);
    router_handle(srv->router, thread_db(srv), &req, &res);
    ret = send_response(conn, &res);
    rt_response_cleanup(&res);
    if (log_enabled(LOG_LEVEL_DEBUG))
        log_debug("%s %s -> %d in %lld ms", method, url, res.status,
                  (long long)(clock_mono_ms() - rs->started_ms));
    return ret;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct server *srv = cls;
    struct request_state *rs = *con_cls;
    size_t max = (size_t)srv->cfg.max_message_size;

    if (!rs)
        return MHD_NO; /* uri_logged could not allocate it */
    if (rs->ws || (!rs->seen && wsrelay_is_upgrade(conn, url, method))) {
        rs->seen = true;
        return wsrelay_answer(srv->relay, conn, rs->uri, &rs->ws);
    }
    if (!rs->seen && wsrelay_is_ws_path(url)) {
        rs->seen = true;
        return wsrelay_not_upgrade(conn);
    }
    if (!rs->seen) {
        /* First call: headers only. Refuse an announced oversize body before reading it. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        int64_t announced;
        rs->seen = true;
        if (cl && cfg_parse_int(cl, 0, INT64_MAX, &announced) == 0 && (uint64_t)announced > max) {
            rs->too_large = true;
            return answer(srv, conn, url, method, rs);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        if (!rs->too_large && rs->len + n > max) {
            rs->too_large = true;
            free(rs->body);
            rs->body = NULL;
            rs->len = 0;
        }
        if (!rs->too_large) {
            char *grown = realloc(rs->body, rs->len + n + 1);
            if (!grown)
                return MHD_NO;
            memcpy(grown + rs->len, upload_data, n);
            rs->body = grown;
            rs->len += n;
            rs->body[rs->len] = '\0';
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    return answer(srv, conn, url, method, rs);
}

/* MHD_OPTION_URI_LOG_CALLBACK: the first sight of a request, with its target as sent
 * (the relay passes it on unchanged). Returns the new request state (*con_cls). */
static struct conn_state *conn_state_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci ? ci->socket_context : NULL;
}

static void free_state(struct server *srv, struct request_state *rs)
{
    if (!rs)
        return;
    wsrelay_release(srv->relay, rs->ws);
    free(rs->uri);
    free(rs->body);
    free(rs);
}

static void *uri_logged(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct server *srv = cls;
    struct request_state *rs = calloc(1, sizeof *rs);
    struct conn_state *cs = conn_state_of(conn);

    if (rs) {
        rs->started_ms = clock_mono_ms();
        rs->uri = strdup(uri ? uri : "/");
        if (!rs->uri) {
            free(rs);
            rs = NULL;
        }
    }
    if (cs) {
        free_state(srv, cs->pending); /* an earlier request MHD refused by itself */
        cs->pending = rs;
    }
    return rs;
}

static void connection_notified(void *cls, struct MHD_Connection *conn, void **socket_context,
                                enum MHD_ConnectionNotificationCode code)
{
    struct conn_state *cs = *socket_context;

    (void)conn;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = calloc(1, sizeof(struct conn_state)); /* NULL: no tracking */
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && cs) {
        free_state(cls, cs->pending);
        free(cs);
        *socket_context = NULL;
    }
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct server *srv = cls;
    struct request_state *rs = *con_cls;
    struct conn_state *cs = conn_state_of(conn);

    if (cs && cs->pending == rs)
        cs->pending = NULL;
    free_state(srv, rs);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_write(LOG_LEVEL_WARN, "libmicrohttpd", "%s", msg);
}

/* Reads a whole PEM file (what: the flag, for the message). Returns a new NUL-terminated
 * string (caller frees), or NULL after saying why. */
static char *read_pem(const char *what, const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        log_error("cannot read %s '%s': %s", what, path, strerror(errno));
        free(buf);
        buf = NULL;
    } else {
        buf[n] = '\0';
    }
    if (f)
        fclose(f);
    return buf;
}

/* HTTPS (--tls-cert, --tls-key): the PEM files into tls[] as MHD options (the strings
 * are new: free tls[0].ptr_value and tls[1].ptr_value). Without TLS, tls[0] ends the
 * list. Returns 0, or -1 after saying why. */
static int tls_options(const struct cfg *cfg, struct MHD_OptionItem tls[3])
{
    tls[0] = tls[1] = tls[2] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    if (!cfg->tls_cert)
        return 0;
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        log_error("this libmicrohttpd was built without TLS: --tls-cert cannot be served; "
                  "use a libmicrohttpd with GnuTLS or put a web server in front (deploy/)");
        return -1;
    }
    tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0,
                                     read_pem("--tls-cert", cfg->tls_cert)};
    tls[1] =
        (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, read_pem("--tls-key", cfg->tls_key)};
    return tls[0].ptr_value && tls[1].ptr_value ? 0 : -1;
}

static int bind_address(const struct cfg *cfg, struct sockaddr_storage *ss)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, cfg->bind, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)cfg->port);
        return 0;
    }
    if (inet_pton(AF_INET6, cfg->bind, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)cfg->port);
        return 0;
    }
    log_error("--bind '%s' is not an IPv4 or IPv6 address (e.g. 127.0.0.1 or ::1)", cfg->bind);
    return -1;
}

int main(int argc, char **argv)
{
    struct server srv = {0};
    struct MHD_Daemon *d = NULL;
    struct MHD_OptionItem tls[3] = {{MHD_OPTION_END, 0, NULL}};
    struct sockaddr_storage addr;
    const union MHD_DaemonInfo *info;
    unsigned threads;
    sigset_t sigs;
    struct db *db = NULL;
    int64_t keys = 0;
    int sig, rc = 1;

    if ((rc = cfg_main_load(&srv.cfg, CFG_REST, "parley-rest", argc, argv)) >= 0)
        return rc;
    rc = 1; /* until it runs */
    db_use_full_sync(strcmp(srv.cfg.db_sync, "full") == 0);
    if (srv.cfg.argc > 0 && strcmp(srv.cfg.argv[0], "keys") == 0) {
        rc = keys_command(&srv.cfg, srv.cfg.argc, srv.cfg.argv);
        cfg_cleanup(&srv.cfg);
        return rc;
    }
    if (srv.cfg.argc > 0) {
        log_error("unexpected argument '%s'; see 'parley-rest --help'", srv.cfg.argv[0]);
        cfg_cleanup(&srv.cfg);
        return 2;
    }
    /* Signals are taken by sigwait below; every thread inherits the mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Open once here so the schema is migrated before any request. */
    if (!(db = db_open(srv.cfg.db_path)) || bind_address(&srv.cfg, &addr) < 0 ||
        tls_options(&srv.cfg, tls) < 0)
        goto out;
    if (db_keys_active(db, &keys) != PERR_OK || cfg_check_protected(&srv.cfg, keys) < 0)
        goto out;
    if (pthread_key_create(&srv.db_key, close_thread_db) != 0 ||
        !(srv.router = router_new(&srv.cfg)) || !(srv.relay = wsrelay_new(&srv.cfg)))
        goto out;
    threads =
        srv.cfg.threads > 0 ? (unsigned)srv.cfg.threads : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
            (addr.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0) | (srv.cfg.tls_cert ? MHD_USE_TLS : 0) |
            MHD_ALLOW_UPGRADE | MHD_ALLOW_SUSPEND_RESUME,
        (uint16_t)srv.cfg.port, NULL, NULL, access_handler, &srv, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(srv.cfg.max_connections + srv.cfg.ws_relay_max),
        MHD_OPTION_URI_LOG_CALLBACK, uri_logged, &srv, MHD_OPTION_NOTIFY_CONNECTION,
        connection_notified, &srv, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, &srv, MHD_OPTION_ARRAY, tls,
        MHD_OPTION_END);
    if (!d) {
        log_error("cannot listen on %s port %d: is the port in use? choose another with "
                  "--port%s",
                  srv.cfg.bind, srv.cfg.port,
                  srv.cfg.tls_cert ? "; or are --tls-cert and --tls-key a PEM pair?" : "");
        goto out;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    char shown[512];
    log_info("listening on %s://%s:%u (database %s, %u threads)",
             srv.cfg.tls_cert ? "https" : "http", srv.cfg.bind,
             info ? info->port : (unsigned)srv.cfg.port,
             db_path_shown(srv.cfg.db_path, shown, sizeof shown), threads);
    while (sigwait(&sigs, &sig) != 0)
        ;
    log_info("%s received, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = 0;
out:
    wsrelay_stop(srv.relay); /* first: it resumes the suspended connections MHD would wait on */
    if (d)
        MHD_stop_daemon(d);
    wsrelay_free(srv.relay);
    router_free(srv.router);
    free(tls[0].ptr_value);
    free(tls[1].ptr_value);
    db_close(db);
    cfg_cleanup(&srv.cfg);
    return rc;
}
