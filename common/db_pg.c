/* db_pg: the PostgreSQL backend's connection (libpq): opening it from a postgres:// URI,
 * migrations, the prepared-statement cache, transactions, and making a lost connection
 * anew. The queries live in db_pg_sessions.c, db_pg_messages.c, db_pg_keys.c and
 * db_pg_live.c; the table of this backend (db_backend.h) is at the end.
 *
 * Not here: anything about a server's durability (synchronous_commit, fsync are the
 * server's settings) or TLS and passwords, which come through the URI, the environment
 * and ~/.pgpass as libpq reads them. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_pg.h"
#include "log.h"

/* Generated from the schema/pg/ migrations by tools/embed_schema.sh. */
extern const char *const parley_pg_migrations[];
extern const size_t parley_pg_migrations_count;

#define DB_PG_RETRY_MS        200 /* at most one new connection tried this often */
#define DB_PG_CONNECT_TIMEOUT "5" /* seconds, when the URI does not say */
/* The pg_advisory_lock key that makes migrations of several processes take turns. */
#define DB_PG_MIGRATION_LOCK "8097879414873337197" /* "parley-m" as a big-endian bigint */

static struct db_pg *pg(struct db *db)
{
    return (struct db_pg *)db;
}

/* ---- columns and parameters ---- */

const char *db_pg_int(char buf[DB_PG_INT_LEN], int64_t v)
{
    snprintf(buf, DB_PG_INT_LEN, "%lld", (long long)v);
    return buf;
}

int64_t db_pg_int64(const PGresult *r, int row, int col)
{
    const char *s = PQgetvalue(r, row, col);
    char *end;
    long long v;

    if (PQgetisnull(r, row, col) || !*s)
        return 0;
    v = strtoll(s, &end, 10);
    return *end ? 0 : (int64_t)v;
}

