/* main_fcgi: parley-fcgi, the REST router served as a FastCGI responder with libfcgi, so
 * that any web server (nginx, lighttpd, Apache httpd) can host the API.
 *
 * It listens on --fcgi-socket (a Unix path or HOST:PORT) or, without it, on the listening
 * socket a web server or spawn-fcgi hands over as fd 0. --threads workers (default one
 * per core) share that socket; each owns an FCGX_Request and a database connection and
 * loops FCGX_Accept_r, router_handle, FCGX_Finish_r. Never fcgi_stdio.h: its one global
 * request is not for threads. The router sees the request's path below the mount point
 * (fcgi_params.c). It is not an HTTP server: the web server parses HTTP, serves www/ and
 * proxies /ws to the broker. SIGINT and SIGTERM let requests in flight finish, wake the
 * idle workers, join them and exit 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <fastcgi.h> /* FCGI_LISTENSOCK_FILENO */
#include <fcgiapp.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "db.h"
#include "fcgi_params.h"
#include "log.h"
#include "router.h"

#define LISTEN_BACKLOG    128
#define SHUTDOWN_GRACE_MS 5000
#define WAKE_INTERVAL_MS  20
#define DRAIN_MAX         (64 * 1024 * 1024) /* body bytes discarded after a 413, at most */

/* What a worker is doing, for the main thread deciding whom to wake at shutdown. */
enum worker_state { W_STARTING, W_IDLE, W_BUSY, W_DONE };

struct server;

struct worker {
    struct server *srv;
    pthread_t tid;
    atomic_int state;  /* enum worker_state {written by the worker, read by main} */
    atomic_bool fatal; /* the listening socket is unusable */
};

struct server {
    struct cfg cfg;
    struct router *router;
    int listen_fd;
    bool own_socket;  /* opened from --fcgi-socket: closed (and a Unix path unlinked) at exit */
    bool unix_socket; /* own_socket is the Unix path cfg.fcgi_socket */
    struct fcgi_mount mount; /* --mount-prefix */
    atomic_bool stopping;
};

/* SIGUSR1 only interrupts a worker's blocking accept() or read() (installed without
 * SA_RESTART); stop_workers sends it. */
