/* actions: what both dialects do, in one place: create and join a session (a channel is a
 * session joined by name), leave, store a message and tell the members (the one
 * message_added), answer ping, and tell a client whether a session it named exists.
 * Whether a chat gets a reply is decided with the session's reply_mode as the database
 * holds it when the chat is stored (store_run; SPEC 9, reply_policy.h).
 *
 * Each action validates nothing (inbound.c and the leaves have); it hands database work
 * to the database thread, and its done callback finishes on the loop. A connection may
 * be gone when a done callback runs, so jobs name it by id, never by pointer. */
#include <stdlib.h>
#include <string.h>

#include "assistant.h"
#include "broker.h"
#include "clock.h"
#include "dbq.h"
#include "log.h"
#include "quota.h"
#include "utf8.h"

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

/* Pushes the job, counted against the connection's bound (BROKER_CONN_JOBS_MAX): one
 * client cannot fill the database queue for everyone, nor have thousands of answers
 * fail at once. Returns -1 (after answering unavailable) when pss is at its bound. */
static int req_push(struct req_job *r, struct per_session_data__chat *pss,
                    const char *client_msg_id)
{
    if (!r->vhd->dbq) { /* stopping: the database thread is gone */
        fanout_error_msg(r->vhd, pss, PERR_UNAVAILABLE, r->request_type, client_msg_id,
                         "the broker is stopping; reconnect and send again");
        return -1;
    }
    if (pss->jobs_waiting >= BROKER_CONN_JOBS_MAX) {
        fanout_error_msg(r->vhd, pss, PERR_UNAVAILABLE, r->request_type, client_msg_id,
                         "%d requests of this connection are waiting for the database "
                         "already; wait for their answers, then send again",
                         BROKER_CONN_JOBS_MAX);
        return -1;
    }
    pss->jobs_waiting++;
    dbq_push(r->vhd->dbq, &r->job);
    return 0;
}

/* The connection that asked, if it is still there; its request is no longer waiting.
 * Every done callback calls it once. */
static struct per_session_data__chat *req_conn(struct req_job *r)
{
    struct per_session_data__chat *pss = ws_conn(r->vhd, r->conn_id);

    if (pss && pss->jobs_waiting)
        pss->jobs_waiting--;
    return r->vhd->stopping ? NULL : pss;
}

static void req_error_msg(struct req_job *r, struct per_session_data__chat *pss,
                          const char *client_msg_id)
{
    if (r->job.err == PERR_SESSION_NOT_FOUND)
        fanout_error_msg(r->vhd, pss, PERR_SESSION_NOT_FOUND, r->request_type, client_msg_id,
                         "no session with id '%s'; create one with create_session", r->session_id);
    else
        fanout_error_msg(r->vhd, pss,
                         r->job.err == PERR_INTERNAL ? PERR_INTERNAL : PERR_UNAVAILABLE,
                         r->request_type, client_msg_id,
                         "the database is busy or not available, so this was not done; try "
                         "again shortly");
}

static void req_error(struct req_job *r, struct per_session_data__chat *pss)
{
    req_error_msg(r, pss, NULL);
}

static void too_many_sessions(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                              const char *request_type)
{
    fanout_error(vhd, pss, PERR_INVALID_FIELD, request_type,
                 "this connection is in %d sessions already; leave one first", BROKER_MAX_JOINED);
}

/* The model a new session gets: the one asked for, or the configured one. */
static const char *model_of_new_session(const struct per_vhost_data__chat *vhd, const char *asked)
{
    return asked ? asked : vhd->driver ? cfg_model_name(vhd->cfg) : "none";
}

/* ---- create_session ---- */

struct create_job {
    struct req_job req;
    char *model;
    char *title;
    char reply_mode[POLICY_MODE_LEN]; /* checked; "": the default */
    struct db_session created;
};

static void create_run(struct dbjob *job, struct db *db)
{
    struct create_job *j = (struct create_job *)job;

    job->err = db_session_create_mode(db, j->model, j->title, NULL,
                                      j->reply_mode[0] ? j->reply_mode : NULL, &j->created);
}

static void create_free(struct create_job *j)
{
    db_session_cleanup(&j->created);
    free(j->model);
    free(j->title);
    free(j);
}

