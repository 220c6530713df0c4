/* rds: the broker's Redis thread (SPEC 8), which keeps Redis off the event loop.
 *
 * The thread holds two connections to the --redis server: one publishes what the loop
 * hands it, the other is subscribed to the channels the loop asks for and hands back
 * what arrives, through a queue and lws_cancel_service(), as the database thread does.
 * It reconnects by itself (every RDS_RETRY_MS while Redis is down) and subscribes again
 * to every channel asked for; the loop hears of each link change (RDS_UP, RDS_DOWN) and
 * of each subscription confirmed (RDS_SUBSCRIBED), after which messages published on
 * that channel reach it.
 *
 * Bounds and policies (everything Redis carries is a hint: the database is the truth, and
 * the loop catches up from it after RDS_UP, RDS_SUBSCRIBED and RDS_LOST):
 * - Publishes wait in a queue of at most RDS_OUT_MAX_BYTES; beyond it, and while the link
 *   is down, they are dropped (counted, logged at most every RDS_LOG_MS).
 * - What arrives waits for the loop up to RDS_IN_MAX_BYTES; beyond it the thread stops
 *   reading (Redis then buffers, and past its pubsub output limit closes the link).
 * - A message above RDS_PAYLOAD_MAX is dropped and RDS_LOST handed back. */
#ifndef PARLEY_RDS_H
#define PARLEY_RDS_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>

#include "redisc.h"

#define RDS_OUT_MAX_BYTES (8u << 20)
#define RDS_IN_MAX_BYTES  (16u << 20)
#define RDS_PAYLOAD_MAX   (2u << 20)
#define RDS_TIMEOUT_MS    2000 /* connect, and each reply */
#define RDS_RETRY_MS      500
#define RDS_LOG_MS        10000

enum rds_kind {
    RDS_MESSAGE,    /* data (len bytes, NUL after) arrived on channel */
    RDS_SUBSCRIBED, /* channel's subscription took effect */
    RDS_UP,         /* connected (again) */
    RDS_DOWN,       /* the link is lost; retrying */
    RDS_LOST,       /* something that arrived was dropped (too large) */
};

/* One thing handed back to the loop. */
struct rds_in {
    struct rds_in *next;
    enum rds_kind kind;
    char channel[REDISC_CHANNEL_MAX];
    size_t len;
    char data[]; /* len bytes, then '\0' */
};

struct rds;

/* Starts the thread for the server at u (copied). Returns NULL when it cannot start. */
struct rds *rds_new(const struct redisc_url *u, struct lws_context *ctx);
/* Publishes len bytes of data on channel (both copied). Loop thread. */
void rds_publish(struct rds *r, const char *channel, const char *data, size_t len);
/* Subscribes to channel, or unsubscribes (on false). Loop thread. */
void rds_subscribe(struct rds *r, const char *channel, bool on);
/* What arrived, oldest first (a new list: free each with free()); NULL when nothing did.
 * Loop thread. */
struct rds_in *rds_take(struct rds *r);
/* Publishes what is queued (for at most RDS_TIMEOUT_MS), stops the thread, frees r. NULL
 * is fine. */
void rds_stop(struct rds *r);

#endif
