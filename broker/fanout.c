/* fanout: reference-counted frames and each connection's bounded queue.
 *
 * An event for a session is rendered at most once per dialect; every receiver's queue
 * holds a reference to the same frame, written from its SERVER_WRITEABLE callback, one
 * write per callback.
 *
 * Several frames waiting for one connection go out in one write (write_coalesced).
 *
 * Slow consumers: a connection whose queue would exceed FANOUT_MAX_BYTES (256 KiB) or
 * FANOUT_MAX_FRAMES is culled: its queue is dropped, nothing more is queued for it, and
 * lws closes it (PENDING_TIMEOUT_LAGGING, asynchronously, since we may be inside another
 * connection's callback). Each connection's kernel send buffer is capped at 64 KiB (ws.c),
 * so the kernel cannot hold megabytes for it first. A client that cannot keep up
 * reconnects and catches up with join_session's `since`; it never makes the broker's
 * memory grow without bound. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "log.h"
#include "utf8.h"

#define COALESCE_MAX (64 * 1024) /* bytes written at once to one connection */

struct frame *frame_new(const char *text, size_t len)
{
    struct frame *f = malloc(sizeof *f + LWS_PRE + len);

    if (!f)
        return NULL;
    f->refs = 1;
    f->len = len;
    memcpy(f->data + LWS_PRE, text, len);
    return f;
}

void frame_unref(struct frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}

void fanout_clear(struct outq *q)
{
    for (unsigned i = 0; i < q->len; i++)
        frame_unref(q->v[(q->head + i) % q->cap].f);
    free(q->v);
    memset(q, 0, sizeof *q);
}

static void cull(struct per_session_data__chat *pss)
{
    log_warn("connection %s is not reading (%u frames, %zu bytes queued): closing it", pss->id,
             pss->q.len, pss->q.bytes);
    pss->culled = true;
    fanout_clear(&pss->q);
    if (pss->wsi) /* none for the fuzzer's connections */
        lws_set_timeout(pss->wsi, PENDING_TIMEOUT_LAGGING, LWS_TO_KILL_ASYNC);
}

/* Makes room for one more entry; returns -1 when the queue may not grow. */
static int reserve(struct outq *q)
{
    struct qent *v;
    unsigned cap;

    if (q->len < q->cap)
        return 0;
    if (q->cap >= FANOUT_MAX_FRAMES)
        return -1;
    cap = q->cap ? q->cap * 2 : 4;
    v = malloc(cap * sizeof *v);
    if (!v)
        return -1;
    for (unsigned i = 0; i < q->len; i++)
        v[i] = q->v[(q->head + i) % q->cap];
    free(q->v);
    q->v = v;
    q->cap = cap;
    q->head = 0;
    return 0;
}

/* Whether one more frame of len bytes would take pss over its bound. Broadcasts and
 * answers are bounded apart, so that an answer the client asked for (a replay of up to
 * BROKER_REPLAY_BYTES, say) never culls it, while a client that reads nothing at all,
 * answers included, is still culled before it costs more than the two bounds. */
static bool over_bound(const struct outq *q, size_t len, bool asked)
{
    if (asked)
        return q->asked_bytes + len > FANOUT_MAX_ASKED;
    return q->bytes - q->asked_bytes + len > FANOUT_MAX_BYTES;
}

void fanout_push(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                 struct frame *f, bool asked)
{
    struct outq *q = &pss->q;

    if (pss->culled || pss->close_code || !f)
        return;
    if (over_bound(q, f->len, asked) || reserve(q) < 0) {
        cull(pss);
        return;
    }
    f->refs++;
    q->v[(q->head + q->len) % q->cap] = (struct qent){.f = f, .asked = asked};
    q->len++;
    q->bytes += f->len;
    if (asked)
        q->asked_bytes += f->len;
    ws_wake(pss);
}

/* Takes the oldest frame off q (the caller unrefs it). */
static struct frame *pop(struct outq *q)
{
    struct qent e = q->v[q->head];

    q->head = (q->head + 1) % q->cap;
    q->len--;
    q->bytes -= e.f->len;
    if (e.asked)
        q->asked_bytes -= e.f->len;
    return e.f;
}

/* Writes a WebSocket text frame header for a len-byte payload (server frames are not
 * masked) into out; returns its size: 2, 4 or 10 bytes. */