static void create_done(struct dbjob *job)
{
    struct create_job *j = (struct create_job *)job;
    struct per_vhost_data__chat *vhd = j->req.vhd;
    struct per_session_data__chat *pss = req_conn(&j->req);
    struct live_session *s;

    if (pss && job->err) {
        req_error(&j->req, pss);
    } else if (pss) {
        s = sess_get(vhd, j->created.id, j->created.model);
        if (s)
            gate_history_at(s, 0); /* new: no history */
        if (s && sess_join(vhd, s, pss) == 0) {
            json_t *ev = json_pack("{s:s, s:s, s:s, s:s?, s:s}", "type", "session_created",
                                   "session_id", s->id, "model", s->model, "title",
                                   j->created.title, "reply_mode", j->created.reply_mode);
            fanout_send(vhd, pss, ev);
            json_decref(ev);
        } else {
            fanout_error(vhd, pss, PERR_INVALID_FIELD, "create_session",
                         "session %s was created, but this connection is in %d sessions "
                         "already; leave one, then join it",
                         j->created.id, BROKER_MAX_JOINED);
            sess_release(vhd, s);
        }
    }
    create_free(j);
}

void act_create(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                const char *model, const char *title, const char *reply_mode)
{
    struct create_job *j;
    char shown[UTF8_SHOWN_LEN];

    if (reply_mode && !policy_mode_valid(reply_mode)) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, "create_session",
                     "field 'reply_mode': '%s' is not a reply mode; use " POLICY_MODES,
                     utf8_shown(shown, reply_mode));
        return;
    }

    if (model && !cfg_model_allowed(vhd->cfg, model)) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, "create_session",
                     "field 'model_id': '%s' is not a model this service offers (--llm-models)",
                     utf8_shown(shown, model));
        return;
    }
    if (!(j = calloc(1, sizeof *j)))
        return;
    req_init(&j->req, vhd, pss, "create_session", create_run, create_done);
    j->model = strdup(model_of_new_session(vhd, model));
    j->title = title ? strdup(title) : NULL;
    snprintf(j->reply_mode, sizeof j->reply_mode, "%s", reply_mode ? reply_mode : "");
    if (req_push(&j->req, pss, NULL) < 0)
        create_free(j);
}

/* ---- join_session and subscribe ---- */

struct join_job {
    struct req_job req;
    struct join_request in; /* strings copied below */
    char channel[65];
    char *model;
    struct db_session session;
    struct db_message_list replay; /* up to BROKER_REPLAY_MAX + 1 rows: one more tells has_more */
    int64_t last_id, last_seq;     /* the session's newest message, 0 and 0 when empty */
};

static void join_run(struct dbjob *job, struct db *db)
{
    struct join_job *j = (struct join_job *)job;

    if (j->channel[0]) { /* subscribing to a new name makes it */
        job->err = db_session_by_channel(db, j->channel, &j->session);
        if (job->err == PERR_SESSION_NOT_FOUND)
            job->err = db_session_create(db, j->model, j->channel, j->channel, &j->session);
    } else {
        job->err = db_session_get(db, j->req.session_id, &j->session);
    }
    if (job->err == PERR_OK)
        job->err = db_session_last(db, j->session.id, &j->last_id, &j->last_seq);
    if (job->err == PERR_OK && j->in.since >= 0)
        job->err =
            db_messages_since(db, j->session.id, j->in.since, BROKER_REPLAY_MAX + 1, &j->replay);
}

/* The replay's messages, as many as fit in BROKER_REPLAY_BYTES (at least one), into ev;
 * has_more and last_id when it was cut. */
static void add_replay(json_t *ev, const struct db_message_list *replay)
{
    json_t *list = json_array();
    size_t bytes = 0, i;

    for (i = 0; i < replay->n && i < BROKER_REPLAY_MAX; i++) {
        size_t size = strlen(replay->v[i].content) + 200; /* the fields around it */
        if (i > 0 && bytes + size > BROKER_REPLAY_BYTES)
            break;
        bytes += size;
        json_array_append_new(list, proto_message(&replay->v[i]));
    }
    json_object_set_new(ev, "messages", list);
    if (i < replay->n) {
        json_object_set_new(ev, "has_more", json_true());
        json_object_set_new(ev, "last_id", json_integer(replay->v[i - 1].id));
    } else {
        json_object_set_new(ev, "has_more", json_false());
    }
}

