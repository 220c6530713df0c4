/* redisc: reaching the Redis server of SPEC 8 (--redis), for the broker and REST.
 *
 * Only what both need: the URL, a blocking connection with time limits (AUTH and SELECT
 * done), and the channel names every process agrees on. The broker's Redis thread
 * (broker/rds.c) and REST's notification sender (notify.c) build on it. */
#ifndef PARLEY_REDISC_H
#define PARLEY_REDISC_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#define REDISC_HOST_MAX 256
#define REDISC_PASS_MAX 256

/* Channels: one per session with its events, one for what every broker hears. Pub/sub
 * ignores SELECT, so the names carry the URL's database number: two deployments on one
 * Redis server with different /DB never hear each other. */
#define REDISC_CHANNEL_MAX 96

/* redis://[:PASSWORD@]HOST[:PORT][/DB]; HOST may be [IPv6]. */
struct redisc_url {
    char host[REDISC_HOST_MAX];
    int port;                       /* 6379 when not given */
    int db;                         /* 0 when not given */
    char password[REDISC_PASS_MAX]; /* "" for none */
};

/* Parses url into out. Returns 0, or -1 with a message for people in err. */
int redisc_url_parse(const char *url, struct redisc_url *out, char *err, size_t err_len);

/* Connects, authenticates and selects the database, each step given at most timeout_ms;
 * replies then wait at most timeout_ms too. Returns a new context (free with redisFree),
 * or NULL with what went wrong in err. Blocks: never on the broker's loop. */
redisContext *redisc_connect(const struct redisc_url *u, int timeout_ms, char *err, size_t err_len);

/* The channel of session_id ("parley:DB:s:ID"), or of every broker ("parley:DB:all"),
 * into buf (REDISC_CHANNEL_MAX bytes). */
void redisc_session_channel(char *buf, const struct redisc_url *u, const char *session_id);
void redisc_all_channel(char *buf, const struct redisc_url *u);

#endif
