/* roster: the members a session has on the other brokers (SPEC 8), so that `clients`,
 * user_joined and user_left count every broker's members, and a dead broker's members
 * leave within a few seconds.
 *
 * What a broker knows of another's members it learns from the relayed events of the
 * session: user_joined, user_left and presence add and remove them. When a session gets
 * its first member here (or Redis came back) the broker asks every broker, on the channel
 * of every broker, who of that session's members it holds (roster_request, which lists
 * the asker's own); each answers with its whole list, empty or not (roster). A list,
 * asked or answered, replaces what was known of its broker's members, and the members
 * here are told who came and went meanwhile (what Redis could not carry while a link was
 * down). A broker's messages reach each other broker in the order it sent them, so a
 * list is never older than an event heard before it. The first
 * join waits for the answers of every live broker (ROSTER_WAIT_MS at most) so that its
 * session_joined counts them. Every broker beats on that channel each tick; a broker not
 * heard for ROSTER_DEAD_MS while the link is up is gone, and its members leave every
 * session here (user_left, or one presence update for many). */
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "clock.h"
#include "dbq.h"
#include "log.h"
#include "map.h"

#define ROSTER_DEAD_MS   5000
#define ROSTER_MAX       65536 /* remote members kept per session; beyond, not counted */
#define ROSTER_NODES_MAX 1024
#define ROSTER_LIST_MAX  10000 /* members listed in one roster answer */
#define ROSTER_WAIT_MS   300   /* a first join waits at most this for the other brokers */

struct node_seen {
    char id[DB_NODE_ID_LEN];
    int64_t heard_mono;
};

int64_t roster_clients(const struct live_session *s)
{
    return (int64_t)(s->n_members + s->n_remote);
}

void roster_free(struct live_session *s)
{
    free(s->remote);
    s->remote = NULL;
    s->n_remote = s->cap_remote = 0;
    s->roster_known = false;
}

static size_t find(const struct live_session *s, const char *node, const char *conn)
{
    for (size_t i = 0; i < s->n_remote; i++)
        if (strcmp(s->remote[i].conn_id, conn) == 0 && strcmp(s->remote[i].node, node) == 0)
            return i;
    return s->n_remote;
}

/* Adds conn of node with its name (a name that is not valid, or none, is the default). */
static void add(struct live_session *s, const char *node, const char *conn, const char *name)
{
    struct remote_member *m;

    if (strlen(conn) != BROKER_CONN_ID_HEX || !clock_is_hex(conn, BROKER_CONN_ID_HEX) ||
        find(s, node, conn) < s->n_remote || s->n_remote == ROSTER_MAX)
        return;
    if (s->n_remote == s->cap_remote) {
        size_t cap = s->cap_remote ? s->cap_remote * 2 : 8;
        struct remote_member *grown = realloc(s->remote, cap * sizeof *grown);
        if (!grown)
            return;
        s->remote = grown;
        s->cap_remote = cap;
    }
    m = &s->remote[s->n_remote++];
    snprintf(m->node, sizeof m->node, "%s", node);
    snprintf(m->conn_id, sizeof m->conn_id, "%s", conn);
    if (name && name_valid(name, strlen(name)))
        snprintf(m->name, sizeof m->name, "%s", name);
    else
        name_guest(m->name, conn);
}

/* Removes conn of node; its name (for telling) into name (NAME_LEN bytes) when known. */
static void drop(struct live_session *s, const char *node, const char *conn, char *name)
{
    size_t i = find(s, node, conn);

    if (i < s->n_remote) {
        if (name)
            snprintf(name, NAME_LEN, "%s", s->remote[i].name);
        s->remote[i] = s->remote[--s->n_remote];
    }
}

/* {connection_id, name}: how a member is told. New reference. */
static json_t *member_json(const char *conn, const char *name)
{
    return json_pack("{s:s, s:s}", "connection_id", conn, "name", name);
}

/* Drops every member of node; they go into left as {connection_id, name} (NULL: not
 * wanted). */
static void drop_node(struct live_session *s, const char *node, json_t *left)
{
    for (size_t i = 0; i < s->n_remote;) {
        if (strcmp(s->remote[i].node, node) == 0) {
            if (left)
                json_array_append_new(left, member_json(s->remote[i].conn_id, s->remote[i].name));
            s->remote[i] = s->remote[--s->n_remote];
        } else {
            i++;
        }
    }
}

