/* assistant: the reply lifecycle of assistant.h, shared by every driver. */
#include "assistant.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dbq.h"
#include "log.h"

const struct asst_driver *asst_driver_for(const char *llm)
{
    if (strcmp(llm, "echo") == 0)
        return &asst_echo;
    if (strcmp(llm, "openai") == 0 || strcmp(llm, "gemini") == 0)
        return &asst_llm;
    return NULL; /* none */
}

static void reply_free(struct reply *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->model);
    free(r->reasoning);
    free(r);
}

/* The loop is shutting down or the session is gone: forget r without a word. */
static void drop(struct reply *r)
{
    if (!r->aborted && r->s->reply == r)
        r->s->reply = NULL; /* asst_abort already detached an aborted reply */
    reply_free(r);
}

/* Sends ev (steals it) to every member of the reply's session, on every broker. */
static void broadcast(struct reply *r, json_t *ev)
{
    relay_broadcast(r->vhd, r->s, ev, NULL);
    json_decref(ev);
}

static void kick(struct per_vhost_data__chat *vhd, struct live_session *s);

/* ---- retries: a load or store the database failed is told and tried again ---- */

#define RETRY_MS 2000

static void retry_fire(lws_sorted_usec_list_t *sul)
{
    struct reply *r = lws_container_of(sul, struct reply, retry_sul);
    struct dbjob *job = r->retry_job;

    r->retry_job = NULL;
    if (job)
        dbq_push(r->vhd->dbq, job);
}

/* job failed for r: tells the members the first time (what failed, that it is retried),
 * then pushes job again in RETRY_MS. */
static void retry_later(struct reply *r, struct dbjob *job, const char *what)
{
    if (r->failures++ == 0) {
        log_warn("reply %s in session %s: %s failed (%s); retrying every %d ms", r->response_id,
                 r->s->id, what, perr_code(job->err), RETRY_MS);
        broadcast(r, json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "error", "code",
                               perr_code(PERR_UNAVAILABLE), "message",
                               "the database is busy or not available, so the assistant's "
                               "reply is delayed; it is retried by itself",
                               "session_id", r->s->id, "response_id", r->response_id));
    }
    job->err = PERR_OK;
    r->retry_job = job;
    lws_sul_schedule(r->vhd->context, 0, &r->retry_sul, retry_fire, RETRY_MS * LWS_US_PER_MS);
}

/* A retry is waiting: gives its job back through its done callback, which sees the reply
 * aborted and frees both. */
static void cancel_retry(struct reply *r)
{
    struct dbjob *job = r->retry_job;

    lws_sul_cancel(&r->retry_sul);
    r->retry_job = NULL;
    if (job)
        job->done(job);
}

/* The reply is over (stored, or abandoned): the session may start the next one. */
static void finished(struct reply *r)
{
    struct per_vhost_data__chat *vhd = r->vhd;
    struct live_session *s = r->s;

    if (s->reply == r)
        s->reply = NULL;
    reply_free(r);
    kick(vhd, s);
    sess_release(vhd, s);
}

/* ---- LOADING ---- */

struct load_job {
    struct dbjob job;
    struct reply *r;
    char session_id[DB_ID_LEN];
    int context_n;
    struct db_session session;
    struct db_message prompt;
    struct db_message_list context;
};

static void load_run(struct dbjob *job, struct db *db)
{
    struct load_job *j = (struct load_job *)job;

    job->err = db_session_get(db, j->session_id, &j->session);
    if (job->err == PERR_OK)
        job->err = db_message_get(db, j->r->reply_to, &j->prompt);
    if (job->err == PERR_OK)
        job->err =
            db_messages_context(db, j->session_id, j->r->reply_to, j->context_n, &j->context);
}

static void load_done(struct dbjob *job)
{
    struct load_job *j = (struct load_job *)job;
    struct reply *r = j->r;
    const struct asst_driver *drv = r->vhd->driver;

    if (r->aborted || r->vhd->stopping) {
        drop(r);
    } else if (job->err == PERR_NOT_FOUND || job->err == PERR_SESSION_NOT_FOUND) {
        /* The message or its session was deleted meanwhile: nothing to answer. */
        log_info("no reply to message %lld in session %s: it was deleted", (long long)r->reply_to,
                 r->s->id);
        finished(r);
    } else if (job->err) {
        db_session_cleanup(&j->session);
        db_message_cleanup(&j->prompt);
        db_message_list_cleanup(&j->context);
        retry_later(r, job, "reading the context");
        return;
    } else {
        r->failures = 0;
        if (j->session.model && strcmp(r->s->model, j->session.model) != 0) {
            free(r->s->model); /* a session made live by a notification has no model yet */
            r->s->model = strdup(j->session.model);
        }
        r->state = REPLY_STREAMING;
        r->started_us = clock_mono_us();
        broadcast(r, json_pack("{s:s, s:s, s:s, s:I}", "type", "status", "session_id", r->s->id,
                               "message", "the assistant is replying", "context_messages",
                               (json_int_t)j->context.n));
        if (!drv || drv->start(r, &j->prompt, &j->context) < 0)
            reply_end(r, "error", "the assistant could not start; the server log says why");
    }
    db_session_cleanup(&j->session);
    db_message_cleanup(&j->prompt);
    db_message_list_cleanup(&j->context);
    free(j);
}

