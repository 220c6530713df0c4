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

#define BROKER_MAX_JOINED  16           /* sessions one connection may be a member of */
#define BROKER_CONN_ID_HEX 12           /* connection ids: 12 lowercase hex characters */
#define BROKER_TYPING_MS   10000        /* a typing indicator expires by itself after this */
#define BROKER_REPLAY_MAX  1000         /* messages replayed by join_session with since */
#define FANOUT_MAX_BYTES   (256 * 1024) /* queued for one connection before it is culled */
#define FANOUT_MAX_FRAMES  4096

enum dialect { DIALECT_FLAT, DIALECT_ENVELOPE };

struct live_session;
struct reply;
struct dbq;
struct map;
struct llm_http;

/* ---- frames and queues (fanout.c) ---- */

/* One serialized message, shared by every connection it is queued on. */
struct frame {
    unsigned refs;
    size_t len;
    unsigned char data[]; /* LWS_PRE bytes of headroom, then len bytes of text */
};

/* A connection's bounded queue of frames waiting for SERVER_WRITEABLE. */
struct outq {
    struct frame **v; /* ring of cap entries, allocated on first use */
    unsigned head, len, cap;
    size_t bytes;
};

/* ---- connections (ws.c) ---- */

struct per_session_data__chat {
    struct lws *wsi;
    struct per_session_data__chat *next, *prev; /* vhd->conns */
    char id[BROKER_CONN_ID_HEX + 1];
    enum dialect dialect;
    bool dialect_known;
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
    char ip[48];                     /* the peer's address */
    bool authed;                     /* may be served: a valid key, or none needed */
    double tokens;                   /* rate-limit bucket */
    int64_t refill_mono;             /* when tokens was last topped up */
    unsigned flood;                  /* messages refused in a row */
    int64_t heard_mono;              /* keepalive: the last message or pong */
    int64_t pinged_mono;             /* keepalive: the last ping sent */
    bool ping_due;                   /* keepalive: send a ping at the next writeable */
    char private_session[DB_ID_LEN]; /* envelope llm_request without a channel */
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
    struct dbq *dbq;
    struct map *sessions; /* id -> struct live_session */
    struct map *conns;    /* connection id -> pss */
    struct per_session_data__chat *conns_list;
    int64_t n_conns;
    char **dirty; /* ids of sessions whose member count changed since the last publish */
    size_t n_dirty, cap_dirty;
    lws_sorted_usec_list_t tick; /* once a second: typing expiry, live figures */
    struct lws *notify_wsi;
    struct notify_listener *notify; /* borrowed from main */
    bool publishing;                /* a live-figures job is in flight */
    bool stopping;                  /* shutting down: no new work */
    const struct asst_driver *driver;
    /* access.c */
    struct auth_key *keys; /* valid API keys' salts and hashes */
    size_t n_keys;
    bool auth_required;
    bool keys_loading;
    int64_t keys_loaded_mono;
    struct map *per_ip;      /* address -> connections */
    struct map *refusals;    /* "reason|address" -> when last logged */
    struct map *templates;   /* prompt template name -> system prompt (envelope llm_request) */
    struct map *deleted;     /* session id -> when REST deleted it (kept a minute) */
    struct llm_http *llm;    /* the HTTP thread, with --llm openai or gemini */
    struct map *llm_replies; /* request id (decimal) -> struct reply */
    uint64_t llm_next_id;
};

/* ---- fanout.c ---- */
/* Returns a new frame holding text (copied), one reference; NULL when out of memory. */
struct frame *frame_new(const char *text, size_t len);
void frame_unref(struct frame *f);
/* Queues f (takes a new reference) on pss and asks for a writeable callback. A queue over
 * FANOUT_MAX_BYTES or FANOUT_MAX_FRAMES culls the connection (see fanout.c). */
void fanout_push(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                 struct frame *f);
/* Writes the oldest queued frame. Returns -1 when the connection must close. */
int fanout_write(struct per_session_data__chat *pss);
void fanout_clear(struct outq *q);
/* Sends ev (borrowed, flat form) to one connection, rendered in its dialect. */
void fanout_send(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                 const json_t *ev);
/* Sends ev (borrowed) to every member of s except `except` (may be NULL), rendering it
 * at most once per dialect. */
