/* relay: the session events that cross between brokers, through Redis (SPEC 8).
 *
 * With --redis, every event a broker causes in a session (messages with their seq,
 * typing, presence, each piece of a streamed reply) is published after its commit on the
 * session's channel, as {"node": NODE, "ev": EVENT} in the flat form, with "seq" beside
 * them for a message. A broker listens to the channels of the sessions it has members in
 * (from the first member to the last) and to the channel of every broker, where REST's
 * notifications also arrive. What arrives is hostile until checked: it must be a JSON
 * object of a known event type, about the session of its channel; then it is rendered
 * once per dialect and fanned out as a local event is, messages through the gate (gate.c)
 * so that they go out in seq order. A broker ignores what it published itself.
 *
 * Without --redis every function here does nothing: one broker, the notification socket.
 * All of it runs on the loop; the Redis thread (rds.c) does the waiting. */
#include <stdlib.h>
#include <string.h>

#include "assistant.h"
#include "broker.h"
#include "clock.h"
#include "log.h"
#include "map.h"
#include "rds.h"

#define RELAY_BAD_LOG_MS 10000

struct relay {
    struct rds *rds;
    struct redisc_url url;
    char all[REDISC_CHANNEL_MAX];    /* every broker's channel */
    char prefix[REDISC_CHANNEL_MAX]; /* what a session's channel starts with */
    size_t prefix_len;
    bool up;
    int64_t up_mono; /* when it came up */
    int64_t bad_logged_ms;
    size_t bad;
};

int relay_init(struct per_vhost_data__chat *vhd)
{
    char err[512];
    struct relay *r;

    if (!vhd->cfg->redis_url)
        return 0;
    if (!(r = calloc(1, sizeof *r)))
        return -1;
    if (redisc_url_parse(vhd->cfg->redis_url, &r->url, err, sizeof err) < 0) {
        log_error("%s", err);
        free(r);
        return -1;
    }
    redisc_all_channel(r->all, &r->url);
    redisc_session_channel(r->prefix, &r->url, "");
    r->prefix_len = strlen(r->prefix);
    if (!(r->rds = rds_new(&r->url, vhd->context))) {
        free(r);
        return -1;
    }
    rds_subscribe(r->rds, r->all, true);
    vhd->relay = r;
    return 0;
}

void relay_cleanup(struct per_vhost_data__chat *vhd)
{
    if (!vhd->relay)
        return;
    rds_stop(vhd->relay->rds);
    free(vhd->relay);
    vhd->relay = NULL;
}

bool relay_up(const struct per_vhost_data__chat *vhd)
{
    return vhd->relay && vhd->relay->up;
}

bool relay_up_since(const struct per_vhost_data__chat *vhd, int64_t mono)
{
    return relay_up(vhd) && vhd->relay->up_mono <= mono;
}

/* ---- out ---- */

static void publish(struct per_vhost_data__chat *vhd, const char *channel, const json_t *ev,
                    int64_t seq)
{
    json_t *o = json_pack("{s:s, s:O}", "node", vhd->node_id, "ev", ev);
    char *text;

    if (o && seq > 0)
        json_object_set_new(o, "seq", json_integer(seq));
    text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (text)
        rds_publish(vhd->relay->rds, channel, text, strlen(text));
    free(text);
    json_decref(o);
}

void relay_watch(struct per_vhost_data__chat *vhd, struct live_session *s, bool on)
{
    char channel[REDISC_CHANNEL_MAX];

    if (!vhd->relay)
        return;
    redisc_session_channel(channel, &vhd->relay->url, s->id);
    rds_subscribe(vhd->relay->rds, channel, on);
    s->watched = on;
}

void relay_message(struct per_vhost_data__chat *vhd, const struct live_session *s, int64_t seq,
                   const json_t *ev)
{
    char channel[REDISC_CHANNEL_MAX];

    if (!vhd->relay)
        return;
    redisc_session_channel(channel, &vhd->relay->url, s->id);
    publish(vhd, channel, ev, seq);
}

void relay_broadcast(struct per_vhost_data__chat *vhd, struct live_session *s, const json_t *ev,
                     const struct per_session_data__chat *except)
{
    fanout_session(vhd, s, ev, except);
    relay_message(vhd, s, 0, ev);
}

void relay_stop(struct per_vhost_data__chat *vhd, const struct live_session *s)
{
    json_t *ev = json_pack("{s:s, s:s}", "type", "stop", "session_id", s->id);

    relay_message(vhd, s, 0, ev);
    json_decref(ev);
}

void relay_to_brokers(struct per_vhost_data__chat *vhd, const json_t *ev)
{
    if (vhd->relay)
        publish(vhd, vhd->relay->all, ev, 0);
}

/* The heartbeat; hello asks every broker hearing it to beat at once (this one just came
 * up and knows nobody yet). */
