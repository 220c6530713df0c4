/* test_dbq: the broker's database thread (broker/dbq.c) on a temporary file, without the
 * rest of the broker: the bounds of its queue (a full queue hands jobs back as
 * unavailable, never from inside the push; essential jobs pass) and the true outcome of a
 * batch that SQLite rolled back by itself (a full disk, as PRAGMA max_page_count makes
 * it). A libwebsockets context with no vhost takes the thread's wake-ups; the test runs
 * the done callbacks itself (dbq_complete), as the loop does. */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../../broker/dbq.h"
#include "log.h"
#include "unit.h"

static char tmp_dir[] = "/tmp/parley-test-dbq-XXXXXX";
static char path[512];
static struct lws_context *ctx;

static atomic_bool hold;         /* a holding job's run waits while this is true */
static atomic_int holding;       /* a holding job is running */
static int done_calls;           /* done callbacks run (loop thread: this one) */
static enum perr done_err[8192]; /* err as each job id saw it */

static sqlite3 *reader;       /* a connection of the test's own, used on the database thread */
static int boundaries;        /* jobs that found the job before them committed already */
static int sleep_us;          /* each writing job's run takes this long */
static char prev_content[64]; /* the content of the last job run (database thread) */

struct tjob {
    struct dbjob job;
    int id;
    const char *session_id;
    const char *content; /* NULL: no write */
    bool holds;          /* waits in run until hold is cleared */
    char own[64];        /* content, when the job makes its own */
};

