/* repl: the interactive client: its state, the broker events it shows, typing indicators,
 * reconnection and rejoin. commands.c implements the slash commands on the same state.
 * Everything runs on the one loop thread (wsconn.h). */
#ifndef PARLEY_CLIENT_REPL_H
#define PARLEY_CLIENT_REPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "crest.h"
#include "names.h"
#include "reply_policy.h"
#include "wsconn.h"

#define REPL_MAX_TYPISTS 16
#define REPL_MAX_WAITING 64

/* A chat sent (or typed while offline) and not yet acknowledged by message_added; resent
 * with the same client_msg_id after a reconnect, so the broker stores it once. */
struct repl_pending {
    struct repl_pending *next;
    char session[17];
    char cmid[40];
    int64_t typed_ms; /* monotonic, for the response time */
    char *text;       /* owned */
};

struct repl_stats {
    int64_t started_ms; /* monotonic */
    unsigned messages_sent;
    unsigned streams_ok, streams_failed;
    unsigned long chunks;
    unsigned sessions_created;
    double response_s_total; /* from sending a message to its reply's response_complete */
    unsigned responses;
};

struct repl {
    struct cfg *cfg; /* borrowed */
    struct wsc *ws;
    struct crest rest;
    bool quit;
    bool user_offline; /* /disconnect: no reconnection until /connect */

    /* the connection and the session */
    char connection_id[40];
    char model[128];
    char session[17];                 /* current session, "" when none */
    char name[NAME_LEN];              /* our display name, sent with each join; "": the service's */
    char renaming[NAME_LEN];          /* a /name sent and not yet answered, "" when none */
    char reply_mode[POLICY_MODE_LEN]; /* the session's, "" while unknown */
    char title[256];                  /* the session's, when title_known */
    bool title_known;
    int64_t message_count;
    int64_t clients;
    int64_t last_msg_id; /* newest message id seen in the session, for join's since */
    bool first_join;     /* the session has not been joined on this run yet */
    bool paging_first;   /* a first join's replay continues (has_more): still the first */
    size_t paged_over;   /* messages of a first join's earlier pages, not shown */
    int disconnects;     /* times the connection was lost (shown on rejoin) */

    struct repl_pending *pending;
    unsigned cmid_seq;
    int64_t waiting[REPL_MAX_WAITING]; /* send times of acknowledged chats awaiting a reply */
    int n_waiting;

    /* the reply streaming on screen */
    char stream_rid[17];
    /* typing: ours, and who else is typing */
    bool typing;
    int64_t typing_sent_ms;
    struct wsc_timer typing_timer;
    char typists[REPL_MAX_TYPISTS][40];
    char typist_names[REPL_MAX_TYPISTS][NAME_LEN];
    int n_typists;
    /* /ping */
    int64_t ping_sent_us; /* monotonic microseconds, 0 when no ping is out */

    struct repl_stats stats;
};

/* ---- interactive mode ---- */
/* Runs the interactive client until /quit or end of input. Returns the exit status. */
int repl_main(struct cfg *cfg);

/* ---- used by the commands ---- */
/* Sends a chat in the current session (or queues it when offline). */
void repl_chat(struct repl *r, const char *text);
/* Sends a typing_stop if a typing_start is standing. */
void repl_typing_stop(struct repl *r);
/* Redraws the prompt from the current state. */
void repl_update_prompt(struct repl *r);
/* Sends a ping and notes the time; the pong prints the round trip. */
void repl_ping(struct repl *r);
/* Sends msg (borrowed) if connected; otherwise prints that it cannot. Returns 0 or -1. */
int repl_send(struct repl *r, const json_t *msg);
/* A REST call for a command, with body (JSON text, or NULL): returns the answer (caller
 * cleans it up with crest_reply_cleanup) with a JSON body and status < 400, or prints why
 * and returns -1. */
int repl_rest(struct repl *r, const char *method, const char *path, const char *body,
              struct crest_reply *out);
/* Sends join_session for sid with our name; since < 0: no replay. Returns 0 or -1. */
int repl_join(struct repl *r, const char *sid, int64_t since);
/* Sends create_session with our name and title (may be NULL). Returns 0 or -1. */
int repl_create(struct repl *r, const char *title);
/* Prints the session's reply mode and what it means; changed: it was just changed. */
void repl_show_mode(const struct repl *r, const char *mode, bool changed);

/* ---- commands.c ---- */
/* Runs a line starting with '/'. */
void cmd_run(struct repl *r, const char *line);
/* The command nearest to name by edit distance (borrowed, static), NULL if none is close. */
const char *cmd_suggest(const char *name);
/* Levenshtein distance between a and b. */
int cmd_edit_distance(const char *a, const char *b);

#endif
