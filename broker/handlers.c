/* handlers: one function per client message type of the flat dialect (SPEC 3.1).
 * Each validates its fields, answers errors at once, and hands database work to the
 * database thread; the done callbacks finish the work on the loop. A connection may be
 * gone when a done callback runs, so jobs name it by id, never by pointer. */
#include <stdlib.h>
#include <string.h>

#include "assistant.h"
#include "broker.h"
#include "clock.h"
#include "dbq.h"
#include "jsonx.h"
#include "log.h"

#define TITLE_MAX         200
#define MODEL_MAX         128
#define CLIENT_MSG_ID_MAX 128

/* What every job started by a client message carries. */
struct req_job {
    struct dbjob job;
    struct per_vhost_data__chat *vhd;
    char conn_id[BROKER_CONN_ID_HEX + 1];
    char session_id[DB_ID_LEN];
    const char *request_type; /* static */
};

static void req_init(struct req_job *r, struct per_vhost_data__chat *vhd,
                     struct per_session_data__chat *pss, const char *type,
                     void (*run)(struct dbjob *, struct db *), void (*done)(struct dbjob *))
{
    r->vhd = vhd;
    snprintf(r->conn_id, sizeof r->conn_id, "%s", pss->id);
    r->request_type = type;
    r->job.run = run;
    r->job.done = done;
}

/* The connection that asked, if it is still there. */
static struct per_session_data__chat *req_conn(struct req_job *r)
{
    return r->vhd->stopping ? NULL : ws_conn(r->vhd, r->conn_id);
}

static void req_error(struct req_job *r, struct per_session_data__chat *pss)
{
    if (r->job.err == PERR_SESSION_NOT_FOUND)
        fanout_error(r->vhd, pss, PERR_SESSION_NOT_FOUND, r->request_type,
                     "no session with id '%s'; create one with create_session", r->session_id);
    else
        fanout_error(r->vhd, pss, r->job.err == PERR_INTERNAL ? PERR_INTERNAL : PERR_UNAVAILABLE,
                     r->request_type, "the database is not available; try again shortly");
}

static void send_field_error(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                             const char *type, enum perr e, const char *why)
{
    fanout_error(vhd, pss, e, type, "%s", why);
}

/* ---- create_session ---- */

struct create_job {
    struct req_job req;
    char *model;
    char *title;
    struct db_session created;
};

static void create_run(struct dbjob *job, struct db *db)
{
    struct create_job *j = (struct create_job *)job;

    job->err = db_session_create(db, j->model, j->title, NULL, &j->created);
}

static void create_done(struct dbjob *job)
{
    struct create_job *j = (struct create_job *)job;
    struct per_session_data__chat *pss = req_conn(&j->req);
    struct live_session *s;

    if (pss && job->err) {
        req_error(&j->req, pss);
    } else if (pss) {
        s = sess_get(j->req.vhd, j->created.id, j->created.model);
        if (s && sess_join(j->req.vhd, s, pss) == 0) {
            json_t *ev = json_pack("{s:s, s:s, s:s, s:s?}", "type", "session_created", "session_id",
                                   s->id, "model", s->model, "title", j->created.title);
            fanout_send(j->req.vhd, pss, ev);
            json_decref(ev);
        } else {
            fanout_error(j->req.vhd, pss, PERR_INVALID_FIELD, "create_session",
                         "session %s was created, but this connection is already in %d "
                         "sessions; leave one, then join it",
                         j->created.id, BROKER_MAX_JOINED);
            sess_release(j->req.vhd, s);
        }
    }
    db_session_cleanup(&j->created);
    free(j->model);
    free(j->title);
    free(j);
}

static void on_create(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                      const json_t *msg)
{
    const char *model = vhd->driver ? cfg_model_name(vhd->cfg) : "none", *title = NULL;
    char why[JX_WHY_LEN];
    struct create_job *j;
    enum perr e;

    if ((e = jx_string(msg, "model_id", false, 1, MODEL_MAX, &model, why)) ||
        (e = jx_string(msg, "title", false, 0, TITLE_MAX, &title, why))) {
        send_field_error(vhd, pss, "create_session", e, why);
        return;
    }
    if (!(j = calloc(1, sizeof *j)))
        return;
    req_init(&j->req, vhd, pss, "create_session", create_run, create_done);
    j->model = strdup(model);
    j->title = title ? strdup(title) : NULL;
    dbq_push(vhd->dbq, &j->req.job);
}

/* ---- join_session ---- */

struct join_job {
    struct req_job req;
    int64_t since; /* -1: no replay */
    struct db_session session;
    struct db_message_list replay;
};

