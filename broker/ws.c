/* ws: the lws protocol callbacks. "parley-chat" serves the WebSocket connections on /ws;
 * "parley-notify" reads the notification socket, adopted into the same loop as a raw file
 * descriptor. Vhost state is made in PROTOCOL_INIT and freed in PROTOCOL_DESTROY.
 *
 * Also here: each connection's life (open, reassembling messages, close with our own
 * close handshake), upgrade refusals with their HTTP status, and the once-a-second tick
 * (keepalive pings and idle drops, typing expiry, live figures, key refresh). */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "assistant.h"
#include "broker.h"
#include "broker_main.h"
#include "clock.h"
#include "dbq.h"
#include "log.h"
#include "map.h"
#include "names.h"
#include "notify.h"

#define TICK_US (1000 * LWS_US_PER_MS)

struct per_session_data__chat *ws_conn(struct per_vhost_data__chat *vhd, const char *id)
{
    return map_get(vhd->conns, id);
}

#define CLIENT_ID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"

bool ws_client_id_valid(const char *s, size_t n)
{
    return n >= 1 && n <= BROKER_CLIENT_ID_MAX && strlen(s) == n && strspn(s, CLIENT_ID_CHARS) == n;
}

const char *ws_client_id(const struct per_session_data__chat *pss)
{
    return pss->client_id[0] ? pss->client_id : pss->id;
}

const char *ws_client_of(struct per_vhost_data__chat *vhd, const char *conn_id)
{
    struct per_session_data__chat *pss = conn_id ? ws_conn(vhd, conn_id) : NULL;

    return pss ? ws_client_id(pss) : conn_id;
}

void ws_wake(struct per_session_data__chat *pss)
{
    if (pss->wsi) /* none for the fuzzer's connections */
        lws_callback_on_writable(pss->wsi);
}

void ws_close(struct per_session_data__chat *pss, uint16_t code)
{
    if (pss->close_code)
        return;
    pss->close_code = code;
    ws_wake(pss);
}

int64_t ws_shutdown(struct per_vhost_data__chat *vhd)
{
    vhd->stopping = true;
    for (struct per_session_data__chat *pss = vhd->conns_list; pss; pss = pss->next)
        ws_close(pss, LWS_CLOSE_STATUS_GOINGAWAY);
    return vhd->n_conns;
}

/* Keepalive, once a second: a connection silent (no message, no pong) for
 * --ping-interval is pinged, one silent for --idle-timeout is dropped. One pass over the
 * connections, O(1) each. */
