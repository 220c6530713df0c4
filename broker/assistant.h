/* assistant: replies in a session, one at a time, and the drivers that produce them.
 *
 * A reply goes LOADING (its context is read from the database) -> STREAMING (the driver
 * produces text with reply_chunk and finishes with reply_end) -> STORING (the reply is
 * committed) -> gone, after response_complete. Replies asked for while one is under way
 * wait in the session's pending list, which mirrors the database's reply_queue, so none
 * is lost if the broker stops. */
#ifndef PARLEY_ASSISTANT_H
#define PARLEY_ASSISTANT_H

#include "broker.h"

enum reply_state { REPLY_LOADING, REPLY_STREAMING, REPLY_STORING };

struct reply {
    lws_sorted_usec_list_t sul; /* for drivers that pace themselves on the loop */
    struct per_vhost_data__chat *vhd;
    struct live_session *s;
    enum reply_state state;
    bool aborted;            /* the session was deleted or cleared: store nothing, say nothing */
    struct dbjob *retry_job; /* a load or store that failed, pushed again by retry_sul */
    lws_sorted_usec_list_t retry_sul;
    unsigned failures; /* of the job now retried */
    char response_id[17];
    int64_t reply_to; /* the user message answered */
    /* its requester's envelope client_id (SPEC 3.3), known once the context is read */
    char client_id[BROKER_CLIENT_ID_MAX + 1];
    char *text; /* what was said so far */
    size_t len, cap;
    unsigned chunks;
    int64_t started_us;        /* monotonic, when streaming began */
    bool begun;                /* response_start was sent */
    void *drv;                 /* the driver's state */
    const char *system_prompt; /* a template's, or NULL for --system-prompt */
    /* what the driver learns, stored with the reply */
    char *model;     /* the model asked, NULL: the session's */
    char *reasoning; /* reasoning text kept apart from the reply */
    size_t reasoning_len;
    int64_t prompt_tokens; /* -1 when unknown */
    int64_t completion_tokens;
};

struct asst_driver {
    const char *name;
    /* Starts producing a reply to prompt, with context (the session's recent history,
     * ascending, ending with prompt), both borrowed for the call. Returns 0, or -1 if it
     * could not start (the caller ends the reply). */
    int (*start)(struct reply *r, const struct db_message *prompt,
                 const struct db_message_list *context);
    /* Stops at once: no reply_chunk or reply_end for r after it returns. */
    void (*cancel)(struct reply *r);
};

extern const struct asst_driver asst_echo;
extern const struct asst_driver asst_llm;

/* ---- asst_llm.c ---- */
/* Starts (or, at shutdown, stops) the HTTP thread when --llm is openai or gemini. */
int asst_llm_init(struct per_vhost_data__chat *vhd);
void asst_llm_cleanup(struct per_vhost_data__chat *vhd);
/* Hands the HTTP thread's events to their replies (loop thread, on wake-up). */
void asst_llm_poll(struct per_vhost_data__chat *vhd);

/* The driver for --llm, or NULL for "none". */
const struct asst_driver *asst_driver_for(const char *llm);

/* ---- the session side (loop thread) ---- */
/* Queues a reply to message_id in s and starts it when s is idle. system_prompt (a
 * template's, borrowed for the broker's life) replaces the configured one; NULL: default. */
void asst_request(struct per_vhost_data__chat *vhd, struct live_session *s, int64_t message_id,
                  const char *system_prompt);
/* `stop`: ends the reply under way, keeping what was said (stopped: true). */
void asst_stop(struct per_vhost_data__chat *vhd, struct live_session *s);
/* The session was deleted or cleared: drop the reply under way and those pending. */
void asst_abort(struct per_vhost_data__chat *vhd, struct live_session *s);
/* The reply streaming in s lost its lease: stops it without a word, frees it, and starts
 * the next one waiting. */
void asst_lost(struct per_vhost_data__chat *vhd, struct live_session *s);
/* Whether s has BROKER_PENDING_MAX user messages waiting for replies already. */
bool asst_busy(const struct per_vhost_data__chat *vhd, const struct live_session *s);

/* ---- asst_lease.c: the reply's lease, and other brokers' replies ---- */
#define REPLY_LEASE_MS 2500 /* renewed every tick (1 s) while a reply is generated */
/* Renews the lease of every reply this broker generates (once a second); a reply whose
 * lease another broker took is stopped and dropped here without a word (that broker
 * tells its end). One renewal at a time. */
void asst_lease_tick(struct per_vhost_data__chat *vhd);
/* What another broker's reply in s said so far, from the events relayed (ev borrowed):
 * for session_joined's streaming, and for a broker taking the reply over. */
void sess_heard(struct live_session *s, const json_t *ev);
/* That reply ended (response_complete): forget it. */
void sess_heard_end(struct live_session *s, const char *response_id);
void sess_heard_free(struct live_session *s);

/* ---- the driver side (loop thread) ---- */
void reply_chunk(struct reply *r, const char *text, size_t len);
/* Keeps reasoning text apart from the reply: stored, never sent as chunks. */
void reply_reasoning(struct reply *r, const char *text, size_t len);
/* Ends the reply: status "complete", "stopped" or "error" (error says why, for people). */
void reply_end(struct reply *r, const char *status, const char *error);

#endif
