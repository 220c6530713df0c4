/* asst_llm: the assistant driver for real models (openai, gemini). It builds the request
 * from the session's history, hands it to the HTTP thread (llm_http.c) and turns the
 * events that come back into chunks, reasoning, usage and the reply's end. Requests are
 * known by id: an event for a request that was cancelled finds nothing and is dropped. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assistant.h"
#include "llm.h"
#include "log.h"
#include "map.h"
#include "utf8.h"

/* A reply's transfer: under way (counted in vhd->llm_active), or waiting its turn in
 * vhd->llm_waiting with its request built (--llm-max-concurrent, first come first served). */
struct llm_state {
    uint64_t id;
    char key[24]; /* the id as text: the key in vhd->llm_replies */
    struct reply *r;
    struct llm_request *waiting_req; /* not started yet: the request to start */
    struct llm_state *next_waiting;
};

static enum llm_provider provider_of(const struct cfg *cfg)
{
    return strcmp(cfg->llm, "gemini") == 0 ? LLM_GEMINI : LLM_OPENAI;
}

/* The model to ask: the session's, unless it is only the name of a provider or a
 * placeholder (sessions made while another assistant ran), then the configured one. */
static const char *model_for(const struct cfg *cfg, const char *session_model)
{
    static const char *const placeholders[] = {"", "echo", "none", "default"};
    const char *configured = cfg->llm_model ? cfg->llm_model : llm_default_model(provider_of(cfg));

    if (!session_model)
        return configured;
    for (size_t i = 0; i < sizeof placeholders / sizeof placeholders[0]; i++)
        if (strcmp(session_model, placeholders[i]) == 0)
            return configured;
    return session_model;
}

static void start_waiting(struct per_vhost_data__chat *vhd);

/* Forgets r's transfer (over, or cancelled) and lets the next waiting one start. */
static void detach(struct reply *r)
{
    struct per_vhost_data__chat *vhd = r->vhd;
    struct llm_state *st = r->drv;

    if (!st)
        return;
    map_del(vhd->llm_replies, st->key);
    if (st->waiting_req) { /* never started: take it out of the line */
        for (struct llm_state **p = &vhd->llm_waiting; *p; p = &(*p)->next_waiting) {
            if (*p == st) {
                *p = st->next_waiting;
                break;
            }
        }
        llm_request_free(st->waiting_req);
    } else {
        vhd->llm_active--;
    }
    free(st);
    r->drv = NULL;
    start_waiting(vhd);
}

static void start_transfer(struct per_vhost_data__chat *vhd, struct llm_state *st,
                           struct llm_request *req)
{
    vhd->llm_active++;
    log_debug("reply %s in session %s: asking %s (%s)", st->r->response_id, st->r->s->id,
              req->shown_url, st->r->model);
    llm_http_start(vhd->llm, req);
}

/* Starts waiting transfers while there is room, oldest first. */
static void start_waiting(struct per_vhost_data__chat *vhd)
{
    while (vhd->llm_waiting && vhd->llm_active < vhd->cfg->llm_max_concurrent && !vhd->stopping) {
        struct llm_state *st = vhd->llm_waiting;
        struct llm_request *req = st->waiting_req;
        vhd->llm_waiting = st->next_waiting;
        st->waiting_req = NULL;
        start_transfer(vhd, st, req);
    }
}

