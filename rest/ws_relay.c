/* ws_relay: GET /ws on parley-rest, relayed byte for byte to the broker (SPEC 4).
 *
 * Not a WebSocket implementation: the broker does the handshake, the checks (Host, Origin,
 * keys, --max-conns-per-ip, which it applies to the X-Forwarded-For this relay sets) and
 * the frames; this file only moves bytes. Its steps, per connection:
 *   1. (MHD worker) the upgrade request is written, with X-Forwarded-For replaced by the
 *      client's address, into the client-to-broker buffer; a non-blocking connect to the
 *      broker starts (and the request goes at once when loopback has connected already);
 *      the MHD connection is suspended; the broker socket joins the relay's epoll set.
 *   2. (relay thread) the rest of the request is sent, the broker's answer head read (and
 *      the body of a refusal); the MHD connection is resumed.
 *   3. (MHD worker) the answer is queued: a 101 as MHD's upgrade response carrying the
 *      broker's headers, anything else as the same status and body.
 *   4. (MHD worker, upgrade handler) the client socket joins the relay's epoll set.
 * The state a thread hands over is set under r->lock, which the relay thread takes to read
 * a connection's state on each event; the eventfd only wakes it for releases and stop.
 *   5. (relay thread) bytes both ways, edge-triggered epoll, a 64 KiB buffer per direction:
 *      a side is not read while the other side's buffer is full (backpressure), an end of
 *      stream is passed on as a half-close, an error or both ends closed closes both.
 * Idle connections cost nothing: the thread sleeps in epoll_wait with no timeout unless a
 * handshake is under way (then once a second, for its 10 s deadline).
 * Ownership: a wsr_conn has two holders, the request (dropped by wsrelay_release) and the
 * relay thread (dropped once it has closed the broker socket); the last one frees it. */
#include "ws_relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

#define RELAY_BUF            (64 * 1024)
#define HANDSHAKE_TIMEOUT_MS 10000
#define EVENTS_MAX           64
/* Kernel buffers of both sockets are capped too, so that a client that stops reading
 * holds at most about this much on each socket (as the broker caps its own). */
#define SOCK_BUF (64 * 1024)

enum wsr_state {
    WSR_CONNECTING, /* connect() in progress (relay thread) */
    WSR_HEAD,       /* request being sent, answer being read (relay thread) */
    WSR_ANSWERED,   /* the broker's answer is read; the MHD side answers the client */
    WSR_FAILED,     /* the broker could not be reached: the MHD side answers 503 */
    WSR_RELAY,      /* upgraded: bytes both ways (relay thread) */
    WSR_CLOSED,     /* the relay thread is done with it */
};

enum wsr_pending { PEND_NONE, PEND_CLOSE };

struct wsr_buf {
    size_t start, end;
    char data[RELAY_BUF];
};

struct wsr_side {
    struct wsr_conn *c;
    bool client;
};

struct wsr_conn {
    struct wsrelay *r;
    struct wsr_conn *prev, *next; /* r->conns {r->lock} */
    struct wsr_conn *pend_next;   /* r->pending {r->lock} */
    struct wsr_conn *dead_next;   /* relay thread: closed in this epoll batch */
    enum wsr_pending pending;     /* {r->lock} */
    int refs;                     /* {r->lock} */
    enum wsr_state state;         /* {r->lock} when read by the MHD side */
    struct MHD_Connection *mhd;
    struct MHD_UpgradeResponseHandle *urh; /* set by the upgrade handler {r->lock} */
    int bfd;                               /* broker socket (relay thread), -1 closed */
    int cfd;                               /* client socket, MHD's: never close()d here */
    struct wsr_side bside, cside;
    bool b_rd, b_wr, c_rd, c_wr, b_eof, c_eof, b_shut, c_shut;
    bool counted_handshake; /* in r->handshakes {r->lock} */
    int64_t deadline_ms;
    /* the broker's answer (relay thread until WSR_ANSWERED, then the MHD side) */
    int status;
    size_t head_end;  /* bytes of b2c the head takes, "\r\n\r\n" included */
    size_t body_want; /* Content-Length of a refusal; SIZE_MAX: until EOF */
    const char *fail_msg;
    struct wsr_buf c2b, b2c;
};

struct wsrelay {
    const struct cfg *cfg;
    struct sockaddr_storage broker;
    socklen_t broker_len;
    char broker_shown[300];
    int epfd, evfd;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    struct wsr_conn *conns;   /* every conn not yet freed {lock} */
    struct wsr_conn *pending; /* handed to the relay thread, LIFO {lock} */
    int n;                    /* conns {lock} */
    bool stopping;            /* {lock} */
    int handshakes;           /* conns in CONNECTING or HEAD {lock} */
};