/* A member as another broker lists it: {connection_id, name} (a bare connection id from a
 * broker of an earlier version). Strings only, bounded: false for anything else. */
static bool member_of(const json_t *v, const char **conn, const char **name)
{
    const json_t *c = json_is_string(v) ? v : json_object_get(v, "connection_id");
    const json_t *n = json_is_object(v) ? json_object_get(v, "name") : NULL;

    if (!json_is_string(c) || json_string_length(c) != BROKER_CONN_ID_HEX)
        return false;
    *conn = json_string_value(c);
    *name = json_is_string(n) && json_string_length(n) < NAME_LEN ? json_string_value(n) : NULL;
    return true;
}

/* ---- what the other brokers say ---- */

bool roster_event(struct per_vhost_data__chat *vhd, struct live_session *s, const char *node,
                  json_t *ev)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *kind = json_string_value(json_object_get(ev, "update_type"));
    const char *conn = json_string_value(json_object_get(ev, "connection_id"));
    const char *name = json_string_value(json_object_get(ev, "name"));
    const json_t *names = json_object_get(ev, "names"), *v;
    size_t i;

    if (strcmp(type, "roster") == 0 || strcmp(type, "roster_request") == 0)
        return false; /* between brokers, on their own channel */
    if (strcmp(type, "session_update") != 0 || !kind)
        return true;
    if (strcmp(kind, "user_joined") == 0 && conn)
        add(s, node, conn, name);
    else if (strcmp(kind, "user_left") == 0 && conn)
        drop(s, node, conn, NULL);
    else if (strcmp(kind, "presence") == 0) {
        json_array_foreach(json_object_get(ev, "joined"), i, v) if (json_is_string(v))
            add(s, node, json_string_value(v),
                json_string_value(json_object_get(names, json_string_value(v))));
        json_array_foreach(json_object_get(ev, "left"), i, v) if (json_is_string(v))
            drop(s, node, json_string_value(v), NULL);
    } else {
        return true;
    }
    /* the count of every broker's members, as this broker knows them */
    json_object_set_new(ev, "clients", json_integer(roster_clients(s)));
    return true;
}

/* Tells every broker this broker's members of session sid (maybe none): type roster (an
 * answer) or roster_request (and theirs, please). */
static void tell_list(struct per_vhost_data__chat *vhd, const char *type, const char *sid)
{
    struct live_session *s = sess_find(vhd, sid);
    json_t *list = json_array(), *ev;

    for (size_t i = 0; s && i < s->n_members && i < ROSTER_LIST_MAX; i++)
        json_array_append_new(list, member_json(s->members[i]->id, s->members[i]->name));
    ev = json_pack("{s:s, s:s, s:o}", "type", type, "session_id", sid, "members", list);
    relay_to_brokers(vhd, ev);
    json_decref(ev);
}

void roster_request(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    tell_list(vhd, "roster_request", s->id);
}

/* Tells the members here who of the other brokers' members came (joined) and went (left),
 * arrays of {connection_id, name}: one user_joined or user_left, or one presence update
 * (joined and left as connection ids, names mapping them to names). */
static void tell_members(struct per_vhost_data__chat *vhd, struct live_session *s, json_t *joined,
                         json_t *left)
{
    size_t nj = json_array_size(joined), nl = json_array_size(left), i;
    json_t *ev, *v, *ids_joined, *ids_left, *names;

    if (!s->n_members || nj + nl == 0)
        return;
    if (nj + nl == 1) {
        v = json_array_get(nj ? joined : left, 0);
        ev = json_pack("{s:s, s:s, s:s, s:O, s:O, s:I}", "type", "session_update", "session_id",
                       s->id, "update_type", nj ? "user_joined" : "user_left", "connection_id",
                       json_object_get(v, "connection_id"), "name", json_object_get(v, "name"),
                       "clients", (json_int_t)roster_clients(s));
    } else {
        ids_joined = json_array();
        ids_left = json_array();
        names = json_object();
        json_array_foreach(joined, i, v)
        {
            json_array_append(ids_joined, json_object_get(v, "connection_id"));
            json_object_set(names, json_string_value(json_object_get(v, "connection_id")),
                            json_object_get(v, "name"));
        }
        json_array_foreach(left, i, v)
        {
            json_array_append(ids_left, json_object_get(v, "connection_id"));
            json_object_set(names, json_string_value(json_object_get(v, "connection_id")),
                            json_object_get(v, "name"));
        }
        ev =
            json_pack("{s:s, s:s, s:s, s:I, s:o, s:o, s:o}", "type", "session_update", "session_id",
                      s->id, "update_type", "presence", "clients", (json_int_t)roster_clients(s),
                      "joined", ids_joined, "left", ids_left, "names", names);
    }
    fanout_session(vhd, s, ev, NULL);
    json_decref(ev);
}