#define MEMBERS_LISTED 1000 /* members listed in session_joined; clients counts them all */

/* The members of s present on every broker, the joiner included: [{connection_id, name}]
 * (SPEC 9), this broker's first. New reference. */
static json_t *members_json(const struct live_session *s)
{
    json_t *list = json_array();

    for (size_t i = 0; i < s->n_members && json_array_size(list) < MEMBERS_LISTED; i++)
        json_array_append_new(list, json_pack("{s:s, s:s}", "connection_id", s->members[i]->id,
                                              "name", s->members[i]->name));
    for (size_t i = 0; i < s->n_remote && json_array_size(list) < MEMBERS_LISTED; i++)
        json_array_append_new(list, json_pack("{s:s, s:s}", "connection_id", s->remote[i].conn_id,
                                              "name", s->remote[i].name));
    return list;
}

/* The answer to a join: session_joined (flat join_session) or subscription_success. */
static void send_joined(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                        struct live_session *s, const struct join_job *j)
{
    json_t *ev;

    if (s->channel && j->channel[0]) {
        ev = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:o}", "type", "subscription_success",
                       "connection_id", pss->id, "channel", s->channel, "session_id", s->id,
                       "message_count", (json_int_t)s->message_count, "clients",
                       (json_int_t)roster_clients(s), "members", members_json(s));
        fanout_send(vhd, pss, ev);
        json_decref(ev);
        return;
    }
    ev = json_pack("{s:s, s:s, s:I, s:I, s:o}", "type", "session_joined", "session_id", s->id,
                   "message_count", (json_int_t)s->message_count, "clients",
                   (json_int_t)roster_clients(s), "members", members_json(s));
    if (j && j->session.reply_mode[0]) /* how the assistant answers here (SPEC 9) */
        json_object_set_new(ev, "reply_mode", json_string(j->session.reply_mode));
    if (j && j->in.since >= 0)
        add_replay(ev, &j->replay);
    if (s->reply && s->reply->state == REPLY_STREAMING && s->reply->begun)
        json_object_set_new(ev, "streaming",
                            json_pack("{s:s, s:s}", "response_id", s->reply->response_id, "text",
                                      s->reply->text ? s->reply->text : ""));
    else if (s->heard) /* another broker's reply */
        json_object_set_new(ev, "streaming",
                            json_pack("{s:s, s:s}", "response_id", s->heard->response_id, "text",
                                      s->heard->text ? s->heard->text : ""));
    fanout_send(vhd, pss, ev);
    json_decref(ev);
}

static void join_free(struct join_job *j)
{
    db_session_cleanup(&j->session);
    db_message_list_cleanup(&j->replay);
    free(j->model);
    free(j);
}

/* pss becomes a member of s and is answered. */
static void join_finish(struct join_job *j, struct live_session *s,
                        struct per_session_data__chat *pss)
{
    struct per_vhost_data__chat *vhd = j->req.vhd;

    if (sess_join(vhd, s, pss) < 0) {
        too_many_sessions(vhd, pss, j->req.request_type);
        sess_release(vhd, s);
        return;
    }
    s->message_count = j->session.message_count;
    gate_history_at(s, j->last_seq);
    send_joined(vhd, pss, s, j);
    if (vhd->relay)
        gate_catch_up(vhd, s); /* what arrived while the rosters were asked for */
}

/* The other brokers told who of s's members they hold (roster_park): the join goes on. */
static void join_resume(struct dbjob *job)
{
    struct join_job *j = (struct join_job *)job;
    struct per_vhost_data__chat *vhd = j->req.vhd;
    struct per_session_data__chat *pss;
    struct live_session *s;

    if (!vhd->stopping) {
        pss = ws_conn(vhd, j->req.conn_id);
        s = sess_find(vhd, j->session.id);
        if (pss && s)
            join_finish(j, s, pss);
        else if (s)
            sess_release(vhd, s);
    }
    join_free(j);
}