static const char evfd_tag; /* epoll data of the wake-up eventfd */

/* ---- conns and their holders ---- */

static void unref(struct wsr_conn *c)
{
    struct wsrelay *r = c->r;
    bool last;

    pthread_mutex_lock(&r->lock);
    last = --c->refs == 0;
    if (last) {
        if (c->prev)
            c->prev->next = c->next;
        else
            r->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        r->n--;
    }
    pthread_mutex_unlock(&r->lock);
    if (last)
        free(c);
}

/* Hands c to the relay thread with op (any thread). Called with r->lock held. */
static void wake(struct wsrelay *r)
{
    uint64_t one = 1;

    if (write(r->evfd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_warn("ws relay: cannot wake the relay thread: %s", strerror(errno));
}

static void pend_locked(struct wsr_conn *c, enum wsr_pending op)
{
    c->pending = op;
    c->pend_next = c->r->pending;
    c->r->pending = c;
    wake(c->r);
}

/* ---- the request to the broker (MHD worker) ---- */

struct req_build {
    struct wsr_buf *b;
    bool overflow;
};

static void put(struct req_build *rb, const char *s, size_t n)
{
    struct wsr_buf *b = rb->b;

    if (rb->overflow || b->end + n > sizeof b->data) {
        rb->overflow = true;
        return;
    }
    memcpy(b->data + b->end, s, n);
    b->end += n;
}

static void puts_(struct req_build *rb, const char *s)
{
    put(rb, s, strlen(s));
}

static enum MHD_Result put_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    struct req_build *rb = cls;

    (void)kind;
    /* the client's own claims are replaced, never passed on (the broker trusts ours) */
    if (!strcasecmp(key, "X-Forwarded-For") || !strcasecmp(key, "X-Forwarded-Proto"))
        return MHD_YES;
    puts_(rb, key);
    puts_(rb, ": ");
    puts_(rb, value ? value : "");
    puts_(rb, "\r\n");
    return MHD_YES;
}

/* The client's address as text into buf ("" when MHD does not know it). */
static void client_address(struct MHD_Connection *conn, char *buf, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;

    buf[0] = '\0';
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)size);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)size);
}

static int build_request(struct wsrelay *r, struct MHD_Connection *conn, const char *raw_uri,
                         struct wsr_buf *b)
{
    struct req_build rb = {b, false};
    char ip[INET6_ADDRSTRLEN];

    client_address(conn, ip, sizeof ip);
    puts_(&rb, "GET ");
    puts_(&rb, raw_uri);
    puts_(&rb, " HTTP/1.1\r\n");
    MHD_get_connection_values(conn, MHD_HEADER_KIND, put_header, &rb);
    if (ip[0]) {
        puts_(&rb, "X-Forwarded-For: ");
        puts_(&rb, ip);
        puts_(&rb, "\r\n");
    }
    puts_(&rb, r->cfg->tls_cert ? "X-Forwarded-Proto: https\r\n\r\n"
                                : "X-Forwarded-Proto: http\r\n\r\n");
    return rb.overflow ? -1 : 0;
}

/* ---- answers to the client (MHD worker) ---- */

static enum MHD_Result queue_json_error(struct MHD_Connection *conn, unsigned status,
                                        const char *code, const char *message);

enum MHD_Result wsrelay_not_upgrade(struct MHD_Connection *conn)
{
    return queue_json_error(conn, 400, "bad_request",
                            "this is the WebSocket endpoint: connect with a WebSocket client "
                            "(GET with Upgrade: websocket and Connection: Upgrade)");
}

