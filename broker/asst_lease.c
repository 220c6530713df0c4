/* asst_lease: a reply's lease while this broker generates it, and what this broker hears
 * of the replies other brokers generate (SPEC 8).
 *
 * The lease (db_reply_claim, taken in assistant.c before the context is read) is renewed
 * every tick with how far the reply got, so that a broker taking it over knows what was
 * said. A renewal that finds the lease gone (this broker stalled past REPLY_LEASE_MS and
 * another took the reply) stops the reply here: the other broker tells its end.
 *
 * Another broker's reply reaches this broker's members as relayed events (relay.c); what
 * its chunks said is kept here, for a member joining while it streams (session_joined
 * streaming) and for taking it over if its broker dies. */
#include <stdlib.h>
#include <string.h>

#include "assistant.h"
#include "dbq.h"
#include "log.h"
#include "map.h"

struct renewal {
    char session_id[DB_ID_LEN];
    int64_t reply_to;
    char response_id[17];
    char *text;
    int64_t chunks;
    bool mine;
};

struct renew_job {
    struct dbjob job;
    struct per_vhost_data__chat *vhd;
    char node[DB_NODE_ID_LEN];
    struct renewal *v;
    size_t n, cap;
};

static void renew_run(struct dbjob *job, struct db *db)
{
    struct renew_job *j = (struct renew_job *)job;

    for (size_t i = 0; i < j->n && job->err == PERR_OK; i++) {
        struct renewal *w = &j->v[i];
        job->err = db_reply_renew(db, w->reply_to, j->node, REPLY_LEASE_MS, w->response_id,
                                  w->text ? w->text : "", w->chunks, &w->mine);
    }
}

static void renew_done(struct dbjob *job)
{
    struct renew_job *j = (struct renew_job *)job;
    struct per_vhost_data__chat *vhd = j->vhd;

    vhd->renewing = false;
    for (size_t i = 0; i < j->n; i++) {
        struct renewal *w = &j->v[i];
        struct live_session *s = sess_find(vhd, w->session_id);
        if (job->err == PERR_OK && !w->mine && !vhd->stopping && s && s->reply &&
            s->reply->reply_to == w->reply_to && s->reply->state == REPLY_STREAMING) {
            log_warn("session %s: another broker took over the reply to message %lld (this "
                     "broker did not renew its lease in time); stopping it here",
                     s->id, (long long)w->reply_to);
            asst_lost(vhd, s);
        }
        free(w->text);
    }
    free(j->v);
    free(j);
}

static void add_renewal(void *value, void *arg)
{
    struct live_session *s = value;
    struct renew_job *j = arg;
    struct renewal *w;

    if (!s->reply || s->reply->state != REPLY_STREAMING)
        return;
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 8;
        struct renewal *grown = realloc(j->v, cap * sizeof *grown);
        if (!grown)
            return;
        j->v = grown;
        j->cap = cap;
    }
    w = &j->v[j->n++];
    memset(w, 0, sizeof *w);
    snprintf(w->session_id, sizeof w->session_id, "%s", s->id);
    w->reply_to = s->reply->reply_to;
    snprintf(w->response_id, sizeof w->response_id, "%s", s->reply->response_id);
    w->text = s->reply->text ? strdup(s->reply->text) : NULL;
    w->chunks = s->reply->chunks;
}

void asst_lease_tick(struct per_vhost_data__chat *vhd)
{
    struct renew_job *j;

    if (vhd->renewing || vhd->stopping || !vhd->driver || !(j = calloc(1, sizeof *j)))
        return;
    j->vhd = vhd;
    snprintf(j->node, sizeof j->node, "%s", vhd->node_id);
    map_each(vhd->sessions, add_renewal, j);
    if (j->n == 0) {
        free(j);
        return;
    }
    j->job.run = renew_run;
    j->job.done = renew_done;
    j->job.essential = true; /* one in flight: vhd->renewing */
    vhd->renewing = true;
    dbq_push(vhd->dbq, &j->job);
}

/* ---- other brokers' replies ---- */

void sess_heard_free(struct live_session *s)
{
    if (!s->heard)
        return;
    free(s->heard->text);
    free(s->heard);
    s->heard = NULL;
}

void sess_heard_end(struct live_session *s, const char *response_id)
{
    if (s->heard && strcmp(s->heard->response_id, response_id) == 0)
        sess_heard_free(s);
}

void sess_heard(struct live_session *s, const json_t *ev)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *id = json_string_value(json_object_get(ev, "response_id"));
    const json_t *text = json_object_get(ev, "text");
    struct heard_reply *h;
    size_t len;
    char *grown;

    if (!type || !id || strlen(id) >= sizeof s->heard->response_id)
        return;
    if (strcmp(type, "response_complete") == 0) {
        sess_heard_end(s, id);
        return;
    }
    if (strcmp(type, "response_start") != 0 && strcmp(type, "chunk") != 0)
        return;
    if (s->heard && strcmp(s->heard->response_id, id) != 0)
        sess_heard_free(s); /* a new reply: the last one's end was lost */
    if (!s->heard) {
        if (!(h = calloc(1, sizeof *h)))
            return;
        snprintf(h->response_id, sizeof h->response_id, "%s", id);
        s->heard = h;
    }
    h = s->heard;
    if (strcmp(type, "chunk") == 0)
        h->chunks++;
    len = json_is_string(text) ? json_string_length(text) : 0;
    if (len == 0 || h->len + len > BROKER_REPLY_MAX ||
        !(grown = realloc(h->text, h->len + len + 1)))
        return;
    memcpy(grown + h->len, json_string_value(text), len);
    h->len += len;
    grown[h->len] = '\0';
    h->text = grown;
}