static void beat(struct per_vhost_data__chat *vhd, bool hello)
{
    json_t *o;
    char *text;

    if (!relay_up(vhd))
        return;
    o = json_pack("{s:s, s:b, s:b}", "node", vhd->node_id, "beat", 1, "hello", hello);
    if ((text = o ? json_dumps(o, JSON_COMPACT) : NULL))
        rds_publish(vhd->relay->rds, vhd->relay->all, text, strlen(text));
    free(text);
    json_decref(o);
}

void relay_beat(struct per_vhost_data__chat *vhd)
{
    beat(vhd, false);
}

void relay_all(struct per_vhost_data__chat *vhd, const json_t *ev)
{
    fanout_all(vhd, ev);
    if (vhd->relay)
        publish(vhd, vhd->relay->all, ev, 0);
}

/* ---- in ---- */

static void bad(struct per_vhost_data__chat *vhd, const char *channel, const char *why)
{
    struct relay *r = vhd->relay;
    int64_t now = clock_mono_ms();

    r->bad++;
    if (now - r->bad_logged_ms < RELAY_BAD_LOG_MS)
        return;
    log_warn("ignored %zu events from Redis (the last on %s: %s); is another program publishing "
             "on Parley's channels?",
             r->bad, channel, why);
    r->bad = 0;
    r->bad_logged_ms = now;
}