const char *db_pg_text(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

char *db_pg_strdup(const PGresult *r, int row, int col)
{
    const char *s = db_pg_text(r, row, col);

    return s ? strdup(s) : NULL;
}

void db_pg_copy(const PGresult *r, int row, int col, char *buf, size_t size)
{
    const char *s = db_pg_text(r, row, col);
    size_t n = s ? (size_t)PQgetlength(r, row, col) : 0;

    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(buf, s, n);
    buf[n] = '\0';
}

/* ---- the connection ---- */

/* The first line of a libpq message, without its newline, into buf. */
static const char *first_line(const char *msg, char *buf, size_t size)
{
    size_t n = msg ? strcspn(msg, "\n") : 0;

    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(buf, msg, n);
    buf[n] = '\0';
    return n ? buf : "no message from libpq";
}

/* Server notices (a migration's "already exists, skipping", a search with no word in it)
 * are not errors: they go to the debug log. */
static void on_notice(void *arg, const char *message)
{
    char line[512];

    log_debug("database %s: %s", (const char *)arg, first_line(message, line, sizeof line));
}

/* What the URI names, for logs: host, port, database and user, never the password.
 * Returns a new string, or NULL when the URI is not one libpq reads. */
static char *describe(const char *uri)
{
    static const char *const keys[] = {"host", "hostaddr", "port", "dbname", "user"};
    PQconninfoOption *opts = PQconninfoParse(uri, NULL);
    char buf[512];
    size_t len = 0;

    if (!opts)
        return NULL;
    buf[0] = '\0';
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        for (PQconninfoOption *o = opts; o->keyword; o++)
            if (strcmp(o->keyword, keys[k]) == 0 && o->val && *o->val && len < sizeof buf) {
                int n = snprintf(buf + len, sizeof buf - len, "%s%s=%s", len ? " " : "", keys[k],
                                 o->val);
                len = n < 0 ? len : len + (size_t)n;
            }
    PQconninfoFree(opts);
    return strdup(len ? buf : "(libpq defaults)");
}

/* What every new server connection is set to: READ COMMITTED (seq order relies on it:
 * db_pg_messages.c), and a lock wait bounded as SQLite's busy timeout is, unless the
 * server or the role already bounds it. Returns 0 or -1 (logged). */
static int session_setup(struct db_pg *p)
{
    static const char sql[] =
        "SELECT set_config('default_transaction_isolation', 'read committed', false),"
        " CASE WHEN current_setting('lock_timeout') = '0'"
        " THEN set_config('lock_timeout', '5s', false) END";
    PGresult *r = PQexec(p->conn, sql);
    char line[512];
    int rc = PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;

    if (rc < 0)
        log_error("database %s: setting up the connection: %s", p->where,
                  first_line(PQerrorMessage(p->conn), line, sizeof line));
    PQclear(r);
    return rc;
}

/* Marks the connection lost (logged once per outage, not per call). */
static void lost(struct db_pg *p, const char *func, const char *msg)
{
    if (p->down)
        return;
    p->down = true;
    log_write(LOG_LEVEL_ERROR, func,
              "database %s: connection lost (%s); calls fail until it is back, tried again"
              " at most every %d ms",
              p->where, msg, DB_PG_RETRY_MS);
}

/* Makes the connection anew, at most once per DB_PG_RETRY_MS. Returns whether it is up.
 * Only outside a transaction. */
static bool reconnect(struct db_pg *p)
{
    int64_t now = clock_mono_ms();
    char line[512];

    assert(p->tx_depth == 0);
    if (now < p->retry_ms)
        return false;
    p->retry_ms = now + DB_PG_RETRY_MS;
    PQreset(p->conn); /* the same parameters; connect_timeout bounds a dead host */
    p->n_stmts = 0;   /* a new server session holds no prepared statement */
    if (PQstatus(p->conn) != CONNECTION_OK) {
        log_debug("database %s: still down: %s", p->where,
                  first_line(PQerrorMessage(p->conn), line, sizeof line));
        return false;
    }
    if (session_setup(p) < 0)
        return false;
    p->down = false;
    log_info("database %s: connected again", p->where);
    return true;
}

/* Whether a statement may be sent now. Outside a transaction, a connection that was
 * lost (or that the server closed while idle: read without waiting) is made anew; inside
 * one, a lost or spoiled transaction refuses every statement until it is rolled back, so
 * nothing meant for it commits on its own. */
static bool ready(struct db_pg *p, const char *func)
{
    if (p->tx_depth == 0) {
        if (!p->down && (!PQconsumeInput(p->conn) || PQstatus(p->conn) != CONNECTION_OK)) {
            char line[512];
            lost(p, func, first_line(PQerrorMessage(p->conn), line, sizeof line));
        }
        return !p->down || reconnect(p);
    }
    if (!p->down && PQtransactionStatus(p->conn) == PQTRANS_INTRANS)
        return true;
    if (!p->spoil_logged) {
        p->spoil_logged = true;
        log_write(LOG_LEVEL_WARN, func,
                  "database %s: the transaction %s; refusing statements"
                  " until it is rolled back",
                  p->where, p->down ? "was lost with the connection" : "failed");
    }
    return false;
}

/* Takes a statement's result: r when it succeeded, else NULL after clearing it and
 * logging (a lost connection once per outage). */
static PGresult *check(struct db_pg *p, PGresult *r, const char *func, const char *what)
{
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    const char *state, *msg;
    char line[512];

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    /* the primary message only: a DETAIL may quote the row, a message's content */
    msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = first_line(PQerrorMessage(p->conn), line, sizeof line);
    if (PQstatus(p->conn) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57P0", 4) == 0) /* admin or crash shutdown, starting up */
        lost(p, func, msg);
    else
        log_write(LOG_LEVEL_ERROR, func, "database %s: %s: %s (sqlstate %s)", p->where, what, msg,
                  state);
    PQclear(r);
    return NULL;
}

/* Runs a statement without parameters (transaction control, migrations). */
static PGresult *control(struct db_pg *p, const char *func, const char *sql, const char *what)
{
    if (!ready(p, func))
        return NULL;
    return check(p, PQexec(p->conn, sql), func, what);
}

/* The name of the prepared statement for sql, preparing it on first use. NULL after
 * logging. */
static const char *prepared(struct db_pg *p, const char *func, const char *sql, char name[16])
{
    PGresult *r;
    size_t i;

    for (i = 0; i < p->n_stmts; i++)
        if (p->stmts[i] == sql)
            break;
    snprintf(name, 16, "p%zu", i);
    if (i < p->n_stmts)
        return name;
    if (i == DB_PG_STMT_CACHE) {
        /* Every query of the project fits; a full cache is a bug, not a load condition. */
        log_error("statement cache full (%d); raise DB_PG_STMT_CACHE", DB_PG_STMT_CACHE);
        return NULL;
    }
    if (!(r = check(p, PQprepare(p->conn, name, sql, 0, NULL), func, "prepare"))) {
        if (!p->down)
            log_error("the statement was: %s", sql);
        return NULL;
    }
    PQclear(r);
    p->stmts[p->n_stmts++] = sql;
    return name;
}

PGresult *db_pg_query(struct db *db, const char *func, const char *what, const char *sql, int n,
                      const char *const *params, enum perr *e)
{
    struct db_pg *p = pg(db);
    const char *stmt;
    char name[16];
    PGresult *r;

    *e = PERR_UNAVAILABLE;
    if (!ready(p, func) || !(stmt = prepared(p, func, sql, name)))
        return NULL;
    r = check(p, PQexecPrepared(p->conn, stmt, n, params, NULL, NULL, 0), func, what);
    if (r)
        *e = PERR_OK;
    return r;
}

enum perr db_pg_run(struct db *db, const char *func, const char *what, const char *sql, int n,
                    const char *const *params, int64_t *changed)
{
    enum perr e;
    PGresult *r = db_pg_query(db, func, what, sql, n, params, &e);

    if (r && changed) {
        char *end;
        const char *s = PQcmdTuples(r);
        long long v = strtoll(s, &end, 10);
        *changed = *s && !*end ? (int64_t)v : 0;
    }
    PQclear(r);
    return e;
}

/* ---- migrations ---- */

/* Reads schema_version (0 when the table is not there yet). Returns 0 or -1 (logged). */
static int read_version(struct db_pg *p, int *v)
{
    PGresult *r;

    *v = -1;
    r = control(p, __func__, "SELECT to_regclass('schema_version') IS NOT NULL", "version");
    if (!r)
        return -1;
    if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        PQclear(r);
        *v = 0;
        return 0;
    }
    PQclear(r);
    if (!(r = control(p, __func__, "SELECT version FROM schema_version", "version")))
        return -1;
    *v = PQntuples(r) ? (int)db_pg_int64(r, 0, 0) : 0;
    PQclear(r);
    return 0;
}

static bool run_ok(struct db_pg *p, const char *sql, const char *what)
{
    PGresult *r = control(p, "migrate", sql, what);

    PQclear(r);
    return r != NULL;
}

static void newer(struct db_pg *p, int have, int want)
{
    log_write(LOG_LEVEL_ERROR, "db_pg_open",
              "database %s is at schema version %d but this binary knows only %d: run a newer"
              " Parley, or point --db at another database",
              p->where, have, want);
}

/* Brings the schema forward. An advisory lock makes processes starting at once take
 * turns (the later ones wait as long as the migration takes); the version is read again
 * under it, so the second finds the work done. Each migration commits on its own with
 * its version. A database already at the newest version takes no lock. Returns 0 or -1
 * (logged). */
static int migrate(struct db_pg *p)
{
    int have, want = (int)parley_pg_migrations_count;
    char sql[96];
    bool locked;
    PGresult *r;
    int rc = -1;

    if (read_version(p, &have) < 0)
        return -1;
    if (have == want)
        return 0;
    if (have > want) {
        newer(p, have, want);
        return -1;
    }
    if (!(r = control(p, "migrate", "SELECT pg_try_advisory_lock(" DB_PG_MIGRATION_LOCK ")",
                      "migration: lock")))
        return -1;
    locked = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!locked) {
        log_info("database %s: another process is migrating it; waiting", p->where);
        if (!run_ok(p, "SELECT pg_advisory_lock(" DB_PG_MIGRATION_LOCK ")", "migration: lock"))
            return -1;
    }
    if (read_version(p, &have) < 0)
        goto out;
    if (have > want) {
        newer(p, have, want);
        goto out;
    }
    if (have == 0 && !run_ok(p,
                             "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);"
                             " INSERT INTO schema_version SELECT 0"
                             " WHERE NOT EXISTS (SELECT 1 FROM schema_version)",
                             "migration: schema_version"))
        goto out;
    for (int v = have; v < want; v++) {
        snprintf(sql, sizeof sql, "UPDATE schema_version SET version = %d", v + 1);
        if (!run_ok(p, "BEGIN", "migration: begin") ||
            !run_ok(p, parley_pg_migrations[v], "migration") ||
            !run_ok(p, sql, "migration: version") || !run_ok(p, "COMMIT", "migration: commit")) {
            log_error("migration of database %s to schema version %d failed; the database is"
                      " at version %d",
                      p->where, v + 1, v);
            if (PQtransactionStatus(p->conn) != PQTRANS_IDLE)
                PQclear(PQexec(p->conn, "ROLLBACK"));
            goto out;
        }
        log_info("database %s migrated to schema version %d", p->where, v + 1);
    }
    rc = 0;
out:
    if (rc == 0 &&
        !run_ok(p, "SELECT pg_advisory_unlock(" DB_PG_MIGRATION_LOCK ")", "migration: unlock"))
        rc = -1; /* on failure the lock goes with the connection */
    return rc;
}