static enum MHD_Result queue_json_error(struct MHD_Connection *conn, unsigned status,
                                        const char *code, const char *message)
{
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    struct MHD_Response *res;
    enum MHD_Result ret = MHD_NO;

    json_decref(j);
    if (!text)
        return MHD_NO;
    res = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!res) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(res, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(res, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    ret = MHD_queue_response(conn, status, res);
    MHD_destroy_response(res);
    return ret;
}

/* Whether a header of the broker's answer is left to MHD rather than copied. */
static bool hop_header(const char *name, size_t n, bool upgrade)
{
    static const char *const skip[] = {"content-length", "transfer-encoding", "date", "keep-alive"};

    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (strlen(skip[i]) == n && !strncasecmp(name, skip[i], n))
            return true;
    /* MHD says Connection itself: Upgrade for a 101, keep-alive or close otherwise */
    (void)upgrade;
    return n == 10 && !strncasecmp(name, "connection", 10);
}

/* Copies the broker's header lines (after the status line) onto res. */
static void copy_headers(struct wsr_conn *c, struct MHD_Response *res, bool upgrade)
{
    char *head = c->b2c.data, *end = head + c->head_end - 2; /* before the final CRLF */
    char *line = memchr(head, '\n', (size_t)(end - head));

    while (line && ++line < end) {
        char *eol = memchr(line, '\n', (size_t)(end - line)), *colon;
        size_t len = eol ? (size_t)(eol - line) : (size_t)(end - line);
        char name[128], value[1024];
        size_t n, vlen;

        if (len && line[len - 1] == '\r')
            len--;
        colon = memchr(line, ':', len);
        if (colon && (n = (size_t)(colon - line)) > 0 && n < sizeof name) {
            const char *v = colon + 1;
            vlen = len - n - 1;
            while (vlen && (*v == ' ' || *v == '\t'))
                v++, vlen--;
            if (!hop_header(line, n, upgrade) && vlen < sizeof value) {
                memcpy(name, line, n);
                name[n] = '\0';
                memcpy(value, v, vlen);
                value[vlen] = '\0';
                MHD_add_response_header(res, name, value);
            }
        }
        line = eol;
    }
}

static void upgraded(void *cls, struct MHD_Connection *connection, void *con_cls,
                     const char *extra_in, size_t extra_in_size, MHD_socket sock,
                     struct MHD_UpgradeResponseHandle *urh);
static int watch(struct wsrelay *r, int fd, struct wsr_side *side);

static enum MHD_Result queue_answer(struct wsr_conn *c, struct MHD_Connection *conn)
{
    struct MHD_Response *res;
    enum MHD_Result ret;

    if (c->status == MHD_HTTP_SWITCHING_PROTOCOLS) {
        res = MHD_create_response_for_upgrade(upgraded, c);
    } else {
        size_t n = c->b2c.end - c->head_end;
        if (c->body_want != SIZE_MAX && n > c->body_want)
            n = c->body_want;
        res = MHD_create_response_from_buffer(n, c->b2c.data + c->head_end, MHD_RESPMEM_MUST_COPY);
    }
    if (!res)
        return MHD_NO;
    copy_headers(c, res, c->status == MHD_HTTP_SWITCHING_PROTOCOLS);
    ret = MHD_queue_response(conn, (unsigned)c->status, res);
    MHD_destroy_response(res);
    return ret;
}

/* The MHD upgrade handler (MHD worker): the 101 went out; the client's socket is ours to
 * read and write (not to close) until MHD_UPGRADE_ACTION_CLOSE. */
static void upgraded(void *cls, struct MHD_Connection *connection, void *con_cls,
                     const char *extra_in, size_t extra_in_size, MHD_socket sock,
                     struct MHD_UpgradeResponseHandle *urh)
{
    struct wsr_conn *c = cls;
    struct wsrelay *r = c->r;
    bool refuse;

    int fl = fcntl(sock, F_GETFL);

    (void)connection;
    (void)con_cls;
    /* non-blocking before the relay thread may touch it */
    refuse = fl < 0 || fcntl(sock, F_SETFL, fl | O_NONBLOCK) < 0;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &(int){SOCK_BUF}, sizeof(int));
    pthread_mutex_lock(&r->lock);
    /* the request was fully sent before the answer came, so c2b is free again */
    refuse =
        refuse || r->stopping || c->state != WSR_ANSWERED || extra_in_size > sizeof c->c2b.data;
    /* straight into the relay's epoll set, no hand-off through its eventfd; under the
     * lock, which the relay thread takes to read the state, so that it sees this socket
     * only once it is set up; the first event (writable at once) moves what waits */
    if (!refuse && watch(r, sock, &c->cside) < 0) {
        log_warn("ws relay: cannot watch a client socket: %s", strerror(errno));
        refuse = true;
    }
    if (!refuse) {
        c->urh = urh;
        c->cfd = sock;
        c->c2b.start = 0;
        c->c2b.end = extra_in_size;
        if (extra_in_size)
            memcpy(c->c2b.data, extra_in, extra_in_size);
        c->c_rd = c->c_wr = true;
        c->state = WSR_RELAY; /* the relay thread takes it from here */
    }
    pthread_mutex_unlock(&r->lock);
    if (refuse) /* the broker side goes with the request (wsrelay_release) */
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
}

/* ---- the MHD side's entry points ---- */

/* Whether the comma-separated header value has token (case-insensitive). */
static bool has_token(const char *value, const char *token)
{
    size_t n = strlen(token);

    while (value && *value) {
        size_t len;
        while (*value == ' ' || *value == '\t' || *value == ',')
            value++;
        len = strcspn(value, ",");
        while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
            len--;
        if (len == n && !strncasecmp(value, token, n))
            return true;
        value += strcspn(value, ",");
    }
    return false;
}

