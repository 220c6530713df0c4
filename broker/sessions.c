/* sessions: the broker's live view of sessions: who is in each, who is typing, and the
 * member counts it publishes for REST. The database holds the sessions themselves. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assistant.h"
#include "broker.h"
#include "clock.h"
#include "dbq.h"
#include "log.h"
#include "map.h"

static void mark_dirty(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    char **grown;

    if (s->live_dirty)
        return;
    if (vhd->n_dirty == vhd->cap_dirty) {
        size_t cap = vhd->cap_dirty ? vhd->cap_dirty * 2 : 16;
        grown = realloc(vhd->dirty, cap * sizeof *grown);
        if (!grown)
            return;
        vhd->dirty = grown;
        vhd->cap_dirty = cap;
    }
    vhd->dirty[vhd->n_dirty] = strdup(s->id);
    if (!vhd->dirty[vhd->n_dirty])
        return;
    vhd->n_dirty++;
    s->live_dirty = true;
}

struct live_session *sess_find(struct per_vhost_data__chat *vhd, const char *id)
{
    return map_get(vhd->sessions, id);
}

struct live_session *sess_get(struct per_vhost_data__chat *vhd, const char *id, const char *model)
{
    struct live_session *s = map_get(vhd->sessions, id);

    if (s)
        return s;
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->model = strdup(model ? model : "");
    if (!s->model || map_put(vhd->sessions, s->id, s) < 0) {
        free(s->model);
        free(s);
        return NULL;
    }
    return s;
}

void sess_free(struct live_session *s)
{
    if (!s)
        return;
    free(s->members);
    free(s->pending);
    free(s->changes);
    gate_cleanup(s);
    sess_heard_free(s);
    roster_free(s);
    if (s->roster_timer)
        lws_sul_cancel(&s->roster_sul);
    free(s->answered);
    free(s->model);
    free(s->channel);
    free(s);
}

void sess_release(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    if (!s || s->n_members || s->reply || s->n_pending || s->n_parked)
        return;
    if (s->watched)
        relay_watch(vhd, s, false);
    map_del(vhd->sessions, s->id);
    sess_free(s);
}

static int member_index(const struct per_session_data__chat *pss, const struct live_session *s)
{
    for (unsigned i = 0; i < pss->n_joined; i++)
        if (pss->joined[i] == s)
            return (int)i;
    return -1;
}

/* ---- presence ----
 * A member hears of the first PRESENCE_DETAIL joins and leaves of a PRESENCE_WINDOW_MS
 * window one by one (user_joined, user_left); the rest are told together when the window
 * ends, in one presence update (update_type "presence": clients, joined, left). So a
 * burst of N joins costs O(N) frames, not O(N^2), and chat never waits behind them. */

#define PRESENCE_WINDOW_MS 250
#define PRESENCE_DETAIL    2
#define PRESENCE_LIST_MAX  100 /* ids listed in one presence update; clients is the truth */

/* Tells the members one change (except the connection it is about). */
static void tell_change(struct per_vhost_data__chat *vhd, struct live_session *s,
                        const struct presence_change *c)
{
    const char *conn_id = c->conn_id;
    json_t *ev =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "type", "session_update", "session_id", s->id,
                  "update_type", c->joined ? "user_joined" : "user_left", "connection_id", conn_id,
                  "name", c->name, "clients", (json_int_t)roster_clients(s));

    proto_set_client(ev, c->client_id);
    relay_broadcast(vhd, s, ev, ws_conn(vhd, conn_id));
    json_decref(ev);
}

/* Tells the members every change of the window in one update: joined and left list
 * connection ids, names maps each of them to its name (SPEC 9). */
static void tell_changes(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    json_t *joined = json_array(), *left = json_array(), *names = json_object(), *ev;

    for (size_t i = 0; i < s->n_changes; i++) {
        json_array_append_new(s->changes[i].joined ? joined : left,
                              json_string(s->changes[i].conn_id));
        json_object_set_new(names, s->changes[i].conn_id, json_string(s->changes[i].name));
    }
    ev = json_pack("{s:s, s:s, s:s, s:I, s:o, s:o, s:o}", "type", "session_update", "session_id",
                   s->id, "update_type", "presence", "clients", (json_int_t)roster_clients(s),
                   "joined", joined, "left", left, "names", names);
    relay_broadcast(vhd, s, ev, NULL);
    json_decref(ev);
}

