/* reconcile: what the broker may have missed, caught up from the database.
 *
 * The REST service tells the broker of its changes through the notification socket, but
 * a notification can be lost (the socket was full, the broker was busy or not running).
 * So at start and every RECONCILE_MS the broker reads
 *   - the reply queue: every user message still waiting for an assistant reply, which it
 *     asks for again (asst_request ignores what is queued or under way already), and
 *   - the messages stored since the last pass in up to RECONCILE_SESSIONS live sessions
 *     with members (taken in turn), and tells the members those they were not told of
 *     (through the gate, gate.c: in seq order, nothing twice).
 * One job at a time; it never waits on anything but the database thread. */
#include <stdlib.h>
#include <string.h>

#include "assistant.h"
#include "broker.h"
#include "dbq.h"
#include "log.h"
#include "map.h"

#define RECONCILE_MS       2000
#define RECONCILE_SESSIONS 64
#define RECONCILE_ROWS     1000 /* messages read per session and pass */

struct catch_up {
    char id[DB_ID_LEN];
    int64_t after; /* seq */
    int64_t message_count;
    struct db_message_list new_messages;
};

struct reconcile_job {
    struct dbjob job;
    struct per_vhost_data__chat *vhd;
    bool replies; /* read the reply queue too */
    struct db_message_list queued;
    struct catch_up *sessions;
    size_t n_sessions;
};

static void reconcile_run(struct dbjob *job, struct db *db)
{
    struct reconcile_job *j = (struct reconcile_job *)job;

    job->err = j->replies ? db_reply_queue(db, j->vhd->node_id, &j->queued) : PERR_OK;
    for (size_t i = 0; i < j->n_sessions && job->err == PERR_OK; i++) {
        struct catch_up *c = &j->sessions[i];
        struct db_session s;
        job->err = db_messages_after(db, c->id, c->after, RECONCILE_ROWS, &c->new_messages);
        if (job->err == PERR_OK && c->new_messages.n && db_session_get(db, c->id, &s) == PERR_OK) {
            c->message_count = s.message_count;
            db_session_cleanup(&s);
        }
    }
}

static void ask_replies(struct per_vhost_data__chat *vhd, const struct db_message_list *queued)
{
    for (size_t i = 0; i < queued->n; i++) {
        struct live_session *s = sess_get(vhd, queued->v[i].session_id, NULL);
        if (s) {
            asst_request(vhd, s, queued->v[i].id, NULL);
            sess_release(vhd, s);
        }
    }
}

static void tell_missed(struct per_vhost_data__chat *vhd, struct catch_up *c)
{
    struct live_session *s = sess_find(vhd, c->id);

    if (s)
        gate_rows(vhd, s, c->after, &c->new_messages, c->new_messages.n < RECONCILE_ROWS, 0,
                  c->message_count);
}

static void reconcile_done(struct dbjob *job)
{
    struct reconcile_job *j = (struct reconcile_job *)job;
    struct per_vhost_data__chat *vhd = j->vhd;

    vhd->reconciling = false;
    if (job->err == PERR_OK && !vhd->stopping) {
        if (j->replies && j->queued.n && !vhd->reconciled_once)
            log_info("resuming %zu replies that were asked for while the broker was away",
                     j->queued.n);
        vhd->reconciled_once = true;
        ask_replies(vhd, &j->queued);
        for (size_t i = 0; i < j->n_sessions; i++)
            tell_missed(vhd, &j->sessions[i]);
    }
    db_message_list_cleanup(&j->queued);
    for (size_t i = 0; i < j->n_sessions; i++)
        db_message_list_cleanup(&j->sessions[i].new_messages);
    free(j->sessions);
    free(j);
}

/* Live sessions with members, RECONCILE_SESSIONS a pass, taken in turn. */
struct pick {
    struct reconcile_job *j;
    size_t eligible; /* counted in the first walk */
    size_t k;        /* the second walk's position */
    size_t offset;   /* where this pass's turn starts */
};

static bool eligible(const struct live_session *s)
{
    return s->n_members > 0 && s->delivered_set;
}

static void count_session(void *value, void *arg)
{
    struct pick *p = arg;

    if (eligible(value))
        p->eligible++;
}

static void pick_session(void *value, void *arg)
{
    struct live_session *s = value;
    struct pick *p = arg;
    struct catch_up *c;

    if (!eligible(s))
        return;
    if ((p->k++ + p->eligible - p->offset) % p->eligible >= RECONCILE_SESSIONS)
        return;
    c = &p->j->sessions[p->j->n_sessions++];
    snprintf(c->id, sizeof c->id, "%s", s->id);
    c->after = s->delivered;
}

void reconcile_start(struct per_vhost_data__chat *vhd, bool replies)
{
    struct reconcile_job *j;
    struct pick p = {0};

    if (vhd->reconciling || vhd->stopping || !(j = calloc(1, sizeof *j)))
        return;
    j->sessions = calloc(RECONCILE_SESSIONS, sizeof *j->sessions);
    if (!j->sessions) {
        free(j);
        return;
    }
    j->vhd = vhd;
    j->replies = replies && vhd->driver;
    p.j = j;
    map_each(vhd->sessions, count_session, &p);
    if (p.eligible) {
        p.offset = vhd->reconcile_offset % p.eligible;
        map_each(vhd->sessions, pick_session, &p);
        vhd->reconcile_offset = p.offset + RECONCILE_SESSIONS;
    }
    j->job.run = reconcile_run;
    j->job.done = reconcile_done;
    j->job.essential = true; /* one in flight: vhd->reconciling */
    vhd->reconciling = true;
    dbq_push(vhd->dbq, &j->job);
}

void reconcile_tick(struct per_vhost_data__chat *vhd, int64_t now_mono)
{
    if (now_mono - vhd->reconciled_mono < RECONCILE_MS)
        return;
    vhd->reconciled_mono = now_mono;
    reconcile_start(vhd, true);
}