bool wsrelay_is_ws_path(const char *url)
{
    return strncmp(url, "/ws", 3) == 0 && (url[3] == '\0' || url[3] == '/');
}

bool wsrelay_is_upgrade(struct MHD_Connection *conn, const char *url, const char *method)
{
    if (strcmp(method, "GET") != 0 || !wsrelay_is_ws_path(url))
        return false;
    return has_token(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade"), "websocket") &&
           has_token(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Connection"), "upgrade");
}

/* Starts step 1. Returns what the access handler returns. */
static enum MHD_Result start(struct wsrelay *r, struct MHD_Connection *conn, const char *raw_uri,
                             struct wsr_conn **slot)
{
    struct wsr_conn *c;
    char msg[512];
    int fd = -1, full, stopping;
    ssize_t n;

    pthread_mutex_lock(&r->lock);
    full = r->n >= r->cfg->ws_relay_max;
    stopping = r->stopping;
    pthread_mutex_unlock(&r->lock);
    if (stopping)
        return queue_json_error(conn, 503, "unavailable", "parley-rest is shutting down");
    if (full) {
        log_warn("ws relay: %d connections relayed already (--ws-relay-max): refusing one",
                 r->cfg->ws_relay_max);
        return queue_json_error(conn, 503, "unavailable",
                                "too many WebSocket connections through this REST service "
                                "(--ws-relay-max); try again later, or connect to the broker's "
                                "own port");
    }
    if (!(c = calloc(1, sizeof *c)))
        return MHD_NO;
    c->r = r;
    c->bfd = c->cfd = -1;
    c->mhd = conn;
    c->bside = (struct wsr_side){c, false};
    c->cside = (struct wsr_side){c, true};
    c->body_want = SIZE_MAX;
    if (build_request(r, conn, raw_uri, &c->c2b) < 0) {
        free(c);
        return queue_json_error(conn, 431, "bad_request", "the upgrade request is too large");
    }
    fd = socket(r->broker.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        (connect(fd, (struct sockaddr *)&r->broker, r->broker_len) < 0 && errno != EINPROGRESS)) {
        log_warn("ws relay: cannot connect to the broker at %s: %s", r->broker_shown,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        free(c);
        snprintf(msg, sizeof msg,
                 "the WebSocket broker is not reachable at %s: start parley-broker (its "
                 "--port is this service's --ws-port), or set --broker-url",
                 r->broker_shown);
        return queue_json_error(conn, 503, "unavailable", msg);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &(int){SOCK_BUF}, sizeof(int));
    c->bfd = fd;
    c->state = WSR_CONNECTING;
    /* on loopback the connection is often up already: the request goes at once */
    n = send(fd, c->c2b.data, c->c2b.end, MSG_NOSIGNAL);
    if (n > 0) {
        c->c2b.start = (size_t)n;
        c->state = WSR_HEAD;
    }
    c->refs = 2; /* the request's and the relay thread's */
    c->deadline_ms = clock_mono_ms() + HANDSHAKE_TIMEOUT_MS;
    c->counted_handshake = true;
    *slot = c;
    /* suspended before the relay thread can resume it */
    MHD_suspend_connection(conn);
    pthread_mutex_lock(&r->lock);
    c->next = r->conns;
    if (r->conns)
        r->conns->prev = c;
    r->conns = c;
    r->n++;
    stopping = r->stopping;
    if (stopping) { /* the relay thread is gone or going: answered 503 from here */
        c->counted_handshake = false;
        c->state = WSR_FAILED;
        c->fail_msg = "is being shut down with parley-rest";
        c->refs--; /* no relay hold */
        c->bfd = -1;
    } else if (++r->handshakes == 1) {
        wake(r); /* its wait gets the 1 s tick of the handshake deadline */
    }
    pthread_mutex_unlock(&r->lock);
    if (stopping) {
        close(fd);
        MHD_resume_connection(conn);
        return MHD_YES;
    }
    /* the relay thread watches it from here; if it cannot, the deadline fails it */
    if (watch(r, fd, &c->bside) < 0)
        log_warn("ws relay: cannot watch a broker socket: %s", strerror(errno));
    return MHD_YES;
}

enum MHD_Result wsrelay_answer(struct wsrelay *r, struct MHD_Connection *conn, const char *raw_uri,
                               struct wsr_conn **slot)
{
    struct wsr_conn *c = *slot;
    enum wsr_state st;
    char msg[512];

    if (!c)
        return start(r, conn, raw_uri, slot);
    pthread_mutex_lock(&r->lock);
    st = c->state;
    pthread_mutex_unlock(&r->lock);
    if (st == WSR_ANSWERED)
        return queue_answer(c, conn);
    if (st == WSR_FAILED) {
        snprintf(msg, sizeof msg,
                 "the WebSocket broker at %s %s: check that parley-broker runs (its --port is "
                 "this service's --ws-port), or set --broker-url",
                 r->broker_shown, c->fail_msg ? c->fail_msg : "did not answer");
        return queue_json_error(conn, 503, "unavailable", msg);
    }
    if (st == WSR_CLOSED) /* closed while the client waited (shutdown) */
        return queue_json_error(conn, 503, "unavailable", "parley-rest is shutting down");
    return MHD_YES; /* not answered yet: cannot happen while suspended */
}

void wsrelay_release(struct wsrelay *r, struct wsr_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&r->lock);
    /* a 101 the client never got (it left, or MHD failed): the broker side goes too */
    if (c->state == WSR_ANSWERED && !c->urh && c->pending == PEND_NONE && !r->stopping) {
        c->refs++; /* held by the pending entry until the relay thread takes it */
        pend_locked(c, PEND_CLOSE);
    }
    pthread_mutex_unlock(&r->lock);
    unref(c);
}

/* ---- the relay thread ---- */

static void set_state(struct wsr_conn *c, enum wsr_state st)
{
    pthread_mutex_lock(&c->r->lock);
    c->state = st;
    pthread_mutex_unlock(&c->r->lock);
}

static void handshake_over(struct wsr_conn *c)
{
    pthread_mutex_lock(&c->r->lock);
    if (c->counted_handshake) {
        c->counted_handshake = false;
        c->r->handshakes--;
    }
    pthread_mutex_unlock(&c->r->lock);
}

/* Ends c for the relay thread: sockets closed (the client's through MHD), its hold
 * dropped once the current batch of events is done (they may still name c). */
static void finish(struct wsr_conn *c, struct wsr_conn **dead)
{
    struct MHD_UpgradeResponseHandle *urh = NULL;

    handshake_over(c);
    if (c->cfd >= 0) {
        epoll_ctl(c->r->epfd, EPOLL_CTL_DEL, c->cfd, NULL);
        c->cfd = -1;
    }
    if (c->bfd >= 0) {
        close(c->bfd);
        c->bfd = -1;
    }
    pthread_mutex_lock(&c->r->lock);
    urh = c->urh;
    c->urh = NULL;
    c->state = WSR_CLOSED;
    pthread_mutex_unlock(&c->r->lock);
    if (urh)
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    c->dead_next = *dead;
    *dead = c;
}

/* The handshake failed (why: for the client's 503); the client is answered. */
static void fail(struct wsr_conn *c, const char *why, struct wsr_conn **dead)
{
    log_warn("ws relay: the broker at %s %s", c->r->broker_shown, why);
    handshake_over(c);
    close(c->bfd);
    c->bfd = -1;
    c->fail_msg = why;
    set_state(c, WSR_FAILED);
    MHD_resume_connection(c->mhd);
    c->dead_next = *dead;
    *dead = c;
}

/* Parses the head at b2c once "\r\n\r\n" is in: 1 parsed, 0 not complete, -1 bad. */
static int parse_head(struct wsr_conn *c)
{
    struct wsr_buf *b = &c->b2c;
    char *end = memmem(b->data, b->end, "\r\n\r\n", 4), *p;
    int status;

    if (!end)
        return b->end == sizeof b->data ? -1 : 0;
    c->head_end = (size_t)(end - b->data) + 4;
    if (c->head_end < 12 || strncmp(b->data, "HTTP/1.", 7) != 0 || b->data[8] != ' ')
        return -1;
    status = (b->data[9] - '0') * 100 + (b->data[10] - '0') * 10 + (b->data[11] - '0');
    if (status < 100 || status > 599)
        return -1;
    c->status = status;
    /* a refusal's body: Content-Length, or until the broker closes */
    for (p = b->data; p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p++;
        if (!strncasecmp(p, "content-length:", 15)) {
            long long v = strtoll(p + 15, NULL, 10);
            if (v >= 0 && (size_t)v < sizeof b->data)
                c->body_want = (size_t)v;
        }
    }
    return 1;
}

/* Steps 2: connect, send the request, read the answer. */
static void handshake_io(struct wsr_conn *c, struct wsr_conn **dead)
{
    struct wsr_buf *out = &c->c2b, *in = &c->b2c;
    bool answered = false;
    ssize_t n;
    int err = 0;

    if (c->state == WSR_CONNECTING) {
        if (!c->b_wr)
            return;
        if (getsockopt(c->bfd, SOL_SOCKET, SO_ERROR, &err, &(socklen_t){sizeof err}) < 0)
            err = errno;
        if (err) {
            fail(c, strerror(err) /* static text */, dead);
            return;
        }
        set_state(c, WSR_HEAD);
    }
    while (c->b_wr && out->start < out->end) {
        n = send(c->bfd, out->data + out->start, out->end - out->start, MSG_NOSIGNAL);
        if (n > 0)
            out->start += (size_t)n;
        else if (n < 0 && (errno == EAGAIN || errno == EINTR))
            c->b_wr = errno == EINTR;
        else {
            fail(c, "closed the connection during the handshake", dead);
            return;
        }
    }
    while (c->b_rd && in->end < sizeof in->data) {
        n = recv(c->bfd, in->data + in->end, sizeof in->data - in->end, 0);
        if (n > 0) {
            in->end += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            c->b_rd = errno == EINTR;
        } else {
            c->b_eof = true;
            break;
        }
        if (!c->head_end && parse_head(c) < 0) {
            fail(c, "answered something that is not HTTP", dead);
            return;
        }
        if (c->head_end && c->status == MHD_HTTP_SWITCHING_PROTOCOLS)
            break; /* what follows the head is WebSocket, for the client */
    }
    if (!c->head_end) {
        if (parse_head(c) < 0 || c->b_eof) {
            fail(c,
                 c->b_eof ? "closed the connection without answering"
                          : "answered something that is not HTTP",
                 dead);
            return;
        }
        return;
    }
    if (c->status == MHD_HTTP_SWITCHING_PROTOCOLS) {
        answered = true;         /* the broker socket stays open, for step 5 */
        in->start = c->head_end; /* what follows the head is the client's */
    } else if (c->b_eof || in->end == sizeof in->data ||
               (c->body_want != SIZE_MAX && in->end - c->head_end >= c->body_want)) {
        answered = true;
        close(c->bfd);
        c->bfd = -1;
        c->dead_next = *dead; /* the relay's part is over */
        *dead = c;
    }
    if (!answered)
        return;
    handshake_over(c);
    set_state(c, WSR_ANSWERED);
    MHD_resume_connection(c->mhd);
}

/* Step 5: moves what can move, both ways, until nothing does. */
static void pump(struct wsr_conn *c, struct wsr_conn **dead)
{
    struct wsr_buf *c2b = &c->c2b, *b2c = &c->b2c;
    bool progress = true;
    ssize_t n;

    /* Edge-triggered: a flag says a socket may have data (or room). A short read means
     * drained and a short write full, for now: epoll reports the next arrival or the next
     * room as a new edge, so the read or write that would only say EAGAIN is skipped. */
    while (progress) {
        progress = false;
        /* client -> broker */
        if (c->c_rd && !c->c_eof && c2b->end < sizeof c2b->data) {
            size_t want = sizeof c2b->data - c2b->end;
            n = recv(c->cfd, c2b->data + c2b->end, want, 0);
            if (n > 0)
                c2b->end += (size_t)n, progress = true, c->c_rd = (size_t)n == want;
            else if (n == 0)
                c->c_eof = true, progress = true;
            else if (errno == EAGAIN)
                c->c_rd = false;
            else if (errno != EINTR) {
                finish(c, dead);
                return;
            }
        }
        if (c->b_wr && c2b->start < c2b->end) {
            size_t want = c2b->end - c2b->start;
            n = send(c->bfd, c2b->data + c2b->start, want, MSG_NOSIGNAL);
            if (n > 0)
                c2b->start += (size_t)n, progress = true, c->b_wr = (size_t)n == want;
            else if (n < 0 && errno == EAGAIN)
                c->b_wr = false;
            else if (n < 0 && errno != EINTR) {
                finish(c, dead);
                return;
            }
        }
        if (c2b->start == c2b->end)
            c2b->start = c2b->end = 0;
        /* broker -> client */
        if (c->b_rd && !c->b_eof && b2c->end < sizeof b2c->data) {
            size_t want = sizeof b2c->data - b2c->end;
            n = recv(c->bfd, b2c->data + b2c->end, want, 0);
            if (n > 0)
                b2c->end += (size_t)n, progress = true, c->b_rd = (size_t)n == want;
            else if (n == 0)
                c->b_eof = true, progress = true;
            else if (errno == EAGAIN)
                c->b_rd = false;
            else if (errno != EINTR) {
                finish(c, dead);
                return;
            }
        }
        if (c->c_wr && b2c->start < b2c->end) {
            size_t want = b2c->end - b2c->start;
            n = send(c->cfd, b2c->data + b2c->start, want, MSG_NOSIGNAL);
            if (n > 0)
                b2c->start += (size_t)n, progress = true, c->c_wr = (size_t)n == want;
            else if (n < 0 && errno == EAGAIN)
                c->c_wr = false;
            else if (n < 0 && errno != EINTR) {
                finish(c, dead);
                return;
            }
        }
        if (b2c->start == b2c->end)
            b2c->start = b2c->end = 0;
    }
    /* an end of stream, once its side's bytes are through, is passed on */
    if (c->c_eof && !c->b_shut && c2b->start == c2b->end) {
        shutdown(c->bfd, SHUT_WR);
        c->b_shut = true;
    }
    if (c->b_eof && !c->c_shut && b2c->start == b2c->end) {
        shutdown(c->cfd, SHUT_WR);
        c->c_shut = true;
    }
    if (c->b_shut && c->c_shut)
        finish(c, dead);
}

static int watch(struct wsrelay *r, int fd, struct wsr_side *side)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = side};

    return epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* Takes what the MHD side handed over. */
static void take_pending(struct wsrelay *r, struct wsr_conn **dead)
{
    struct wsr_conn *list, *c, *next;
    uint64_t v;

    if (read(r->evfd, &v, sizeof v) < 0 && errno != EAGAIN)
        log_warn("ws relay: reading the wake-up eventfd: %s", strerror(errno));
    pthread_mutex_lock(&r->lock);
    list = r->pending;
    r->pending = NULL;
    pthread_mutex_unlock(&r->lock);
    for (c = list; c; c = next) {
        enum wsr_pending op;
        next = c->pend_next;
        pthread_mutex_lock(&r->lock);
        op = c->pending;
        c->pending = PEND_NONE;
        pthread_mutex_unlock(&r->lock);
        switch (op) {
        case PEND_CLOSE:
            if (c->state == WSR_ANSWERED && c->bfd >= 0)
                finish(c, dead);
            unref(c); /* the pending entry's hold */
            break;
        case PEND_NONE:
            break;
        }
    }
}

static void on_event(struct wsr_side *side, uint32_t events, struct wsr_conn **dead)
{
    struct wsr_conn *c = side->c;
    enum wsr_state st;

    pthread_mutex_lock(&c->r->lock); /* the upgrade handler sets WSR_RELAY */
    st = c->state;
    pthread_mutex_unlock(&c->r->lock);
    if (st == WSR_CLOSED || st == WSR_FAILED)
        return; /* closed earlier in this batch */
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if (side->client)
            c->c_rd = true;
        else
            c->b_rd = true;
    }
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
        if (side->client)
            c->c_wr = true;
        else
            c->b_wr = true;
    }
    if (st == WSR_CONNECTING || st == WSR_HEAD)
        handshake_io(c, dead);
    else if (st == WSR_RELAY)
        pump(c, dead);
    /* WSR_ANSWERED: the flags wait for the upgrade */
}

