/* wsconn: the client's one WebSocket connection to the broker, and the event loop it runs on.
 *
 * Everything happens on the calling thread: wsc_run() services libwebsockets, which also
 * watches stdin (adopted as a raw file) and runs timers, so the interactive client never
 * needs a second thread. Messages out are queued and written from the writeable callback;
 * messages in are parsed JSON handed to the handler. With reconnect on, a lost or failed
 * connection is retried with exponential backoff: 1 s doubling to 30 s, +-20 % jitter. */
#ifndef PARLEY_CLIENT_WSCONN_H
#define PARLEY_CLIENT_WSCONN_H

#include <jansson.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

struct wsc;

enum wsc_state {
    WSC_OFFLINE,    /* not connected and not trying (before connect, after disconnect) */
    WSC_CONNECTING, /* an attempt is under way */
    WSC_CONNECTED,  /* upgrade done */
    WSC_WAITING,    /* lost; the next attempt is scheduled */
};

/* Called on the loop thread. msg is borrowed (valid during the call). why is a short
 * reason; retry_ms is the delay before the next attempt, or -1 when none is scheduled. */
struct wsc_handler {
    void (*on_open)(void *ud);
    void (*on_message)(void *ud, json_t *msg);
    void (*on_close)(void *ud, const char *why, bool was_open, int retry_ms);
    void (*on_stdin)(void *ud); /* stdin is readable (only after wsc_watch_stdin) */
};

struct wsc_stats {
    unsigned attempts;      /* connection attempts started */
    unsigned reconnections; /* successful connections after the first */
};

/* A timer on the loop; embed it, wsc_timer_set arms (or re-arms) it. */
struct wsc_timer {
    lws_sorted_usec_list_t sul; /* first: wsconn.c gets from it to the timer */
    void (*fn)(void *ud);
    void *ud;
    struct wsc *owner;
};

/* ---- lifetime ---- */
/* Returns a new connection object (free with wsc_free), or NULL after printing why to
 * stderr (bad URL, no event loop). url is ws:// or wss://; api_key (may be NULL) goes in
 * an Authorization: Bearer header. Nothing connects until wsc_connect. */
struct wsc *wsc_new(const char *url, const char *api_key, bool reconnect,
                    const struct wsc_handler *h, void *ud);
void wsc_free(struct wsc *w);

/* ---- connection ---- */
/* Starts an attempt now (cancelling a scheduled retry); no-op when connected or connecting. */
void wsc_connect(struct wsc *w);
/* Closes the connection (close 1000) and cancels retries until the next wsc_connect. */
void wsc_disconnect(struct wsc *w);
enum wsc_state wsc_state(const struct wsc *w);
const char *wsc_state_name(enum wsc_state s);
struct wsc_stats wsc_stats(const struct wsc *w);
/* Queues msg (borrowed; serialized now) for sending. Returns 0, or -1 when not connected. */
int wsc_send(struct wsc *w, const json_t *msg);

/* ---- the loop ---- */
/* Services events once (blocking until something happens). Returns -1 when the loop is
 * broken, else 0. A signal interrupts the wait. */
int wsc_run(struct wsc *w);
/* Watches stdin: on_stdin fires while it is readable. Returns 0 or -1. */
int wsc_watch_stdin(struct wsc *w);
/* Arms t to call fn(ud) once after ms milliseconds; re-arming replaces the old deadline. */
void wsc_timer_set(struct wsc *w, struct wsc_timer *t, int ms, void (*fn)(void *), void *ud);
void wsc_timer_cancel(struct wsc_timer *t);

#endif