static bool listed(const json_t *list, const char *conn)
{
    const char *c, *name;
    const json_t *v;
    size_t i;

    json_array_foreach(list, i, v) if (member_of(v, &c, &name) && strcmp(c, conn) == 0) return true;
    return false;
}

/* node's whole list of its members of s: replaces what was known, the difference told. */
static void learn(struct per_vhost_data__chat *vhd, struct live_session *s, const char *node,
                  const json_t *members)
{
    json_t *joined = json_array(), *left = json_array();
    const char *conn, *name;
    const json_t *v;
    size_t i;

    for (i = 0; json_array_size(members) < ROSTER_LIST_MAX && i < s->n_remote;) {
        struct remote_member *m = &s->remote[i];
        if (strcmp(m->node, node) == 0 && !listed(members, m->conn_id)) {
            json_array_append_new(left, member_json(m->conn_id, m->name));
            *m = s->remote[--s->n_remote];
        } else {
            i++;
        }
    }
    json_array_foreach(members, i, v)
    {
        size_t before = s->n_remote;
        if (member_of(v, &conn, &name))
            add(s, node, conn, name);
        if (s->n_remote > before)
            json_array_append_new(joined,
                                  member_json(s->remote[before].conn_id, s->remote[before].name));
    }
    tell_members(vhd, s, joined, left);
    json_decref(joined);
    json_decref(left);
}

/* ---- a first join waits for the rosters ---- */

static void resume(struct live_session *s)
{
    struct dbjob *job = s->parked;

    if (s->roster_timer)
        lws_sul_cancel(&s->roster_sul);
    s->roster_timer = false;
    s->roster_known = true;
    free(s->answered);
    s->answered = NULL;
    s->n_answered = 0;
    s->parked = NULL;
    s->n_parked = 0;
    while (job) { /* each done callback may free s: nothing of it is touched after */
        struct dbjob *next = job->next;
        job->done(job);
        job = next;
    }
}

static void roster_timeout(lws_sorted_usec_list_t *sul)
{
    struct live_session *s = lws_container_of(sul, struct live_session, roster_sul);

    s->roster_timer = false;
    if (s->n_parked)
        log_debug("session %s: not every broker told its members within %d ms; going on", s->id,
                  ROSTER_WAIT_MS);
    resume(s);
}

struct count_walk {
    const struct live_session *s;
    int64_t cutoff;
    size_t missing;
};

static bool answered(const struct live_session *s, const char *node)
{
    for (size_t i = 0; i < s->n_answered; i++)
        if (strcmp(s->answered[i], node) == 0)
            return true;
    return false;
}

static void count_missing(void *value, void *arg)
{
    struct node_seen *n = value;
    struct count_walk *w = arg;

    if (n->heard_mono >= w->cutoff && !answered(w->s, n->id))
        w->missing++;
}

/* Every live broker answered: the parked joins go on. */
static void check_answers(struct per_vhost_data__chat *vhd, struct live_session *s)
{
    struct count_walk w = {s, clock_mono_ms() - ROSTER_DEAD_MS, 0};

    map_each(vhd->nodes, count_missing, &w);
    if (w.missing == 0)
        resume(s);
}