static void expire_handshakes(struct wsrelay *r, struct wsr_conn **dead)
{
    int64_t now = clock_mono_ms();
    struct wsr_conn *late[EVENTS_MAX];
    int n = 0;

    pthread_mutex_lock(&r->lock);
    for (struct wsr_conn *c = r->conns; c && n < EVENTS_MAX; c = c->next)
        if (c->counted_handshake && now >= c->deadline_ms)
            late[n++] = c;
    pthread_mutex_unlock(&r->lock);
    for (int i = 0; i < n; i++)
        fail(late[i], "did not answer the upgrade within 10 s", dead);
}

/* Closes everything at shutdown: waiting clients get their 503 answer. */
static void close_all(struct wsrelay *r, struct wsr_conn **dead)
{
    struct wsr_conn *mine[EVENTS_MAX];
    int n;

    do {
        n = 0;
        pthread_mutex_lock(&r->lock);
        for (struct wsr_conn *c = r->conns; c && n < EVENTS_MAX; c = c->next)
            if (c->bfd >= 0 && c->state != WSR_CLOSED && c->state != WSR_FAILED)
                mine[n++] = c;
        pthread_mutex_unlock(&r->lock);
        for (int i = 0; i < n; i++) {
            if (mine[i]->state == WSR_CONNECTING || mine[i]->state == WSR_HEAD)
                fail(mine[i], "is being shut down with parley-rest", dead);
            else
                finish(mine[i], dead);
        }
    } while (n == EVENTS_MAX);
}

