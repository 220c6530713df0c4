/* dbq: the database thread, its two queues (to do, done), and the checkpointer. See dbq.h.
 *
 * Between batches, when nothing waits, the database thread also does the work that may
 * lag the commits: it brings the search index up to date (db_search_index, a chunk at a
 * time, INDEX_DELAY_MS after a burst so that a burst is indexed together), and finishes
 * the checkpointer's checkpoint (see ckpt_thread). */
#include "dbq.h"

#include <pthread.h>
#include <stdio.h>
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
    char node_id[DB_NODE_ID_LEN]; /* "": no live figures to mark down */
    pthread_t thread;
    pthread_t ckpt_thread;
    bool ckpt_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;             /* the database thread's (both on CLOCK_MONOTONIC) */
    pthread_cond_t ckpt_wake;        /* the checkpointer's */
    struct dbjob *todo, **todo_tail; /* {lock} */
    struct dbjob *done, **done_tail; /* {lock} */
    size_t n_jobs, n_bytes;          /* {lock} pushed and accepted, not yet handed back */
    size_t n_refused;                /* {lock} refused since the last log line */
    int64_t full_logged_ms;          /* {lock} when the full queue was last logged */
    bool finish_ckpt;                /* {lock} the checkpointer asks the writer to finish */
    bool stop;                       /* {lock} */
};

/* Runs the jobs of batch in order inside one transaction, taking no more once
 * DBQ_BATCH_MS have passed: *rest gets the jobs not run (cut off the list), NULL when all
 * ran. Each job run gets its true outcome (see dbq.h). Returns PERR_OK, or the error of
 * the BEGIN when the batch could not start (then no job ran: the caller fails them).
 * Database thread. */
static enum perr run_batch(struct db *db, struct dbjob *batch, struct dbjob **rest)
{
    int64_t until = clock_mono_ms() + DBQ_BATCH_MS;
    struct dbjob *tx_first = batch; /* the first job of the open transaction (NULL: none) */
    struct dbjob *j, *last = NULL;
    enum perr e = db_tx_begin(db);

    *rest = NULL;
    if (e != PERR_OK)
        return e;
    for (j = batch; j; last = j, j = j->next) {
        if (last && clock_mono_ms() >= until) {
            last->next = NULL;
            *rest = j;
            break;
        }
        j->err = PERR_OK;
        if (!tx_first) { /* the transaction was lost and a new one could not begin */
            j->err = PERR_UNAVAILABLE;
            continue;
        }
        j->run(j, db);
        if (db_tx_open(db))
            continue;
        /* The database rolled the transaction back by itself (SQLite: disk full, I/O
         * error; PostgreSQL: a failed statement, a lost connection): the jobs before this
         * one, reported fine so far, lost their writes too. */
        log_error("the database rolled back a batch of writes; its requests are answered with "
                  "errors (see the database error above)");
        db_tx_rollback(db);
        for (struct dbjob *k = tx_first; k != j->next; k = k->next)
            if (k->err == PERR_OK)
                k->err = PERR_UNAVAILABLE;
        tx_first = j->next && db_tx_begin(db) == PERR_OK ? j->next : NULL;
    }
    if (tx_first && db_tx_commit(db) != PERR_OK) {
        log_error("a batch of writes did not commit; its requests are answered with errors");
        for (struct dbjob *k = tx_first; k; k = k->next)
            k->err = PERR_UNAVAILABLE;
    }
    return PERR_OK;
}

/* Takes the next batch off the queue: at most DBQ_BATCH_JOBS jobs. {lock} held. */
static struct dbjob *take_batch(struct dbq *q)
{
    struct dbjob *batch = q->todo, *j = batch;

    for (int n = 1; n < DBQ_BATCH_JOBS && j->next; n++)
        j = j->next;
    q->todo = j->next;
    j->next = NULL;
    if (!q->todo)
        q->todo_tail = &q->todo;
    return batch;
}

