/* broker: what the files of parley-broker share.
 *
 * Threads. Everything here runs on the lws service thread (the loop) unless it says
 * otherwise. Two other threads exist: the database thread (dbq.c), which runs jobs and
 * hands them back through a queue and lws_cancel_service(), and, with a real LLM, the
 * HTTP thread of the assistant drivers. Nothing on the loop blocks on the database or
 * the network.
 *
 * Data. A connection (struct per_session_data__chat, "pss") is a member of up to
 * BROKER_MAX_JOINED live sessions. A live session (struct live_session) exists while it
 * has members, a reply streaming or replies waiting; the database is the truth for
 * everything else. Events are rendered once per dialect into reference-counted frames
 * (struct frame) that every receiver's bounded queue shares. */
#ifndef PARLEY_BROKER_H
#define PARLEY_BROKER_H

#include <jansson.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "config.h"
#include "db.h"
#include "names.h"

#define BROKER_MAX_JOINED    16            /* sessions one connection may be a member of */
#define BROKER_CONN_ID_HEX   12            /* connection ids: 12 lowercase hex characters */
#define BROKER_CLIENT_ID_MAX 64            /* envelope client_id: 1 to 64 of A-Z a-z 0-9 . _ : - */
#define BROKER_TYPING_MS     10000         /* a typing indicator expires by itself after this */
#define BROKER_REPLAY_MAX    1000          /* messages replayed by join_session with since */
#define BROKER_REPLAY_BYTES  (128 * 1024)  /* ...and their bytes: a longer replay says has_more */
#define BROKER_PENDING_MAX   32            /* user messages waiting for a reply, per session */
#define BROKER_REPLY_MAX     (1024 * 1024) /* an assistant reply's text; the rest is cut */
#define BROKER_CONN_JOBS_MAX 256           /* requests of one connection waiting for the database */
#define FANOUT_MAX_BYTES     (256 * 1024)  /* queued for one connection before it is culled */
#define FANOUT_MAX_FRAMES    4096
#define FANOUT_MAX_ASKED     (2 * 1024 * 1024) /* answers asked for, queued, before a cull */

enum dialect { DIALECT_FLAT, DIALECT_ENVELOPE };

struct live_session;
struct reply;
struct dbq;
struct map;
struct llm_http;
struct llm_state;
struct relay;

/* ---- frames and queues (fanout.c) ---- */

/* One serialized message, shared by every connection it is queued on. */
struct frame {
    unsigned refs;
    size_t len;
    unsigned char data[]; /* LWS_PRE bytes of headroom, then len bytes of text */
};

/* A connection's bounded queue of frames waiting for SERVER_WRITEABLE. */
struct outq {
    struct qent {
        struct frame *f;
        bool asked; /* an answer the client asked for (a replay, an error), not a broadcast */
    } * v;          /* ring of cap entries, allocated on first use */
    unsigned head, len, cap;
    size_t bytes;       /* all queued */
    size_t asked_bytes; /* of which answers */
};

/* ---- connections (ws.c) ---- */

struct per_session_data__chat {
    struct lws *wsi;
    struct per_session_data__chat *next, *prev; /* vhd->conns */
    char id[BROKER_CONN_ID_HEX + 1];
    /* its display name (SPEC 9): the last it gave (?name=, create_session, join_session),
     * else its key's name, else guest- and 4 characters of id; for an envelope client
     * that gave none, the client_id its messages carry (inbound.c) */
    char name[NAME_LEN];
    bool name_given; /* given by the client: a key's name or a client_id does not replace it */
    enum dialect dialect;
    bool dialect_known;
    /* its envelope client_id (SPEC 3.3): the /ws/{client_id} it connected on, then the
     * last valid client_id its messages carried; "" until it gives one (ws_client_id) */
    char client_id[BROKER_CLIENT_ID_MAX + 1];
    char *rx; /* a message being reassembled from fragments */
    size_t rx_len;
    bool rx_binary;
    bool rx_oversize;
    struct live_session *joined[BROKER_MAX_JOINED]; /* the last is the current session */
    int64_t typing_until[BROKER_MAX_JOINED];        /* monotonic ms, 0 when not typing */
    unsigned n_joined;
    struct outq q;
    bool culled;         /* dropped as a slow consumer: nothing more is queued */
    uint16_t close_code; /* non-zero: close with this code at the next writeable */
    bool close_sent;     /* the close frame is out: waiting for the client's */
    /* access.c */
    char ip[48];                      /* the peer's address */
    bool authed;                      /* may be served: a valid key, or none needed */
    double tokens;                    /* rate-limit bucket */
    int64_t refill_mono;              /* when tokens was last topped up */
    unsigned flood;                   /* messages refused in a row */
    int64_t heard_mono;               /* keepalive: the last message or pong */
    int64_t pinged_mono;              /* keepalive: the last ping sent */
    bool ping_due;                    /* keepalive: send a ping at the next writeable */
    char private_session[DB_ID_LEN];  /* envelope llm_request without a channel */
    char key_hash[AUTH_HASH_HEX + 1]; /* the API key it authenticated with; "" for none */
    char key_name[65];                /* that key's name (its quotas, SPEC 9); "" for none */
    unsigned jobs_waiting;            /* its requests at the database thread (actions.c) */
};

