/* dbq: the broker's database thread.
 *
 * The loop pushes jobs; the database thread takes every job waiting, runs them all in one
 * transaction (group commit: one fsync for many messages), then hands them back through
 * a queue and lws_cancel_service(); the loop runs each job's done callback, which sees
 * the committed result. Jobs are run and handed back in the order they were pushed, so a
 * read pushed after a write sees it. */
#ifndef PARLEY_DBQ_H
#define PARLEY_DBQ_H

#include <libwebsockets.h>

#include "db.h"

struct dbjob {
    /* Runs on the database thread, inside the batch's transaction. Sets err. */
    void (*run)(struct dbjob *job, struct db *db);
    /* Runs on the loop after the batch committed (err set to PERR_UNAVAILABLE when the
     * commit failed). Owns the job: must free it. */
    void (*done)(struct dbjob *job);
    struct dbjob *next;
    enum perr err;
    size_t bytes; /* the payload it carries (a message's content), 0 when small */
};

struct dbq;

/* Starts the thread on db (stolen: closed by dbq_stop). Returns NULL on failure. */
struct dbq *dbq_new(struct db *db, struct lws_context *ctx);
/* Queues job (loop thread). */
void dbq_push(struct dbq *q, struct dbjob *job);
/* Runs the done callbacks of every finished job (loop thread). */
void dbq_complete(struct dbq *q);
/* Runs every job still queued, stops the thread, closes the database, then runs the
 * remaining done callbacks. NULL is fine. */
void dbq_stop(struct dbq *q);

#endif
