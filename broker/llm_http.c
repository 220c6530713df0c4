/* llm_http: the assistant's HTTP thread. One curl multi handle runs every transfer to the
 * LLM servers; the loop hands requests and cancellations over through a locked inbox and
 * curl_multi_wakeup(), and takes events back through a locked outbox and
 * lws_cancel_service(). Nothing here touches broker state: events name their request by
 * id, and the loop drops events for requests it no longer knows.
 *
 * Timeouts: connecting (CONNECT_TIMEOUT_S), silence before the first byte and between
 * bytes (idle_timeout_s, checked here), and the whole transfer (timeout_s, curl's). */
#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "llm.h"
#include "log.h"
#include "sse.h"
#include "utf8.h"

#define CONNECT_TIMEOUT_S 10
#define POLL_MS           100
#define ERROR_BODY_MAX    (16 * 1024)

/* One transfer. HTTP thread only, once started. */
struct transfer {
    struct transfer *next;
    struct llm_request *req;
    CURL *easy;
    struct curl_slist *headers;
    struct sse sse;
    struct llm_parser parser;
    struct llm_http *h;
    char *error_body; /* the body of an HTTP error answer, for its message */
    size_t error_len;
    int64_t started_mono, last_byte_mono;
    bool got_bytes;
    char curl_error[CURL_ERROR_SIZE];
};

struct llm_http {
    struct lws_context *ctx;
    pthread_t thread;
    CURLM *multi;
    struct transfer *active; /* HTTP thread only */
    pthread_mutex_t lock;
    struct llm_request **inbox_v;      /* {lock} requests to start */
    size_t inbox_n, inbox_cap;         /* {lock} */
    uint64_t *cancels;                 /* {lock} ids to abort */
    size_t cancels_n, cancels_cap;     /* {lock} */
    struct llm_event *out, **out_tail; /* {lock} */
    bool stop;                         /* {lock} */
};

void llm_event_free(struct llm_event *e)
{
    if (!e)
        return;
    free(e->text);
    free(e);
}

/* ---- events out (HTTP thread) ---- */

static void push_event(struct llm_http *h, uint64_t id, enum llm_event_kind kind, const char *text,
                       size_t len, int64_t prompt, int64_t completion)
{
    struct llm_event *e = calloc(1, sizeof *e);

    if (!e)
        return;
    e->req_id = id;
    e->kind = kind;
    e->prompt_tokens = prompt;
    e->completion_tokens = completion;
    /* Whatever the server sent (a Latin-1 error page, a NUL inside valid JSON, an error
     * cut inside a character) becomes valid UTF-8 here, the one way in from the HTTP
     * thread. */
    if (text && !(e->text = utf8_repair(text, len, &len))) {
        free(e);
        return;
    }
    e->len = text ? len : 0;
    pthread_mutex_lock(&h->lock);
    *h->out_tail = e;
    h->out_tail = &e->next;
    pthread_mutex_unlock(&h->lock);
}

static void push_failure(struct llm_http *h, uint64_t id, const char *msg)
{
    push_event(h, id, LLM_FAIL, msg, strlen(msg), -1, -1);
}

static void parser_emit(void *arg, enum llm_event_kind kind, const char *text, size_t len,
                        int64_t prompt, int64_t completion)
{
    struct transfer *t = arg;

    push_event(t->h, t->req->id, kind, text, len, prompt, completion);
}

static void fail(struct transfer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct transfer *t, const char *fmt, ...)
{
    char msg[600];
    va_list ap;

    if (t->parser.failed)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    t->parser.failed = true;
    push_failure(t->h, t->req->id, msg);
}

/* ---- curl callbacks (HTTP thread) ---- */

static int on_sse(void *arg, const char *data, size_t len)
{
    struct transfer *t = arg;

    return llm_parser_event(&t->parser, data, len) < 0 ? -1 : 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct transfer *t = arg;
    size_t n = size * nmemb;
    long status = 0;

    t->got_bytes = true;
    t->last_byte_mono = clock_mono_ms();
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 400) { /* keep the start of the error answer for its message */
        size_t room = ERROR_BODY_MAX - t->error_len;
        char *grown;
        if (n < room)
            room = n;
        if (room && (grown = realloc(t->error_body, t->error_len + room + 1))) {
            memcpy(grown + t->error_len, ptr, room);
            t->error_len += room;
            grown[t->error_len] = '\0';
            t->error_body = grown;
        }
        return n;
    }
    if (sse_feed(&t->sse, ptr, n, on_sse, t) != 0) {
        if (!t->parser.failed)
            fail(t, "LLM server at %s sent a malformed stream: an event over %d bytes",
                 t->req->shown_url, SSE_MAX_EVENT);
        return 0; /* aborts the transfer */
    }
    return n;
}

/* ---- transfers (HTTP thread) ---- */