/* ---- opening and closing ---- */

struct db *db_pg_open(const char *uri)
{
    /* Later entries win over the URI's, earlier ones give way to it (expand_dbname). */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                                "client_encoding", NULL};
    const char *const vals[] = {DB_PG_CONNECT_TIMEOUT, "parley", uri, "UTF8", NULL};
    struct db_pg *p = calloc(1, sizeof *p);
    const char *enc;
    char line[512];

    if (!p || !(p->base.path = strdup(uri))) {
        free(p);
        return NULL;
    }
    p->base.be = &db_pg_backend;
    if (!(p->where = describe(uri))) {
        /* libpq's reason could quote the URI, password and all */
        log_error("--db is not a PostgreSQL connection URI libpq can read: see "
                  "postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]");
        goto fail;
    }
    p->conn = PQconnectdbParams(keys, vals, 1);
    if (!p->conn) {
        log_error("database %s: out of memory", p->where);
        goto fail;
    }
    PQsetNoticeProcessor(p->conn, on_notice, p->where);
    if (PQstatus(p->conn) != CONNECTION_OK) {
        log_error("cannot connect to PostgreSQL database %s: %s; check that the server runs"
                  " and accepts this user, or set --db",
                  p->where, first_line(PQerrorMessage(p->conn), line, sizeof line));
        goto fail;
    }
    enc = PQparameterStatus(p->conn, "server_encoding");
    if (!enc || strcmp(enc, "UTF8") != 0) {
        /* all text is UTF-8: another encoding fails on some characters, or stores any
         * bytes and searches them wrong */
        log_error("database %s is in encoding %s; Parley needs UTF8: make one with"
                  " createdb -E UTF8 -T template0 NAME",
                  p->where, enc ? enc : "(unknown)");
        goto fail;
    }
    /* migrations first: a long one by another process is waited for without lock_timeout */
    if (migrate(p) < 0 || session_setup(p) < 0)
        goto fail;
    log_debug("database %s: open (server %d)", p->where, PQserverVersion(p->conn));
    return &p->base;