static void on_wake(int sig)
{
    (void)sig;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* Discards what is left of the request body, up to DRAIN_MAX bytes, so that the web
 * server has sent it all before reading our answer (a socket closed on unread data
 * resets, and the client would get a 502 instead of our 413). */
static void drain_body(FCGX_Request *fr)
{
    char scratch[16384];
    size_t total = 0;
    int got;

    while (total < DRAIN_MAX && (got = FCGX_GetStr(scratch, sizeof scratch, fr->in)) > 0)
        total += (size_t)got;
}

/* Reads the request body: CONTENT_LENGTH bytes when announced, else up to the end of the
 * FastCGI stdin stream. Above max, sets *too_large and reads no more than drain_body.
 * *body is new (malloc, NUL-terminated; caller frees) or NULL when empty or too large.
 * Returns 0, or -1 when out of memory. */
static int read_body(FCGX_Request *fr, size_t max, char **body, size_t *len, bool *too_large)
{
    const char *cl = FCGX_GetParam("CONTENT_LENGTH", fr->envp);
    int64_t announced = -1;
    size_t want, have = 0;
    char *buf;

    *body = NULL;
    *len = 0;
    *too_large = false;
    if (cl && *cl && cfg_parse_int(cl, 0, INT64_MAX, &announced) < 0)
        announced = -1; /* unreadable: read to the end of the stream */
    if (announced == 0)
        return 0;
    if (announced > 0 && (uint64_t)announced > max) {
        *too_large = true;
        drain_body(fr);
        return 0;
    }
    want = announced > 0 ? (size_t)announced : max + 1;
    if (!(buf = malloc(want + 1)))
        return -1;
    while (have < want) {
        size_t chunk = want - have > INT_MAX ? INT_MAX : want - have;
        int got = FCGX_GetStr(buf + have, (int)chunk, fr->in);
        if (got <= 0)
            break;
        have += (size_t)got;
    }
    if (have > max) {
        free(buf);
        *too_large = true;
        drain_body(fr);
        return 0;
    }
    buf[have] = '\0';
    *body = buf;
    *len = have;
    return 0;
}

/* Writes res as a CGI response: a Status line, the headers parley-rest sends, and the
 * body (none for HEAD). X-Accel-Buffering: no tells nginx not to hold the answer back. */
static void send_response(FCGX_Request *fr, const char *method, const struct rt_response *res)
{
    FCGX_Stream *out = fr->out;

    FCGX_FPrintF(out, "Status: %d %s\r\n", res->status, reason_phrase(res->status));
    if (res->content_type)
        FCGX_FPrintF(out, "Content-Type: %s\r\n", res->content_type);
    /* libfcgi has its own printf: no %zu */
    FCGX_FPrintF(out, "Content-Length: %lu\r\n", (unsigned long)res->body_len);
    if (res->allow[0])
        FCGX_FPrintF(out, "Allow: %s\r\n", res->allow);
    if (res->challenge)
        FCGX_PutS("WWW-Authenticate: Bearer\r\n", out);
    if (res->disposition[0])
        FCGX_FPrintF(out, "Content-Disposition: %s\r\n", res->disposition);
    FCGX_PutS("Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n", out);
    if (res->body_len && strcmp(method, "HEAD") != 0)
        FCGX_PutStr(res->body, (int)res->body_len, out);
}

/* Answers one accepted request (worker thread). */
static void serve(struct server *srv, struct db *db, FCGX_Request *fr)
{
    struct fcgi_params p;
    struct rt_request *req = &p.req;
    struct rt_response res;
    char *body = NULL;
    int64_t started = clock_mono_ms();

    fcgi_params_parse(fr->envp, &srv->mount, &p);
    if (read_body(fr, (size_t)srv->cfg.max_message_size, &body, &req->body_len,
                  &req->body_too_large) < 0) {
        FCGX_PutS("Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"
                  "out of memory\n",
                  fr->out);
        goto out;
    }
    if (FCGX_GetError(fr->in) != 0) /* the body broke off: no one to answer */
        goto out;
    req->body = body ? body : "";
    router_handle(srv->router, db, req, &res);
    send_response(fr, req->method, &res);
    if (log_enabled(LOG_LEVEL_DEBUG))
        log_debug("%s %s -> %d in %lld ms", req->method, req->path, res.status,
                  (long long)(clock_mono_ms() - started));
    rt_response_cleanup(&res);
out:
    fcgi_params_cleanup(&p);
    free(body);
}

static int fatal_accept_error(int rc)
{
    return rc == -EBADF || rc == -ENOTSOCK || rc == -EINVAL || rc == -EOPNOTSUPP;
}

/* A worker thread: its own FCGX_Request and database connection, until stopping. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct server *srv = w->srv;
    FCGX_Request fr;
    struct db *db;
    sigset_t wake;

    sigemptyset(&wake);
    sigaddset(&wake, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
    db = db_open(srv->cfg.db_path); /* NULL: the router answers 503 where it needs one */
    FCGX_InitRequest(&fr, srv->listen_fd, 0);
    while (!atomic_load(&srv->stopping)) {
        int rc;

        atomic_store(&w->state, W_IDLE);
        rc = FCGX_Accept_r(&fr);
        atomic_store(&w->state, W_BUSY);
        if (rc < 0) {
            if (atomic_load(&srv->stopping))
                break;
            if (fatal_accept_error(rc)) {
                log_error("cannot accept FastCGI connections: %s", strerror(-rc));
                atomic_store(&w->fatal, true);
                break;
            }
            log_warn("FCGX_Accept_r: %s; retrying", rc < -9000 ? "libfcgi error" : strerror(-rc));
            nanosleep(&(struct timespec){.tv_nsec = 100 * 1000000L}, NULL);
            continue;
        }
        /* libfcgi returns a request whose parameters could not be read (the server hung
         * up, or SIGUSR1 interrupted the read) with an error on its input stream: drop
         * the connection at once (FCGX_Finish_r would wait up to 2 s for the peer). */
        if (FCGX_GetError(fr.in) != 0) {
            FCGX_Free(&fr, 0);
            close(fr.ipcFd);
            fr.ipcFd = -1;
            continue;
        }
        if (!db) /* it could not be opened before: try again, so service resumes */
            db = db_open(srv->cfg.db_path);
        serve(srv, db, &fr);
        FCGX_Finish_r(&fr);
    }
    FCGX_Free(&fr, 0);
    if (fr.ipcFd >= 0) /* a connection the web server kept open */
        close(fr.ipcFd);
    db_close(db);
    atomic_store(&w->state, W_DONE);
    return NULL;
}

/* Stops the workers (main thread): requests in flight finish, no new ones start.
 * libfcgi's accept() blocks and FCGX_ShutdownPending() alone is only seen on the next
 * connection, so each idle worker is woken with SIGUSR1: accept() (or the read of a
 * connection the web server keeps open) fails with EINTR and FCGX_Accept_r returns. The
 * signal is repeated, because one that lands just before a worker enters accept() is
 * lost; after SHUTDOWN_GRACE_MS busy workers are interrupted too. */
