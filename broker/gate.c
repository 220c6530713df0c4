/* gate: a session's messages reach its members in seq order, each once (SPEC 7, 8).
 *
 * Messages come to a broker from several places: its own commits, REST's notifications,
 * the other brokers (through Redis), and reads of the database (the reconcile, and the
 * gap fills below). Each is told through gate_message with its seq. One that is next
 * (delivered + 1) goes out at once; one told already is dropped; one beyond a gap waits
 * (held) while a gap fill reads the database from delivered on. Every message the fill
 * reads goes out in seq order; a seq it does not find was deleted, so the gate moves past
 * it. The database is the truth: what Redis or the notification socket lost, the fill or
 * the reconcile finds.
 *
 * A gap is usually a message still on its way through Redis from another broker (it
 * committed just before this broker's, so it arrives a moment after): the fill waits
 * GATE_GRACE_MS for it before reading the database, so that reordering costs no reads.
 *
 * Why a read can skip: seq is assigned under the session row's lock in the message's own
 * transaction, so when seq N is committed every seq below it is committed (or was rolled
 * back, never to be used). A read that starts after N was seen finds every one of them
 * that still exists. */
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "dbq.h"
#include "log.h"

#define GATE_HELD_MAX  4096 /* messages waiting behind a gap; beyond, the fill brings them */
#define GATE_FILL_ROWS 256
#define GATE_GRACE_MS  10

static void deliver(struct per_vhost_data__chat *vhd, struct live_session *s, int64_t seq,
                    json_t *ev)
{
    s->delivered = seq;
    if (ev) {
        fanout_session(vhd, s, ev, NULL);
        json_decref(ev);
    }
}

