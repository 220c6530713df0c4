/* rds: the Redis thread. See rds.h for what it promises.
 *
 * One thread, two blocking hiredis connections used without blocking on them for long:
 * the thread poll()s the subscriber's socket and an eventfd the loop writes when it queues
 * work; it writes publishes as one pipeline and reads their replies (each within
 * RDS_TIMEOUT_MS), and reads the subscriber's socket only when poll says it can. Nothing
 * here touches broker state. */
#include "rds.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

enum op_kind { OP_PUBLISH, OP_SUBSCRIBE, OP_UNSUBSCRIBE };

struct op {
    struct op *next;
    enum op_kind kind;
    char channel[REDISC_CHANNEL_MAX];
    size_t len;
    char data[];
};

struct rds {
    struct redisc_url url;
    struct lws_context *ctx;
    pthread_t thread;
    int wake_fd; /* eventfd: the loop has queued work, or taken what arrived */
    pthread_mutex_t lock;
    struct op *ops, **ops_tail;   /* {lock} */
    size_t ops_bytes;             /* {lock} payload queued */
    struct rds_in *in, **in_tail; /* {lock} */
    size_t in_bytes;              /* {lock} */
    bool up;                      /* {lock} the link is connected */
    bool stop;                    /* {lock} */
    size_t dropped;               /* {lock} publishes dropped since the last log line */
    int64_t dropped_logged_ms;    /* {lock} */
    /* the thread's own */
    redisContext *pub, *sub;
    char **wanted; /* channels subscribed to, or to be once connected */
    size_t n_wanted, cap_wanted;
};

