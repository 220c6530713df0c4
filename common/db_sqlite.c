/* db_sqlite: the SQLite backend of the store (db.h): opening the file, migrations, the
 * prepared-statement cache and transactions. The queries themselves live in
 * db_sqlite_sessions.c, db_sqlite_messages.c, db_sqlite_live.c and db_sqlite_keys.c;
 * the table the dispatcher (db.c) calls through is at the end of this file. */

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "db_backend.h"
#include "db_sqlite.h"
#include "log.h"

/* Generated from the schema/ migrations by tools/embed_schema.sh. */
extern const char *const parley_migrations[];
extern const size_t parley_migrations_count;

#define DB_STMT_CACHE      128
#define DB_BUSY_TIMEOUT_MS 5000
#define DB_WAL_LIMIT       "67108864" /* bytes a WAL file is cut back to when it starts over */

struct db_sqlite {
    struct db base;
    sqlite3 *conn;
    int tx_depth;
    size_t n_stmts;
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } stmts[DB_STMT_CACHE];
};

static struct db_sqlite *sq(struct db *base)
{
    return (struct db_sqlite *)base;
}

enum perr db_sqlite_fail(struct db *base, const char *func, const char *what)
{
    struct db_sqlite *db = sq(base);

    log_write(LOG_LEVEL_ERROR, func, "%s: %s (sqlite %d)", what, sqlite3_errmsg(db->conn),
              sqlite3_extended_errcode(db->conn));
    return PERR_UNAVAILABLE;
}

sqlite3_stmt *db_sqlite_stmt(struct db *base, const char *sql)
{
    struct db_sqlite *db = sq(base);
    sqlite3_stmt *st;

    if (db->tx_depth > 0 && sqlite3_get_autocommit(db->conn)) {
        /* SQLite rolled the transaction back by itself (disk full, I/O error): a statement
         * now would commit on its own, outside the work it belongs to. */
        log_error("the transaction was rolled back by SQLite; refusing the statement");
        return NULL;
    }
    for (size_t i = 0; i < db->n_stmts; i++)
        if (db->stmts[i].sql == sql)
            return db->stmts[i].st;
    if (sqlite3_prepare_v3(db->conn, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        db_sqlite_fail(base, __func__, "prepare");
        log_error("the statement was: %s", sql);
        return NULL;
    }
    if (db->n_stmts == DB_STMT_CACHE) {
        /* Every query of the project fits; a full cache is a bug, not a load condition. */
        log_error("statement cache full (%d); raise DB_STMT_CACHE", DB_STMT_CACHE);
        sqlite3_finalize(st);
        return NULL;
    }
    db->stmts[db->n_stmts].sql = sql;
    db->stmts[db->n_stmts].st = st;
    db->n_stmts++;
    return st;
}

void db_sqlite_stmt_done(sqlite3_stmt *st)
{
    if (!st)
        return;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

int db_sqlite_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    if (!s)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
}

char *db_sqlite_column_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);

    return s ? strdup((const char *)s) : NULL;
}

void db_sqlite_column_copy(sqlite3_stmt *st, int col, char *buf, size_t size)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    size_t n = s ? strlen((const char *)s) : 0;

    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(buf, s, n);
    buf[n] = '\0';
}

int db_sqlite_run(sqlite3_stmt *st)
{
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    db_sqlite_stmt_done(st);
    return rc;
}