static void join_run(struct dbjob *job, struct db *db)
{
    struct join_job *j = (struct join_job *)job;

    job->err = db_session_get(db, j->req.session_id, &j->session);
    if (job->err == PERR_OK && j->since >= 0)
        job->err =
            db_messages_since(db, j->req.session_id, j->since, BROKER_REPLAY_MAX, &j->replay);
}

static void join_done(struct dbjob *job)
{
    struct join_job *j = (struct join_job *)job;
    struct per_vhost_data__chat *vhd = j->req.vhd;
    struct per_session_data__chat *pss = req_conn(&j->req);
    struct live_session *s;
    json_t *ev;

    if (!pss)
        goto out;
    if (!job->err && sess_was_deleted(vhd, j->session.id))
        job->err = PERR_SESSION_NOT_FOUND; /* read just before REST deleted it */
    if (job->err) {
        req_error(&j->req, pss);
        goto out;
    }
    s = sess_get(vhd, j->session.id, j->session.model);
    if (!s || sess_join(vhd, s, pss) < 0) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, "join_session",
                     "this connection is already in %d sessions; leave one first",
                     BROKER_MAX_JOINED);
        sess_release(vhd, s);
        goto out;
    }
    s->message_count = j->session.message_count;
    if (j->session.channel && !s->channel)
        s->channel = strdup(j->session.channel);
    ev = json_pack("{s:s, s:s, s:I, s:I}", "type", "session_joined", "session_id", s->id,
                   "message_count", (json_int_t)j->session.message_count, "clients",
                   (json_int_t)s->n_members);
    if (j->since >= 0) {
        json_t *list = json_array();
        for (size_t i = 0; i < j->replay.n; i++)
            json_array_append_new(list, proto_message(&j->replay.v[i]));
        json_object_set_new(ev, "messages", list);
    }
    if (s->reply && s->reply->state == REPLY_STREAMING && s->reply->begun)
        json_object_set_new(ev, "streaming",
                            json_pack("{s:s, s:s}", "response_id", s->reply->response_id, "text",
                                      s->reply->text ? s->reply->text : ""));
    fanout_send(vhd, pss, ev);
    json_decref(ev);
out:
    db_session_cleanup(&j->session);
    db_message_list_cleanup(&j->replay);
    free(j);
}

static void on_join(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                    const json_t *msg)
{
    const char *id = NULL;
    int64_t since = -1;
    char why[JX_WHY_LEN];
    struct join_job *j;
    enum perr e;

    if ((e = jx_string(msg, "session_id", true, 1, 64, &id, why)) ||
        (e = jx_int(msg, "since", false, 0, INT64_MAX, &since, why))) {
        send_field_error(vhd, pss, "join_session", e, why);
        return;
    }
    if (!clock_is_hex(id, DB_ID_HEX)) {
        fanout_error(vhd, pss, PERR_SESSION_NOT_FOUND, "join_session",
                     "no session with id '%s'; create one with create_session", id);
        return;
    }
    if (!(j = calloc(1, sizeof *j)))
        return;
    req_init(&j->req, vhd, pss, "join_session", join_run, join_done);
    snprintf(j->req.session_id, sizeof j->req.session_id, "%s", id);
    j->since = since;
    dbq_push(vhd->dbq, &j->req.job);
}

/* ---- leave_session ---- */

static void on_leave(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                     const json_t *msg)
{
    struct live_session *s = sess_resolve(vhd, pss, msg, "leave_session");
    char id[DB_ID_LEN];
    json_t *ev;

    if (!s)
        return;
    snprintf(id, sizeof id, "%s", s->id);
    sess_leave(vhd, s, pss, true); /* may free s */
    ev = json_pack("{s:s, s:s}", "type", "session_left", "session_id", id);
    fanout_send(vhd, pss, ev);
    json_decref(ev);
}

/* ---- storing a message (chat, and the envelope's chat_message, events, llm_request) ---- */

struct store_job {
    struct req_job req;
    struct store_request in;
    bool private_new; /* create a plain session for pss first (envelope llm_request) */
    bool duplicate;
    struct db_session session; /* when found or made by channel, or made private */
    struct db_message stored;
    int64_t message_count;
};

