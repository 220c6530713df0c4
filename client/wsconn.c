/* wsconn: the libwebsockets client connection, its reconnection backoff and the event loop.
 *
 * One lws context with no listener; one protocol for the broker connection and one for
 * stdin, adopted as a raw file so keystrokes and frames are served by the same poll. Not
 * here: what the messages mean (repl.c, script.c). Single-threaded: every function runs on
 * the thread that calls wsc_run. */
#include "wsconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jsonx.h"

#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS   30000
#define RX_MAX           (16 * 1024 * 1024) /* a larger message is a broken server */

/* One queued frame, with LWS_PRE bytes of headroom before the text. */
struct out_frame {
    struct out_frame *next;
    size_t len;
    unsigned char buf[]; /* LWS_PRE + len */
};

struct wsc {
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    struct lws *wsi;       /* the broker connection, NULL when none */
    struct lws *stdin_wsi; /* stdin adopted as a raw file, NULL when not watched */
    lws_sorted_usec_list_t retry_sul;

    char *url_buf; /* owned; lws_parse_uri cut it into the pieces below */
    const char *host;
    char host_hdr[300];
    char path[1024];
    int port;
    bool tls;
    char *api_key; /* owned, may be NULL */

    bool reconnect;
    bool closing; /* wsc_disconnect asked for a close */
    bool destroying;
    enum wsc_state state;
    unsigned failures; /* consecutive, for the backoff */
    bool ever_open;
    struct wsc_stats stats;

    struct out_frame *out_head, *out_tail;
    char *rx;
    size_t rx_len, rx_cap;

    const struct wsc_handler *h;
    void *ud;
};

/* Keepalive of our own: ping a silent connection after 20 s, give up on it after 40 s,
 * so a broker that vanished without a close is noticed and reconnected. */
static const lws_retry_bo_t keepalive = {
    .secs_since_valid_ping = 20,
    .secs_since_valid_hangup = 40,
};

static void drop_queue(struct wsc *w)
{
    struct out_frame *f = w->out_head, *next;

    for (; f; f = next) {
        next = f->next;
        free(f);
    }
    w->out_head = w->out_tail = NULL;
    w->rx_len = 0;
}

static void start_attempt(struct wsc *w);

static void retry_cb(lws_sorted_usec_list_t *sul)
{
    struct wsc *w = lws_container_of(sul, struct wsc, retry_sul);

    start_attempt(w);
}

/* The connection is gone (or never came): tell the handler and schedule the next try. */
static void lost(struct wsc *w, const char *why)
{
    bool was_open = w->state == WSC_CONNECTED;
    int delay = -1;

    w->wsi = NULL;
    drop_queue(w);
    if (w->destroying)
        return;
    if (w->reconnect && !w->closing) {
        unsigned shift = w->failures < 5 ? w->failures : 5;
        int base = BACKOFF_FIRST_MS << shift;
        if (base > BACKOFF_MAX_MS)
            base = BACKOFF_MAX_MS;
        /* +-20 % so that many clients cut off together do not come back together */
        delay = base - base / 5 + (int)(random() % (2 * base / 5 + 1));
        w->failures++;
        w->state = WSC_WAITING;
        lws_sul_schedule(w->ctx, 0, &w->retry_sul, retry_cb, (lws_usec_t)delay * LWS_US_PER_MS);
    } else {
        w->state = WSC_OFFLINE;
    }
    w->closing = false;
    if (w->h->on_close)
        w->h->on_close(w->ud, why, was_open, delay);
}

static void start_attempt(struct wsc *w)
{
    struct lws_client_connect_info i;

    memset(&i, 0, sizeof i);
    i.context = w->ctx;
    i.address = w->host;
    i.port = w->port;
    i.path = w->path;
    i.host = w->host_hdr;
    i.ssl_connection = w->tls ? LCCSCF_USE_SSL : 0;
    i.protocol = NULL; /* the broker speaks no named subprotocol */
    i.local_protocol_name = "parley-client";
    i.pwsi = &w->wsi;
    i.retry_and_idle_policy = &keepalive;
    i.userdata = w;

    w->state = WSC_CONNECTING;
    w->stats.attempts++;
    if (!lws_client_connect_via_info(&i) && w->state == WSC_CONNECTING)
        lost(w, "cannot start the connection");
}

