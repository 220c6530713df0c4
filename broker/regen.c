/* regen: `regenerate` (SPEC 9): the assistant answers the session's last user message
 * again. The database marks the replies it had `superseded` and queues the message, in
 * one transaction (db_regenerate); after the commit the members are told
 * session_update message_superseded for each (on every broker), and the new reply
 * streams as every reply does.
 *
 * Refused while a reply is under way or waiting in the session (the client may stop it
 * first), and without an assistant (--llm none). The session's reply_mode is not asked:
 * regenerate is an explicit request for a reply. */
#include <stdlib.h>
#include <string.h>

#include "assistant.h"
#include "broker.h"
#include "dbq.h"
#include "log.h"

#define REQUEST "regenerate"

struct regen_job {
    struct dbjob job;
    struct per_vhost_data__chat *vhd;
    char conn_id[BROKER_CONN_ID_HEX + 1];
    char session_id[DB_ID_LEN];
    struct db_regen out;
};

static void regen_run(struct dbjob *job, struct db *db)
{
    struct regen_job *j = (struct regen_job *)job;

    job->err = db_regenerate(db, j->session_id, &j->out);
}

static void busy(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss)
{
    fanout_error(vhd, pss, PERR_UNAVAILABLE, REQUEST,
                 "the assistant is replying in this session; wait for its reply to complete "
                 "(or send stop), then regenerate");
}

/* Tells the members of s (on every broker) that reply message_id was superseded. */
static void tell_superseded(struct per_vhost_data__chat *vhd, struct live_session *s,
                            int64_t message_id, int64_t message_count, const char *client_id)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:I, s:I}", "type", "session_update", "session_id",
                           s->id, "update_type", "message_superseded", "message_id",
                           (json_int_t)message_id, "message_count", (json_int_t)message_count);

    proto_set_client(ev, client_id); /* who asked; NULL: gone since */
    relay_broadcast(vhd, s, ev, NULL);
    json_decref(ev);
}

static void regen_done(struct dbjob *job)
{
    struct regen_job *j = (struct regen_job *)job;
    struct per_vhost_data__chat *vhd = j->vhd;
    struct per_session_data__chat *pss = ws_conn(vhd, j->conn_id);
    struct live_session *s;

    if (pss && pss->jobs_waiting)
        pss->jobs_waiting--;
    if (vhd->stopping)
        goto out;
    if (job->err == PERR_OK && j->out.busy) {
        if (pss)
            busy(vhd, pss);
    } else if (job->err == PERR_NOT_FOUND) {
        if (pss)
            fanout_error(vhd, pss, PERR_NOT_FOUND, REQUEST,
                         "there is no user message in this session for the assistant to answer "
                         "again; send a chat first");
    } else if (job->err == PERR_SESSION_NOT_FOUND) {
        if (pss)
            fanout_error(vhd, pss, PERR_SESSION_NOT_FOUND, REQUEST, "no session with id '%s'",
                         j->session_id);
    } else if (job->err) {
        if (pss)
            fanout_error(vhd, pss, job->err == PERR_INTERNAL ? PERR_INTERNAL : PERR_UNAVAILABLE,
                         REQUEST,
                         "the database is busy or not available, so this was not done; try "
                         "again shortly");
    } else if ((s = sess_find(vhd, j->session_id))) {
        /* committed: the message is queued, so the reply comes even if this broker stops
         * now; without a live session here, the reconcile asks for it */
        s->message_count = j->out.message_count;
        for (size_t i = 0; i < j->out.n_superseded; i++)
            tell_superseded(vhd, s, j->out.superseded[i], j->out.message_count,
                            pss ? ws_client_id(pss) : NULL);
        log_info("session %s: message %lld is answered again (%zu replies superseded)", s->id,
                 (long long)j->out.prompt_id, j->out.n_superseded);
        asst_request(vhd, s, j->out.prompt_id, NULL);
    }
out:
    free(j);
}

void act_regenerate(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                    struct live_session *s)
{
    struct regen_job *j;

    if (!vhd->driver) {
        fanout_error(vhd, pss, PERR_BAD_REQUEST, REQUEST,
                     "this service has no assistant (--llm none), so there is no reply to "
                     "regenerate");
        return;
    }
    if (s->reply || s->n_pending > 0 || s->heard) {
        busy(vhd, pss); /* the database checks again: another broker's queued replies */
        return;
    }
    if (pss->jobs_waiting >= BROKER_CONN_JOBS_MAX) {
        fanout_error(vhd, pss, PERR_UNAVAILABLE, REQUEST,
                     "%d requests of this connection are waiting for the database already; "
                     "wait for their answers, then send again",
                     BROKER_CONN_JOBS_MAX);
        return;
    }
    if (!(j = calloc(1, sizeof *j)))
        return;
    j->vhd = vhd;
    snprintf(j->conn_id, sizeof j->conn_id, "%s", pss->id);
    snprintf(j->session_id, sizeof j->session_id, "%s", s->id);
    j->job.run = regen_run;
    j->job.done = regen_done;
    pss->jobs_waiting++;
    dbq_push(vhd->dbq, &j->job);
}