static void kick(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    struct load_job *j;
    struct reply *r;

    if (s->reply || s->n_pending == 0 || vhd->stopping)
        return;
    r = calloc(1, sizeof *r);
    j = calloc(1, sizeof *j);
    if (!r || !j || clock_random_hex(r->response_id, 8) < 0) {
        free(r);
        free(j);
        log_error("out of memory starting a reply in session %s", s->id);
        return;
    }
    r->vhd = vhd;
    r->s = s;
    r->state = REPLY_LOADING;
    r->prompt_tokens = r->completion_tokens = -1;
    r->reply_to = s->pending[0].message_id;
    r->system_prompt = s->pending[0].system_prompt;
    memmove(s->pending, s->pending + 1, --s->n_pending * sizeof *s->pending);
    s->reply = r;
    j->r = r;
    snprintf(j->session_id, sizeof j->session_id, "%s", s->id);
    j->context_n = vhd->cfg->context_messages;
    j->job.run = load_run;
    j->job.done = load_done;
    j->job.essential = true; /* one per session: its reply slot */
    dbq_push(vhd->dbq, &j->job);
}

bool asst_busy(const struct per_vhost_data__chat *vhd, const struct live_session *s)
{
    return vhd->driver && s->n_pending >= BROKER_PENDING_MAX;
}

void asst_request(struct per_vhost_data__chat *vhd, struct live_session *s, int64_t message_id,
                  const char *system_prompt)
{
    if (!vhd->driver || asst_busy(vhd, s))
        return; /* the reply queue keeps it: the reconcile asks again when there is room */
    if (s->reply && s->reply->reply_to == message_id)
        return;
    for (size_t i = 0; i < s->n_pending; i++)
        if (s->pending[i].message_id == message_id)
            return; /* already asked for (the notification and the reconcile can meet) */
    if (s->n_pending == s->cap_pending) {
        size_t cap = s->cap_pending ? s->cap_pending * 2 : 4;
        struct pending_reply *p = realloc(s->pending, cap * sizeof *p);
        if (!p)
            return;
        s->pending = p;
        s->cap_pending = cap;
    }
    s->pending[s->n_pending].message_id = message_id;
    s->pending[s->n_pending].system_prompt = system_prompt;
    s->n_pending++;
    kick(vhd, s);
}

/* ---- STREAMING ---- */

void reply_chunk(struct reply *r, const char *text, size_t len)
{
    char *grown;

    if (r->state != REPLY_STREAMING || len == 0)
        return;
    if (r->len + len + 1 > r->cap) {
        size_t cap = (r->len + len + 1) * 2;
        if (!(grown = realloc(r->text, cap)))
            return;
        r->text = grown;
        r->cap = cap;
    }
    memcpy(r->text + r->len, text, len);
    r->len += len;
    r->text[r->len] = '\0';
    if (!r->begun) {
        r->begun = true;
        broadcast(r, json_pack("{s:s, s:s, s:s}", "type", "response_start", "session_id", r->s->id,
                               "response_id", r->response_id));
    }
    r->chunks++;
    broadcast(r, json_pack("{s:s, s:s, s:s, s:s%, s:I, s:b}", "type", "chunk", "session_id",
                           r->s->id, "response_id", r->response_id, "text", text, len,
                           "chunk_number", (json_int_t)r->chunks, "is_final", 0));
}

void reply_reasoning(struct reply *r, const char *text, size_t len)
{
    char *grown;

    if (r->state != REPLY_STREAMING || len == 0)
        return;
    if (!(grown = realloc(r->reasoning, r->reasoning_len + len + 1)))
        return;
    memcpy(grown + r->reasoning_len, text, len);
    r->reasoning_len += len;
    grown[r->reasoning_len] = '\0';
    r->reasoning = grown;
}

/* ---- STORING ---- */

struct store_job {
    struct dbjob job;
    struct reply *r;
    char session_id[DB_ID_LEN];
    char status[16];
    char *error;
    char *model;
    int64_t duration_ms;
    bool store; /* false: nothing was said; only drop the request from the queue */
    struct db_message stored;
    int64_t message_count;
};