/* Runs one statement (or several, for migrations) with no parameters. */
static int exec(struct db_sqlite *db, const char *sql, const char *what)
{
    char *err = NULL;

    if (sqlite3_exec(db->conn, sql, NULL, NULL, &err) != SQLITE_OK) {
        log_error("%s: %s", what, err ? err : sqlite3_errmsg(db->conn));
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* As exec, but a statement SQLite answers "busy" or "locked" without waiting (the switch
 * to WAL, BEGIN on a file another process is just creating) is tried again, for up to
 * the busy timeout in all. */
static int exec_retry(struct db_sqlite *db, const char *sql, const char *what)
{
    int64_t until = clock_mono_ms() + DB_BUSY_TIMEOUT_MS;
    int step = 1;

    for (;;) {
        int rc = sqlite3_exec(db->conn, sql, NULL, NULL, NULL);
        int base = rc & 0xff;
        if (rc == SQLITE_OK)
            return 0;
        if ((base != SQLITE_BUSY && base != SQLITE_LOCKED) || clock_mono_ms() >= until) {
            log_error("%s: %s", what, sqlite3_errmsg(db->conn));
            return -1;
        }
        sleep_ms(step);
        step = step < 64 ? step * 2 : 64;
    }
}

int db_sqlite_user_version(struct db *db)
{
    static const char sql[] = "PRAGMA user_version";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int v = -1;

    if (st && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    db_sqlite_stmt_done(st);
    return v;
}

int db_sqlite_schema_version(struct db *db)
{
    return (int)parley_migrations_count;
}

/* Brings the schema forward. BEGIN IMMEDIATE makes two processes opening a new file at
 * once take turns; the version is read inside the transaction, so the second one finds
 * the work done. A file already at the newest version takes no lock at all: a connection
 * opened while someone holds the write lock (a REST worker, the sqlite3 shell) does not
 * wait for it. */
static int migrate(struct db_sqlite *db)
{
    int have, want = (int)parley_migrations_count;
    char pragma[64];

    if (db_sqlite_user_version(&db->base) == want)
        return 0;
    if (exec_retry(db, "BEGIN IMMEDIATE", "migration: begin") < 0)
        return -1;
    have = db_sqlite_user_version(&db->base);
    if (have > want) {
        log_error("the database is at schema version %d but this binary knows only %d: "
                  "run a newer Parley, or point --db at another file",
                  have, want);
        exec(db, "ROLLBACK", "migration: rollback");
        return -1;
    }
    for (int v = have; v < want; v++) {
        if (exec(db, parley_migrations[v], "migration") < 0) {
            log_error("migration to schema version %d failed; the database is unchanged", v + 1);
            exec(db, "ROLLBACK", "migration: rollback");
            return -1;
        }
        log_info("database migrated to schema version %d", v + 1);
    }
    snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", want);
    if (exec(db, pragma, "migration: version") < 0 || exec(db, "COMMIT", "migration") < 0) {
        exec(db, "ROLLBACK", "migration: rollback");
        return -1;
    }
    return 0;
}

struct db *db_sqlite_open(const char *path)
{
    struct db_sqlite *db = calloc(1, sizeof *db);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;

    if (!db || !(db->base.path = strdup(path))) {
        free(db);
        return NULL;
    }
    db->base.be = &db_sqlite_backend;
    if (sqlite3_open_v2(path, &db->conn, flags, NULL) != SQLITE_OK) {
        log_error("cannot open database '%s': %s; check that its folder exists and is "
                  "writable, or set --db",
                  path, db->conn ? sqlite3_errmsg(db->conn) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(db->conn, DB_BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(db->conn, 1);
    if (exec_retry(db, "PRAGMA journal_mode = WAL", "enabling WAL") < 0 ||
        exec(db, "PRAGMA foreign_keys = ON", "enabling foreign keys") < 0 ||
        exec(db, "PRAGMA journal_size_limit = " DB_WAL_LIMIT, "limiting the WAL") < 0 ||
        exec(db, db_full_sync() ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
             "setting synchronous") < 0) {
        log_error("database '%s' is not usable", path);
        goto fail;
    }
    if (migrate(db) < 0)
        goto fail;
    return &db->base;
fail:
    db_sqlite_close(&db->base);
    return NULL;
}

void db_sqlite_close(struct db *base)
{
    struct db_sqlite *db = sq(base);

    for (size_t i = 0; i < db->n_stmts; i++)
        sqlite3_finalize(db->stmts[i].st);
    sqlite3_close(db->conn);
    free(db->base.path);
    free(db);
}

enum perr db_sqlite_no_autocheckpoint(struct db *base)
{
    struct db_sqlite *db = sq(base);
    return exec(db, "PRAGMA wal_autocheckpoint = 0", "turning off autocheckpoint") < 0
               ? PERR_UNAVAILABLE
               : PERR_OK;
}

enum perr db_sqlite_checkpoint(struct db *base, int *wal_frames)
{
    struct db_sqlite *db = sq(base);
    int log_frames = 0, done_frames = 0;
    int rc = sqlite3_wal_checkpoint_v2(db->conn, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                       &done_frames);

    if (wal_frames)
        *wal_frames = rc == SQLITE_OK ? log_frames : -1;
    if (rc == SQLITE_OK || rc == SQLITE_BUSY) /* busy: another checkpoint is running */
        return PERR_OK;
    log_error("checkpoint of '%s' failed: %s; the WAL file keeps growing until one succeeds "
              "(check the disk)",
              db->base.path, sqlite3_errmsg(db->conn));
    return PERR_UNAVAILABLE;
}

enum perr db_sqlite_ping(struct db *db)
{
    static const char sql[] = "SELECT count(*) FROM sessions WHERE 0";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    rc = sqlite3_step(st);
    db_sqlite_stmt_done(st);
    return rc == SQLITE_ROW ? PERR_OK : db_sqlite_fail(db, __func__, "ping");
}

/* ---- transactions ---- */

enum perr db_sqlite_tx_begin(struct db *base)
{
    struct db_sqlite *db = sq(base);
    static const char begin[] = "BEGIN IMMEDIATE";
    static const char savepoint[] = "SAVEPOINT nested";
    sqlite3_stmt *st = db_sqlite_stmt(&db->base, db->tx_depth ? savepoint : begin);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE)
        return db_sqlite_fail(&db->base, __func__, "begin");
    db->tx_depth++;
    return PERR_OK;
}

enum perr db_sqlite_tx_commit(struct db *base)
{
    struct db_sqlite *db = sq(base);
    static const char commit[] = "COMMIT";
    static const char release[] = "RELEASE nested";
    sqlite3_stmt *st;
    int rc;

    assert(db->tx_depth > 0);
    st = db_sqlite_stmt(&db->base, db->tx_depth > 1 ? release : commit);
    if (!st) {
        db_sqlite_tx_rollback(&db->base);
        return PERR_UNAVAILABLE;
    }
    rc = db_sqlite_run(st);
    /* A COMMIT that is busy (a reader in the way of a checkpoint or a journal) leaves the
     * transaction open: try again, for up to the busy timeout. */
    for (int64_t until = clock_mono_ms() + DB_BUSY_TIMEOUT_MS;
         (rc & 0xff) == SQLITE_BUSY && !sqlite3_get_autocommit(db->conn) && clock_mono_ms() < until;
         rc = db_sqlite_run(st))
        sleep_ms(10);
    if (rc != SQLITE_DONE) {
        db_sqlite_fail(&db->base, __func__, "commit");
        db_sqlite_tx_rollback(&db->base);
        return PERR_UNAVAILABLE;
    }
    db->tx_depth--;
    return PERR_OK;
}

bool db_sqlite_tx_open(struct db *base)
{
    struct db_sqlite *db = sq(base);
    return !sqlite3_get_autocommit(db->conn);
}

void db_sqlite_tx_rollback(struct db *base)
{
    struct db_sqlite *db = sq(base);
    if (db->tx_depth <= 0)
        return;
    if (sqlite3_get_autocommit(db->conn))
        ; /* SQLite rolled everything back already */
    else if (db->tx_depth > 1)
        exec(db, "ROLLBACK TO nested; RELEASE nested", "rollback to savepoint");
    else if (!sqlite3_get_autocommit(db->conn))
        exec(db, "ROLLBACK", "rollback");
    db->tx_depth--;
}

enum perr db_sqlite_max_pages(struct db *base, int64_t pages)
{
    struct db_sqlite *db = sq(base);
    char sql[64];

    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages);
    return exec(db, sql, "limiting the file") < 0 ? PERR_UNAVAILABLE : PERR_OK;
}

enum perr db_sqlite_counter_add(struct db *db, const char *name, int64_t delta)
{
    static const char sql[] = "UPDATE counters SET value = value + ?2 WHERE name = ?1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, delta);
    rc = db_sqlite_run(st);
    return rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, __func__, name);
}

enum perr db_sqlite_stats_read(struct db *db, struct db_stats *out)
{
    static const char sql[] = "SELECT (SELECT value FROM counters WHERE name = 'sessions_created'),"
                              " (SELECT coalesce(sum(message_count), 0) FROM sessions),"
                              " (SELECT value FROM counters WHERE name = 'replies_total'),"
                              " (SELECT value FROM counters WHERE name = 'reply_ms_total')";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    enum perr e = PERR_OK;

    if (!st)
        return PERR_UNAVAILABLE;
    if (sqlite3_step(st) == SQLITE_ROW) {
        out->sessions_created = sqlite3_column_int64(st, 0);
        out->messages_total = sqlite3_column_int64(st, 1);
        out->replies_total = sqlite3_column_int64(st, 2);
        out->reply_ms_total = sqlite3_column_int64(st, 3);
    } else {
        e = db_sqlite_fail(db, __func__, "read counters");
    }
    db_sqlite_stmt_done(st);
    return e;
}

const struct db_backend db_sqlite_backend = {
    .kind = "sqlite",
    .has_wal = true,
    .close = db_sqlite_close,
    .user_version = db_sqlite_user_version,
    .schema_version = db_sqlite_schema_version,
    .no_autocheckpoint = db_sqlite_no_autocheckpoint,
    .checkpoint = db_sqlite_checkpoint,
    .ping = db_sqlite_ping,
    .tx_begin = db_sqlite_tx_begin,
    .tx_commit = db_sqlite_tx_commit,
    .tx_rollback = db_sqlite_tx_rollback,
    .tx_open = db_sqlite_tx_open,
    .max_pages = db_sqlite_max_pages,
    .session_create = db_sqlite_session_create,
    .session_update = db_sqlite_session_update,
    .session_get = db_sqlite_session_get,
    .session_by_channel = db_sqlite_session_by_channel,
    .session_list = db_sqlite_session_list,
    .session_delete = db_sqlite_session_delete,
    .session_clear = db_sqlite_session_clear,
    .message_add = db_sqlite_message_add,
    .message_get = db_sqlite_message_get,
    .messages_page = db_sqlite_messages_page,
    .messages_page_each = db_sqlite_messages_page_each,
    .session_last = db_sqlite_session_last,
    .messages_since = db_sqlite_messages_since,
    .messages_after = db_sqlite_messages_after,
    .messages_context = db_sqlite_messages_context,
    .messages_search = db_sqlite_messages_search,
    .search_index = db_sqlite_search_index,
    .reply_add = db_sqlite_reply_add,
    .reply_queue = db_sqlite_reply_queue,
    .reply_claim = db_sqlite_reply_claim,
    .reply_renew = db_sqlite_reply_renew,
    .reply_queue_drop = db_sqlite_reply_queue_drop,
    .regenerate = db_sqlite_regenerate,
    .stats_read = db_sqlite_stats_read,
    .keys_active = db_sqlite_keys_active,
    .key_add = db_sqlite_key_add,
    .key_revoke = db_sqlite_key_revoke,
    .key_list = db_sqlite_key_list,
    .key_hashes = db_sqlite_key_hashes,
    .key_candidates = db_sqlite_key_candidates,
    .quota_take = db_sqlite_quota_take,
    .quota_give_back = db_sqlite_quota_give_back,
    .message_set_key = db_sqlite_message_set_key,
    .quota_tokens = db_sqlite_quota_tokens,
    .key_usage = db_sqlite_key_usage,
    .live_reset = db_sqlite_live_reset,
    .live_publish = db_sqlite_live_publish,
    .live_down = db_sqlite_live_down,
    .live_read = db_sqlite_live_read,
};