static void store_run(struct dbjob *job, struct db *db)
{
    struct store_job *j = (struct store_job *)job;
    struct db_message_in in = {.session_id = j->req.session_id,
                               .role = j->in.role,
                               .content = j->in.content,
                               .connection_id = j->req.conn_id,
                               .client_msg_id = j->in.client_msg_id,
                               .thread_id = j->in.thread_id,
                               .want_reply = j->in.want_reply};

    if (j->in.channel) { /* find the channel's session, or make it */
        job->err = db_session_by_channel(db, j->in.channel, &j->session);
        if (job->err == PERR_SESSION_NOT_FOUND)
            job->err =
                db_session_create(db, j->in.model, j->in.channel, j->in.channel, &j->session);
    } else if (j->private_new) {
        job->err = db_session_create(db, j->in.model, "llm requests", NULL, &j->session);
    }
    if (job->err)
        return;
    if (j->session.id[0])
        in.session_id = j->session.id;
    job->err = db_message_add(db, &in, &j->stored, &j->duplicate, &j->message_count);
}

static void store_done(struct dbjob *job)
{
    struct store_job *j = (struct store_job *)job;
    struct per_vhost_data__chat *vhd = j->req.vhd;
    struct per_session_data__chat *pss = req_conn(&j->req);
    const char *sid = j->session.id[0] ? j->session.id : j->req.session_id;
    struct live_session *s;

    if (vhd->stopping)
        goto out;
    if (job->err) {
        if (pss)
            req_error(&j->req, pss);
        goto out;
    }
    if (j->duplicate) {
        /* A resend after a reconnect: stored once, acknowledged again to the sender. */
        if (pss) {
            json_t *ev =
                json_pack("{s:s, s:s, s:s, s:I, s:o}", "type", "session_update", "session_id", sid,
                          "update_type", "message_added", "message_count",
                          (json_int_t)j->message_count, "message", proto_message(&j->stored));
            fanout_send(vhd, pss, ev);
            json_decref(ev);
        }
        goto out;
    }
    s = sess_get(vhd, sid, j->session.model);
    if (!s)
        goto out;
    if (j->session.channel && !s->channel)
        s->channel = strdup(j->session.channel);
    if (j->private_new && pss && sess_join(vhd, s, pss) == 0)
        snprintf(pss->private_session, sizeof pss->private_session, "%s", s->id);
    if (pss)
        sess_typing(vhd, s, pss, false);
    if (j->in.broadcast_all) {
        json_t *ev = json_pack("{s:s, s:s, s:s, s:I, s:o}", "type", "session_update", "session_id",
                               s->id, "update_type", "message_added", "message_count",
                               (json_int_t)j->message_count, "message", proto_message(&j->stored));
        for (struct per_session_data__chat *c = vhd->conns_list; c; c = c->next)
            if (c->authed)
                fanout_send(vhd, c, ev);
        json_decref(ev);
    } else {
        handle_message_stored(vhd, s, &j->stored, j->message_count, false);
    }
    if (j->in.want_reply)
        asst_request(vhd, s, j->stored.id, j->in.system_prompt);
    sess_release(vhd, s);
out:
    db_session_cleanup(&j->session);
    db_message_cleanup(&j->stored);
    free(j->in.content);
    free(j->in.client_msg_id);
    free(j->in.thread_id);
    free(j->in.channel);
    free(j->in.model);
    free(j);
}

void handle_store(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                  const struct live_session *s, const struct store_request *in,
                  const char *request_type)
{
    struct store_job *j = calloc(1, sizeof *j);

    if (!j)
        return;
    req_init(&j->req, vhd, pss, request_type, store_run, store_done);
    if (s)
        snprintf(j->req.session_id, sizeof j->req.session_id, "%s", s->id);
    j->private_new = !s && !in->channel;
    j->in = *in;
    j->in.content = strdup(in->content);
    j->in.client_msg_id = in->client_msg_id ? strdup(in->client_msg_id) : NULL;
    j->in.thread_id = in->thread_id ? strdup(in->thread_id) : NULL;
    j->in.channel = in->channel ? strdup(in->channel) : NULL;
    j->in.model = strdup(vhd->driver ? cfg_model_name(vhd->cfg) : "none");
    j->req.job.bytes = strlen(in->content); /* counted in the database queue's bound */
    dbq_push(vhd->dbq, &j->req.job);
}

void handle_message_stored(struct per_vhost_data__chat *vhd, struct live_session *s,
                           const struct db_message *m, int64_t message_count, bool want_reply)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:I, s:o}", "type", "session_update", "session_id",
                           s->id, "update_type", "message_added", "message_count",
                           (json_int_t)message_count, "message", proto_message(m));

    s->message_count = message_count;
    fanout_session(vhd, s, ev, NULL);
    json_decref(ev);
    if (want_reply)
        asst_request(vhd, s, m->id, NULL);
}