static bool one_of(const char *s, const char *const *list)
{
    for (; s && *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* Whether ev is an event brokers relay: with a seq, what tells a message (message_added,
 * the reply's response_complete); without, the rest of a session's life. */
static bool relayed(const json_t *ev, bool with_seq)
{
    static const char *const told[] = {"session_update", "response_complete", NULL};
    static const char *const other[] = {"session_update", "status",         "response_start",
                                        "chunk",          "error",          "stop",
                                        "roster",         "roster_request", NULL};
    static const char *const updates[] = {"user_typing", "user_joined",        "user_left",
                                          "presence",    "message_superseded", NULL};
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *kind = json_string_value(json_object_get(ev, "update_type"));

    if (!one_of(type, with_seq ? told : other))
        return false;
    if (strcmp(type, "session_update") != 0)
        return true;
    if (with_seq)
        return kind && strcmp(kind, "message_added") == 0 &&
               json_is_object(json_object_get(ev, "message"));
    return one_of(kind, updates);
}

/* An event another broker published (o borrowed; *node and *ev borrowed from it). Returns
 * why it is refused ("" for this broker's own, heard back), or NULL. */
static const char *from_other(struct per_vhost_data__chat *vhd, const json_t *o, const char **node,
                              const json_t **ev, int64_t *seq)
{
    const json_t *jseq = json_object_get(o, "seq");

    *node = json_string_value(json_object_get(o, "node"));
    *ev = json_object_get(o, "ev");
    *seq = 0;
    if (!*node || !**node || strlen(*node) > DB_NODE_ID_MAX)
        return "no node, or a node id too long";
    if (strcmp(*node, vhd->node_id) == 0)
        return ""; /* our own, heard back */
    if (jseq && (!json_is_integer(jseq) || json_integer_value(jseq) < 1))
        return "seq is not a positive integer";
    if (!json_is_object(*ev) || !relayed(*ev, jseq != NULL))
        return "not an event of a type brokers relay";
    *seq = jseq ? json_integer_value(jseq) : 0;
    return NULL;
}

/* A roster question or answer between brokers (roster.c). */
static bool is_roster(const json_t *ev)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *sid = json_string_value(json_object_get(ev, "session_id"));

    return type && (strcmp(type, "roster") == 0 || strcmp(type, "roster_request") == 0) && sid &&
           clock_is_hex(sid, DB_ID_HEX);
}

/* A session_update message_added with its message object: what relay_all sends. */
static bool is_message_added(const json_t *ev)
{
    const char *kind = json_string_value(json_object_get(ev, "update_type"));

    const char *type = json_string_value(json_object_get(ev, "type"));

    return type && strcmp(type, "session_update") == 0 && kind &&
           strcmp(kind, "message_added") == 0 && json_is_object(json_object_get(ev, "message")) &&
           json_is_string(json_object_get(ev, "session_id"));
}

static void on_session_event(struct per_vhost_data__chat *vhd, const char *channel, const char *sid,
                             const json_t *o)
{
    struct live_session *s = sess_find(vhd, sid);
    const char *why, *about, *node, *type;
    const json_t *ev;
    json_t *mine;
    int64_t seq;

    if (!s) {
        log_debug("session %s: an event from Redis, but the session is not live here", sid);
        return; /* no members here any more */
    }
    if ((why = from_other(vhd, o, &node, &ev, &seq))) {
        if (*why)
            bad(vhd, channel, why);
        return;
    }
    about = json_string_value(json_object_get(ev, "session_id"));
    if (!about || strcmp(about, sid) != 0) {
        bad(vhd, channel, "an event about another session");
        return;
    }
    roster_heard(vhd, node);
    sess_heard(s, ev); /* another broker's reply: what it said so far */
    type = json_string_value(json_object_get(ev, "type"));
    if (strcmp(type, "stop") == 0) {
        if (s->reply) /* a member elsewhere sent stop: ends the reply if it is ours */
            asst_stop(vhd, s);
    } else if (seq) {
        json_t *count = json_object_get(ev, "message_count");
        if (json_is_integer(count))
            s->message_count = json_integer_value(count);
        gate_message(vhd, s, seq, json_deep_copy(ev)); /* the gate may keep it */
    } else if (strcmp(type, "session_update") == 0) {
        /* presence and typing: the roster learns from it and recounts clients in a copy */
        if ((mine = json_deep_copy(ev)) && roster_event(vhd, s, node, mine))
            fanout_session(vhd, s, mine, NULL);
        json_decref(mine);
    } else if (strcmp(type, "roster") != 0 && strcmp(type, "roster_request") != 0) {
        fanout_session(vhd, s, ev, NULL); /* a reply's pieces: as they came */
    } /* the roster's own messages belong on the channel of every broker: ignored here */
}

static void on_beat(struct per_vhost_data__chat *vhd, const char *node, bool hello)
{
    if (strcmp(node, vhd->node_id) == 0 || strlen(node) > DB_NODE_ID_MAX)
        return;
    roster_heard(vhd, node);
    if (hello)
        beat(vhd, false); /* a broker that just came up: say we are here */
}

static void on_message(struct per_vhost_data__chat *vhd, const struct rds_in *in)
{
    struct relay *r = vhd->relay;
    json_t *o = json_loadb(in->data, in->len, JSON_REJECT_DUPLICATES, NULL);
    const char *sid = in->channel + r->prefix_len;

    if (!json_is_object(o)) {
        bad(vhd, in->channel, "not a JSON object");
    } else if (strcmp(in->channel, r->all) == 0) {
        const json_t *ev;
        const char *why, *node;
        int64_t seq;
        if (json_object_get(o, "event"))
            notify_in_event(vhd, o); /* REST's notification, as on the socket */
        else if (json_is_true(json_object_get(o, "beat")) &&
                 json_is_string(json_object_get(o, "node")))
            on_beat(vhd, json_string_value(json_object_get(o, "node")),
                    json_is_true(json_object_get(o, "hello")));
        else if ((why = from_other(vhd, o, &node, &ev, &seq)) && *why)
            bad(vhd, in->channel, why);
        else if (!why && is_roster(ev))
            roster_all_event(vhd, node, ev);
        else if (!why && !is_message_added(ev))
            bad(vhd, in->channel, "only stored messages are sent to every connection");
        else if (!why)
            fanout_all(vhd, ev);
    } else if (strncmp(in->channel, r->prefix, r->prefix_len) == 0 &&
               clock_is_hex(sid, DB_ID_HEX)) {
        on_session_event(vhd, in->channel, sid, o);
    } else {
        bad(vhd, in->channel, "a channel Parley does not use");
    }
    json_decref(o);
}

/* Every live session with members: what Redis may have missed while it was away, and who
 * is where now. */
static void catch_up_each(void *value, void *arg)
{
    struct live_session *s = value;

    if (s->n_members) {
        gate_catch_up(arg, s);
        roster_request(arg, s);
    }
}

void relay_poll(struct per_vhost_data__chat *vhd)
{
    struct rds_in *in, *next;

    if (!vhd->relay)
        return;
    for (in = rds_take(vhd->relay->rds); in; in = next) {
        next = in->next;
        if (!vhd->stopping) {
            switch (in->kind) {
            case RDS_MESSAGE:
                on_message(vhd, in);
                break;
            case RDS_SUBSCRIBED: {
                const char *sid = in->channel + vhd->relay->prefix_len;
                struct live_session *s;
                if (strncmp(in->channel, vhd->relay->prefix, vhd->relay->prefix_len) == 0 &&
                    (s = sess_find(vhd, sid))) {
                    gate_catch_up(vhd, s); /* what was published before the subscription */
                }
                break;
            }
            case RDS_UP:
                vhd->relay->up = true;
                vhd->relay->up_mono = clock_mono_ms();
                beat(vhd, true);
                map_each(vhd->sessions, catch_up_each, vhd);
                break;
            case RDS_DOWN:
                vhd->relay->up = false;
                break;
            case RDS_LOST:
                map_each(vhd->sessions, catch_up_each, vhd);
                break;
            }
        }
        free(in);
    }
}