static void drop_dead(struct wsr_conn **dead)
{
    while (*dead) {
        struct wsr_conn *c = *dead;
        *dead = c->dead_next;
        c->dead_next = NULL;
        unref(c);
    }
}

static void *relay_main(void *arg)
{
    struct wsrelay *r = arg;
    struct epoll_event evs[EVENTS_MAX];

    for (;;) {
        struct wsr_conn *dead = NULL;
        int n, handshakes;
        bool stopping;

        pthread_mutex_lock(&r->lock);
        handshakes = r->handshakes;
        pthread_mutex_unlock(&r->lock);
        n = epoll_wait(r->epfd, evs, EVENTS_MAX, handshakes ? 1000 : -1);

        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &evfd_tag)
                take_pending(r, &dead);
            else
                on_event(evs[i].data.ptr, evs[i].events, &dead);
        }
        if (handshakes)
            expire_handshakes(r, &dead);
        pthread_mutex_lock(&r->lock);
        stopping = r->stopping;
        pthread_mutex_unlock(&r->lock);
        if (stopping) {
            take_pending(r, &dead);
            close_all(r, &dead);
        }
        drop_dead(&dead);
        if (stopping)
            return NULL;
    }
}

/* ---- lifetime ---- */

/* The broker's host and port from --broker-url (ws://HOST:PORT[/...]) or the default. */
static int broker_address(struct wsrelay *r)
{
    const struct cfg *cfg = r->cfg;
    char host[256] = "127.0.0.1", port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc;

    snprintf(port, sizeof port, "%d", cfg->ws_port);
    if (cfg->broker_url) {
        const char *u = cfg->broker_url, *h, *e;
        size_t n;
        if (strncmp(u, "ws://", 5) != 0) {
            log_error("--broker-url '%s' must be ws://HOST:PORT (the broker's own address; "
                      "parley-rest speaks plain WebSocket to it)",
                      u);
            return -1;
        }
        h = u + 5;
        if (*h == '[') {
            e = strchr(h, ']');
            if (!e)
                goto bad;
            n = (size_t)(e - h - 1);
            h++;
            e++;
        } else {
            n = strcspn(h, ":/");
            e = h + n;
        }
        if (n == 0 || n >= sizeof host)
            goto bad;
        memcpy(host, h, n);
        host[n] = '\0';
        if (*e == ':') {
            size_t pn = strcspn(e + 1, "/");
            if (pn == 0 || pn >= sizeof port)
                goto bad;
            memcpy(port, e + 1, pn);
            port[pn] = '\0';
        } else if (*e && *e != '/') {
            goto bad;
        }
    }
    if ((rc = getaddrinfo(host, port, &hints, &ai)) != 0 || !ai) {
        log_error("cannot resolve the broker's address %s port %s (--broker-url): %s", host, port,
                  gai_strerror(rc));
        return -1;
    }
    memcpy(&r->broker, ai->ai_addr, ai->ai_addrlen);
    r->broker_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    snprintf(r->broker_shown, sizeof r->broker_shown, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host,
             port);
    return 0;
bad:
    log_error("--broker-url '%s' is not ws://HOST:PORT", cfg->broker_url);
    return -1;
}