static void keepalive(struct per_vhost_data__chat *vhd, int64_t now)
{
    int64_t ping_ms = (int64_t)vhd->cfg->ping_interval_s * 1000;
    int64_t idle_ms = (int64_t)vhd->cfg->idle_timeout_s * 1000;

    for (struct per_session_data__chat *pss = vhd->conns_list; pss; pss = pss->next) {
        int64_t silent = now - pss->heard_mono;
        if (pss->culled || pss->close_sent)
            continue;
        if (silent >= idle_ms) {
            log_debug("connection %s silent for %lld ms: dropping it", pss->id, (long long)silent);
            pss->culled = true; /* nothing more is queued; lws closes it */
            fanout_clear(&pss->q);
            lws_set_timeout(pss->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        } else if (silent >= ping_ms && now - pss->pinged_mono >= ping_ms) {
            pss->ping_due = true;
            lws_callback_on_writable(pss->wsi);
        }
    }
}

/* Sends the ping keepalive asked for. Returns -1 when the connection must close.
 * The ping carries a payload: lws 4.1 does not report a pong with an empty one
 * (LWS_CALLBACK_RECEIVE_PONG), and the client echoes it. */
static int send_ping(struct per_session_data__chat *pss)
{
    unsigned char buf[LWS_PRE + 2] = {0};

    pss->ping_due = false;
    pss->pinged_mono = clock_mono_ms();
    memcpy(buf + LWS_PRE, "ka", 2);
    if (lws_write(pss->wsi, buf + LWS_PRE, 2, LWS_WRITE_PING) < 0)
        return -1;
    if (pss->q.len || pss->close_code)
        lws_callback_on_writable(pss->wsi);
    return 0;
}

static void tick(lws_sorted_usec_list_t *sul)
{
    struct per_vhost_data__chat *vhd = lws_container_of(sul, struct per_vhost_data__chat, tick);

    keepalive(vhd, clock_mono_ms());
    sess_tick(vhd, clock_mono_ms());
    sess_publish(vhd);
    access_tick(vhd);
    reconcile_tick(vhd, clock_mono_ms());
    asst_lease_tick(vhd);
    roster_tick(vhd, clock_mono_ms());
    lws_sul_schedule(vhd->context, 0, &vhd->tick, tick, TICK_US);
}

static void free_session(void *value, void *arg)
{
    struct live_session *s = value;
    struct per_vhost_data__chat *vhd = arg;

    asst_abort(vhd, s);
    roster_drop_parked(s); /* their callbacks see stopping: they only free themselves */
    sess_free(s);
}

static void free_mark(void *value, void *arg)
{
    free(value);
}

#define NODE_ID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"

bool ws_node_id_valid(const char *s)
{
    size_t n = strlen(s);

    return n >= 1 && n <= DB_NODE_ID_MAX && strspn(s, NODE_ID_CHARS) == n;
}

/* vhd->node_id: --node-id (checked by main), else HOSTNAME:PORT, the host name cut to fit
 * and any character a node id cannot have replaced by '-'. */
static void name_node(struct per_vhost_data__chat *vhd)
{
    char host[256] = "", port[8];
    int n;

    if (vhd->cfg->node_id) {
        snprintf(vhd->node_id, sizeof vhd->node_id, "%s", vhd->cfg->node_id);
        return;
    }
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    for (char *c = host; *c; c++)
        if (!strchr(NODE_ID_CHARS, *c))
            *c = '-';
    n = snprintf(port, sizeof port, ":%d", vhd->port);
    snprintf(vhd->node_id, sizeof vhd->node_id, "%.*s%s", DB_NODE_ID_MAX - n, host, port);
}

int ws_vhd_init(struct per_vhost_data__chat *vhd, struct lws_context *ctx, struct broker_init *init)
{
    int access_init_rc;

    vhd->context = ctx;
    vhd->cfg = init->cfg;
    /* the vhost listens by now: with --port 0 this is the port the system picked */
    vhd->port = vhd->vhost ? lws_get_vhost_listen_port(vhd->vhost) : init->cfg->port;
    if (vhd->port <= 0)
        vhd->port = init->cfg->port;
    name_node(vhd);
    vhd->driver = asst_driver_for(init->cfg->llm);
    vhd->sessions = map_new();
    vhd->conns = map_new();
    vhd->deleted = map_new();
    vhd->nodes = map_new();
    vhd->notify = init->notify;
    access_init_rc = access_init(vhd, init->keys, init->n_keys);
    init->keys = NULL; /* stolen, whatever the outcome */
    if (!vhd->sessions || !vhd->conns || !vhd->deleted || !vhd->nodes || access_init_rc < 0 ||
        templates_load(vhd) < 0)
        return -1;
    /* this node's member counts of a previous run are stale: forget them before serving */
    if (db_live_reset(init->db, vhd->node_id, (int)getpid(), cfg_model_name(init->cfg)) != PERR_OK)
        return -1;
    if (!(vhd->dbq = dbq_new(init->db, vhd->context, vhd->node_id)))
        return -1;
    init->db = NULL; /* the database thread owns it now */
    if (relay_init(vhd) < 0)
        return -1;
    return asst_llm_init(vhd);
}

/* Everything the vhost needs, or nothing: on failure what was made is released here,
 * since lws frees vhd itself when PROTOCOL_INIT fails and never sends PROTOCOL_DESTROY. */
static int vhost_init(struct lws *wsi)
{
    struct broker_init *init = lws_context_user(lws_get_context(wsi));
    struct per_vhost_data__chat *vhd;
    lws_sock_file_fd_type fd;

    vhd = lws_protocol_vh_priv_zalloc(lws_get_vhost(wsi), lws_get_protocol(wsi), sizeof *vhd);
    if (!vhd)
        return -1;
    vhd->vhost = lws_get_vhost(wsi);
    if (ws_vhd_init(vhd, lws_get_context(wsi), init) < 0)
        goto fail;
    /* Last, since it cannot be undone here: lws closes what it adopts, so give it a
     * duplicate of the listener's poll descriptor. */
    fd.filefd = dup(notify_listener_fd(vhd->notify));
    vhd->notify_wsi = fd.filefd < 0
                          ? NULL
                          : lws_adopt_descriptor_vhost(vhd->vhost, LWS_ADOPT_RAW_FILE_DESC, fd,
                                                       "parley-notify", NULL);
    if (!vhd->notify_wsi) {
        log_error("cannot add the notification socket to the event loop");
        if (fd.filefd >= 0)
            close(fd.filefd);
        goto fail;
    }
    lws_sul_schedule(vhd->context, 0, &vhd->tick, tick, TICK_US);
    reconcile_start(vhd, true); /* replies asked for while the broker was away */
    init->vhd = vhd;
    return 0;
fail:
    ws_vhd_cleanup(vhd);
    return -1;
}

void ws_vhd_cleanup(struct per_vhost_data__chat *vhd)
{
    if (!vhd)
        return;
    lws_sul_cancel(&vhd->tick);
    vhd->stopping = true;
    dbq_stop(vhd->dbq); /* normally already stopped by main */
    vhd->dbq = NULL;
    if (vhd->sessions)
        map_each(vhd->sessions, free_session, vhd); /* cancels transfers under way */
    asst_llm_cleanup(vhd);
    relay_cleanup(vhd);
    roster_cleanup(vhd);
    access_cleanup(vhd);
    templates_free(vhd);
    sess_presence_cleanup(vhd);
    map_free(vhd->sessions);
    map_free(vhd->conns);
    if (vhd->deleted)
        map_each(vhd->deleted, free_mark, NULL);
    map_free(vhd->deleted);
    vhd->sessions = vhd->conns = vhd->deleted = NULL;
    for (size_t i = 0; i < vhd->n_dirty; i++)
        free(vhd->dirty[i]);
    free(vhd->dirty);
    vhd->dirty = NULL;
    vhd->n_dirty = vhd->cap_dirty = 0;
}

/* Caps the kernel's send buffer for the connection. Without it the kernel keeps up to
 * tcp_wmem's maximum (4 MiB here) for a client that stops reading before the broker's own
 * queue (FANOUT_MAX_BYTES) even starts to fill: a stalled client would cost ten times the
 * cap and be culled seconds later. 64 KiB (the kernel doubles it) fits the largest
 * coalesced write. */
static void limit_send_buffer(struct lws *wsi)
{
    int size = 64 * 1024;
    int fd = (int)lws_get_socket_fd(wsi);

    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

int ws_conn_attach(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss)
{
    json_t *ev;

    pss->heard_mono = pss->pinged_mono = clock_mono_ms();
    if (clock_random_hex(pss->id, BROKER_CONN_ID_HEX / 2) < 0 ||
        map_put(vhd->conns, pss->id, pss) < 0) {
        pss->id[0] = '\0';
        return -1;
    }
    pss->next = vhd->conns_list;
    if (pss->next)
        pss->next->prev = pss;
    vhd->conns_list = pss;
    vhd->n_conns++;
    access_conn_open(vhd, pss);
    if (!pss->name_given && pss->client_id[0]) /* /ws/{client_id}: as an envelope message's */
        snprintf(pss->name, sizeof pss->name, "%s", pss->client_id);
    if (!pss->name[0]) /* no ?name= and no key's name */
        name_guest(pss->name, pss->id);
    ev = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:b}}", "type", "connected", "connection_id",
                   pss->id, "message", "connected to Parley", "server_info", "name", "parley",
                   "version", PARLEY_VERSION, "model",
                   vhd->driver ? cfg_model_name(vhd->cfg) : "none", "auth_required",
                   vhd->auth_required);
    fanout_send(vhd, pss, ev);
    json_decref(ev);
    return 0;
}