bool roster_park(struct per_vhost_data__chat *vhd, struct live_session *s, struct dbjob *job)
{
    /* no broker heard yet is known only once the link has been up for a beat or two:
     * just after start, wait for the answers as if there were */
    if (!relay_up(vhd) || s->roster_known || s->n_members ||
        (map_count(vhd->nodes) == 0 && relay_up_since(vhd, clock_mono_ms() - 2000)))
        return false;
    log_debug("session %s: first join here waits for the rosters of %zu brokers", s->id,
              map_count(vhd->nodes));
    job->next = s->parked;
    s->parked = job;
    s->n_parked++;
    if (s->n_parked > 1)
        return true;           /* asked already */
    relay_watch(vhd, s, true); /* its events from now on; the join reads what came before */
    roster_request(vhd, s);
    s->vhd = vhd;
    s->roster_timer = true;
    lws_sul_schedule(vhd->context, 0, &s->roster_sul, roster_timeout,
                     ROSTER_WAIT_MS * LWS_US_PER_MS);
    return true;
}

void roster_drop_parked(struct live_session *s)
{
    resume(s);
}

void roster_all_event(struct per_vhost_data__chat *vhd, const char *node, const json_t *ev)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *sid = json_string_value(json_object_get(ev, "session_id"));
    struct live_session *s;

    roster_heard(vhd, node);
    if (strcmp(type, "roster_request") == 0)
        tell_list(vhd, "roster", sid);
    if (!(s = sess_find(vhd, sid)) || (!s->n_members && !s->n_parked))
        return; /* not heard here */
    if (json_is_array(json_object_get(ev, "members")))
        learn(vhd, s, node, json_object_get(ev, "members"));
    if (strcmp(type, "roster") == 0 && s->n_parked && !answered(s, node)) {
        char(*grown)[DB_NODE_ID_LEN] = realloc(s->answered, (s->n_answered + 1) * sizeof *grown);
        if (grown) {
            s->answered = grown;
            snprintf(s->answered[s->n_answered++], DB_NODE_ID_LEN, "%s", node);
        }
        check_answers(vhd, s);
    }
}

/* ---- which brokers are alive ---- */

void roster_heard(struct per_vhost_data__chat *vhd, const char *node)
{
    struct node_seen *n = map_get(vhd->nodes, node);

    if (!n) {
        if (map_count(vhd->nodes) >= ROSTER_NODES_MAX || !(n = calloc(1, sizeof *n)))
            return;
        snprintf(n->id, sizeof n->id, "%s", node);
        if (map_put(vhd->nodes, n->id, n) < 0) {
            free(n);
            return;
        }
    }
    n->heard_mono = clock_mono_ms();
}

struct dead_walk {
    struct per_vhost_data__chat *vhd;
    const char *node;
};

/* A dead broker's members leave s: one user_left, or one presence update for several. */
static void drop_dead(void *value, void *arg)
{
    struct live_session *s = value;
    struct dead_walk *w = arg;
    json_t *joined = json_array(), *left = json_array();

    drop_node(s, w->node, left);
    tell_members(w->vhd, s, joined, left);
    json_decref(joined);
    json_decref(left);
}

struct stale {
    int64_t cutoff;
    struct node_seen *v[16];
    size_t n;
};

static void find_stale(void *value, void *arg)
{
    struct node_seen *n = value;
    struct stale *x = arg;

    if (n->heard_mono < x->cutoff && x->n < sizeof x->v / sizeof x->v[0])
        x->v[x->n++] = n;
}

void roster_tick(struct per_vhost_data__chat *vhd, int64_t now_mono)
{
    struct stale x = {.cutoff = now_mono - ROSTER_DEAD_MS};

    if (!vhd->relay)
        return;
    relay_beat(vhd);
    if (!relay_up_since(vhd, now_mono - ROSTER_DEAD_MS))
        return; /* our own link is what is down, or just came back: nobody is judged */
    map_each(vhd->nodes, find_stale, &x);
    for (size_t i = 0; i < x.n; i++) {
        struct dead_walk w = {vhd, x.v[i]->id};
        log_warn("broker %s has not been heard for %d s: its members leave their sessions here",
                 x.v[i]->id, ROSTER_DEAD_MS / 1000);
        map_each(vhd->sessions, drop_dead, &w);
        map_del(vhd->nodes, x.v[i]->id);
        free(x.v[i]);
    }
}

static void free_node(void *value, void *arg)
{
    free(value);
}

void roster_cleanup(struct per_vhost_data__chat *vhd)
{
    if (vhd->nodes)
        map_each(vhd->nodes, free_node, NULL);
    map_free(vhd->nodes);
    vhd->nodes = NULL;
}