void fanout_session(struct per_vhost_data__chat *vhd, struct live_session *s, const json_t *ev,
                    const struct per_session_data__chat *except);
/* Sends an error event to one connection. request_type may be NULL. */
void fanout_error(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss, enum perr e,
                  const char *request_type, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- proto.c: the wire formats ---- */
/* Renders ev (flat form: {"type": ..., fields...}) for dialect d into a new string
 * (caller frees) of *len bytes. channel is the session's channel name for the envelope
 * (NULL: none); receiver is the connection a direct answer goes to (NULL: a broadcast). */
char *proto_render(const json_t *ev, enum dialect d, const char *channel, const char *receiver,
                   size_t *len);
/* A new flat event {"type": type} to add fields to. */
json_t *proto_event(const char *type);
/* The message object of message_added, new reference. */
json_t *proto_message(const struct db_message *m);

/* ---- ws.c ---- */
struct per_session_data__chat *ws_conn(struct per_vhost_data__chat *vhd, const char *id);
/* Asks the connection to close with code at its next writeable callback. */
void ws_close(struct per_session_data__chat *pss, uint16_t code);
/* lws protocol callbacks, for the protocol table in main.c. */
int ws_callback_chat(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);
int ws_callback_notify(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len);
/* Starts the graceful close of every connection (close 1001). Returns how many remain. */
int64_t ws_shutdown(struct per_vhost_data__chat *vhd);

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
/* The session a message names (session_id) or the connection's current one. On failure
 * sends not_in_session / invalid_field and returns NULL. */
struct live_session *sess_resolve(struct per_vhost_data__chat *vhd,
                                  struct per_session_data__chat *pss, const json_t *msg,
                                  const char *request_type);
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

/* ---- handlers.c: client messages ---- */
/* A message to store (strings borrowed for the call). */
struct store_request {
    const char *role; /* user, or event for task_update / agent_status */
    char *content;
    char *client_msg_id;
    char *thread_id;
    char *channel; /* store in this channel's session, made if needed (s is NULL then) */
    char *model;   /* set by handle_store */
    bool want_reply;
    const char *system_prompt; /* a template's, for the reply */
    bool broadcast_all;        /* tell every connection, not only the session's members */
};
/* Stores a message in s (or in in->channel's session, or, with neither, in a new private
 * session that pss joins) through the database thread, then tells the members (or
 * everyone) and asks for a reply if wanted. */
void handle_store(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                  const struct live_session *s, const struct store_request *in,
                  const char *request_type);
void handle_ping(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss);
/* Handles one complete text message from pss. */
void handle_message(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                    const char *text, size_t len);
/* A stored message reached the broker (chat, or REST through the notification socket):
 * tell the members and ask for a reply if wanted. */
void handle_message_stored(struct per_vhost_data__chat *vhd, struct live_session *s,
                           const struct db_message *m, int64_t message_count, bool want_reply);

/* ---- envelope.c: client messages of the envelope dialect ---- */
void envelope_message(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                      const json_t *msg, const char *type);
/* Loads --templates-dir (NAME.txt files) into vhd->templates at start. */
int envelope_load_templates(struct per_vhost_data__chat *vhd);
void envelope_free_templates(struct per_vhost_data__chat *vhd);

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
/* HTTP_CONFIRM_UPGRADE: 0 to allow, or the status to refuse with (401, 403, 429). */
int access_check_upgrade(struct per_vhost_data__chat *vhd, struct lws *wsi);
/* FILTER_PROTOCOL_CONNECTION: records the peer and whether it presented a valid key. */
void access_conn_filter(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                        struct lws *wsi);
void access_conn_open(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss);
void access_conn_close(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss);
/* Spends a token for one client message. */
enum rate_verdict access_rate(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss);
/* Logs a refusal, at most once a minute per address and reason. */
void access_refused(struct per_vhost_data__chat *vhd, const char *ip, const char *reason,
                    const char *detail);

/* ---- notify_in.c ---- */
/* Handles one event from the notification socket (borrowed). */
void notify_in_event(struct per_vhost_data__chat *vhd, const json_t *ev);

#endif