static void wake(struct rds *r)
{
    uint64_t one = 1;

    if (write(r->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_warn("rds: cannot wake the Redis thread: %s", strerror(errno));
}

/* Hands one thing to the loop. Any thread but the loop; {lock} not held. */
static void hand_back(struct rds *r, enum rds_kind kind, const char *channel, const char *data,
                      size_t len)
{
    struct rds_in *in = malloc(sizeof *in + len + 1);

    if (!in)
        return;
    in->next = NULL;
    in->kind = kind;
    snprintf(in->channel, sizeof in->channel, "%s", channel ? channel : "");
    in->len = len;
    if (len)
        memcpy(in->data, data, len);
    in->data[len] = '\0';
    pthread_mutex_lock(&r->lock);
    *r->in_tail = in;
    r->in_tail = &in->next;
    r->in_bytes += len;
    pthread_mutex_unlock(&r->lock);
    lws_cancel_service(r->ctx);
}

/* ---- the loop's side ---- */

static void push_op(struct rds *r, enum op_kind kind, const char *channel, const char *data,
                    size_t len)
{
    struct op *op;
    bool was_empty;

    pthread_mutex_lock(&r->lock);
    if (kind == OP_PUBLISH && (!r->up || r->ops_bytes + len > RDS_OUT_MAX_BYTES)) {
        int64_t now = clock_mono_ms();
        r->dropped++;
        if (now - r->dropped_logged_ms >= RDS_LOG_MS) {
            log_warn("Redis %s: %zu events not published to the other brokers (%s); they "
                     "catch up from the database",
                     r->up ? "is too slow" : "is down", r->dropped,
                     r->up ? "queue full" : "reconnecting");
            r->dropped = 0;
            r->dropped_logged_ms = now;
        }
        pthread_mutex_unlock(&r->lock);
        return;
    }
    pthread_mutex_unlock(&r->lock);
    if (!(op = malloc(sizeof *op + len)))
        return;
    op->next = NULL;
    op->kind = kind;
    snprintf(op->channel, sizeof op->channel, "%s", channel);
    op->len = len;
    if (len)
        memcpy(op->data, data, len);
    pthread_mutex_lock(&r->lock);
    was_empty = !r->ops;
    *r->ops_tail = op;
    r->ops_tail = &op->next;
    r->ops_bytes += len;
    pthread_mutex_unlock(&r->lock);
    if (was_empty)
        wake(r);
}

void rds_publish(struct rds *r, const char *channel, const char *data, size_t len)
{
    push_op(r, OP_PUBLISH, channel, data, len);
}

void rds_subscribe(struct rds *r, const char *channel, bool on)
{
    push_op(r, on ? OP_SUBSCRIBE : OP_UNSUBSCRIBE, channel, NULL, 0);
}

struct rds_in *rds_take(struct rds *r)
{
    struct rds_in *list;
    bool was_full;

    pthread_mutex_lock(&r->lock);
    list = r->in;
    was_full = r->in_bytes >= RDS_IN_MAX_BYTES;
    r->in = NULL;
    r->in_tail = &r->in;
    r->in_bytes = 0;
    pthread_mutex_unlock(&r->lock);
    if (was_full)
        wake(r); /* the thread stopped reading: it may again */
    return list;
}

/* ---- the thread's side ---- */

static void want(struct rds *r, const char *channel, bool on)
{
    for (size_t i = 0; i < r->n_wanted; i++) {
        if (strcmp(r->wanted[i], channel) == 0) {
            if (!on) {
                free(r->wanted[i]);
                r->wanted[i] = r->wanted[--r->n_wanted];
            }
            return;
        }
    }
    if (!on)
        return;
    if (r->n_wanted == r->cap_wanted) {
        size_t cap = r->cap_wanted ? r->cap_wanted * 2 : 16;
        char **grown = realloc(r->wanted, cap * sizeof *grown);
        if (!grown)
            return;
        r->wanted = grown;
        r->cap_wanted = cap;
    }
    if ((r->wanted[r->n_wanted] = strdup(channel)))
        r->n_wanted++;
}

static void set_up(struct rds *r, bool up)
{
    pthread_mutex_lock(&r->lock);
    r->up = up;
    pthread_mutex_unlock(&r->lock);
}

static void disconnect(struct rds *r, const char *reason)
{
    char why[128];
    bool was_up;

    snprintf(why, sizeof why, "%s", reason); /* it may live in the contexts freed below */
    pthread_mutex_lock(&r->lock);
    was_up = r->up;
    r->up = false;
    pthread_mutex_unlock(&r->lock);
    redisFree(r->pub);
    redisFree(r->sub);
    r->pub = r->sub = NULL;
    if (was_up) {
        log_error("lost the link to Redis at %s:%d (%s); live events from other brokers pause, "
                  "this broker goes on serving its own clients and reconnects every %d ms",
                  r->url.host, r->url.port, why, RDS_RETRY_MS);
        hand_back(r, RDS_DOWN, NULL, NULL, 0);
    }
}

/* Queues SUBSCRIBE or UNSUBSCRIBE on the subscriber's connection (written by flush_sub). */
static int append_sub(struct rds *r, bool on, const char *channel)
{
    const char *argv[] = {on ? "SUBSCRIBE" : "UNSUBSCRIBE", channel};

    return redisAppendCommandArgv(r->sub, 2, argv, NULL) == REDIS_OK ? 0 : -1;
}

static int flush_sub(struct rds *r)
{
    int done = 0;

    while (!done)
        if (redisBufferWrite(r->sub, &done) != REDIS_OK)
            return -1;
    return 0;
}

static bool connect_both(struct rds *r, bool *logged_down)
{
    char err[512];

    if (!(r->pub = redisc_connect(&r->url, RDS_TIMEOUT_MS, err, sizeof err)) ||
        !(r->sub = redisc_connect(&r->url, RDS_TIMEOUT_MS, err, sizeof err))) {
        redisFree(r->pub);
        r->pub = NULL;
        if (!*logged_down)
            log_error("%s; brokers cannot hear each other until it answers (retrying every "
                      "%d ms)",
                      err, RDS_RETRY_MS);
        *logged_down = true;
        return false;
    }
    for (size_t i = 0; i < r->n_wanted; i++)
        if (append_sub(r, true, r->wanted[i]) < 0)
            goto fail;
    if (flush_sub(r) < 0)
        goto fail;
    log_info("connected to Redis at %s:%d (database %d)", r->url.host, r->url.port, r->url.db);
    *logged_down = false;
    set_up(r, true);
    hand_back(r, RDS_UP, NULL, NULL, 0);
    return true;
fail:
    disconnect(r, r->sub && r->sub->err ? r->sub->errstr : "write failed");
    return false;
}

/* Sends the queued operations: subscriptions on one connection, publishes as a pipeline
 * on the other, then reads the publishes' replies. Returns -1 when the link failed. */
static int run_ops(struct rds *r, struct op *ops)
{
    size_t published = 0;
    int rc = 0;

    for (struct op *op = ops; op; op = op->next) {
        if (op->kind != OP_PUBLISH) {
            want(r, op->channel, op->kind == OP_SUBSCRIBE);
            if (append_sub(r, op->kind == OP_SUBSCRIBE, op->channel) < 0)
                rc = -1;
            continue;
        }
        const char *argv[] = {"PUBLISH", op->channel, op->data};
        const size_t lens[] = {7, strlen(op->channel), op->len};
        if (redisAppendCommandArgv(r->pub, 3, argv, lens) != REDIS_OK)
            rc = -1;
        published++;
    }
    if (rc == 0 && flush_sub(r) < 0)
        rc = -1;
    for (size_t i = 0; rc == 0 && i < published; i++) {
        redisReply *reply = NULL;
        if (redisGetReply(r->pub, (void **)&reply) != REDIS_OK)
            rc = -1;
        else if (reply->type == REDIS_REPLY_ERROR)
            log_warn("Redis refused a PUBLISH: %s", reply->str);
        if (reply)
            freeReplyObject(reply);
    }
    return rc;
}

/* Reads what the subscriber's socket holds and hands back each message. Returns -1 when
 * the link failed. */
static int read_sub(struct rds *r)
{
    redisReply *m;

    if (redisBufferRead(r->sub) != REDIS_OK)
        return -1;
    for (;;) {
        m = NULL;
        if (redisGetReplyFromReader(r->sub, (void **)&m) != REDIS_OK)
            return -1;
        if (!m)
            return 0;
        if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 &&
            m->element[0]->type == REDIS_REPLY_STRING &&
            m->element[1]->type == REDIS_REPLY_STRING) {
            const char *kind = m->element[0]->str;
            const redisReply *ch = m->element[1], *data = m->element[2];
            if (strcmp(kind, "message") == 0 && data->type == REDIS_REPLY_STRING) {
                if (data->len > RDS_PAYLOAD_MAX || ch->len >= REDISC_CHANNEL_MAX)
                    hand_back(r, RDS_LOST, NULL, NULL, 0);
                else
                    hand_back(r, RDS_MESSAGE, ch->str, data->str, data->len);
            } else if (strcmp(kind, "subscribe") == 0 && ch->len < REDISC_CHANNEL_MAX) {
                hand_back(r, RDS_SUBSCRIBED, ch->str, NULL, 0);
            }
        }
        freeReplyObject(m);
    }
}

/* The operations the loop queued, oldest first (the caller frees them). */
static struct op *take_ops(struct rds *r)
{
    struct op *ops;

    pthread_mutex_lock(&r->lock);
    ops = r->ops;
    r->ops = NULL;
    r->ops_tail = &r->ops;
    r->ops_bytes = 0;
    pthread_mutex_unlock(&r->lock);
    return ops;
}

static void free_ops(struct op *ops)
{
    while (ops) {
        struct op *next = ops->next;
        free(ops);
        ops = next;
    }
}

static void *rds_thread(void *arg)
{
    struct rds *r = arg;
    bool logged_down = false;

    for (;;) {
        struct pollfd fds[2] = {{.fd = r->wake_fd, .events = POLLIN}, {.fd = -1}};
        struct op *ops;
        bool stop, reading;
        uint64_t n;

        if (!r->pub && !connect_both(r, &logged_down)) {
            pthread_mutex_lock(&r->lock);
            stop = r->stop;
            pthread_mutex_unlock(&r->lock);
            if (stop)
                break;
            poll(fds, 1, RDS_RETRY_MS);
            if (read(r->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN)
                break;
            /* publishes queued meanwhile were refused at the door (not up); subscriptions
             * are remembered */
            ops = take_ops(r);
            for (struct op *op = ops; op; op = op->next)
                if (op->kind != OP_PUBLISH)
                    want(r, op->channel, op->kind == OP_SUBSCRIBE);
            free_ops(ops);
            continue;
        }
        pthread_mutex_lock(&r->lock);
        reading = r->in_bytes < RDS_IN_MAX_BYTES;
        stop = r->stop && !r->ops;
        pthread_mutex_unlock(&r->lock);
        if (stop)
            break;
        if (reading) {
            fds[1].fd = r->sub->fd;
            fds[1].events = POLLIN;
        }
        if (poll(fds, 2, 1000) < 0 && errno != EINTR)
            break;
        if ((fds[0].revents & POLLIN) && read(r->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN)
            break;
        ops = take_ops(r);
        if (ops && run_ops(r, ops) < 0)
            disconnect(r, r->pub && r->pub->err ? r->pub->errstr : "a command failed");
        free_ops(ops);
        if (r->sub && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) && read_sub(r) < 0)
            disconnect(r, r->sub->err ? r->sub->errstr : "the server closed the connection");
    }
    redisFree(r->pub);
    redisFree(r->sub);
    r->pub = r->sub = NULL;
    return NULL;
}

struct rds *rds_new(const struct redisc_url *u, struct lws_context *ctx)
{
    struct rds *r = calloc(1, sizeof *r);

    if (!r)
        return NULL;
    r->url = *u;
    r->ctx = ctx;
    r->ops_tail = &r->ops;
    r->in_tail = &r->in;
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->wake_fd < 0) {
        log_error("rds: eventfd: %s", strerror(errno));
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    if (pthread_create(&r->thread, NULL, rds_thread, r) != 0) {
        log_error("cannot start the Redis thread");
        pthread_mutex_destroy(&r->lock);
        close(r->wake_fd);
        free(r);
        return NULL;
    }
    return r;
}

void rds_stop(struct rds *r)
{
    struct rds_in *in;

    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = true;
    pthread_mutex_unlock(&r->lock);
    wake(r);
    pthread_join(r->thread, NULL);
    while ((in = rds_take(r))) {
        while (in) {
            struct rds_in *next = in->next;
            free(in);
            in = next;
        }
    }
    free_ops(take_ops(r));
    for (size_t i = 0; i < r->n_wanted; i++)
        free(r->wanted[i]);
    free(r->wanted);
    pthread_mutex_destroy(&r->lock);
    close(r->wake_fd);
    free(r);
}