static void presence_flush(lws_sorted_usec_list_t *sul)
{
    struct per_vhost_data__chat *vhd =
        lws_container_of(sul, struct per_vhost_data__chat, presence_sul);
    int64_t now = clock_mono_ms();

    vhd->presence_scheduled = false;
    for (size_t i = 0; i < vhd->n_presence_due; i++) {
        struct live_session *s = sess_find(vhd, vhd->presence_due[i]);
        free(vhd->presence_due[i]);
        if (!s)
            continue; /* gone meanwhile */
        if (s->n_changes == 1)
            tell_change(vhd, s, &s->changes[0]);
        else if (s->n_changes > 1 && s->n_members > 0)
            tell_changes(vhd, s);
        s->n_changes = 0;
        s->presence_due = false;
        s->presence_window_mono = now;
        s->presence_sent = 1;
    }
    vhd->n_presence_due = 0;
}

/* Keeps a change for the end of the window. */
static void presence_defer(struct per_vhost_data__chat *vhd, struct live_session *s,
                           const struct presence_change *c)
{
    if (!s->changes && !(s->changes = calloc(PRESENCE_LIST_MAX, sizeof *s->changes)))
        return;
    if (s->n_changes < PRESENCE_LIST_MAX)
        s->changes[s->n_changes++] = *c;
    if (s->presence_due)
        return;
    if (vhd->n_presence_due == vhd->cap_presence_due) {
        size_t cap = vhd->cap_presence_due ? vhd->cap_presence_due * 2 : 16;
        char **grown = realloc(vhd->presence_due, cap * sizeof *grown);
        if (!grown)
            return;
        vhd->presence_due = grown;
        vhd->cap_presence_due = cap;
    }
    if (!(vhd->presence_due[vhd->n_presence_due] = strdup(s->id)))
        return;
    vhd->n_presence_due++;
    s->presence_due = true;
    if (!vhd->presence_scheduled) {
        vhd->presence_scheduled = true;
        lws_sul_schedule(vhd->context, 0, &vhd->presence_sul, presence_flush,
                         PRESENCE_WINDOW_MS * LWS_US_PER_MS);
    }
}

static void presence_changed(struct per_vhost_data__chat *vhd, struct live_session *s,
                             const struct per_session_data__chat *pss, bool joined)
{
    int64_t now = clock_mono_ms();
    struct presence_change c = {.joined = joined};

    snprintf(c.conn_id, sizeof c.conn_id, "%s", pss->id);
    snprintf(c.client_id, sizeof c.client_id, "%s", ws_client_id(pss));
    snprintf(c.name, sizeof c.name, "%s", pss->name);
    if (now - s->presence_window_mono >= PRESENCE_WINDOW_MS) {
        s->presence_window_mono = now;
        s->presence_sent = 0;
    }
    if (!s->presence_due && s->presence_sent < PRESENCE_DETAIL) {
        s->presence_sent++;
        tell_change(vhd, s, &c);
        return;
    }
    presence_defer(vhd, s, &c);
}

void sess_presence_cleanup(struct per_vhost_data__chat *vhd)
{
    lws_sul_cancel(&vhd->presence_sul);
    for (size_t i = 0; i < vhd->n_presence_due; i++)
        free(vhd->presence_due[i]);
    free(vhd->presence_due);
    vhd->presence_due = NULL;
    vhd->n_presence_due = vhd->cap_presence_due = 0;
}

int sess_join(struct per_vhost_data__chat *vhd, struct live_session *s,
              struct per_session_data__chat *pss)
{
    int idx = member_index(pss, s);