static void transfer_free(struct transfer *t)
{
    if (!t)
        return;
    if (t->easy) {
        curl_multi_remove_handle(t->h->multi, t->easy);
        curl_easy_cleanup(t->easy); /* closes the connection: the server sees it */
    }
    curl_slist_free_all(t->headers);
    sse_cleanup(&t->sse);
    free(t->error_body);
    llm_request_free(t->req);
    free(t);
}

static void start(struct llm_http *h, struct llm_request *req)
{
    struct transfer *t = calloc(1, sizeof *t);
    struct curl_slist *hd = NULL;

    if (!t || !(t->easy = curl_easy_init())) {
        free(t);
        push_failure(h, req->id, "out of memory starting the LLM request");
        llm_request_free(req);
        return;
    }
    t->h = h;
    t->req = req;
    sse_init(&t->sse);
    llm_parser_init(&t->parser, req->provider, req->shown_url, parser_emit, t);
    hd = curl_slist_append(hd, "Content-Type: application/json");
    hd = curl_slist_append(hd, "Accept: text/event-stream");
    if (req->auth_header)
        hd = curl_slist_append(hd, req->auth_header);
    t->headers = hd;
    curl_easy_setopt(t->easy, CURLOPT_URL, req->url);
    curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, req->body);
    curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->curl_error);
    curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
    curl_easy_setopt(t->easy, CURLOPT_TIMEOUT, (long)req->timeout_s);
    curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt(t->easy, CURLOPT_USERAGENT, "parley/" PARLEY_VERSION);
    /* Reused connections would survive a stop; each reply gets its own. */
    curl_easy_setopt(t->easy, CURLOPT_FORBID_REUSE, 1L);
    t->started_mono = t->last_byte_mono = clock_mono_ms();
    if (curl_multi_add_handle(h->multi, t->easy) != CURLM_OK) {
        fail(t, "could not start the request to the LLM server at %s", req->shown_url);
        transfer_free(t);
        return;
    }
    t->next = h->active;
    h->active = t;
}

static void unlink_transfer(struct llm_http *h, struct transfer *t)
{
    for (struct transfer **p = &h->active; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            return;
        }
    }
}

/* Turns an HTTP error answer into the provider's message, or its first characters. */
static void http_error(struct transfer *t, long status)
{
    char msg[400];

    if (llm_error_text(t->error_body, msg, sizeof msg) == 0)
        fail(t, "LLM server at %s answered HTTP %ld: %s", t->req->shown_url, status, msg);
    else
        fail(t, "LLM server at %s answered HTTP %ld: %.200s", t->req->shown_url, status,
             t->error_body ? t->error_body : "(no body)");
}

/* A transfer ended: says how, then frees it. */
static void finish(struct llm_http *h, struct transfer *t, CURLcode result)
{
    const char *url = t->req->shown_url;
    long status = 0;

    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (t->parser.failed) {
        /* said already */
    } else if (result == CURLE_COULDNT_CONNECT) {
        fail(t, "LLM server at %s refused the connection; is it running?", url);
    } else if (result == CURLE_COULDNT_RESOLVE_HOST) {
        fail(t, "cannot resolve the host of the LLM server at %s", url);
    } else if (result == CURLE_OPERATION_TIMEDOUT && !t->got_bytes &&
               clock_mono_ms() - t->started_mono < (int64_t)t->req->timeout_s * 1000) {
        fail(t, "LLM server at %s did not accept the connection within %d s", url,
             CONNECT_TIMEOUT_S);
    } else if (result == CURLE_OPERATION_TIMEDOUT) {
        fail(t, "LLM server at %s did not finish within %d s; giving up", url, t->req->timeout_s);
    } else if (status >= 400) {
        http_error(t, status);
    } else if (result != CURLE_OK) {
        log_debug("transfer to %s ended: %s", url,
                  t->curl_error[0] ? t->curl_error : curl_easy_strerror(result));
        fail(t, "LLM server at %s closed the connection before the reply was complete", url);
    } else if (t->req->provider == LLM_OPENAI && !t->parser.done) {
        fail(t, "LLM server at %s closed the connection before the reply was complete", url);
    } else {
        llm_parser_flush(&t->parser);
        push_event(h, t->req->id, LLM_DONE, NULL, 0, -1, -1);
    }
    unlink_transfer(h, t);
    transfer_free(t);
}

static void check_idle(struct llm_http *h, int64_t now)
{
    struct transfer *t = h->active, *next;

    for (; t; t = next) {
        next = t->next;
        if (now - t->last_byte_mono < (int64_t)t->req->idle_timeout_s * 1000)
            continue;
        fail(t, "LLM server at %s sent nothing for %d s; giving up", t->req->shown_url,
             t->req->idle_timeout_s);
        unlink_transfer(h, t);
        transfer_free(t);
    }
}