static void on_receive(struct wsc *w, struct lws *wsi, const void *in, size_t len)
{
    json_t *msg;
    json_error_t err;

    if (lws_is_first_fragment(wsi))
        w->rx_len = 0;
    if (w->rx_len + len > RX_MAX)
        return; /* dropped; the broker never sends this much */
    if (w->rx_len + len > w->rx_cap) {
        size_t cap = w->rx_cap ? w->rx_cap : 4096;
        char *p;
        while (cap < w->rx_len + len)
            cap *= 2;
        p = realloc(w->rx, cap);
        if (!p)
            return;
        w->rx = p;
        w->rx_cap = cap;
    }
    memcpy(w->rx + w->rx_len, in, len);
    w->rx_len += len;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
        return;
    msg = json_loadb(w->rx, w->rx_len, 0, &err);
    w->rx_len = 0;
    if (!json_is_object(msg)) {
        json_decref(msg);
        return;
    }
    if (w->h->on_message)
        w->h->on_message(w->ud, msg);
    json_decref(msg);
}

static int write_one(struct wsc *w, struct lws *wsi)
{
    struct out_frame *f = w->out_head;

    if (w->closing) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"bye", 3);
        return -1;
    }
    if (!f)
        return 0; /* an unexpected writeable callback is a no-op */
    if (lws_write(wsi, f->buf + LWS_PRE, f->len, LWS_WRITE_TEXT) < (int)f->len)
        return -1;
    w->out_head = f->next;
    if (!w->out_head)
        w->out_tail = NULL;
    free(f);
    if (w->out_head)
        lws_callback_on_writable(wsi);
    return 0;
}

static int callback_client(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    struct wsc *w = lws_context_user(lws_get_context(wsi));

    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
        unsigned char **p = in, *end = *p + len;
        char hdr[600];
        int n;
        if (!w->api_key)
            break;
        n = snprintf(hdr, sizeof hdr, "Bearer %s", w->api_key);
        if (n < 0 || (size_t)n >= sizeof hdr ||
            lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, (unsigned char *)hdr, n,
                                         p, end))
            return -1;
        break;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        w->state = WSC_CONNECTED;
        w->failures = 0;
        if (w->ever_open)
            w->stats.reconnections++;
        w->ever_open = true;
        if (w->h->on_open)
            w->h->on_open(w->ud);
        if (w->out_head || w->closing)
            lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        on_receive(w, wsi, in, len);
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return write_one(w, wsi);
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        char why[200];
        snprintf(why, sizeof why, "%s", in ? (const char *)in : "connection failed");
        if (w->state == WSC_CONNECTING)
            lost(w, why);
        break;
    }
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (w->state == WSC_CONNECTED || w->state == WSC_CONNECTING)
            lost(w, w->closing ? "disconnected" : "connection closed");
        break;
    default:
        break;
    }
    return 0;
}