static void conn_open(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                      struct lws *wsi)
{
    /* lws zeroed pss; access_conn_filter has filled in the peer and authentication */
    pss->wsi = wsi;
    limit_send_buffer(wsi);
    if (ws_conn_attach(vhd, pss) < 0)
        ws_close(pss, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION);
}

void ws_conn_detach(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss)
{
    if (!pss->id[0] || map_get(vhd->conns, pss->id) != pss)
        return; /* never fully opened */
    while (pss->n_joined)
        sess_leave(vhd, pss->joined[pss->n_joined - 1], pss, !vhd->stopping);
    access_conn_close(vhd, pss);
    map_del(vhd->conns, pss->id);
    if (pss->prev)
        pss->prev->next = pss->next;
    else
        vhd->conns_list = pss->next;
    if (pss->next)
        pss->next->prev = pss->prev;
    vhd->n_conns--;
    fanout_clear(&pss->q);
    free(pss->rx);
    pss->rx = NULL;
}

/* Reassembles a message from the pieces lws delivers (fragments, and frames larger than
 * the receive buffer) up to --max-message-size. Returns -1 to close the connection. */
static int conn_receive(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                        const char *in, size_t len)
{
    size_t max = (size_t)vhd->cfg->max_message_size;
    bool final = lws_is_final_fragment(pss->wsi) && lws_remaining_packet_payload(pss->wsi) == 0;
    bool whole = final && pss->rx_len == 0 && !pss->rx;
    char *grown;

    if (pss->culled || pss->close_code)
        return 0;
    pss->heard_mono = clock_mono_ms(); /* any message is a sign of life (keepalive) */
    if (!pss->rx)
        pss->rx_binary = lws_frame_is_binary(pss->wsi);
    if (pss->rx_len + len > max) {
        log_debug("connection %s sent a message over %zu bytes: closing with 1009", pss->id, max);
        free(pss->rx); /* the rest of it is ignored: nothing is read after close_code */
        pss->rx = NULL;
        pss->rx_len = 0;
        ws_close(pss, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
        return 0;
    }
    if (!whole) {
        if (!(grown = realloc(pss->rx, pss->rx_len + len + 1)))
            return -1;
        pss->rx = grown;
        memcpy(pss->rx + pss->rx_len, in, len);
        pss->rx_len += len;
        if (!final)
            return 0;
        in = pss->rx;
        len = pss->rx_len;
    }
    inbound_frame(vhd, pss, in, len, pss->rx_binary);
    free(pss->rx);
    pss->rx = NULL;
    pss->rx_len = 0;
    return 0;
}

static const char *upgrade_refusal(int status)
{
    switch (status) {
    case 401:
        return "the API key is not valid (mistyped or revoked)";
    case 403:
        return "this Origin is not allowed (--allowed-origin)";
    case 404:
        return "WebSocket connections are served on /ws (or /ws/{client_id})";
    case 429:
        return "too many connections from this address (--max-conns-per-ip)";
    default:
        return "the broker is shutting down";
    }
}

/* Answers an upgrade request with status and a line of text, then hangs up. lws's own
 * lws_return_http_status would say HTTP/1.0 here: it learns the request's version only
 * after this callback. Returns what HTTP_CONFIRM_UPGRADE should return. */
static int refuse_upgrade(struct lws *wsi, int status, const char *why)
{
    unsigned char buf[LWS_PRE + 512];
    const char *text = why ? why : upgrade_refusal(status);
    const char *reason = status == 400   ? "Bad Request"
                         : status == 401 ? "Unauthorized"
                         : status == 403 ? "Forbidden"
                         : status == 404 ? "Not Found"
                         : status == 429 ? "Too Many Requests"
                                         : "Service Unavailable";
    int n = snprintf((char *)buf + LWS_PRE, sizeof buf - LWS_PRE,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
                     status, reason, strlen(text) + 1, text);

    lws_write(wsi, buf + LWS_PRE, (size_t)n, LWS_WRITE_HTTP_HEADERS);
    return -1; /* hang up: the answer says Connection: close */
}

/* The WebSocket close opcode for lws_write. lws 4.1 keeps LWS_WRITE_CLOSE to itself (its
 * value is 4 in enum lws_write_protocol, between LWS_WRITE_HTTP and LWS_WRITE_PING). */
#define WS_WRITE_CLOSE      ((enum lws_write_protocol)4)
#define CLOSE_ACK_TIMEOUT_S 5

/* Starts the closing handshake: sends the close frame with pss->close_code now, reads
 * and drops what the client still sends, and lets lws answer the client's close frame
 * and hang up; a client that never answers is cut after CLOSE_ACK_TIMEOUT_S.
 * Done here, not with lws_close_reason() and returning -1: lws then sends the frame on a
 * later writeable pass, and if the client's data arrives first (say, the rest of an
 * oversize message) it drops the connection without the frame. */
static int send_close(struct per_session_data__chat *pss)
{
    unsigned char buf[LWS_PRE + 2];

    buf[LWS_PRE] = (unsigned char)(pss->close_code >> 8);
    buf[LWS_PRE + 1] = (unsigned char)(pss->close_code & 0xff);
    if (lws_write(pss->wsi, buf + LWS_PRE, 2, WS_WRITE_CLOSE) < 0)
        return -1;
    pss->close_sent = true;
    lws_set_timeout(pss->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_ACK_TIMEOUT_S);
    return 0;
}

/* What the upgrade asks for (SPEC 3): the path /ws, or /ws/{client_id} (the seed's shape:
 * that client_id is the connection's, and it speaks the envelope dialect from its first
 * frame), and ?dialect=envelope or ?dialect=flat (the last one given counts; it wins over
 * the path's). Fills what it finds in (client_id: BROKER_CLIENT_ID_MAX + 1 bytes, "" for
 * none; *dialect and *known when the upgrade chose). Returns 0, 404 (not our path) or
 * 400 with *why. */
struct upgrade_ask {
    char client_id[BROKER_CLIENT_ID_MAX + 1];
    enum dialect dialect;
    bool known;
};

static int upgrade_target(struct lws *wsi, struct upgrade_ask *ask, const char **why)
{
    char uri[256], frag[64];
    int n = lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);

    memset(ask, 0, sizeof *ask);
    if (n <= 0 || strncmp(uri, "/ws", 3) != 0 || (uri[3] != '\0' && uri[3] != '/'))
        return n < 0 && strncmp(uri, "/ws/", 4) == 0 ? 400 : 404;
    if (uri[3] == '/') {
        if (!ws_client_id_valid(uri + 4, strlen(uri + 4))) {
            *why = "the client_id of /ws/{client_id} must be 1 to 64 of A-Z a-z 0-9 . _ : -";
            return 400;
        }
        memcpy(ask->client_id, uri + 4, strlen(uri + 4) + 1);
        ask->dialect = DIALECT_ENVELOPE;
        ask->known = true;
    }
    for (int i = 0; lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) >= 0;
         i++) {
        if (strncmp(frag, "dialect=", 8) != 0)
            continue;
        if (strcmp(frag + 8, "envelope") != 0 && strcmp(frag + 8, "flat") != 0) {
            *why = "query parameter 'dialect' must be envelope or flat";
            return 400;
        }
        ask->dialect = strcmp(frag + 8, "envelope") == 0 ? DIALECT_ENVELOPE : DIALECT_FLAT;
        ask->known = true;
    }
    return 0;
}