/* Whether a message with this content is committed, as another connection sees it. */
static bool committed(const char *content)
{
    sqlite3_stmt *st = NULL;
    bool found = false;

    if (sqlite3_prepare_v2(reader, "SELECT 1 FROM messages WHERE content = ?1", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, content, -1, SQLITE_STATIC);
        found = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return found;
}

static void tjob_run(struct dbjob *job, struct db *db)
{
    struct tjob *j = (struct tjob *)job;
    struct db_message_in in = {.session_id = j->session_id, .role = "user", .content = j->content};
    struct db_message m;
    bool dup;
    int64_t count;

    if (j->holds) {
        atomic_store(&holding, 1);
        while (atomic_load(&hold))
            usleep(1000);
    }
    if (j->content && reader) { /* a new batch began after the previous job committed */
        if (prev_content[0] && committed(prev_content))
            boundaries++;
        snprintf(prev_content, sizeof prev_content, "%s", j->content);
        if (sleep_us)
            usleep((useconds_t)sleep_us);
    }
    if (j->content) {
        job->err = db_message_add(db, &in, &m, &dup, &count);
        if (job->err == PERR_OK)
            db_message_cleanup(&m);
    }
}

static void tjob_done(struct dbjob *job)
{
    struct tjob *j = (struct tjob *)job;

    done_err[j->id] = job->err;
    done_calls++;
    free(j);
}

static void push(struct dbq *q, int id, const char *sid, const char *content, bool holds,
                 size_t bytes, bool essential)
{
    struct tjob *j = calloc(1, sizeof *j);

    j->id = id;
    j->session_id = sid;
    j->content = content;
    j->holds = holds;
    j->job.run = tjob_run;
    j->job.done = tjob_done;
    j->job.bytes = bytes;
    j->job.essential = essential;
    dbq_push(q, &j->job);
}

/* Runs done callbacks until want of them ran, for up to 30 s. */
static void complete_until(struct dbq *q, int want)
{
    for (int i = 0; i < 30000 && done_calls < want; i++) {
        dbq_complete(q);
        if (done_calls < want)
            usleep(1000);
    }
}

static void wait_holding(void)
{
    for (int i = 0; i < 30000 && !atomic_load(&holding); i++)
        usleep(1000);
}

static struct dbq *start(const char *name, struct db **db_out, char *sid)
{
    struct db *db;
    struct db_session s;

    snprintf(path, sizeof path, "%s/%s.db", tmp_dir, name);
    db = db_open(path);
    if (!db)
        return NULL;
    if (db_session_create(db, "echo", NULL, NULL, &s) != PERR_OK) {
        db_close(db);
        return NULL;
    }
    snprintf(sid, DB_ID_LEN, "%s", s.id);
    db_session_cleanup(&s);
    *db_out = db;
    done_calls = 0;
    memset(done_err, 0xff, sizeof done_err);
    atomic_store(&holding, 0);
    return dbq_new(db, ctx, NULL);
}

/* Rows of messages with this content, on a connection of its own. */
static long long rows_with(const char *content)
{
    struct db *side = db_open(path);
    struct db_message_list l = {0};
    struct db_session *v = NULL;
    size_t ns = 0;
    int64_t total;
    long long n = 0;

    if (!side)
        return -1;
    if (/* the one session this test makes */
        db_session_list(side, 10, 0, &v, &ns, &total) == PERR_OK && ns == 1 &&
        db_messages_since(side, v[0].id, 0, 100000, &l) == PERR_OK)
        for (size_t i = 0; i < l.n; i++)
            n += strcmp(l.v[i].content, content) == 0;
    db_message_list_cleanup(&l);
    db_session_list_free(v, ns);
    db_close(side);
    return n;
}

/* ---- cases ---- */

/* The queue holds DBQ_MAX_JOBS; beyond, jobs come back unavailable through the done list
 * (not from inside dbq_push); essential ones pass; the bound frees as jobs finish. */
static void bound_jobs(void)
{
    struct db *db;
    char sid[DB_ID_LEN];
    struct dbq *q;
    enum { OVER = 10 };
    int refused = 0, ok = 0;

    atomic_store(&hold, true);
    q = start("bound_jobs", &db, sid);
    REQUIRE(q != NULL);
    push(q, 0, sid, NULL, true, 0, false); /* holds the thread: the rest wait */
    wait_holding();
    for (int i = 1; i < DBQ_MAX_JOBS + OVER; i++)
        push(q, i, sid, NULL, false, 0, false);
    EQ_INT(done_calls, 0); /* refused ones too are only handed back */
    push(q, DBQ_MAX_JOBS + OVER, sid, NULL, false, 0, true); /* essential: accepted */
    complete_until(q, OVER);
    EQ_INT(done_calls, OVER);
    for (int i = 0; i < DBQ_MAX_JOBS + OVER + 1; i++)
        refused += done_err[i] == PERR_UNAVAILABLE;
    EQ_INT(refused, OVER);
    for (int i = DBQ_MAX_JOBS; i < DBQ_MAX_JOBS + OVER; i++)
        EQ_INT(done_err[i], PERR_UNAVAILABLE);
    atomic_store(&hold, false);
    complete_until(q, DBQ_MAX_JOBS + OVER + 1);
    EQ_INT(done_calls, DBQ_MAX_JOBS + OVER + 1);
    for (int i = 0; i < DBQ_MAX_JOBS; i++)
        ok += done_err[i] == PERR_OK;
    EQ_INT(ok, DBQ_MAX_JOBS);
    EQ_INT(done_err[DBQ_MAX_JOBS + OVER], PERR_OK);
    push(q, 0, sid, NULL, false, 0, false); /* room again */
    complete_until(q, DBQ_MAX_JOBS + OVER + 2);
    EQ_INT(done_err[0], PERR_OK);
    dbq_stop(q);
}

/* The bytes bound: payloads above DBQ_MAX_BYTES in all are refused; a first job is
 * never refused for its size alone. */
static void bound_bytes(void)
{
    struct db *db;
    char sid[DB_ID_LEN];
    struct dbq *q;

    atomic_store(&hold, true);
    q = start("bound_bytes", &db, sid);
    REQUIRE(q != NULL);
    push(q, 0, sid, NULL, true, DBQ_MAX_BYTES + 1, false); /* alone: accepted */
    wait_holding();
    push(q, 1, sid, NULL, false, 1, false); /* refused: the bytes are over */
    complete_until(q, 1);
    EQ_INT(done_calls, 1);
    EQ_INT(done_err[1], PERR_UNAVAILABLE);
    atomic_store(&hold, false);
    complete_until(q, 2);
    EQ_INT(done_err[0], PERR_OK);
    push(q, 2, sid, NULL, false, DBQ_MAX_BYTES / 2, false);
    push(q, 3, sid, NULL, false, DBQ_MAX_BYTES / 2, false);
    complete_until(q, 4);
    EQ_INT(done_err[2], PERR_OK);
    EQ_INT(done_err[3], PERR_OK);
    dbq_stop(q);
}

/* A batch SQLite rolls back (the disk fills at its second job): the first job, run fine,
 * lost its write too and is reported unavailable; the third runs in a fresh transaction
 * and is stored. Each job is reported stored exactly when its row is in the file. */
static void batch_rolled_back(void)
{
    struct db *db;
    char sid[DB_ID_LEN];
    struct dbq *q;
    static char big[256 * 1024];
    const char *what[4] = {NULL, "first, rolled back", big, "third, stored"};
    int64_t pages = 0;

    memset(big, 'x', sizeof big - 1);
    atomic_store(&hold, true);
    q = start("rolled_back", &db, sid);
    REQUIRE(q != NULL);
    /* The writer's connection may grow the file by a few pages only: the big one fills it. */
    {
        FILE *f = fopen(path, "rb");
        REQUIRE(f != NULL);
        fseek(f, 0, SEEK_END);
        pages = ftell(f) / 4096;
        fclose(f);
    }
    push(q, 0, sid, NULL, true, 0, false);
    wait_holding();
    REQUIRE(db_max_pages(db, pages + 8) == PERR_OK); /* the thread waits in job 0 */
    for (int i = 1; i <= 3; i++)
        push(q, i, sid, what[i], false, 0, false);
    atomic_store(&hold, false);
    complete_until(q, 4);
    REQUIRE(done_calls == 4);
    EQ_INT(done_err[1], PERR_UNAVAILABLE);
    EQ_INT(done_err[2], PERR_UNAVAILABLE);
    EQ_INT(done_err[3], PERR_OK);
    EQ_INT(rows_with(what[1]), 0);
    EQ_INT(rows_with(what[3]), 1);
    dbq_stop(q);
}

/* A batch takes at most DBQ_BATCH_JOBS jobs, and no more once it has run DBQ_BATCH_MS:
 * the jobs after it see the earlier ones committed. n jobs, each us long to run. */
static void batch_cap(int n, int us, int min_boundaries)
{
    struct db *db;
    char sid[DB_ID_LEN];
    struct dbq *q;
    int ok = 0;

    atomic_store(&hold, true);
    q = start(us ? "cap_ms" : "cap_jobs", &db, sid);
    REQUIRE(q != NULL);
    REQUIRE(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    boundaries = 0;
    sleep_us = us;
    prev_content[0] = '\0';
    push(q, 0, sid, NULL, true, 0, false);
    wait_holding();
    for (int i = 1; i <= n; i++) {
        struct tjob *j = calloc(1, sizeof *j);
        j->id = i;
        j->session_id = sid;
        snprintf(j->own, sizeof j->own, "job %d", i);
        j->content = j->own;
        j->job.run = tjob_run;
        j->job.done = tjob_done;
        dbq_push(q, &j->job);
    }
    atomic_store(&hold, false);
    complete_until(q, n + 1);
    for (int i = 1; i <= n; i++)
        ok += done_err[i] == PERR_OK;
    EQ_INT(ok, n);
    if (boundaries < min_boundaries)
        UNIT_FAIL("%d batch boundaries among %d jobs, want at least %d", boundaries, n,
                  min_boundaries);
    dbq_stop(q);
    sqlite3_close(reader);
    reader = NULL;
    sleep_us = 0;
}

static void batch_cap_jobs(void)
{
    batch_cap(3 * DBQ_BATCH_JOBS, 0, 2); /* 768 quick jobs: 3 batches at least */
}

static void batch_cap_ms(void)
{
    batch_cap(40, 5000, 3); /* 40 x 5 ms = 200 ms: about 8 batches of 20 ms */
}

static const struct unit_case cases[] = {
    {"a full queue (jobs) hands jobs back unavailable, later; essential ones pass", bound_jobs},
    {"a full queue (bytes) hands jobs back unavailable; a lone big job passes", bound_bytes},
    {"a batch SQLite rolled back reports each job's true outcome", batch_rolled_back},
    {"a batch takes at most DBQ_BATCH_JOBS jobs", batch_cap_jobs},
    {"a batch takes no more jobs once it has run DBQ_BATCH_MS", batch_cap_ms},
};

int main(void)
{
    struct lws_context_creation_info info;
    int rc;

    log_init("test_dbq", LOG_LEVEL_WARN);
    lws_set_log_level(LLL_ERR, NULL);
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    ctx = lws_create_context(&info);
    if (!ctx || !mkdtemp(tmp_dir)) {
        printf("not ok - setup: lws context or mkdtemp %s\n", tmp_dir);
        return 1;
    }
    rc = unit_run(cases, UNIT_COUNT(cases));
    lws_context_destroy(ctx);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp_dir);
    return rc;
}