static size_t text_header(unsigned char *out, size_t len)
{
    out[0] = 0x81; /* FIN, text */
    if (len < 126) {
        out[1] = (unsigned char)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

/* Several queued frames in one write: frames them here, whole, into one buffer and hands
 * it to lws as raw bytes (it keeps any part the socket does not take and sends it before
 * anything else). One system call and one writeable callback instead of one per frame:
 * this is what lets a busy session's fan-out keep up. Loop thread only (the buffer). */
static int write_coalesced(struct per_session_data__chat *pss)
{
    static unsigned char buf[LWS_PRE + COALESCE_MAX];
    struct outq *q = &pss->q;
    size_t len = 0;

    while (q->len) {
        struct frame *f = q->v[q->head].f;
        if (len + 10 + f->len > COALESCE_MAX)
            break;
        len += text_header(buf + LWS_PRE + len, f->len);
        memcpy(buf + LWS_PRE + len, f->data + LWS_PRE, f->len);
        len += f->len;
        frame_unref(pop(q));
    }
    return lws_write(pss->wsi, buf + LWS_PRE, len, LWS_WRITE_RAW) < 0 ? -1 : 0;
}

int fanout_write(struct per_session_data__chat *pss)
{
    struct outq *q = &pss->q;
    struct frame *f;
    int n;

    if (pss->culled || q->len == 0)
        return 0; /* an unexpected writeable callback is a no-op */
    f = q->v[q->head].f;
    if (q->len > 1 && 10 + f->len + 10 + q->v[(q->head + 1) % q->cap].f->len <= COALESCE_MAX) {
        n = write_coalesced(pss);
    } else {
        f = pop(q);
        n = lws_write(pss->wsi, f->data + LWS_PRE, f->len, LWS_WRITE_TEXT);
        frame_unref(f);
    }
    if (n < 0) {
        log_debug("write to connection %s failed: closing it", pss->id);
        return -1;
    }
    if (q->len)
        lws_callback_on_writable(pss->wsi);
    else if (q->cap > 64) {
        /* Give back what a burst made us allocate. */
        free(q->v);
        q->v = NULL;
        q->cap = q->head = 0;
    }
    return 0;
}

/* Renders ev for dialect d into a new frame. An event that cannot be rendered (out of
 * memory, or a bug that let invalid text into it) is logged and dropped: NULL. */
static struct frame *render(const json_t *ev, enum dialect d, const char *channel,
                            const char *receiver)
{
    size_t len;
    char *text = ev ? proto_render(ev, d, channel, receiver, &len) : NULL;
    struct frame *f;

    if (!text) {
        const char *type = json_string_value(json_object_get(ev, "type"));
        log_error("cannot render a%s %s event; it is dropped", ev ? "" : "n unbuilt",
                  type ? type : "(unknown)");
        return NULL;
    }
    f = frame_new(text, len);
    free(text);
    return f;
}

void fanout_send(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                 const json_t *ev)
{
    struct frame *f = render(ev, pss->dialect, NULL, ws_client_id(pss));

    fanout_push(vhd, pss, f, true);
    frame_unref(f);
}

void fanout_all(struct per_vhost_data__chat *vhd, const json_t *ev)
{
    struct frame *frames[2] = {NULL, NULL};

    for (struct per_session_data__chat *pss = vhd->conns_list; pss; pss = pss->next) {
        if (!pss->authed)
            continue;
        if (!frames[pss->dialect])
            frames[pss->dialect] = render(ev, pss->dialect, NULL, NULL);
        fanout_push(vhd, pss, frames[pss->dialect], false);
    }
    frame_unref(frames[0]);
    frame_unref(frames[1]);
}

void fanout_session(struct per_vhost_data__chat *vhd, struct live_session *s, const json_t *ev,
                    const struct per_session_data__chat *except)
{
    struct frame *frames[2] = {NULL, NULL};

    for (size_t i = 0; i < s->n_members; i++) {
        struct per_session_data__chat *pss = s->members[i];
        if (pss == except)
            continue;
        if (!frames[pss->dialect])
            frames[pss->dialect] = render(ev, pss->dialect, s->channel, NULL);
        fanout_push(vhd, pss, frames[pss->dialect], false);
    }
    frame_unref(frames[0]);
    frame_unref(frames[1]);
}

static void send_error(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                       enum perr e, const char *request_type, const char *client_msg_id,
                       const char *fmt, va_list ap)
{
    char msg[512];
    json_t *ev;

    vsnprintf(msg, sizeof msg, fmt, ap);
    utf8_repair_in_place(msg); /* cut at 511 bytes, maybe inside a character */
    ev = json_pack("{s:s, s:s, s:s}", "type", "error", "code", perr_code(e), "message", msg);
    if (ev && request_type)
        json_object_set_new(ev, "request_type", json_string(request_type));
    if (ev && client_msg_id)
        json_object_set_new(ev, "client_msg_id", json_string(client_msg_id));
    fanout_send(vhd, pss, ev);
    json_decref(ev);
}

void fanout_error(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss, enum perr e,
                  const char *request_type, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    send_error(vhd, pss, e, request_type, NULL, fmt, ap);
    va_end(ap);
}

void fanout_error_msg(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                      enum perr e, const char *request_type, const char *client_msg_id,
                      const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    send_error(vhd, pss, e, request_type, client_msg_id, fmt, ap);
    va_end(ap);
}