/* Hands a list of finished jobs to the loop (their err set). {lock} held. */
static void hand_back(struct dbq *q, struct dbjob *list)
{
    if (!list)
        return;
    *q->done_tail = list;
    for (;; list = list->next) {
        q->n_jobs--;
        q->n_bytes -= list->bytes;
        if (!list->next)
            break;
    }
    q->done_tail = &list->next;
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
            struct dbjob *rest;
            enum perr e;
            batch = take_batch(q);
            pthread_mutex_unlock(&q->lock);

            e = run_batch(q->db, batch, &rest);
            if (!index_at)
                index_at = clock_mono_ms() + INDEX_DELAY_MS;

            pthread_mutex_lock(&q->lock);
            if (e != PERR_OK) {
                /* Could not begin (the write lock held past the busy timeout, an I/O
                 * error): what waits now would wait as long again, batch after batch. */
                for (struct dbjob *j = batch; j; j = j->next)
                    if (!j->next) {
                        j->next = q->todo;
                        break;
                    }
                q->todo = NULL;
                q->todo_tail = &q->todo;
                for (struct dbjob *j = batch; j; j = j->next)
                    j->err = e;
            } else if (rest) { /* the batch ran out of time: the rest goes first next */
                struct dbjob *k = rest;
                while (k->next)
                    k = k->next;
                k->next = q->todo;
                if (!q->todo)
                    q->todo_tail = &k->next;
                q->todo = rest;
            }
            hand_back(q, batch);
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

struct dbq *dbq_new(struct db *db, struct lws_context *ctx, const char *node_id)
{
    struct dbq *q = calloc(1, sizeof *q);

    if (!q)
        return NULL;
    q->db = db;
    q->ctx = ctx;
    snprintf(q->node_id, sizeof q->node_id, "%s", node_id ? node_id : "");
    q->todo_tail = &q->todo;
    q->done_tail = &q->done;
    q->full_logged_ms = -DBQ_FULL_LOG_MS;
    pthread_mutex_init(&q->lock, NULL);
    pthread_condattr_t mono;
    pthread_condattr_init(&mono);
    pthread_condattr_setclock(&mono, CLOCK_MONOTONIC); /* deadlines: clock_mono_ms */
    pthread_cond_init(&q->wake, &mono);
    pthread_cond_init(&q->ckpt_wake, &mono);
    pthread_condattr_destroy(&mono);
    /* Without its own connection the writer checkpoints as SQLite does by default. A
     * database without a WAL of ours to keep short (PostgreSQL) needs no checkpointer. */
    q->ckpt_db = db_has_wal(db) ? db_open(db_path(db)) : NULL;
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
    size_t refused = 0, waiting = 0, bytes = 0;

    job->next = NULL;
    pthread_mutex_lock(&q->lock);
    if (!job->essential &&
        (q->n_jobs >= DBQ_MAX_JOBS || (q->n_jobs && q->n_bytes + job->bytes > DBQ_MAX_BYTES))) {
        int64_t now = clock_mono_ms();
        job->err = PERR_UNAVAILABLE; /* handed back like any job: never run from here */
        *q->done_tail = job;
        q->done_tail = &job->next;
        q->n_refused++;
        if (now - q->full_logged_ms >= DBQ_FULL_LOG_MS) {
            q->full_logged_ms = now;
            refused = q->n_refused;
            q->n_refused = 0;
            waiting = q->n_jobs;
            bytes = q->n_bytes;
        }
        pthread_mutex_unlock(&q->lock);
        if (refused)
            log_warn("the database queue is full (%zu jobs, %zu bytes waiting): %zu requests "
                     "answered unavailable since the last report; logged every %d s at most",
                     waiting, bytes, refused, DBQ_FULL_LOG_MS / 1000);
        lws_cancel_service(q->ctx);
        return;
    }
    q->n_jobs++;
    q->n_bytes += job->bytes;
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
    if (q->node_id[0])
        db_live_down(q->db, q->node_id);
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