struct wsrelay *wsrelay_new(const struct cfg *cfg)
{
    struct wsrelay *r = calloc(1, sizeof *r);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = (void *)&evfd_tag};

    if (!r)
        return NULL;
    r->cfg = cfg;
    r->epfd = r->evfd = -1;
    pthread_mutex_init(&r->lock, NULL);
    if (broker_address(r) < 0)
        goto fail;
    if ((r->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        (r->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
        epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->evfd, &ev) < 0) {
        log_error("ws relay: cannot make its epoll set: %s", strerror(errno));
        goto fail;
    }
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        log_error("ws relay: cannot start its thread");
        goto fail;
    }
    r->thread_started = true;
    return r;
fail:
    wsrelay_free(r);
    return NULL;
}

void wsrelay_stop(struct wsrelay *r)
{
    uint64_t one = 1;

    if (!r || !r->thread_started)
        return;
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_mutex_unlock(&r->lock);
    if (write(r->evfd, &one, sizeof one) < 0)
        log_warn("ws relay: cannot wake the relay thread: %s", strerror(errno));
    pthread_join(r->thread, NULL);
    r->thread_started = false;
}

void wsrelay_free(struct wsrelay *r)
{
    if (!r)
        return;
    wsrelay_stop(r);
    /* what is left is held by requests MHD_stop_daemon ended: they are freed by now */
    if (r->evfd >= 0)
        close(r->evfd);
    if (r->epfd >= 0)
        close(r->epfd);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