static int llm_start(struct reply *r, const struct db_message *prompt,
                     const struct db_message_list *context)
{
    struct per_vhost_data__chat *vhd = r->vhd;
    const struct cfg *cfg = vhd->cfg;
    const char *model = model_for(cfg, r->s->model);
    struct llm_request *req;
    struct llm_state *st;

    free(r->model);
    r->model = strdup(model);
    req = llm_request_new(provider_of(cfg), cfg, model,
                          r->system_prompt ? r->system_prompt : cfg->system_prompt, context);
    st = calloc(1, sizeof *st);
    if (!req || !st || !r->model) {
        llm_request_free(req);
        free(st);
        return -1;
    }
    st->id = req->id = ++vhd->llm_next_id;
    snprintf(st->key, sizeof st->key, "%" PRIu64, st->id);
    if (map_put(vhd->llm_replies, st->key, r) < 0) {
        llm_request_free(req);
        free(st);
        return -1;
    }
    r->drv = st;
    st->r = r;
    if (vhd->llm_active < cfg->llm_max_concurrent) {
        start_transfer(vhd, st, req);
        return 0;
    }
    st->waiting_req = req; /* at the end of the line */
    struct llm_state **tail = &vhd->llm_waiting;
    while (*tail)
        tail = &(*tail)->next_waiting;
    *tail = st;
    return 0;
}

static void llm_cancel(struct reply *r)
{
    struct llm_state *st = r->drv;

    if (!st)
        return;
    if (!st->waiting_req)
        llm_http_cancel(r->vhd->llm, st->id);
    detach(r);
}

const struct asst_driver asst_llm = {
    .name = "llm",
    .start = llm_start,
    .cancel = llm_cancel,
};

int asst_llm_init(struct per_vhost_data__chat *vhd)
{
    if (vhd->driver != &asst_llm)
        return 0;
    vhd->llm_replies = map_new();
    vhd->llm = llm_http_new(vhd->context);
    return vhd->llm && vhd->llm_replies ? 0 : -1;
}

void asst_llm_cleanup(struct per_vhost_data__chat *vhd)
{
    llm_http_free(vhd->llm); /* aborts every transfer */
    vhd->llm = NULL;
    map_free(vhd->llm_replies);
    vhd->llm_replies = NULL;
}

/* The server sends more than a reply may hold (BROKER_REPLY_MAX): keeps what fits (cut on
 * a character), stops the transfer, and ends the reply as failed, so it is stored
 * incomplete and the members are told why. */
static void too_long(struct reply *r, const struct llm_event *e)
{
    size_t fit = utf8_cut(e->text, e->len, BROKER_REPLY_MAX - r->len);

    log_warn("reply %s in session %s passed %d bytes: cut", r->response_id, r->s->id,
             BROKER_REPLY_MAX);
    reply_chunk(r, e->text, fit);
    llm_cancel(r);
    reply_end(r, "error",
              "the assistant's reply passed 1 MiB, the most a reply may hold; what came "
              "before is kept");
}

void asst_llm_poll(struct per_vhost_data__chat *vhd)
{
    struct llm_event *e, *next;
    char key[24];

    if (!vhd->llm)
        return;
    for (e = llm_http_take(vhd->llm); e; e = next) {
        struct reply *r;
        next = e->next;
        snprintf(key, sizeof key, "%" PRIu64, e->req_id);
        r = vhd->stopping ? NULL : map_get(vhd->llm_replies, key);
        if (r) {
            switch (e->kind) {
            case LLM_TEXT:
                if (r->len + e->len > BROKER_REPLY_MAX) {
                    too_long(r, e);
                    break;
                }
                reply_chunk(r, e->text, e->len);
                break;
            case LLM_REASONING:
                if (r->reasoning_len + e->len <= BROKER_REPLY_MAX) /* beyond: not kept */
                    reply_reasoning(r, e->text, e->len);
                break;
            case LLM_MODEL:
                if (!r->vhd->cfg->llm_model) { /* store the model that answered */
                    free(r->model);
                    r->model = strdup(e->text);
                }
                break;
            case LLM_USAGE:
                r->prompt_tokens = e->prompt_tokens;
                r->completion_tokens = e->completion_tokens;
                break;
            case LLM_DONE:
                detach(r);
                reply_end(r, "complete", NULL);
                break;
            case LLM_FAIL:
                log_warn("reply %s in session %s failed: %s", r->response_id, r->s->id, e->text);
                detach(r);
                reply_end(r, "error", e->text);
                break;
            }
        }
        llm_event_free(e);
    }
}
