/* dbq: the database thread, its two queues (to do, done), and the checkpointer. See dbq.h.
 *
 * Between batches, when nothing waits, the database thread also does the work that may
 * lag the commits: it brings the search index up to date (db_search_index, a chunk at a
 * time, INDEX_DELAY_MS after a burst so that a burst is indexed together), and finishes
 * the checkpointer's checkpoint (see ckpt_thread). */
#include "dbq.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

#define CHECKPOINT_MS     1000
#define CKPT_NICE         19   /* the checkpointer's priority: the lowest */
#define WAL_FINISH_FRAMES 4096 /* a WAL this long (16 MiB of 4 KiB pages) is started over */
#define INDEX_DELAY_MS    200
#define INDEX_CHUNK       64 /* messages indexed in one transaction: a batch waits < 1 ms */

struct dbq {
    struct db *db;
    struct db *ckpt_db; /* the checkpointer's own connection */
    struct lws_context *ctx;
    pthread_t thread;
    pthread_t ckpt_thread;
    bool ckpt_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;             /* the database thread's (both on CLOCK_MONOTONIC) */
    pthread_cond_t ckpt_wake;        /* the checkpointer's */
    struct dbjob *todo, **todo_tail; /* {lock} */
    struct dbjob *done, **done_tail; /* {lock} */
    bool finish_ckpt;                /* {lock} the checkpointer asks the writer to finish */
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

static struct timespec mono_deadline(int64_t at_ms)
{
    struct timespec ts = {.tv_sec = at_ms / 1000, .tv_nsec = (long)(at_ms % 1000) * 1000000};
    return ts;
}

static void *dbq_thread(void *arg)
{
    struct dbq *q = arg;
    int64_t index_at = 0; /* when to bring the search index up to date (0: no need) */

    pthread_mutex_lock(&q->lock);
    for (;;) {
        struct dbjob *batch;
        while (!q->todo && !q->stop && !q->finish_ckpt) {
            if (!index_at) {
                pthread_cond_wait(&q->wake, &q->lock);
            } else if (clock_mono_ms() < index_at) {
                struct timespec until = mono_deadline(index_at);
                pthread_cond_timedwait(&q->wake, &q->lock, &until);
            } else {
                break;
            }
        }
        if (!q->todo && q->stop)
            break;
        if (q->finish_ckpt) {
            /* Between batches nobody else writes, so this checkpoint completes, copying
             * only what came since the checkpointer's pass, and the next commit starts the
             * WAL over. Before the next batch: under a steady load there is always one. */
            q->finish_ckpt = false;
            pthread_mutex_unlock(&q->lock);
            db_checkpoint(q->db, NULL);
            pthread_mutex_lock(&q->lock);
        } else if (q->todo) {
            batch = q->todo;
            q->todo = NULL;
            q->todo_tail = &q->todo;
            pthread_mutex_unlock(&q->lock);

            run_batch(q->db, batch);
            if (!index_at)
                index_at = clock_mono_ms() + INDEX_DELAY_MS;

            pthread_mutex_lock(&q->lock);
            *q->done_tail = batch;
            while (batch->next)
                batch = batch->next;
            q->done_tail = &batch->next;
            pthread_mutex_unlock(&q->lock);
            lws_cancel_service(q->ctx); /* the loop runs the done callbacks */
            pthread_mutex_lock(&q->lock);
        } else { /* idle, and the index is due */
            int n = 0;
            pthread_mutex_unlock(&q->lock);
            db_search_index(q->db, INDEX_CHUNK, &n);
            index_at = n == INDEX_CHUNK ? clock_mono_ms() : 0; /* more: go on when idle */
            pthread_mutex_lock(&q->lock);
        }
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* The checkpointer: once a second copies the WAL into the database file, so the writer
 * (which does not checkpoint: db_no_autocheckpoint) does not wait on most of that I/O.
 * A WAL starts over only once a transaction begins with all of it copied, which never
 * happens while messages keep coming (each commit lands between the checkpoint's start
 * and its end): then the WAL grows without bound. So once it is WAL_FINISH_FRAMES long
 * and still growing, the checkpointer asks the writer to finish: the writer's own
 * checkpoint copies only the last pages, and its next commit starts the WAL over. */
static void *ckpt_thread(void *arg)
{
    struct dbq *q = arg;
    int last_frames = 0;

    /* Background work: let the loop and the writer have the core first. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), CKPT_NICE);
    pthread_mutex_lock(&q->lock);
    while (!q->stop) {
        struct timespec until = mono_deadline(clock_mono_ms() + CHECKPOINT_MS);
        int frames = 0;
        pthread_cond_timedwait(&q->ckpt_wake, &q->lock, &until);
        if (q->stop)
            break;
        pthread_mutex_unlock(&q->lock);
        db_checkpoint(q->ckpt_db, &frames);
        pthread_mutex_lock(&q->lock);
        if (frames >= WAL_FINISH_FRAMES && frames != last_frames) {
            q->finish_ckpt = true;
            pthread_cond_signal(&q->wake);
        }
        last_frames = frames;
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
    pthread_condattr_t mono;
    pthread_condattr_init(&mono);
    pthread_condattr_setclock(&mono, CLOCK_MONOTONIC); /* deadlines: clock_mono_ms */
    pthread_cond_init(&q->wake, &mono);
    pthread_cond_init(&q->ckpt_wake, &mono);
    pthread_condattr_destroy(&mono);
    /* Without its own connection the writer checkpoints as SQLite does by default. */
    q->ckpt_db = db_open(db_path(db));
    if (q->ckpt_db && db_no_autocheckpoint(db) == PERR_OK &&
        pthread_create(&q->ckpt_thread, NULL, ckpt_thread, q) == 0)
        q->ckpt_started = true;
    if (pthread_create(&q->thread, NULL, dbq_thread, q) != 0) {
        log_error("cannot start the database thread");
        if (q->ckpt_started) {
            pthread_mutex_lock(&q->lock);
            q->stop = true;
            pthread_cond_signal(&q->ckpt_wake);
            pthread_mutex_unlock(&q->lock);
            pthread_join(q->ckpt_thread, NULL);
        }
        db_close(q->ckpt_db);
        pthread_mutex_destroy(&q->lock);
        pthread_cond_destroy(&q->wake);
        pthread_cond_destroy(&q->ckpt_wake);
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
    db_checkpoint(q->db, NULL); /* leave the file whole for the next start */
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