/* ---- live sessions (sessions.c) ---- */

struct live_session {
    char id[DB_ID_LEN];
    char *model;
    char *channel; /* the envelope channel name, NULL for plain sessions */
    struct per_session_data__chat **members;
    size_t n_members, cap_members;
    bool live_dirty; /* member count changed since the last publish */
    int64_t message_count;
    /* the assistant (assistant.c) */
    struct reply *reply;           /* streaming now, or being stored */
    struct pending_reply *pending; /* user messages waiting for a reply, oldest first */
    size_t n_pending, cap_pending;
    /* the gate (gate.c): messages told in seq order */
    int64_t delivered;       /* every message up to this seq was told, or was history */
    bool delivered_set;      /* delivered is known (set at the first join) */
    struct held_event *held; /* messages beyond a gap, ascending seq */
    size_t n_held, cap_held;
    bool filling;                     /* a gap fill is at the database */
    bool gap_timer;                   /* gap_sul is scheduled */
    lws_sorted_usec_list_t gap_sul;   /* fills the gap after a grace (gate.c) */
    struct per_vhost_data__chat *vhd; /* for gap_sul's callback */
    struct heard_reply *heard;        /* another broker's reply streaming here (asst_lease.c) */
    /* members on other brokers (roster.c) */
    struct remote_member *remote;
    size_t n_remote, cap_remote;
    bool watched;         /* subscribed to its channel (relay.c) */
    bool roster_known;    /* the other brokers told their members since it was first heard */
    struct dbjob *parked; /* joins waiting for their rosters (roster_park) */
    size_t n_parked;
    char (*answered)[DB_NODE_ID_LEN]; /* brokers that told theirs */
    size_t n_answered;
    bool roster_timer;
    lws_sorted_usec_list_t roster_sul; /* gives up waiting for rosters */
    /* presence changes not told yet (sessions.c: a few a second are, the rest coalesced) */
    int64_t presence_window_mono;
    unsigned presence_sent; /* presence frames sent in the window */
    struct presence_change *changes;
    size_t n_changes;
    bool presence_due; /* listed in vhd->presence_due */
};

struct remote_member {
    char node[DB_NODE_ID_LEN];
    char conn_id[BROKER_CONN_ID_HEX + 1];
    char name[NAME_LEN];
};

struct heard_reply {
    char response_id[17];
    char *text; /* what its chunks said so far, up to BROKER_REPLY_MAX bytes */
    size_t len;
    int64_t chunks; /* chunk events heard */
};

struct held_event {
    int64_t seq;
    json_t *ev; /* what tells it (owned); NULL: told some other way, only its turn counts */
};

struct presence_change {
    char conn_id[BROKER_CONN_ID_HEX + 1];
    char client_id[BROKER_CLIENT_ID_MAX + 1]; /* its envelope client_id then */
    char name[NAME_LEN];
    bool joined;
};

struct pending_reply {
    int64_t message_id;
    const char *system_prompt; /* a template's, borrowed from vhd->templates; NULL: default */
};

/* ---- the vhost (ws.c) ---- */