    if (idx >= 0) {
        /* Already a member: make it the current session again. */
        struct live_session *cur = pss->joined[idx];
        int64_t typing = pss->typing_until[idx];
        memmove(&pss->joined[idx], &pss->joined[idx + 1],
                (pss->n_joined - (unsigned)idx - 1) * sizeof pss->joined[0]);
        memmove(&pss->typing_until[idx], &pss->typing_until[idx + 1],
                (pss->n_joined - (unsigned)idx - 1) * sizeof pss->typing_until[0]);
        pss->joined[pss->n_joined - 1] = cur;
        pss->typing_until[pss->n_joined - 1] = typing;
        return 0;
    }
    if (pss->n_joined == BROKER_MAX_JOINED)
        return -1;
    if (s->n_members == s->cap_members) {
        size_t cap = s->cap_members ? s->cap_members * 2 : 4;
        struct per_session_data__chat **m = realloc(s->members, cap * sizeof *m);
        if (!m)
            return -1;
        s->members = m;
        s->cap_members = cap;
    }
    s->members[s->n_members++] = pss;
    if (s->n_members == 1)
        relay_watch(vhd, s, true);
    pss->joined[pss->n_joined] = s;
    pss->typing_until[pss->n_joined] = 0;
    pss->n_joined++;
    mark_dirty(vhd, s);
    presence_changed(vhd, s, pss, true);
    return 0;
}

/* Removes pss from s without telling anyone and without freeing s. */
static void detach(struct per_vhost_data__chat *vhd, struct live_session *s,
                   struct per_session_data__chat *pss, int idx)
{
    memmove(&pss->joined[idx], &pss->joined[idx + 1],
            (pss->n_joined - (unsigned)idx - 1) * sizeof pss->joined[0]);
    memmove(&pss->typing_until[idx], &pss->typing_until[idx + 1],
            (pss->n_joined - (unsigned)idx - 1) * sizeof pss->typing_until[0]);
    pss->n_joined--;
    for (size_t i = 0; i < s->n_members; i++) {
        if (s->members[i] == pss) {
            s->members[i] = s->members[--s->n_members];
            break;
        }
    }
    if (s->n_members == 0) {
        relay_watch(vhd, s, false);
        roster_free(s); /* no longer heard: what is known of the others goes stale */
    }
    mark_dirty(vhd, s);
}

void sess_leave(struct per_vhost_data__chat *vhd, struct live_session *s,
                struct per_session_data__chat *pss, bool announce)
{
    int idx = member_index(pss, s);

    if (idx < 0)
        return;
    if (pss->typing_until[idx])
        sess_typing(vhd, s, pss, false);
    detach(vhd, s, pss, idx);
    if (announce)
        presence_changed(vhd, s, pss, false);
    sess_release(vhd, s);
}

struct live_session *sess_resolve(struct per_vhost_data__chat *vhd,
                                  struct per_session_data__chat *pss, const char *id,
                                  const char *request_type)
{
    if (!id) {
        if (pss->n_joined == 0) {
            fanout_error(vhd, pss, PERR_NOT_IN_SESSION, request_type,
                         "join or create a session first (join_session or create_session)");
            return NULL;
        }
        return pss->joined[pss->n_joined - 1];
    }
    for (unsigned i = 0; i < pss->n_joined; i++)
        if (strcmp(pss->joined[i]->id, id) == 0)
            return pss->joined[i];
    act_not_joined(vhd, pss, id, request_type);
    return NULL;
}

void sess_typing(struct per_vhost_data__chat *vhd, struct live_session *s,
                 struct per_session_data__chat *pss, bool typing)
{
    int idx = member_index(pss, s);
    bool was;
    json_t *ev;

    if (idx < 0)
        return;
    was = pss->typing_until[idx] != 0;
    pss->typing_until[idx] = typing ? clock_mono_ms() + BROKER_TYPING_MS : 0;
    if (was == typing)
        return; /* a repeated typing_start only extends the expiry */
    ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "type", "session_update", "session_id", s->id,
                   "update_type", "user_typing", "connection_id", pss->id, "name", pss->name,
                   "typing", typing);
    proto_set_client(ev, ws_client_id(pss));
    relay_broadcast(vhd, s, ev, pss);
    json_decref(ev);
}