static void join_done(struct dbjob *job)
{
    struct join_job *j = (struct join_job *)job;
    struct per_vhost_data__chat *vhd = j->req.vhd;
    struct per_session_data__chat *pss = req_conn(&j->req);
    struct live_session *s;

    if (!pss)
        goto out;
    if (!job->err && sess_was_deleted(vhd, j->session.id))
        job->err = PERR_SESSION_NOT_FOUND; /* read just before REST deleted it */
    if (job->err) {
        req_error(&j->req, pss);
        goto out;
    }
    s = sess_get(vhd, j->session.id, j->session.model);
    if (s && j->session.channel && !s->channel)
        s->channel = strdup(j->session.channel);
    if (!s) {
        too_many_sessions(vhd, pss, j->req.request_type);
        goto out;
    }
    job->done = join_resume;
    if (roster_park(vhd, s, job))
        return; /* the first member here: its answer counts the other brokers' members */
    join_finish(j, s, pss);
out:
    join_free(j);
}

/* The live session pss holds under channel, or NULL. */
static struct live_session *held_channel(struct per_session_data__chat *pss, const char *channel)
{
    for (unsigned i = 0; i < pss->n_joined; i++)
        if (pss->joined[i]->channel && strcmp(pss->joined[i]->channel, channel) == 0)
            return pss->joined[i];
    return NULL;
}

void act_join(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
              const struct join_request *in, const char *request_type)
{
    char shown[UTF8_SHOWN_LEN];
    struct live_session *s;
    struct join_job *j;

    if (in->channel && (s = held_channel(pss, in->channel))) {
        struct join_job again = {.in = *in};
        snprintf(again.channel, sizeof again.channel, "%s", in->channel);
        send_joined(vhd, pss, s, &again); /* subscribed already: the same answer */
        return;
    }
    if (!in->channel && !clock_is_hex(in->session_id, DB_ID_HEX)) {
        fanout_error(vhd, pss, PERR_SESSION_NOT_FOUND, request_type,
                     "no session with id '%s'; create one with create_session",
                     utf8_shown(shown, in->session_id));
        return;
    }
    if (!(j = calloc(1, sizeof *j)))
        return;
    req_init(&j->req, vhd, pss, request_type, join_run, join_done);
    j->in = *in;
    if (in->channel)
        snprintf(j->channel, sizeof j->channel, "%s", in->channel);
    else
        snprintf(j->req.session_id, sizeof j->req.session_id, "%s", in->session_id);
    j->in.channel = j->in.session_id = NULL; /* borrowed: only the copies above are kept */
    j->model = strdup(model_of_new_session(vhd, NULL));
    if (req_push(&j->req, pss, NULL) < 0)
        join_free(j);
}

/* ---- leave_session ---- */

void act_leave(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
               struct live_session *s)
{
    char id[DB_ID_LEN];
    json_t *ev;

    snprintf(id, sizeof id, "%s", s->id);
    sess_leave(vhd, s, pss, true); /* may free s */
    ev = json_pack("{s:s, s:s}", "type", "session_left", "session_id", id);
    fanout_send(vhd, pss, ev);
    json_decref(ev);
}

/* ---- a session named but not joined ---- */

struct exists_job {
    struct req_job req;
    struct db_session session;
};

static void exists_run(struct dbjob *job, struct db *db)
{
    struct exists_job *j = (struct exists_job *)job;

    job->err = db_session_get(db, j->req.session_id, &j->session);
}

static void exists_done(struct dbjob *job)
{
    struct exists_job *j = (struct exists_job *)job;
    struct per_session_data__chat *pss = req_conn(&j->req);

    if (pss && job->err)
        req_error(&j->req, pss);
    else if (pss)
        fanout_error(j->req.vhd, pss, PERR_NOT_IN_SESSION, j->req.request_type,
                     "not a member of session '%s'; join it first with join_session",
                     j->req.session_id);
    db_session_cleanup(&j->session);
    free(j);
}

void act_not_joined(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                    const char *id, const char *request_type)
{
    char shown[UTF8_SHOWN_LEN];
    struct exists_job *j;

    if (sess_find(vhd, id)) { /* live, so it exists */
        fanout_error(vhd, pss, PERR_NOT_IN_SESSION, request_type,
                     "not a member of session '%s'; join it first with join_session", id);
        return;
    }
    if (!clock_is_hex(id, DB_ID_HEX)) {
        fanout_error(vhd, pss, PERR_SESSION_NOT_FOUND, request_type,
                     "no session with id '%s'; create one with create_session",
                     utf8_shown(shown, id));
        return;
    }
    if (!(j = calloc(1, sizeof *j)))
        return;
    req_init(&j->req, vhd, pss, request_type, exists_run, exists_done);
    snprintf(j->req.session_id, sizeof j->req.session_id, "%s", id);
    if (req_push(&j->req, pss, NULL) < 0)
        free(j);
}