/* Takes the inbox: starts new requests, aborts cancelled ones. Returns false to stop. */
static bool take_inbox(struct llm_http *h)
{
    struct llm_request **reqs;
    uint64_t *cancels;
    size_t n_reqs, n_cancels;
    bool stop;

    pthread_mutex_lock(&h->lock);
    reqs = h->inbox_v;
    n_reqs = h->inbox_n;
    cancels = h->cancels;
    n_cancels = h->cancels_n;
    h->inbox_v = NULL;
    h->inbox_n = h->inbox_cap = 0;
    h->cancels = NULL;
    h->cancels_n = h->cancels_cap = 0;
    stop = h->stop;
    pthread_mutex_unlock(&h->lock);

    for (size_t i = 0; i < n_reqs; i++)
        start(h, reqs[i]);
    for (size_t i = 0; i < n_cancels; i++) {
        for (struct transfer *t = h->active; t; t = t->next) {
            if (t->req->id == cancels[i]) {
                unlink_transfer(h, t);
                transfer_free(t);
                break;
            }
        }
    }
    free(reqs);
    free(cancels);
    return !stop;
}

static void *llm_thread(void *arg)
{
    struct llm_http *h = arg;
    int running;

    while (take_inbox(h)) {
        CURLMsg *msg;
        int left;
        bool had_events;

        curl_multi_perform(h->multi, &running);
        while ((msg = curl_multi_info_read(h->multi, &left))) {
            struct transfer *t = NULL;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
            if (t)
                finish(h, t, msg->data.result);
        }
        check_idle(h, clock_mono_ms());
        pthread_mutex_lock(&h->lock);
        had_events = h->out != NULL;
        pthread_mutex_unlock(&h->lock);
        if (had_events)
            lws_cancel_service(h->ctx); /* the loop takes the events */
        curl_multi_poll(h->multi, NULL, 0, POLL_MS, NULL);
    }
    while (h->active) {
        struct transfer *t = h->active;
        h->active = t->next;
        transfer_free(t);
    }
    return NULL;
}

/* ---- the loop's side ---- */

struct llm_http *llm_http_new(struct lws_context *ctx)
{
    struct llm_http *h = calloc(1, sizeof *h);

    if (!h)
        return NULL;
    h->ctx = ctx;
    h->out_tail = &h->out;
    pthread_mutex_init(&h->lock, NULL);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(h->multi = curl_multi_init()) ||
        pthread_create(&h->thread, NULL, llm_thread, h) != 0) {
        log_error("cannot start the LLM HTTP thread");
        if (h->multi)
            curl_multi_cleanup(h->multi);
        pthread_mutex_destroy(&h->lock);
        free(h);
        return NULL;
    }
    return h;
}

void llm_http_free(struct llm_http *h)
{
    struct llm_event *e;

    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    h->stop = true;
    pthread_mutex_unlock(&h->lock);
    curl_multi_wakeup(h->multi);
    pthread_join(h->thread, NULL);
    for (size_t i = 0; i < h->inbox_n; i++)
        llm_request_free(h->inbox_v[i]);
    free(h->inbox_v);
    free(h->cancels);
    while ((e = h->out)) {
        h->out = e->next;
        llm_event_free(e);
    }
    curl_multi_cleanup(h->multi);
    curl_global_cleanup();
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
    void *g;

    if (n < *cap)
        return 0;
    if (!(g = realloc(*v, (*cap ? *cap * 2 : 8) * size)))
        return -1;
    *v = g;
    *cap = *cap ? *cap * 2 : 8;
    return 0;
}

void llm_http_start(struct llm_http *h, struct llm_request *req)
{
    pthread_mutex_lock(&h->lock);
    if (grow((void **)&h->inbox_v, &h->inbox_cap, h->inbox_n, sizeof *h->inbox_v) == 0) {
        h->inbox_v[h->inbox_n++] = req;
        req = NULL;
    }
    pthread_mutex_unlock(&h->lock);
    if (req) { /* out of memory: say so through the normal path */
        push_failure(h, req->id, "out of memory starting the LLM request");
        llm_request_free(req);
    }
    curl_multi_wakeup(h->multi);
}

void llm_http_cancel(struct llm_http *h, uint64_t id)
{
    pthread_mutex_lock(&h->lock);
    if (grow((void **)&h->cancels, &h->cancels_cap, h->cancels_n, sizeof *h->cancels) == 0)
        h->cancels[h->cancels_n++] = id;
    pthread_mutex_unlock(&h->lock);
    curl_multi_wakeup(h->multi);
}

struct llm_event *llm_http_take(struct llm_http *h)
{
    struct llm_event *list;

    pthread_mutex_lock(&h->lock);
    list = h->out;
    h->out = NULL;
    h->out_tail = &h->out;
    pthread_mutex_unlock(&h->lock);
    return list;
}