struct per_vhost_data__chat {
    struct lws_context *context;
    struct lws_vhost *vhost;
    const struct cfg *cfg;
    /* this broker's name (SPEC 8: --node-id, else HOSTNAME:PORT) and the port it listens
     * on; set by ws_vhd_init, read-only after (the database thread reads node_id too) */
    char node_id[DB_NODE_ID_LEN];
    int port;
    struct dbq *dbq;
    struct map *sessions; /* id -> struct live_session */
    struct map *conns;    /* connection id -> pss */
    struct per_session_data__chat *conns_list;
    int64_t n_conns;
    char **dirty; /* ids of sessions whose member count changed since the last publish */
    size_t n_dirty, cap_dirty;
    lws_sorted_usec_list_t tick; /* once a second: typing expiry, live figures */
    char **presence_due;         /* ids of sessions with presence changes to tell */
    size_t n_presence_due, cap_presence_due;
    lws_sorted_usec_list_t presence_sul; /* tells them */
    bool presence_scheduled;
    struct lws *notify_wsi;
    struct notify_listener *notify; /* borrowed from main */
    bool publishing;                /* a live-figures job is in flight */
    bool renewing;                  /* a lease renewal is in flight (asst_lease.c) */
    bool stopping;                  /* shutting down: no new work */
    const struct asst_driver *driver;
    /* access.c */
    struct auth_key *keys; /* valid API keys' salts and hashes */
    size_t n_keys;
    bool auth_required;
    bool keys_loading;
    int64_t keys_loaded_mono;
    struct map *per_ip;    /* address -> connections */
    struct map *refusals;  /* "reason|address" -> when last logged */
    struct map *templates; /* prompt template name -> system prompt (envelope llm_request) */
    struct map *deleted;   /* session id -> when REST deleted it (kept a minute) */
    /* reconcile.c */
    bool reconciling;        /* a reconcile job is in flight */
    bool reconciled_once;    /* the first (start-up) pass is done */
    int64_t reconciled_mono; /* when the last pass started */
    size_t reconcile_offset; /* whose turn it is among the live sessions */
    struct llm_http *llm;    /* the HTTP thread, with --llm openai or gemini */
    struct map *llm_replies; /* request id (decimal) -> struct reply */
    uint64_t llm_next_id;
    int llm_active;                /* transfers under way (asst_llm.c) */
    struct llm_state *llm_waiting; /* replies waiting for --llm-max-concurrent, oldest first */
    /* relay.c */
    struct relay *relay; /* with --redis; NULL: one broker */
    struct map *nodes;   /* node id -> when another broker was last heard (roster.c) */
};

/* ---- fanout.c ---- */
/* Returns a new frame holding text (copied), one reference; NULL when out of memory. */
struct frame *frame_new(const char *text, size_t len);
void frame_unref(struct frame *f);
/* Queues f (takes a new reference) on pss and asks for a writeable callback. Broadcasts
 * over FANOUT_MAX_BYTES, answers (asked) over FANOUT_MAX_ASKED, or more than
 * FANOUT_MAX_FRAMES cull the connection (see fanout.c). */
void fanout_push(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                 struct frame *f, bool asked);
/* Writes the oldest queued frame. Returns -1 when the connection must close. */
int fanout_write(struct per_session_data__chat *pss);
void fanout_clear(struct outq *q);
/* Sends ev (borrowed, flat form) to one connection, rendered in its dialect. */
void fanout_send(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                 const json_t *ev);
/* Sends ev (borrowed) to every authenticated connection, rendering it at most once per
 * dialect. */
void fanout_all(struct per_vhost_data__chat *vhd, const json_t *ev);
/* Sends ev (borrowed) to every member of s except `except` (may be NULL), rendering it
 * at most once per dialect. */
void fanout_session(struct per_vhost_data__chat *vhd, struct live_session *s, const json_t *ev,
                    const struct per_session_data__chat *except);
