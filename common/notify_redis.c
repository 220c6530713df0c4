/* notify_redis: REST's notifications published through Redis (--redis, SPEC 8), so that
 * every broker hears them, on whatever host it runs.
 *
 * The same JSON events as on the notification socket, on the channel of every broker
 * (redisc.h). Like the socket, the sender never waits long: one connection shared by the
 * REST threads, replies within NOTIFY_REDIS_TIMEOUT_MS, and after a failure no new attempt
 * for NOTIFY_REDIS_RETRY_MS (events meanwhile are dropped: the brokers catch up from the
 * database). */
#include "notify_redis.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"

#define NOTIFY_REDIS_TIMEOUT_MS 1000
#define NOTIFY_REDIS_RETRY_MS   1000

struct notify_redis {
    pthread_mutex_t lock;
    struct redisc_url url;
    char channel[REDISC_CHANNEL_MAX];
    redisContext *c;       /* {lock} NULL when not connected */
    int64_t retry_mono_ms; /* {lock} no connection attempt before this */
    bool warned;           /* {lock} the failure was logged */
};

struct notify_redis *notify_redis_new(const char *url)
{
    struct notify_redis *r = calloc(1, sizeof *r);
    char err[512];

    if (!r)
        return NULL;
    if (redisc_url_parse(url, &r->url, err, sizeof err) < 0) {
        log_error("%s", err);
        free(r);
        return NULL;
    }
    redisc_all_channel(r->channel, &r->url);
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

void notify_redis_free(struct notify_redis *r)
{
    if (!r)
        return;
    redisFree(r->c);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* {lock} */
static void failed(struct notify_redis *r, const char *why)
{
    redisFree(r->c);
    r->c = NULL;
    r->retry_mono_ms = clock_mono_ms() + NOTIFY_REDIS_RETRY_MS;
    if (!r->warned)
        log_warn("the brokers did not get an event through Redis (%s); live clients may miss "
                 "it for a few seconds, stored data is safe. Is redis-server running at %s:%d?",
                 why, r->url.host, r->url.port);
    r->warned = true;
}

int notify_redis_send(struct notify_redis *r, const char *text, size_t len)
{
    const char *argv[] = {"PUBLISH", r->channel, text};
    const size_t lens[] = {7, strlen(r->channel), len};
    redisReply *reply;
    char err[512];
    int rc = -1;

    pthread_mutex_lock(&r->lock);
    /* One retry on a fresh connection: Redis may have restarted since the last event. */
    for (int attempt = 0; attempt < 2 && rc < 0; attempt++) {
        bool fresh = !r->c;
        if (!r->c && clock_mono_ms() < r->retry_mono_ms)
            break; /* failed a moment ago: drop, never wait */
        if (!r->c && !(r->c = redisc_connect(&r->url, NOTIFY_REDIS_TIMEOUT_MS, err, sizeof err))) {
            failed(r, err);
            break;
        }
        reply = redisCommandArgv(r->c, 3, argv, lens);
        if (reply && reply->type == REDIS_REPLY_INTEGER) {
            r->warned = false;
            rc = 0;
        } else if (fresh) {
            snprintf(err, sizeof err, "%s",
                     reply && reply->type == REDIS_REPLY_ERROR ? reply->str : r->c->errstr);
            failed(r, err);
            attempt = 2;
        } else {
            redisFree(r->c); /* a connection that broke meanwhile: once more on a new one */
            r->c = NULL;
        }
        if (reply)
            freeReplyObject(reply);
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}