/* The index of the first held seq >= seq (binary search). */
static size_t held_index(const struct live_session *s, int64_t seq)
{
    size_t lo = 0, hi = s->n_held;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->held[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Keeps ev (stolen) for its turn. A full gate drops it: the fill reads it later. */
static void hold(struct live_session *s, int64_t seq, json_t *ev)
{
    size_t i = held_index(s, seq);

    if (i < s->n_held && s->held[i].seq == seq) {
        json_decref(ev); /* held already */
        return;
    }
    if (s->n_held == GATE_HELD_MAX) {
        json_decref(ev);
        return;
    }
    if (s->n_held == s->cap_held) {
        size_t cap = s->cap_held ? s->cap_held * 2 : 16;
        struct held_event *grown = realloc(s->held, cap * sizeof *grown);
        if (!grown) {
            json_decref(ev);
            return;
        }
        s->held = grown;
        s->cap_held = cap;
    }
    memmove(s->held + i + 1, s->held + i, (s->n_held - i) * sizeof *s->held);
    s->held[i].seq = seq;
    s->held[i].ev = ev;
    s->n_held++;
}

/* Takes the held event of seq out of the gate (NULL when none is held). */
static json_t *unhold(struct live_session *s, int64_t seq, bool *found)
{
    size_t i = held_index(s, seq);
    json_t *ev;

    *found = i < s->n_held && s->held[i].seq == seq;
    if (!*found)
        return NULL;
    ev = s->held[i].ev;
    memmove(s->held + i, s->held + i + 1, (s->n_held - i - 1) * sizeof *s->held);
    s->n_held--;
    return ev;
}

static void fill_start(struct per_vhost_data__chat *vhd, struct live_session *s);
static void fill_later(struct per_vhost_data__chat *vhd, struct live_session *s);

/* Sends the held events that are next, drops those told already; asks the database for
 * what is still missing (after a grace: fill_later). */
static void release(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    size_t k = 0;

    while (k < s->n_held && s->held[k].seq <= s->delivered + 1) {
        if (s->held[k].seq <= s->delivered)
            json_decref(s->held[k].ev);
        else
            deliver(vhd, s, s->held[k].seq, s->held[k].ev);
        k++;
    }
    if (k) {
        memmove(s->held, s->held + k, (s->n_held - k) * sizeof *s->held);
        s->n_held -= k;
    }
    if (s->n_held)
        fill_later(vhd, s);
    else if (s->gap_timer) {
        lws_sul_cancel(&s->gap_sul);
        s->gap_timer = false;
    }
}

void gate_message(struct per_vhost_data__chat *vhd, struct live_session *s, int64_t seq, json_t *ev)
{
    if (!s->delivered_set) { /* no member ever joined: nobody to keep an order for */
        if (ev)
            fanout_session(vhd, s, ev, NULL);
        json_decref(ev);
        return;
    }
    if (seq <= s->delivered) {
        json_decref(ev); /* told already */
        return;
    }
    if (seq == s->delivered + 1) {
        deliver(vhd, s, seq, ev);
        release(vhd, s);
        return;
    }
    hold(s, seq, ev);
    fill_later(vhd, s);
}

void gate_history_at(struct live_session *s, int64_t last_seq)
{
    if (s->delivered_set)
        return;
    s->delivered = last_seq;
    s->delivered_set = true;
}

void gate_rows(struct per_vhost_data__chat *vhd, struct live_session *s, int64_t after,
               const struct db_message_list *rows, bool complete, int64_t upto,
               int64_t message_count)
{
    if (!s->delivered_set || after > s->delivered)
        return; /* made anew since the read began: its own reads follow */
    for (size_t i = 0; i < rows->n; i++) {
        const struct db_message *m = &rows->v[i];
        bool found;
        json_t *ev;
        if (m->seq <= s->delivered)
            continue;
        /* every seq between was read, so is gone; a telling held for this one (a reply's
         * response_complete) goes out instead of message_added */
        ev = unhold(s, m->seq, &found);
        if (!found && (ev = proto_message_added(s->id, m, message_count)))
            proto_set_client(ev, ws_client_of(vhd, m->connection_id)); /* when still here */
        s->message_count = message_count;
        deliver(vhd, s, m->seq, ev);
    }
    if (complete) {
        /* what was held up to upto was committed before the read began: a seq the read did
         * not find was deleted since, and what it found went out above */
        while (s->n_held && s->held[0].seq <= upto) {
            bool found;
            int64_t seq = s->held[0].seq;
            json_t *ev = unhold(s, seq, &found);
            if (seq > s->delivered)
                deliver(vhd, s, seq, ev);
            else
                json_decref(ev);
        }
        if (upto > s->delivered)
            s->delivered = upto;
    }
    release(vhd, s);
}

void gate_cleanup(struct live_session *s)
{
    if (s->gap_timer)
        lws_sul_cancel(&s->gap_sul);
    s->gap_timer = false;
    for (size_t i = 0; i < s->n_held; i++)
        json_decref(s->held[i].ev);
    free(s->held);
    s->held = NULL;
    s->n_held = s->cap_held = 0;
}

/* ---- gap fills ---- */

struct fill_job {
    struct dbjob job;
    struct per_vhost_data__chat *vhd;
    char id[DB_ID_LEN];
    int64_t after, upto;
    int64_t message_count;
    struct db_message_list rows;
};

static void fill_run(struct dbjob *job, struct db *db)
{
    struct fill_job *j = (struct fill_job *)job;
    struct db_session session;

    job->err = db_messages_after(db, j->id, j->after, GATE_FILL_ROWS, &j->rows);
    if (job->err == PERR_OK && j->rows.n && db_session_get(db, j->id, &session) == PERR_OK) {
        j->message_count = session.message_count;
        db_session_cleanup(&session);
    }
}

static void fill_done(struct dbjob *job)
{
    struct fill_job *j = (struct fill_job *)job;
    struct live_session *s = sess_find(j->vhd, j->id);

    if (s)
        s->filling = false;
    if (s && !j->vhd->stopping && job->err == PERR_OK)
        gate_rows(j->vhd, s, j->after, &j->rows, j->rows.n < GATE_FILL_ROWS, j->upto,
                  j->message_count);
    /* on an error the held messages wait: the reconcile reads the session again */
    db_message_list_cleanup(&j->rows);
    free(j);
}

static void fill_start(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    struct fill_job *j;

    if (vhd->stopping || !s->delivered_set || !(j = calloc(1, sizeof *j)))
        return;
    j->vhd = vhd;
    snprintf(j->id, sizeof j->id, "%s", s->id);
    j->after = s->delivered;
    j->upto = s->n_held ? s->held[s->n_held - 1].seq : 0;
    j->job.run = fill_run;
    j->job.done = fill_done;
    j->job.essential = true; /* one per live session: s->filling */
    s->filling = true;
    dbq_push(vhd->dbq, &j->job);
}

static void gap_fire(lws_sorted_usec_list_t *sul)
{
    struct live_session *s = lws_container_of(sul, struct live_session, gap_sul);

    s->gap_timer = false;
    if (s->n_held && !s->filling)
        fill_start(s->vhd, s);
}

/* Fills the gap in GATE_GRACE_MS unless it closes by then (or a fill is under way: its
 * end looks again). */
static void fill_later(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    if (s->gap_timer || s->filling)
        return;
    s->vhd = vhd;
    s->gap_timer = true;
    lws_sul_schedule(vhd->context, 0, &s->gap_sul, gap_fire, GATE_GRACE_MS * LWS_US_PER_MS);
}

void gate_catch_up(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    if (!s->filling)
        fill_start(vhd, s);
}