/* ---- storing a message (chat, and the envelope's chat_message, events, llm_request) ---- */

struct store_job {
    struct req_job req;
    const char *role; /* static */
    char *content;
    char *client_msg_id;
    char *thread_id;
    char *channel;                            /* store in this channel's session, made if needed */
    char *model;                              /* of a session made here */
    char author_name[NAME_LEN];               /* the connection's name when it sent the message */
    char client_id[BROKER_CLIENT_ID_MAX + 1]; /* its envelope client_id then (SPEC 3.3) */
    bool want_reply;
    bool by_policy;   /* want_reply as the session's reply_mode decides (a flat chat) */
    bool private_new; /* create a plain session for pss first (envelope llm_request) */
    bool broadcast_all;
    const char *system_prompt;
    bool duplicate;
    char key_name[65];         /* the sender's API key (its quotas, SPEC 9); "" for none */
    struct db_quota quota;     /* what it was counted against (refused: the key's use) */
    struct db_session session; /* when found or made by channel, or made private */
    struct db_message stored;
    int64_t message_count;
};

/* Database thread: applies session_id's reply_mode, as committed now (a PATCH that was
 * answered counts even if its notification is still on the way), to j->want_reply. A
 * chat not answered asks for no reply: no reply_queue row. */
static enum perr policy_run(struct store_job *j, struct db *db, const char *session_id)
{
    struct db_session cur;
    enum perr e = db_session_get(db, session_id, &cur);

    if (e)
        return e;
    j->want_reply = policy_wants_reply(cur.reply_mode, j->content, cur.model);
    db_session_cleanup(&cur);
    return PERR_OK;
}

static void store_run(struct dbjob *job, struct db *db)
{
    struct store_job *j = (struct store_job *)job;
    struct db_message_in in = {.session_id = j->req.session_id,
                               .role = j->role,
                               .content = j->content,
                               .connection_id = j->req.conn_id,
                               .client_msg_id = j->client_msg_id,
                               .thread_id = j->thread_id,
                               .author_name = j->author_name[0] ? j->author_name : NULL,
                               .want_reply = j->want_reply,
                               .quota = quota_for(j->req.vhd->cfg, j->key_name, &j->quota)};

    if (j->channel) { /* find the channel's session, or make it */
        job->err = db_session_by_channel(db, j->channel, &j->session);
        if (job->err == PERR_SESSION_NOT_FOUND)
            job->err = db_session_create(db, j->model, j->channel, j->channel, &j->session);
    } else if (j->private_new) {
        job->err = db_session_create(db, j->model, "llm requests", NULL, &j->session);
    }
    if (job->err)
        return;
    if (j->session.id[0])
        in.session_id = j->session.id;
    if (j->want_reply && j->by_policy && (job->err = policy_run(j, db, in.session_id)))
        return;
    in.want_reply = j->want_reply;
    job->err = db_message_add(db, &in, &j->stored, &j->duplicate, &j->message_count);
}

static void store_free(struct store_job *j)
{
    db_session_cleanup(&j->session);
    db_message_cleanup(&j->stored);
    free(j->content);
    free(j->client_msg_id);
    free(j->thread_id);
    free(j->channel);
    free(j->model);
    free(j);
}

/* Tells pss its message was refused over its key's quota (SPEC 9): error quota_exceeded,
 * saying when the quota resets, with resets_at (the next UTC midnight of the day it was
 * counted in). Nothing was stored. */