static void on_chat(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                    const json_t *msg)
{
    const char *content = NULL, *cmid = NULL;
    char why[JX_WHY_LEN];
    struct live_session *s;
    enum perr e;

    if ((e = jx_string(msg, "message", true, 1, (size_t)vhd->cfg->max_message_size, &content,
                       why)) ||
        (e = jx_string(msg, "client_msg_id", false, 1, CLIENT_MSG_ID_MAX, &cmid, why))) {
        send_field_error(vhd, pss, "chat", e, why);
        return;
    }
    if (!(s = sess_resolve(vhd, pss, msg, "chat")))
        return;
    struct store_request in = {.role = "user",
                               .content = (char *)content,
                               .client_msg_id = (char *)cmid,
                               .want_reply = vhd->driver != NULL};
    handle_store(vhd, pss, s, &in, "chat");
}

/* ---- stop, typing, ping ---- */

static void on_stop(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                    const json_t *msg)
{
    struct live_session *s = sess_resolve(vhd, pss, msg, "stop");

    if (s)
        asst_stop(vhd, s);
}

static void on_typing(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                      const json_t *msg, bool typing)
{
    struct live_session *s = sess_resolve(vhd, pss, msg, typing ? "typing_start" : "typing_stop");

    if (s)
        sess_typing(vhd, s, pss, typing);
}

void handle_ping(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss)
{
    char now[CLOCK_ISO_LEN];
    json_t *ev;

    clock_now_iso(now);
    ev = json_pack("{s:s, s:s}", "type", "pong", "timestamp", now);
    fanout_send(vhd, pss, ev);
    json_decref(ev);
}

/* ---- dispatch ---- */

/* Spends a rate-limit token; false when the message must be dropped. */
static bool within_rate(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss)
{
    switch (access_rate(vhd, pss)) {
    case RATE_OK:
        return true;
    case RATE_REFUSE:
        if (pss->flood == 1 || pss->flood % 10 == 0) /* not one error per message */
            fanout_error(vhd, pss, PERR_RATE_LIMITED, NULL,
                         "slow down: at most %g messages a second (bursts of %d); messages "
                         "over it are dropped, and a flood closes the connection",
                         vhd->cfg->rate_limit, vhd->cfg->rate_burst);
        return false;
    case RATE_CLOSE:
        ws_close(pss, LWS_CLOSE_STATUS_POLICY_VIOLATION);
        return false;
    }
    return false;
}

void handle_message(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                    const char *text, size_t len)
{
    char why[JX_WHY_LEN];
    const char *type = NULL;
    json_t *msg;
    enum perr e;

    if (!within_rate(vhd, pss))
        return;
    if ((e = jx_parse_object(text, len, &msg, why))) {
        fanout_error(vhd, pss, e, NULL, "%s", why);
        return;
    }
    if (!pss->dialect_known) {
        pss->dialect_known = true;
        pss->dialect =
            json_is_object(json_object_get(msg, "data")) ? DIALECT_ENVELOPE : DIALECT_FLAT;
    }
    if ((e = jx_string(msg, "type", true, 1, 64, &type, why))) {
        fanout_error(vhd, pss, e, NULL, "%s", why);
    } else if (!pss->authed && !(pss->dialect == DIALECT_ENVELOPE && strcmp(type, "auth") == 0)) {
        /* nothing is served before authentication */
        fanout_error(vhd, pss, PERR_UNAUTHORIZED, type,
                     "authenticate first: send the API key as ?api_key= or 'Authorization: "
                     "Bearer KEY' when connecting, or an envelope auth message");
        ws_close(pss, LWS_CLOSE_STATUS_POLICY_VIOLATION);
    } else if (pss->dialect == DIALECT_ENVELOPE) {
        envelope_message(vhd, pss, msg, type);
    } else if (strcmp(type, "create_session") == 0) {
        on_create(vhd, pss, msg);
    } else if (strcmp(type, "join_session") == 0) {
        on_join(vhd, pss, msg);
    } else if (strcmp(type, "leave_session") == 0) {
        on_leave(vhd, pss, msg);
    } else if (strcmp(type, "chat") == 0) {
        on_chat(vhd, pss, msg);
    } else if (strcmp(type, "stop") == 0) {
        on_stop(vhd, pss, msg);
    } else if (strcmp(type, "typing_start") == 0 || strcmp(type, "typing_stop") == 0) {
        on_typing(vhd, pss, msg, strcmp(type, "typing_start") == 0);
    } else if (strcmp(type, "ping") == 0) {
        handle_ping(vhd, pss);
    } else {
        fanout_error(vhd, pss, PERR_UNKNOWN_TYPE, type,
                     "unknown message type '%s'; see the protocol in the API docs", type);
    }
    json_decref(msg);
}