static void stop_workers(struct server *srv, struct worker *w, unsigned n)
{
    int64_t deadline = clock_mono_ms() + SHUTDOWN_GRACE_MS;

    atomic_store(&srv->stopping, true);
    FCGX_ShutdownPending();
    for (;;) {
        bool late = clock_mono_ms() > deadline;
        unsigned running = 0;

        for (unsigned i = 0; i < n; i++) {
            int st = atomic_load(&w[i].state);
            if (st == W_DONE)
                continue;
            running++;
            if (st == W_IDLE || late)
                pthread_kill(w[i].tid, SIGUSR1);
        }
        if (!running)
            break;
        nanosleep(&(struct timespec){.tv_nsec = WAKE_INTERVAL_MS * 1000000L}, NULL);
    }
    for (unsigned i = 0; i < n; i++)
        pthread_join(w[i].tid, NULL);
}

/* Splits "HOST:PORT" or "[V6]:PORT" into a socket address. Returns 0, or -1 when spec is
 * not of that form (then it is a Unix path). An empty host is 127.0.0.1. */
static int tcp_address(const char *spec, struct sockaddr_storage *ss, socklen_t *len, char *host,
                       size_t hsize)
{
    const char *colon = strrchr(spec, ':');
    int64_t port;
    size_t n;

    if (!colon || strchr(spec, '/') || cfg_parse_int(colon + 1, 1, 65535, &port) < 0)
        return -1;
    n = (size_t)(colon - spec);
    if (n >= 2 && spec[0] == '[' && spec[n - 1] == ']') {
        spec++;
        n -= 2;
    }
    if (n >= hsize)
        return -1;
    memcpy(host, spec, n);
    host[n] = '\0';
    if (!host[0])
        snprintf(host, hsize, "127.0.0.1");
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
        ((struct sockaddr_in *)ss)->sin_family = AF_INET;
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
        *len = sizeof(struct sockaddr_in);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
        *len = sizeof(struct sockaddr_in6);
        return 0;
    }
    return -1;
}

/* Opens the --fcgi-socket listener: TCP for "HOST:PORT" (a numeric address), else a Unix
 * path, created with mode (a stale socket file is replaced; one a live process listens
 * on is refused). host receives the TCP address, empty for a Unix socket. Returns the
 * listening fd, or -1 after saying why. */
static int open_listener(struct server *srv, mode_t mode, char *host, size_t hsize)
{
    const char *spec = srv->cfg.fcgi_socket;
    struct sockaddr_storage ss;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    socklen_t len;
    struct stat st;
    int fd = -1, one = 1;

    host[0] = '\0';
    if (tcp_address(spec, &ss, &len, host, hsize) == 0) {
        if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
            log_error("cannot listen on %s: %s; is the port in use? choose another with "
                      "--fcgi-socket",
                      spec, strerror(errno));
            goto fail;
        }
        return fd;
    }
    if (strlen(spec) >= sizeof un.sun_path) {
        log_error("--fcgi-socket '%s' is longer than a Unix socket path may be (%zu bytes)", spec,
                  sizeof un.sun_path - 1);
        return -1;
    }
    memcpy(un.sun_path, spec, strlen(spec) + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        goto fail_errno;
    if (lstat(spec, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_error("--fcgi-socket '%s' exists and is not a socket; remove it or choose "
                      "another path",
                      spec);
            goto fail;
        }
        if (connect(fd, (struct sockaddr *)&un, sizeof un) == 0) {
            log_error("another process is listening on %s; stop it or choose another "
                      "--fcgi-socket",
                      spec);
            goto fail;
        }
        close(fd);
        unlink(spec); /* stale: left by a process that died */
        if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
            goto fail_errno;
    }
    if (bind(fd, (struct sockaddr *)&un, sizeof un) < 0)
        goto fail_errno;
    srv->unix_socket = true;
    if (chmod(spec, mode) < 0 || listen(fd, LISTEN_BACKLOG) < 0)
        goto fail_errno;
    return fd;
fail_errno:
    log_error("cannot listen on %s: %s", spec, strerror(errno));
fail:
    if (fd >= 0)
        close(fd);
    if (srv->unix_socket)
        unlink(spec);
    srv->unix_socket = false;
    return -1;
}

/* Where to listen: --fcgi-socket, or the socket inherited as fd 0. Refuses a TCP address
 * beyond loopback with no API key (protected mode). Returns 0 or -1 after saying why. */