void sess_drop_members(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    while (s->n_members) {
        struct per_session_data__chat *pss = s->members[s->n_members - 1];
        detach(vhd, s, pss, member_index(pss, s));
    }
    sess_release(vhd, s);
}

#define DELETED_KEEP_MS 60000

struct deleted_mark {
    char id[DB_ID_LEN];
    int64_t when_mono;
};

void sess_mark_deleted(struct per_vhost_data__chat *vhd, const char *id)
{
    struct deleted_mark *d;

    if (map_get(vhd->deleted, id) || !(d = calloc(1, sizeof *d)))
        return;
    snprintf(d->id, sizeof d->id, "%s", id);
    d->when_mono = clock_mono_ms();
    if (map_put(vhd->deleted, d->id, d) < 0)
        free(d);
}

bool sess_was_deleted(struct per_vhost_data__chat *vhd, const char *id)
{
    return map_get(vhd->deleted, id) != NULL;
}

struct expiry {
    int64_t cutoff;
    struct deleted_mark *old[64];
    size_t n;
};

static void find_old(void *value, void *arg)
{
    struct deleted_mark *d = value;
    struct expiry *x = arg;

    if (d->when_mono < x->cutoff && x->n < sizeof x->old / sizeof x->old[0])
        x->old[x->n++] = d;
}

/* Forgets deletion marks older than DELETED_KEEP_MS, a batch a second (map_each may not
 * remove while it walks). */
static void expire_deleted(struct per_vhost_data__chat *vhd, int64_t now_mono)
{
    struct expiry x = {.cutoff = now_mono - DELETED_KEEP_MS};

    map_each(vhd->deleted, find_old, &x);
    for (size_t i = 0; i < x.n; i++) {
        map_del(vhd->deleted, x.old[i]->id);
        free(x.old[i]);
    }
}

void sess_tick(struct per_vhost_data__chat *vhd, int64_t now_mono)
{
    expire_deleted(vhd, now_mono);
    for (struct per_session_data__chat *pss = vhd->conns_list; pss; pss = pss->next)
        for (unsigned i = 0; i < pss->n_joined; i++)
            if (pss->typing_until[i] && pss->typing_until[i] <= now_mono)
                sess_typing(vhd, pss->joined[i], pss, false);
}

/* ---- live figures ---- */

struct publish_job {
    struct dbjob job;
    struct per_vhost_data__chat *vhd;
    int64_t connections;
    struct db_live_member *members;
    char **ids; /* owned copies backing members[].session_id */
    size_t n;
};

static void publish_run(struct dbjob *job, struct db *db)
{
    struct publish_job *p = (struct publish_job *)job;

    job->err =
        db_live_publish(db, p->vhd->node_id, clock_now_ms(), p->connections, p->members, p->n);
}

static void publish_done(struct dbjob *job)
{
    struct publish_job *p = (struct publish_job *)job;

    p->vhd->publishing = false;
    for (size_t i = 0; i < p->n; i++)
        free(p->ids[i]);
    free(p->ids);
    free(p->members);
    free(p);
}

void sess_publish(struct per_vhost_data__chat *vhd)
{
    struct publish_job *p;

    if (vhd->publishing || vhd->stopping)
        return; /* the previous publish is still being written */
    p = calloc(1, sizeof *p);
    if (!p)
        return;
    p->vhd = vhd;
    p->connections = vhd->n_conns;
    p->n = vhd->n_dirty;
    p->ids = vhd->dirty;
    p->members = calloc(p->n ? p->n : 1, sizeof *p->members);
    if (!p->members) {
        free(p);
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
        struct live_session *s = map_get(vhd->sessions, p->ids[i]);
        p->members[i].session_id = p->ids[i];
        p->members[i].clients = s ? (int64_t)s->n_members : 0;
        if (s)
            s->live_dirty = false;
    }
    vhd->dirty = NULL;
    vhd->n_dirty = vhd->cap_dirty = 0;
    p->job.run = publish_run;
    p->job.done = publish_done;
    p->job.essential = true; /* one in flight: vhd->publishing */
    vhd->publishing = true;
    dbq_push(vhd->dbq, &p->job);
}