static void quota_refused(struct store_job *j, struct per_session_data__chat *pss)
{
    const struct cfg *cfg = j->req.vhd->cfg;
    char msg[512], at[CLOCK_ISO_LEN];
    json_t *ev;

    quota_resets_at(j->quota.day, at);
    quota_message(&j->quota, quota_now_ms(cfg), msg, sizeof msg);
    ev = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "error", "code",
                   perr_code(PERR_QUOTA_EXCEEDED), "message", msg, "resets_at", at, "request_type",
                   j->req.request_type);
    if (ev && j->client_msg_id)
        json_object_set_new(ev, "client_msg_id", json_string(j->client_msg_id));
    fanout_send(j->req.vhd, pss, ev);
    json_decref(ev);
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
    if (job->err == PERR_QUOTA_EXCEEDED) {
        if (pss)
            quota_refused(j, pss);
        goto out;
    }
    if (job->err) {
        if (pss)
            req_error_msg(&j->req, pss, j->client_msg_id);
        goto out;
    }
    if (j->duplicate) {
        /* A resend after a reconnect: stored once, acknowledged again to the sender. */
        if (pss) {
            json_t *ev = proto_message_added(sid, &j->stored, j->message_count);
            fanout_send(vhd, pss, ev);
            json_decref(ev);
        }
        goto out;
    }
    if (!(s = sess_get(vhd, sid, j->session.model)))
        goto out;
    if (j->session.channel && !s->channel)
        s->channel = strdup(j->session.channel);
    if (j->private_new)
        gate_history_at(s, 0); /* made by this job: the message below is its first */
    if (j->private_new && pss && sess_join(vhd, s, pss) == 0)
        snprintf(pss->private_session, sizeof pss->private_session, "%s", s->id);
    if (pss)
        sess_typing(vhd, s, pss, false);
    if (j->broadcast_all) {
        json_t *ev = proto_message_added(s->id, &j->stored, j->message_count);
        proto_set_client(ev, j->client_id);
        relay_all(vhd, ev);
        json_decref(ev);
        gate_message(vhd, s, j->stored.seq, NULL); /* told to everyone above */
    } else {
        act_message_added(vhd, s, &j->stored, j->message_count, false, true, j->client_id);
    }
    if (j->want_reply)
        asst_request(vhd, s, j->stored.id, j->system_prompt);
    sess_release(vhd, s);
out:
    store_free(j);
}

void act_store(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
               const struct live_session *s, const struct store_request *in,
               const char *request_type)
{
    struct store_job *j;

    if (in->want_reply && s && asst_busy(vhd, s)) {
        fanout_error(vhd, pss, PERR_UNAVAILABLE, request_type,
                     "%d messages in this session are already waiting for the assistant; "
                     "wait for its replies, then send again",
                     BROKER_PENDING_MAX);
        return;
    }
    if (!(j = calloc(1, sizeof *j)))
        return;
    req_init(&j->req, vhd, pss, request_type, store_run, store_done);
    if (s)
        snprintf(j->req.session_id, sizeof j->req.session_id, "%s", s->id);
    j->role = in->role;
    j->private_new = !s && !in->channel;
    j->want_reply = in->want_reply;
    j->by_policy = in->by_policy;
    j->broadcast_all = in->broadcast_all;
    j->system_prompt = in->system_prompt;
    if (strcmp(in->role, "user") == 0) /* events are not counted */
        snprintf(j->key_name, sizeof j->key_name, "%s", pss->key_name);
    j->content = strdup(in->content);
    j->client_msg_id = in->client_msg_id ? strdup(in->client_msg_id) : NULL;
    j->thread_id = in->thread_id ? strdup(in->thread_id) : NULL;
    j->channel = in->channel ? strdup(in->channel) : NULL;
    j->model = strdup(model_of_new_session(vhd, NULL));
    snprintf(j->author_name, sizeof j->author_name, "%s", pss->name);
    snprintf(j->client_id, sizeof j->client_id, "%s", ws_client_id(pss));
    j->req.job.bytes = strlen(in->content);
    if (req_push(&j->req, pss, in->client_msg_id) < 0)
        store_free(j);
}

void act_message_added(struct per_vhost_data__chat *vhd, struct live_session *s,
                       const struct db_message *m, int64_t message_count, bool want_reply,
                       bool mine, const char *client_id)
{
    json_t *ev = proto_message_added(s->id, m, message_count);

    proto_set_client(ev, client_id ? client_id : ws_client_of(vhd, m->connection_id));
    if (mine)
        relay_message(vhd, s, m->seq, ev);
    s->message_count = message_count;
    gate_message(vhd, s, m->seq, ev);
    if (want_reply)
        asst_request(vhd, s, m->id, NULL);
}

/* ---- ping ---- */

void act_ping_in(struct inbound *in)
{
    char now[CLOCK_ISO_LEN];
    json_t *ev;

    clock_now_iso(now);
    ev = json_pack("{s:s, s:s}", "type", "pong", "timestamp", now);
    fanout_send(in->vhd, in->pss, ev);
    json_decref(ev);
}