static int callback_stdin(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                          size_t len)
{
    struct wsc *w = lws_context_user(lws_get_context(wsi));

    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (w->h->on_stdin)
            w->h->on_stdin(w->ud);
        break;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        w->stdin_wsi = NULL;
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"parley-client", callback_client, 0, 0, 0, NULL, 0},
    {"parley-stdin", callback_stdin, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Cuts url into host, port, path and TLS flag. Returns 0, or -1 with why on stderr. */
static int parse_url(struct wsc *w, const char *url)
{
    const char *prot, *host, *path;
    int port;

    w->url_buf = strdup(url);
    if (!w->url_buf || lws_parse_uri(w->url_buf, &prot, &host, &port, &path))
        goto bad;
    if (strcmp(prot, "wss") == 0) {
        w->tls = true;
    } else if (strcmp(prot, "ws") != 0) {
        goto bad;
    }
    if (!*host)
        goto bad;
    if (strcmp(prot, "wss") == 0 && port == 80)
        port = 443; /* lws_parse_uri defaults to 80 unless it sees https/wss */
    w->host = host;
    w->port = port;
    snprintf(w->host_hdr, sizeof w->host_hdr, "%s:%d", host, port);
    snprintf(w->path, sizeof w->path, "/%s", path);
    return 0;
bad:
    fprintf(stderr, "parley: invalid WebSocket URL '%s' (want ws://HOST:PORT/ws or wss://...)\n",
            url);
    return -1;
}

struct wsc *wsc_new(const char *url, const char *api_key, bool reconnect,
                    const struct wsc_handler *h, void *ud)
{
    struct lws_context_creation_info info;
    struct wsc *w = calloc(1, sizeof *w);

    if (!w)
        return NULL;
    w->h = h;
    w->ud = ud;
    w->reconnect = reconnect;
    if (parse_url(w, url))
        goto fail;
    if (api_key && *api_key && !(w->api_key = strdup(api_key)))
        goto fail;
    lws_set_log_level(0, NULL); /* the terminal is the user's: lws logs nothing */
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.user = w;
    info.timeout_secs = 10;
    if (w->tls)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    w->ctx = lws_create_context(&info);
    if (!w->ctx) {
        fprintf(stderr, "parley: cannot create the libwebsockets context\n");
        goto fail;
    }
    w->vhost = lws_get_vhost_by_name(w->ctx, "default");
    return w;
fail:
    wsc_free(w);
    return NULL;
}

void wsc_free(struct wsc *w)
{
    if (!w)
        return;
    w->destroying = true;
    if (w->ctx) {
        lws_sul_cancel(&w->retry_sul);
        lws_context_destroy(w->ctx);
    }
    drop_queue(w);
    free(w->rx);
    free(w->api_key);
    free(w->url_buf);
    free(w);
}

void wsc_connect(struct wsc *w)
{
    if (w->state == WSC_CONNECTED || w->state == WSC_CONNECTING)
        return;
    lws_sul_cancel(&w->retry_sul);
    w->closing = false;
    w->failures = 0;
    start_attempt(w);
}

void wsc_disconnect(struct wsc *w)
{
    lws_sul_cancel(&w->retry_sul);
    if (w->wsi && (w->state == WSC_CONNECTED || w->state == WSC_CONNECTING)) {
        w->closing = true;
        if (w->state == WSC_CONNECTED) {
            lws_callback_on_writable(w->wsi);
            return;
        }
        lws_set_timeout(w->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    w->state = WSC_OFFLINE;
}

enum wsc_state wsc_state(const struct wsc *w)
{
    return w->state;
}

const char *wsc_state_name(enum wsc_state s)
{
    switch (s) {
    case WSC_OFFLINE:
        return "offline";
    case WSC_CONNECTING:
        return "connecting";
    case WSC_CONNECTED:
        return "connected";
    case WSC_WAITING:
        return "reconnecting";
    }
    return "?";
}

struct wsc_stats wsc_stats(const struct wsc *w)
{
    return w->stats;
}

int wsc_send(struct wsc *w, const json_t *msg)
{
    struct out_frame *f;
    size_t len;
    char *text;

    if (w->state != WSC_CONNECTED || !w->wsi || w->closing)
        return -1;
    text = jx_dump(msg, &len);
    if (!text)
        return -1;
    f = malloc(sizeof *f + LWS_PRE + len);
    if (!f) {
        free(text);
        return -1;
    }
    f->next = NULL;
    f->len = len;
    memcpy(f->buf + LWS_PRE, text, len);
    free(text);
    if (w->out_tail)
        w->out_tail->next = f;
    else
        w->out_head = f;
    w->out_tail = f;
    lws_callback_on_writable(w->wsi);
    return 0;
}

int wsc_run(struct wsc *w)
{
    return lws_service(w->ctx, 0) < 0 ? -1 : 0;
}

int wsc_watch_stdin(struct wsc *w)
{
    lws_sock_file_fd_type u;

    u.filefd = (lws_filefd_type)STDIN_FILENO;
    w->stdin_wsi =
        lws_adopt_descriptor_vhost(w->vhost, LWS_ADOPT_RAW_FILE_DESC, u, "parley-stdin", NULL);
    return w->stdin_wsi ? 0 : -1;
}

static void timer_cb(lws_sorted_usec_list_t *sul)
{
    struct wsc_timer *t = lws_container_of(sul, struct wsc_timer, sul);

    t->fn(t->ud);
}

void wsc_timer_set(struct wsc *w, struct wsc_timer *t, int ms, void (*fn)(void *), void *ud)
{
    t->fn = fn;
    t->ud = ud;
    t->owner = w;
    lws_sul_schedule(w->ctx, 0, &t->sul, timer_cb, (lws_usec_t)ms * LWS_US_PER_MS);
}

void wsc_timer_cancel(struct wsc_timer *t)
{
    if (t->owner)
        lws_sul_cancel(&t->sul);
}
