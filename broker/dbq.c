/* dbq: the database thread and its two queues (to do, done). See dbq.h. */
#include "dbq.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"

#define CHECKPOINT_MS 1000

struct dbq {
    struct db *db;
    struct db *ckpt_db; /* the checkpointer's own connection */
    struct lws_context *ctx;
    pthread_t thread;
    pthread_t ckpt_thread;
    bool ckpt_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t ckpt_wake;
    struct dbjob *todo, **todo_tail; /* {lock} */
    struct dbjob *done, **done_tail; /* {lock} */
    bool stop;                       /* {lock} */
};

/* Runs one batch: every job, in order, inside one transaction. Database thread. */
static void run_batch(struct db *db, struct dbjob *batch)
{
    enum perr e = db_tx_begin(db);

    for (struct dbjob *j = batch; j; j = j->next) {
        j->err = PERR_OK;
        if (e == PERR_OK)
            j->run(j, db);
        else
            j->err = e;
    }
    if (e == PERR_OK && db_tx_commit(db) != PERR_OK) {
        log_error("a batch of writes did not commit; its requests are answered with errors");
        for (struct dbjob *j = batch; j; j = j->next)
            j->err = PERR_UNAVAILABLE;
    }
}

static void *dbq_thread(void *arg)
{
    struct dbq *q = arg;

    pthread_mutex_lock(&q->lock);
    for (;;) {
        struct dbjob *batch;
        while (!q->todo && !q->stop)
            pthread_cond_wait(&q->wake, &q->lock);
        if (!q->todo && q->stop)
            break;
        batch = q->todo;
        q->todo = NULL;
        q->todo_tail = &q->todo;
        pthread_mutex_unlock(&q->lock);

        run_batch(q->db, batch);

        pthread_mutex_lock(&q->lock);
        *q->done_tail = batch;
        while (batch->next)
            batch = batch->next;
        q->done_tail = &batch->next;
        pthread_mutex_unlock(&q->lock);
        lws_cancel_service(q->ctx); /* the loop runs the done callbacks */
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* The checkpointer: once a second copies the WAL into the database file, so the writer
 * (which does not checkpoint: db_no_autocheckpoint) never waits on that I/O. */
static void *ckpt_thread(void *arg)
{
    struct dbq *q = arg;
    struct timespec until;

    pthread_mutex_lock(&q->lock);
    while (!q->stop) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += CHECKPOINT_MS / 1000;
        pthread_cond_timedwait(&q->ckpt_wake, &q->lock, &until);
        if (q->stop)
            break;
        pthread_mutex_unlock(&q->lock);
        db_checkpoint(q->ckpt_db);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

struct dbq *dbq_new(struct db *db, struct lws_context *ctx)
{
    struct dbq *q = calloc(1, sizeof *q);

    if (!q)
        return NULL;
    q->db = db;
    q->ctx = ctx;
    q->todo_tail = &q->todo;
    q->done_tail = &q->done;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->wake, NULL);
    pthread_cond_init(&q->ckpt_wake, NULL);
    /* Without its own connection the writer checkpoints as SQLite does by default. */
    q->ckpt_db = db_open(db_path(db));
    if (q->ckpt_db && db_no_autocheckpoint(db) == PERR_OK &&
        pthread_create(&q->ckpt_thread, NULL, ckpt_thread, q) == 0)
        q->ckpt_started = true;
    if (pthread_create(&q->thread, NULL, dbq_thread, q) != 0) {
        log_error("cannot start the database thread");
        pthread_mutex_destroy(&q->lock);
        pthread_cond_destroy(&q->wake);
        free(q);
        return NULL;
    }
    return q;
}

void dbq_push(struct dbq *q, struct dbjob *job)
{
    job->next = NULL;
    pthread_mutex_lock(&q->lock);
    *q->todo_tail = job;
    q->todo_tail = &job->next;
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->lock);
}

void dbq_complete(struct dbq *q)
{
    struct dbjob *list;

    pthread_mutex_lock(&q->lock);
    list = q->done;
    q->done = NULL;
    q->done_tail = &q->done;
    pthread_mutex_unlock(&q->lock);
    while (list) {
        struct dbjob *next = list->next;
        list->done(list); /* may push new jobs, or free list */
        list = next;
    }
}

void dbq_stop(struct dbq *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    q->stop = true;
    pthread_cond_signal(&q->wake);
    pthread_cond_signal(&q->ckpt_wake);
    pthread_mutex_unlock(&q->lock);
    pthread_join(q->thread, NULL);
    if (q->ckpt_started)
        pthread_join(q->ckpt_thread, NULL);
    db_close(q->ckpt_db);
    db_live_down(q->db);
    db_checkpoint(q->db); /* leave the file whole for the next start */
    db_close(q->db);
    q->db = NULL;
    /* Jobs pushed by these callbacks would never run: the callbacks must check
     * vhd->stopping. Anything pushed anyway is freed through its done callback. */
    while (q->done) {
        dbq_complete(q);
        pthread_mutex_lock(&q->lock);
        if (q->todo) {
            struct dbjob *j = q->todo;
            q->todo = NULL;
            q->todo_tail = &q->todo;
            for (struct dbjob *k = j; k; k = k->next)
                k->err = PERR_UNAVAILABLE;
            *q->done_tail = j;
        }
        pthread_mutex_unlock(&q->lock);
    }
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->wake);
    pthread_cond_destroy(&q->ckpt_wake);
    free(q);
}