fail:
    db_pg_close(&p->base);
    return NULL;
}

void db_pg_close(struct db *db)
{
    struct db_pg *p = pg(db);

    if (!p)
        return;
    PQfinish(p->conn); /* NULL is fine; an open transaction is rolled back by the server */
    free(p->where);
    free(p->base.path);
    free(p);
}

int db_pg_user_version(struct db *db)
{
    static const char sql[] = "SELECT version FROM schema_version";
    enum perr e;
    PGresult *r = db_pg_query(db, __func__, "read the schema version", sql, 0, NULL, &e);
    int v = r && PQntuples(r) ? (int)db_pg_int64(r, 0, 0) : -1;

    PQclear(r);
    return v;
}

int db_pg_schema_version(struct db *db)
{
    (void)db;
    return (int)parley_pg_migrations_count;
}

enum perr db_pg_no_autocheckpoint(struct db *db)
{
    (void)db;
    return PERR_OK; /* the server checkpoints */
}

enum perr db_pg_checkpoint(struct db *db, int *wal_frames)
{
    (void)db;
    if (wal_frames)
        *wal_frames = 0;
    return PERR_OK;
}

enum perr db_pg_ping(struct db *db)
{
    static const char sql[] = "SELECT 1";

    return db_pg_run(db, __func__, "ping", sql, 0, NULL, NULL);
}

enum perr db_pg_max_pages(struct db *db, int64_t pages)
{
    (void)db;
    (void)pages;
    return PERR_UNAVAILABLE; /* SQLite only */
}

/* ---- transactions ---- */

/* The outermost level takes, with BEGIN, the lock every write takes on the service's
 * tables (ROW EXCLUSIVE: writers do not conflict with each other, nor with readers,
 * pg_dump or autovacuum). So, as SQLite's BEGIN IMMEDIATE, a transaction that would wait
 * for a table someone locked (LOCK TABLE in psql, CREATE INDEX) waits at its start, up
 * to lock_timeout, and fails whole: a batch of writes is one failure, not one wait per
 * statement. */
enum perr db_pg_tx_begin(struct db *db)
{
    static const char begin[] =
        "BEGIN; LOCK TABLE sessions, messages, reply_queue, counters,"
        " broker_state, live_members, api_keys, key_usage IN ROW EXCLUSIVE MODE";
    struct db_pg *p = pg(db);
    PGresult *r = control(p, __func__, p->tx_depth ? "SAVEPOINT nested" : begin, "begin");