static void store_run(struct dbjob *job, struct db *db)
{
    struct store_job *j = (struct store_job *)job;
    struct reply *r = j->r;

    if (!j->store) {
        job->err = db_reply_queue_drop(db, r->reply_to);
        return;
    }
    struct db_reply_in in = {.session_id = j->session_id,
                             .content = r->text ? r->text : "",
                             .model = j->model,
                             .status = j->status,
                             .error = j->error,
                             .reasoning = r->reasoning,
                             .prompt_tokens = r->prompt_tokens,
                             .completion_tokens = r->completion_tokens,
                             .duration_ms = j->duration_ms,
                             .reply_to = r->reply_to};
    job->err = db_reply_add(db, &in, &j->stored, &j->message_count);
}

static void store_done(struct dbjob *job)
{
    struct store_job *j = (struct store_job *)job;
    struct reply *r = j->r;

    if (r->aborted || r->vhd->stopping) {
        drop(r);
    } else if (job->err) {
        db_message_cleanup(&j->stored);
        memset(&j->stored, 0, sizeof j->stored);
        retry_later(r, job, "storing the reply");
        return;
    } else {
        if (j->store) {
            /* the stored reply is told as response_complete, in its turn among the messages */
            json_t *ev = json_pack(
                "{s:s, s:s, s:s, s:I, s:I, s:f, s:I, s:b}", "type", "response_complete",
                "session_id", r->s->id, "response_id", r->response_id, "message_id",
                (json_int_t)j->stored.id, "total_chunks", (json_int_t)r->chunks, "processing_time",
                j->duration_ms / 1000.0, "message_count", (json_int_t)j->message_count, "stopped",
                strcmp(j->status, "stopped") == 0);
            r->s->message_count = j->message_count;
            relay_message(r->vhd, r->s, j->stored.seq, ev);
            gate_message(r->vhd, r->s, j->stored.seq, ev);
        }
        finished(r);
    }
    db_message_cleanup(&j->stored);
    free(j->error);
    free(j->model);
    free(j);
}

void reply_end(struct reply *r, const char *status, const char *error)
{
    struct store_job *j;
    bool failed = strcmp(status, "error") == 0;

    if (r->state != REPLY_STREAMING)
        return;
    r->state = REPLY_STORING;
    if (failed)
        broadcast(r,
                  json_pack("{s:s, s:s, s:s, s:s}", "type", "error", "code", "llm_error", "message",
                            error ? error : "the assistant failed", "session_id", r->s->id));
    if (r->begun) {
        r->chunks++;
        broadcast(r, json_pack("{s:s, s:s, s:s, s:s, s:I, s:b}", "type", "chunk", "session_id",
                               r->s->id, "response_id", r->response_id, "text", "", "chunk_number",
                               (json_int_t)r->chunks, "is_final", 1));
    }
    j = calloc(1, sizeof *j);
    if (!j) {
        finished(r);
        return;
    }
    j->r = r;
    snprintf(j->session_id, sizeof j->session_id, "%s", r->s->id);
    /* A failed reply keeps what was said, marked incomplete; one that said nothing stores
     * nothing. A stopped reply is stored even when empty, so response_complete has its id. */
    snprintf(j->status, sizeof j->status, "%s", failed ? "incomplete" : status);
    j->store = r->len > 0 || !failed;
    j->error = error ? strdup(error) : NULL;
    j->model = strdup(r->model ? r->model : r->s->model);
    /* whole milliseconds, rounded up: a reply that took any time took at least 1 ms */
    j->duration_ms = (clock_mono_us() - r->started_us + 999) / 1000;
    j->job.run = store_run;
    j->job.done = store_done;
    j->job.essential = true; /* one per session: its reply slot */
    dbq_push(r->vhd->dbq, &j->job);
}

/* ---- commands ---- */

void asst_stop(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    struct reply *r = s->reply;

    if (!r || r->state != REPLY_STREAMING)
        return;
    if (vhd->driver)
        vhd->driver->cancel(r);
    reply_end(r, "stopped", NULL);
}

void asst_abort(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    struct reply *r = s->reply;

    s->n_pending = 0;
    if (!r)
        return;
    s->reply = NULL;
    if (r->retry_job) {
        r->aborted = true;
        cancel_retry(r); /* its done callback frees r */
        return;
    }
    if (r->state == REPLY_STREAMING) {
        if (vhd->driver)
            vhd->driver->cancel(r);
        reply_free(r);
    } else {
        r->aborted = true; /* its job's done callback frees it */
    }
}