/* Sends an error event to one connection. request_type may be NULL. */
void fanout_error(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss, enum perr e,
                  const char *request_type, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The same about a chat the client named with client_msg_id (NULL: none), so that it can
 * tell which of its messages failed. */
void fanout_error_msg(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                      enum perr e, const char *request_type, const char *client_msg_id,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* ---- proto.c: the wire formats ---- */
/* Renders ev (flat form: {"type": ..., fields...}) for dialect d into a new string
 * (caller frees) of *len bytes. channel is the session's channel name for the envelope
 * (NULL: none); receiver is the client_id of the connection a direct answer goes to (NULL:
 * a broadcast). */
char *proto_render(const json_t *ev, enum dialect d, const char *channel, const char *receiver,
                   size_t *len);
/* Names the client whose message caused ev (SPEC 3.3: the envelope's client_id), in an
 * internal field that the flat dialect never shows; NULL: nobody in particular. Relayed
 * events keep it, so other brokers render the same client_id. */
void proto_set_client(json_t *ev, const char *client_id);
/* A new flat event {"type": type} to add fields to. */
json_t *proto_event(const char *type);
/* The message object of message_added, new reference. */
json_t *proto_message(const struct db_message *m);
/* The session_update message_added that tells m, new reference. */
json_t *proto_message_added(const char *session_id, const struct db_message *m,
                            int64_t message_count);

/* ---- ws.c ---- */
struct per_session_data__chat *ws_conn(struct per_vhost_data__chat *vhd, const char *id);
/* Whether s (n bytes) is a valid envelope client_id: 1 to 64 of A-Z a-z 0-9 . _ : - */
bool ws_client_id_valid(const char *s, size_t n);
/* The client_id that names pss in envelope messages: the one it gave, else its connection
 * id. Borrowed from pss. */
const char *ws_client_id(const struct per_session_data__chat *pss);
/* The same for connection conn_id (may be NULL) when it is connected here; else conn_id
 * itself (NULL for none: a REST message). */
const char *ws_client_of(struct per_vhost_data__chat *vhd, const char *conn_id);
/* Asks for a writeable callback on pss. */
void ws_wake(struct per_session_data__chat *pss);
/* Asks the connection to close with code at its next writeable callback. */
void ws_close(struct per_session_data__chat *pss, uint16_t code);
/* The vhost's state, made from init (its db and keys are stolen) on context ctx, without
 * the notification socket and the tick: PROTOCOL_INIT adds those. Names the broker
 * (vhd->node_id, from the port vhd->vhost listens on, or --port without a vhost) and
 * resets its live figures. ws_vhd_cleanup releases what it made (also after a failure,
 * and twice). */
struct broker_init;
int ws_vhd_init(struct per_vhost_data__chat *vhd, struct lws_context *ctx,
                struct broker_init *init);
void ws_vhd_cleanup(struct per_vhost_data__chat *vhd);
/* A connection (pss zeroed but for the peer, authentication and dialect) joins the
 * vhost: gets its id and is sent `connected`. Returns -1 when it cannot be served.
 * ws_conn_detach takes it out again (leaves its sessions, drops its queue). */
int ws_conn_attach(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss);
void ws_conn_detach(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss);
/* lws protocol callbacks, for the protocol table in main.c. */
int ws_callback_chat(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);
int ws_callback_notify(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len);
/* Starts the graceful close of every connection (close 1001). Returns how many remain. */
int64_t ws_shutdown(struct per_vhost_data__chat *vhd);
/* Whether s may name a broker (--node-id): 1 to DB_NODE_ID_MAX characters of A-Z a-z 0-9
 * . _ : - */
bool ws_node_id_valid(const char *s);

/* ---- sessions.c: live sessions, membership, presence, typing ---- */
/* The live session for id, created (empty) when absent. NULL when out of memory. */
struct live_session *sess_get(struct per_vhost_data__chat *vhd, const char *id, const char *model);
struct live_session *sess_find(struct per_vhost_data__chat *vhd, const char *id);
/* Frees s (not in the map any more, or the map is going). NULL is fine. */
void sess_free(struct live_session *s);
/* Frees s when nothing needs it any more (no members, reply or pending replies). */
void sess_release(struct per_vhost_data__chat *vhd, struct live_session *s);
/* Adds pss as a member (makes s its current session). Returns 0, or -1 when pss is in
 * too many sessions. Tells the others user_joined. */
int sess_join(struct per_vhost_data__chat *vhd, struct live_session *s,
              struct per_session_data__chat *pss);
/* Removes pss from s; tells the others user_left when `announce`. */
void sess_leave(struct per_vhost_data__chat *vhd, struct live_session *s,
                struct per_session_data__chat *pss, bool announce);
/* The session named by id (NULL: the connection's current one) when pss is a member.
 * Otherwise answers not_in_session or session_not_found and returns NULL. */
struct live_session *sess_resolve(struct per_vhost_data__chat *vhd,
                                  struct per_session_data__chat *pss, const char *id,
                                  const char *request_type);
/* Cancels the presence timer and forgets what it would tell (vhost destroy). */
void sess_presence_cleanup(struct per_vhost_data__chat *vhd);
/* Sets pss's typing state in s and tells the others when it changes. */
void sess_typing(struct per_vhost_data__chat *vhd, struct live_session *s,
                 struct per_session_data__chat *pss, bool typing);
/* Detaches every member without telling them (session_deleted has been sent), then
 * frees s when nothing else needs it. */
void sess_drop_members(struct per_vhost_data__chat *vhd, struct live_session *s);
/* Remembers that REST deleted session id, so a join that read it just before answers
 * session_not_found rather than joining a session that is gone. */
void sess_mark_deleted(struct per_vhost_data__chat *vhd, const char *id);
bool sess_was_deleted(struct per_vhost_data__chat *vhd, const char *id);
/* Once a second: expires typing indicators and old deletion marks. */
void sess_tick(struct per_vhost_data__chat *vhd, int64_t now_mono);
/* Publishes the live figures (heartbeat, changed member counts) through the DB thread. */
void sess_publish(struct per_vhost_data__chat *vhd);

/* ---- gate.c: a session's messages told in seq order, each once ---- */
/* ev (stolen; NULL: told some other way) tells the message with this seq; it goes out
 * when every earlier message went out or was found gone from the database. A seq told
 * already is dropped. */
void gate_message(struct per_vhost_data__chat *vhd, struct live_session *s, int64_t seq,
                  json_t *ev);
/* The first member joined when last_seq was the newest message: what came before is
 * history (replayed on request), not for the gate. Only the first call counts. */
void gate_history_at(struct live_session *s, int64_t last_seq);
/* A read of the database (rows borrowed: every message with seq > after, ascending, all
 * of them when complete) goes out through the gate; with complete, what was held up to
 * upto is known to be everything up to it. */
void gate_rows(struct per_vhost_data__chat *vhd, struct live_session *s, int64_t after,
               const struct db_message_list *rows, bool complete, int64_t upto,
               int64_t message_count);
/* Reads what s's members may have missed (after Redis came back, a new subscription). */
void gate_catch_up(struct per_vhost_data__chat *vhd, struct live_session *s);
/* Frees what s holds. */
void gate_cleanup(struct live_session *s);

/* ---- inbound.c: the one door for client messages ---- */
enum field_kind { F_STR, F_INT, F_OBJ, F_NAME }; /* F_NAME: a display name (names.h) */

/* One field a message type takes: a string of min..max characters (max -1: up to
 * --max-message-size), an integer in min..max, or an object. */
struct field_spec {
    const char *name;
    enum field_kind kind;
    bool required;
    int64_t min, max;
};

#define IN_MAX_FIELDS 4

struct msg_row;

/* One client message being handled; everything is borrowed for the handler's call. */
struct inbound {
    struct per_vhost_data__chat *vhd;
    struct per_session_data__chat *pss;
    const struct msg_row *row;
    const json_t *msg;  /* the whole message */
    const json_t *data; /* where the fields are: msg (flat) or msg.data (envelope) */
    const char *type;
    union {
        const char *s;
        int64_t i;
        const json_t *o;
    } v[IN_MAX_FIELDS];      /* the row's fields, in its order */
    bool has[IN_MAX_FIELDS]; /* the field was there and not null */
};

/* A message type of the contract: its name, its leaf, its fields. */
struct msg_row {
    const char *type;
    void (*handler)(struct inbound *in);
    struct field_spec fields[IN_MAX_FIELDS];
};

/* Handles one complete client message (text, or a binary frame: bad_request). */
void inbound_frame(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                   const char *text, size_t len, bool binary);

/* ---- flat.c: the flat dialect's leaves (SPEC 3.1) ---- */
void flat_create(struct inbound *in);
void flat_join(struct inbound *in);
void flat_leave(struct inbound *in);
void flat_chat(struct inbound *in);
void flat_stop(struct inbound *in);
void flat_typing_start(struct inbound *in);
void flat_typing_stop(struct inbound *in);
void flat_regenerate(struct inbound *in);

/* ---- envelope.c: the envelope dialect's leaves (SPEC 3.3) ---- */
void env_auth(struct inbound *in);
void env_subscribe(struct inbound *in);
void env_unsubscribe(struct inbound *in);
void env_chat_message(struct inbound *in);
void env_event(struct inbound *in); /* task_update, agent_status */
void env_llm_request(struct inbound *in);

/* ---- templates.c: --templates-dir ---- */
int templates_load(struct per_vhost_data__chat *vhd);
/* The system prompt of template name (borrowed for the broker's life), or NULL. */
const char *templates_get(const struct per_vhost_data__chat *vhd, const char *name);
void templates_free(struct per_vhost_data__chat *vhd);

/* ---- actions.c: what both dialects do ---- */
/* A message to store (strings borrowed for the call). */
struct store_request {
    const char *role; /* user, or event for task_update / agent_status */
    const char *content;
    const char *client_msg_id;
    const char *thread_id;
    const char *channel; /* store in this channel's session, made if needed (s is NULL then) */
    bool want_reply;
    bool by_policy; /* want_reply only as the session's reply_mode says (SPEC 9: a chat) */
    const char *system_prompt; /* a template's, for the reply */
    bool broadcast_all;        /* tell every connection, not only the session's members */
};
/* Stores a message in s (or in in->channel's session, or, with neither, in a new private
 * session that pss joins) through the database thread, then tells the members (or
 * everyone) and asks for a reply if wanted. */
void act_store(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
               const struct live_session *s, const struct store_request *in,
               const char *request_type);
/* A stored message reached the broker (its own store when mine, then the other brokers
 * hear of it too; REST's notification): tells the members once, in seq order, and asks
 * for a reply if wanted. */
void act_message_added(struct per_vhost_data__chat *vhd, struct live_session *s,
                       const struct db_message *m, int64_t message_count, bool want_reply,
                       bool mine, const char *client_id);
/* create_session: model, title and reply_mode may be NULL (the defaults); a model or
 * reply_mode that is not offered is answered invalid_field here. */
void act_create(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                const char *model, const char *title, const char *reply_mode);
/* A join by id (flat join_session, replaying after since >= 0) or by channel (subscribe,
 * made when new). Strings borrowed for the call. */
struct join_request {
    const char *session_id;
    const char *channel;
    int64_t since; /* -1: no replay */
};
void act_join(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
              const struct join_request *in, const char *request_type);
void act_leave(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
               struct live_session *s);
/* pss named session id without being a member: answers not_in_session when it exists,
 * else session_not_found (after a database lookup when it is not live). */
void act_not_joined(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                    const char *id, const char *request_type);
void act_ping_in(struct inbound *in);

/* ---- regen.c: regenerate (SPEC 9) ---- */
/* Has the assistant answer s's last user message again (pss, a member, asked): the
 * replies it had become superseded, the members are told, the new reply streams. */
void act_regenerate(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                    struct live_session *s);

/* ---- access.c: keys, origins, per-address and rate limits ---- */
enum rate_verdict { RATE_OK, RATE_REFUSE, RATE_CLOSE };
/* Takes the keys read at start (steals keys). */
int access_init(struct per_vhost_data__chat *vhd, struct auth_key *keys, size_t n);
void access_cleanup(struct per_vhost_data__chat *vhd);
/* Replaces the cached keys (steals keys). */
void access_set_keys(struct per_vhost_data__chat *vhd, struct auth_key *keys, size_t n);
/* Rereads the keys through the database thread. */
void access_reload_keys(struct per_vhost_data__chat *vhd);
void access_tick(struct per_vhost_data__chat *vhd);
bool access_key_valid(const struct per_vhost_data__chat *vhd, const char *key);
/* HTTP_CONFIRM_UPGRADE: 0 to allow, or the status to refuse with (401, 403, 429); for 403,
 * *why says which rule refused (a Host or an Origin). */
int access_check_upgrade(struct per_vhost_data__chat *vhd, struct lws *wsi, const char **why);
/* FILTER_PROTOCOL_CONNECTION: records the peer and whether it presented a valid key. */
void access_conn_filter(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                        struct lws *wsi);
void access_conn_open(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss);
void access_conn_close(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss);
/* Envelope auth: true (and pss may be served) when pss is authenticated already or key
 * is valid. */
bool access_authenticate(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                         const char *key);
/* Spends a token for one client message. */
enum rate_verdict access_rate(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss);
/* Logs a refusal, at most once a minute per address and reason. */
void access_refused(struct per_vhost_data__chat *vhd, const char *ip, const char *reason,
                    const char *detail);

/* ---- reconcile.c: what notifications may have missed ---- */
/* Reads the reply queue (when replies) and the new messages of live sessions, then asks
 * for the replies and tells what the members missed. One pass at a time. */
void reconcile_start(struct per_vhost_data__chat *vhd, bool replies);
/* Starts a pass every RECONCILE_MS. */
void reconcile_tick(struct per_vhost_data__chat *vhd, int64_t now_mono);

/* ---- relay.c: session events between brokers, through Redis (SPEC 8) ---- */
/* Starts the Redis thread with --redis (nothing without). Returns 0, or -1 (logged). */
int relay_init(struct per_vhost_data__chat *vhd);
void relay_cleanup(struct per_vhost_data__chat *vhd);
/* Handles what the Redis thread handed back (loop thread, on wake-up). */
void relay_poll(struct per_vhost_data__chat *vhd);
/* Whether the link to Redis is up (false without --redis). */
bool relay_up(const struct per_vhost_data__chat *vhd);
/* Starts (on) or stops hearing the other brokers' events of s: its first member joined,
 * its last left. */
void relay_watch(struct per_vhost_data__chat *vhd, struct live_session *s, bool on);
/* Tells the other brokers (ev borrowed) the event that tells s's message seq, after its
 * commit; the caller passes ev to the gate for its own members. */
void relay_message(struct per_vhost_data__chat *vhd, const struct live_session *s, int64_t seq,
                   const json_t *ev);
/* Sends ev (borrowed) to s's members here but except (may be NULL), and on every other
 * broker (all of them there). */
void relay_broadcast(struct per_vhost_data__chat *vhd, struct live_session *s, const json_t *ev,
                     const struct per_session_data__chat *except);
/* Asks the broker generating s's reply to stop it (a member here sent stop). */
void relay_stop(struct per_vhost_data__chat *vhd, const struct live_session *s);
/* Sends ev (borrowed) to every authenticated connection of every broker. */
void relay_all(struct per_vhost_data__chat *vhd, const json_t *ev);

/* Publishes ev (borrowed) to every other broker, for them alone (no client sees it). */
void relay_to_brokers(struct per_vhost_data__chat *vhd, const json_t *ev);
/* Publishes this broker's heartbeat (each tick). */
void relay_beat(struct per_vhost_data__chat *vhd);
/* Whether the link to Redis has been up since before mono (a monotonic ms). */
bool relay_up_since(const struct per_vhost_data__chat *vhd, int64_t mono);

/* ---- roster.c: members on other brokers (SPEC 8) ---- */
/* Members of s on every broker, as this broker knows them. */
int64_t roster_clients(const struct live_session *s);
/* A relayed event of s from node (ev: a copy of its own, may be changed): learns who is
 * where; presence events get `clients` counted over every broker. Returns whether ev is
 * for the members (false: the roster's own messages). */
bool roster_event(struct per_vhost_data__chat *vhd, struct live_session *s, const char *node,
                  json_t *ev);
/* Asks the other brokers who of s's members they hold (this broker started hearing s). */
void roster_request(struct per_vhost_data__chat *vhd, struct live_session *s);
/* A join is about to make s's first member here: when other brokers may hold members, job
 * (a join's, its done callback set to resume it) waits until every live broker told its
 * members of s, or ROSTER_WAIT_MS; then its done callback runs again. Returns whether it
 * waits (false: go on now). */
bool roster_park(struct per_vhost_data__chat *vhd, struct live_session *s, struct dbjob *job);
/* A roster message on the channel of every broker (ev borrowed), from node. */
void roster_all_event(struct per_vhost_data__chat *vhd, const char *node, const json_t *ev);
/* Gives the joins waiting on s back (vhost destroy: their callbacks see stopping). */
void roster_drop_parked(struct live_session *s);
/* node was heard from (it is alive). */
void roster_heard(struct per_vhost_data__chat *vhd, const char *node);
/* Each tick: beats, and drops the members of brokers not heard for a few seconds. */
void roster_tick(struct per_vhost_data__chat *vhd, int64_t now_mono);
/* Forgets s's members elsewhere (it stopped hearing s). */
void roster_free(struct live_session *s);
void roster_cleanup(struct per_vhost_data__chat *vhd);

/* ---- notify_in.c ---- */
/* Handles one event from the notification socket (borrowed). */
void notify_in_event(struct per_vhost_data__chat *vhd, const json_t *ev);

#endif