int ws_callback_chat(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    struct per_session_data__chat *pss = user;
    struct per_vhost_data__chat *vhd =
        lws_protocol_vh_priv_get(lws_get_vhost(wsi), lws_get_protocol(wsi));

    switch (reason) {
    case LWS_CALLBACK_PROTOCOL_INIT:
        if (vhost_init(wsi) == 0)
            break;
        ((struct broker_init *)lws_context_user(lws_get_context(wsi)))->failed = true;
        return -1;
    case LWS_CALLBACK_PROTOCOL_DESTROY:
        ws_vhd_cleanup(vhd);
        break;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
        const char *why = NULL;
        struct upgrade_ask ask;
        int status = vhd && !vhd->stopping ? access_check_upgrade(vhd, wsi, &why) : 503;
        if (status == 0 && (status = upgrade_target(wsi, &ask, &why)) == 404)
            why = NULL; /* the usual text */
        if (status == 0)
            break;
        return refuse_upgrade(wsi, status, why);
    }
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        const char *why;
        struct upgrade_ask ask;
        if (!vhd || vhd->stopping || upgrade_target(wsi, &ask, &why) != 0)
            return 1; /* refuse the upgrade */
        memcpy(pss->client_id, ask.client_id, sizeof pss->client_id);
        pss->dialect = ask.dialect;
        pss->dialect_known = ask.known;
        access_conn_filter(vhd, pss, wsi);
        break;
    }
    case LWS_CALLBACK_ESTABLISHED:
        conn_open(vhd, pss, wsi);
        break;
    case LWS_CALLBACK_CLOSED:
        ws_conn_detach(vhd, pss);
        break;
    case LWS_CALLBACK_RECEIVE:
        return conn_receive(vhd, pss, in, len);
    case LWS_CALLBACK_RECEIVE_PONG:
        pss->heard_mono = clock_mono_ms();
        break;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (pss->ping_due && !pss->close_code && !pss->culled)
            return send_ping(pss);
        if (pss->close_code && pss->q.len == 0 && !pss->close_sent) {
            return send_close(pss); /* what was queued has gone out first */
        }
        if (fanout_write(pss) < 0)
            return -1;
        if (pss->close_code)
            lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED: /* another thread has work for the loop */
        if (vhd && vhd->dbq)
            dbq_complete(vhd->dbq);
        if (vhd)
            asst_llm_poll(vhd);
        if (vhd)
            relay_poll(vhd);
        break;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

int ws_callback_notify(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    const struct lws_protocols *chat =
        lws_vhost_name_to_protocol(lws_get_vhost(wsi), "parley-chat");
    struct per_vhost_data__chat *vhd =
        chat ? lws_protocol_vh_priv_get(lws_get_vhost(wsi), chat) : NULL;
    bool again = false;
    json_t *ev;

    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (!vhd)
            break;
        for (int n = 0; n < 256; n++) { /* bounded: let other work run between bursts */
            ev = notify_recv(vhd->notify, &again);
            if (ev) {
                if (!vhd->stopping)
                    notify_in_event(vhd, ev);
                json_decref(ev);
            } else if (again) {
                break;
            }
        }
        break;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (vhd)
            vhd->notify_wsi = NULL;
        break;
    default:
        break;
    }
    return 0;
}