static int setup_listener(struct server *srv, int64_t keys)
{
    char host[128], *end;
    long mode;

    if (!srv->cfg.fcgi_socket) {
        /* A web server or spawn-fcgi starts us with its listening socket as fd 0:
         * FCGX_IsCGI() is false exactly then (fd 0 is a socket with no peer). */
        if (FCGX_IsCGI()) {
            log_error("no socket to serve: pass --fcgi-socket PATH (or HOST:PORT), or start "
                      "parley-fcgi from the web server or spawn-fcgi, which hand it a "
                      "listening socket as standard input");
            return -1;
        }
        srv->listen_fd = FCGI_LISTENSOCK_FILENO;
        return 0;
    }
    errno = 0;
    mode = strtol(srv->cfg.fcgi_socket_mode, &end, 8);
    if (errno || end == srv->cfg.fcgi_socket_mode || *end || mode < 0 || mode > 0777) {
        log_error("--fcgi-socket-mode '%s' is not an octal mode such as 0660",
                  srv->cfg.fcgi_socket_mode);
        return -1;
    }
    if ((srv->listen_fd = open_listener(srv, (mode_t)mode, host, sizeof host)) < 0)
        return -1;
    srv->own_socket = true;
    if (host[0]) {
        struct cfg view = srv->cfg; /* shallow: only read by the check */
        view.bind = host;
        if (cfg_check_protected(&view, keys) < 0)
            return -1;
    }
    return 0;
}

static void close_listener(struct server *srv)
{
    if (!srv->own_socket)
        return;
    close(srv->listen_fd);
    if (srv->unix_socket)
        unlink(srv->cfg.fcgi_socket);
    srv->own_socket = false;
}

int main(int argc, char **argv)
{
    struct server srv = {.listen_fd = -1};
    struct worker *workers = NULL;
    unsigned threads = 0, started = 0;
    struct sigaction sa;
    sigset_t sigs, stop_sigs;
    struct db *db = NULL;
    int64_t keys = 0;
    int rc = 1;

    if ((rc = cfg_main_load(&srv.cfg, CFG_FCGI, "parley-fcgi", argc, argv)) >= 0)
        return rc;
    rc = 1; /* until it runs */
    db_use_full_sync(strcmp(srv.cfg.db_sync, "full") == 0);
    if (srv.cfg.argc > 0) {
        log_error("unexpected argument '%s'; see 'parley-fcgi --help'", srv.cfg.argv[0]);
        cfg_cleanup(&srv.cfg);
        return 2;
    }
    if (fcgi_mount_init(&srv.mount, srv.cfg.mount_prefix) < 0) {
        log_error("--mount-prefix '%s' must be a path such as /api", srv.cfg.mount_prefix);
        cfg_cleanup(&srv.cfg);
        return 2;
    }
    /* SIGINT and SIGTERM are taken by sigtimedwait below; SIGUSR1 wakes a worker (only
     * workers unblock it). Set before FCGX_Init, which leaves handlers already set. */
    signal(SIGPIPE, SIG_IGN);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_wake;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGTERM);
    sigs = stop_sigs;
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (FCGX_Init() != 0) {
        log_error("libfcgi failed to initialise (out of memory?)");
        goto out;
    }

    /* Open once here so the schema is migrated before any request. */
    if (!(db = db_open(srv.cfg.db_path)) || db_keys_active(db, &keys) != PERR_OK)
        goto out;
    if (setup_listener(&srv, keys) < 0 || !(srv.router = router_new(&srv.cfg)))
        goto out;
    threads =
        srv.cfg.threads > 0 ? (unsigned)srv.cfg.threads : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads == 0)
        threads = 1;
    if (!(workers = calloc(threads, sizeof *workers)))
        goto out;
    for (; started < threads; started++) {
        workers[started].srv = &srv;
        atomic_init(&workers[started].state, W_STARTING);
        atomic_init(&workers[started].fatal, false);
        if (pthread_create(&workers[started].tid, NULL, worker_main, &workers[started]) != 0) {
            log_error("cannot start worker thread %u of %u", started + 1, threads);
            goto out;
        }
    }
    char shown[512];
    log_info("serving FastCGI on %s (database %s, %u threads, mount %s)",
             srv.cfg.fcgi_socket ? srv.cfg.fcgi_socket : "the socket on fd 0",
             db_path_shown(srv.cfg.db_path, shown, sizeof shown), threads,
             !srv.mount.given    ? "auto"
             : srv.mount.path[0] ? srv.mount.path
                                 : "/");
    for (;;) {
        struct timespec tick = {.tv_nsec = 250 * 1000000L};
        int sig = sigtimedwait(&stop_sigs, NULL, &tick);
        bool fatal = false;

        if (sig == SIGINT || sig == SIGTERM) {
            log_info("%s received, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
            rc = 0;
            break;
        }
        for (unsigned i = 0; i < started; i++)
            fatal = fatal || atomic_load(&workers[i].fatal);
        if (fatal)
            break;
    }
out:
    if (started)
        stop_workers(&srv, workers, started);
    close_listener(&srv);
    free(workers);
    router_free(srv.router);
    db_close(db);
    cfg_cleanup(&srv.cfg);
    return rc;
}
