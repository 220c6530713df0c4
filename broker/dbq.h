/* dbq: the broker's database thread.
 *
 * The loop pushes jobs; the database thread takes the jobs waiting (a batch), runs them in
 * one transaction (group commit: one fsync for many messages), then hands them back through
 * a queue and lws_cancel_service(); the loop runs each job's done callback, which sees
 * the committed result. Jobs are run and handed back in the order they were pushed, so a
 * read pushed after a write sees it.
 *
 * Bounds (work waiting for the database stays bounded when the database is slow, locked
 * or full: SPEC 6):
 * - The queue holds at most DBQ_MAX_JOBS jobs and DBQ_MAX_BYTES bytes of payload
 *   (struct dbjob.bytes; a job counts from its push until it is handed back). A push
 *   beyond either is refused: the job is handed back at once with err PERR_UNAVAILABLE,
 *   through the done list like any other (never inside dbq_push), so the client whose
 *   request it was gets `error` code `unavailable` at once. Logged once per
 *   DBQ_FULL_LOG_MS at most. A refused job is handed back before the jobs still queued.
 * - Essential jobs (struct dbjob.essential: a finished reply, the live figures, the key
 *   reload, the reply-queue reconcile) are never refused; each is bounded by its caller
 *   (one per reply, one in flight).
 * - A batch is at most DBQ_BATCH_JOBS jobs, and takes no more jobs once it has run for
 *   DBQ_BATCH_MS: the rest wait for the next batch, so one commit never waits behind
 *   thousands of jobs.
 * - When a batch cannot begin (the write lock held past the busy timeout, an I/O error),
 *   every job waiting then is answered PERR_UNAVAILABLE with it: each waits at most about
 *   one busy timeout, not one per batch ahead of it.
 *
 * Outcomes are true job by job: when SQLite rolls the batch's transaction back by itself
 * (disk full, I/O error), every job of the batch run so far is reported PERR_UNAVAILABLE
 * and the rest run in a fresh transaction; when the COMMIT fails, every job of the batch
 * is. Nothing is reported stored that was not, nor failed that was stored. */
#ifndef PARLEY_DBQ_H
#define PARLEY_DBQ_H

#include <libwebsockets.h>

#include "db.h"

#define DBQ_MAX_JOBS    4096
#define DBQ_MAX_BYTES   (8u << 20)
#define DBQ_BATCH_JOBS  256
#define DBQ_BATCH_MS    20
#define DBQ_FULL_LOG_MS 10000

struct dbjob {
    /* Runs on the database thread, inside the batch's transaction. Sets err. */
    void (*run)(struct dbjob *job, struct db *db);
    /* Runs on the loop after the batch committed (err set to PERR_UNAVAILABLE when the
     * commit failed). Owns the job: must free it. */
    void (*done)(struct dbjob *job);
    struct dbjob *next;
    enum perr err;
    size_t bytes;   /* the payload it carries (message text), counted in DBQ_MAX_BYTES; 0: small */
    bool essential; /* never refused by the bounds (see above) */
};

struct dbq;

/* Starts the thread on db (stolen: closed by dbq_stop). node_id names the broker whose
 * live figures dbq_stop marks down (copied; NULL: none). Returns NULL on failure. */
struct dbq *dbq_new(struct db *db, struct lws_context *ctx, const char *node_id);
/* Queues job (loop thread), or refuses it when the queue is full (see above): either
 * way its done callback runs later, from dbq_complete. */
void dbq_push(struct dbq *q, struct dbjob *job);
/* Runs the done callbacks of every finished job (loop thread). */
void dbq_complete(struct dbq *q);
/* Runs every job still queued, stops the thread, marks the node down (db_live_down),
 * closes the database, then runs the remaining done callbacks. NULL is fine. */
void dbq_stop(struct dbq *q);

#endif