    if (!r) {
        if (p->tx_depth == 0 && !p->down && PQtransactionStatus(p->conn) == PQTRANS_INERROR)
            PQclear(PQexec(p->conn, "ROLLBACK")); /* the lock was not had */
        return PERR_UNAVAILABLE;
    }
    PQclear(r);
    p->tx_depth++;
    return PERR_OK;
}

enum perr db_pg_tx_commit(struct db *db)
{
    struct db_pg *p = pg(db);
    PGresult *r;
    bool ok;

    assert(p->tx_depth > 0);
    r = control(p, __func__, p->tx_depth > 1 ? "RELEASE nested" : "COMMIT", "commit");
    /* COMMIT of a transaction the server had aborted answers ROLLBACK, not an error */
    ok = r && (p->tx_depth > 1 || strcmp(PQcmdStatus(r), "COMMIT") == 0);
    PQclear(r);
    if (!ok) {
        db_pg_tx_rollback(db);
        return PERR_UNAVAILABLE;
    }
    p->tx_depth--;
    return PERR_OK;
}

void db_pg_tx_rollback(struct db *db)
{
    struct db_pg *p = pg(db);
    PGTransactionStatusType ts;

    if (p->tx_depth <= 0)
        return;
    ts = p->down ? PQTRANS_UNKNOWN : PQtransactionStatus(p->conn);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) /* else lost: nothing to undo */
        PQclear(check(
            p, PQexec(p->conn, p->tx_depth > 1 ? "ROLLBACK TO nested; RELEASE nested" : "ROLLBACK"),
            __func__, "rollback"));
    p->tx_depth--;
    p->spoil_logged = false;
}

bool db_pg_tx_open(struct db *db)
{
    struct db_pg *p = pg(db);
    PGTransactionStatusType ts;

    if (p->tx_depth == 0 || p->down)
        return false;
    ts = PQtransactionStatus(p->conn);
    /* a failed statement inside a savepoint is mended by rolling that level back */
    return ts == PQTRANS_INTRANS || (ts == PQTRANS_INERROR && p->tx_depth > 1);
}

/* ---- the table ---- */

const struct db_backend db_pg_backend = {
    .kind = "postgresql",
    .has_wal = false,
    .close = db_pg_close,
    .user_version = db_pg_user_version,
    .schema_version = db_pg_schema_version,
    .no_autocheckpoint = db_pg_no_autocheckpoint,
    .checkpoint = db_pg_checkpoint,
    .ping = db_pg_ping,
    .max_pages = db_pg_max_pages,
    .tx_begin = db_pg_tx_begin,
    .tx_commit = db_pg_tx_commit,
    .tx_rollback = db_pg_tx_rollback,
    .tx_open = db_pg_tx_open,
    .session_create = db_pg_session_create,
    .session_update = db_pg_session_update,
    .session_get = db_pg_session_get,
    .session_by_channel = db_pg_session_by_channel,
    .session_list = db_pg_session_list,
    .session_delete = db_pg_session_delete,
    .session_clear = db_pg_session_clear,
    .message_add = db_pg_message_add,
    .message_get = db_pg_message_get,
    .messages_page = db_pg_messages_page,
    .messages_page_each = db_pg_messages_page_each,
    .session_last = db_pg_session_last,
    .messages_since = db_pg_messages_since,
    .messages_after = db_pg_messages_after,
    .messages_context = db_pg_messages_context,
    .messages_search = db_pg_messages_search,
    .search_index = db_pg_search_index,
    .reply_add = db_pg_reply_add,
    .reply_queue = db_pg_reply_queue,
    .reply_claim = db_pg_reply_claim,
    .reply_renew = db_pg_reply_renew,
    .reply_queue_drop = db_pg_reply_queue_drop,
    .regenerate = db_pg_regenerate,
    .stats_read = db_pg_stats_read,
    .keys_active = db_pg_keys_active,
    .key_add = db_pg_key_add,
    .key_revoke = db_pg_key_revoke,
    .key_list = db_pg_key_list,
    .key_hashes = db_pg_key_hashes,
    .key_candidates = db_pg_key_candidates,
    .quota_take = db_pg_quota_take,
    .quota_give_back = db_pg_quota_give_back,
    .message_set_key = db_pg_message_set_key,
    .quota_tokens = db_pg_quota_tokens,
    .key_usage = db_pg_key_usage,
    .live_reset = db_pg_live_reset,
    .live_publish = db_pg_live_publish,
    .live_down = db_pg_live_down,
    .live_read = db_pg_live_read,
};
