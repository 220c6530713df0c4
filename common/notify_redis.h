/* notify_redis: the notification sender's Redis backend (notify.h, SPEC 8). */
#ifndef PARLEY_NOTIFY_REDIS_H
#define PARLEY_NOTIFY_REDIS_H

#include <stddef.h>

#include "redisc.h"

struct notify_redis;

/* A sender publishing to the Redis server of url, connected on first use. NULL when url
 * is not a valid Redis URL (logged). Safe to share between threads. */
struct notify_redis *notify_redis_new(const char *url);
void notify_redis_free(struct notify_redis *r);
/* Publishes len bytes of text to every broker. Returns 0 when Redis took it, else -1. */
int notify_redis_send(struct notify_redis *r, const char *text, size_t len);

#endif
