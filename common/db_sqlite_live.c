/* db_sqlite_live: how the broker publishes its live figures and how REST reads them.
 *
 * The broker's database thread writes broker_state (a heartbeat with the connection
 * count) about once a second, and a row of live_members for each session whose member
 * count changed since the last publish. REST reads them for /health, /stats and
 * /sessions; a heartbeat older than DB_LIVE_FRESH_MS means the broker is down and every
 * figure reads as 0. The figures are at most about a second old. */
#include "db_sqlite.h"
#include "log.h"

enum perr db_sqlite_live_reset(struct db *db, int pid, const char *model)
{
    static const char sql_del[] = "DELETE FROM live_members";
    static const char sql_state[] =
        "INSERT OR REPLACE INTO broker_state(id, pid, started_at, heartbeat_ms, connections,"
        " model) VALUES (1, ?1, ?2, ?3, 0, ?4)";
    char now[CLOCK_ISO_LEN];
    sqlite3_stmt *st;
    enum perr e;
    int rc;

    clock_now_iso(now);
    if ((e = db_tx_begin(db)))
        return e;
    if (!(st = db_sqlite_stmt(db, sql_del)))
        goto fail;
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE || !(st = db_sqlite_stmt(db, sql_state)))
        goto fail;
    sqlite3_bind_int(st, 1, pid);
    sqlite3_bind_text(st, 2, now, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, clock_now_ms());
    db_sqlite_bind_text(st, 4, model);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE)
        goto fail;
    return db_tx_commit(db);
fail:
    e = db_sqlite_fail(db, __func__, "reset live figures");
    db_tx_rollback(db);
    return e;
}

enum perr db_sqlite_live_publish(struct db *db, int64_t now_ms, int64_t connections,
                                 const struct db_live_member *changed, size_t n_changed)
{
    static const char sql_beat[] =
        "UPDATE broker_state SET heartbeat_ms = ?1, connections = ?2 WHERE id = 1";
    static const char sql_set[] =
        "INSERT OR REPLACE INTO live_members(session_id, clients) VALUES (?1, ?2)";
    static const char sql_del[] = "DELETE FROM live_members WHERE session_id = ?1";
    sqlite3_stmt *st;
    enum perr e;
    int rc;

    if ((e = db_tx_begin(db)))
        return e;
    if (!(st = db_sqlite_stmt(db, sql_beat)))
        goto fail;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, connections);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE)
        goto fail;
    for (size_t i = 0; i < n_changed; i++) {
        const struct db_live_member *m = &changed[i];
        if (!(st = db_sqlite_stmt(db, m->clients > 0 ? sql_set : sql_del)))
            goto fail;
        sqlite3_bind_text(st, 1, m->session_id, -1, SQLITE_STATIC);
        if (m->clients > 0)
            sqlite3_bind_int64(st, 2, m->clients);
        rc = db_sqlite_run(st);
        if (rc != SQLITE_DONE)
            goto fail;
    }
    return db_tx_commit(db);
fail:
    e = db_sqlite_fail(db, __func__, "publish live figures");
    db_tx_rollback(db);
    return e;
}

enum perr db_sqlite_live_down(struct db *db)
{
    static const char sql[] = "UPDATE broker_state SET heartbeat_ms = 0, connections = 0";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    rc = db_sqlite_run(st);
    return rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, __func__, "mark broker down");
}

enum perr db_sqlite_live_read(struct db *db, int64_t now_ms, struct db_live *out)
{
    static const char sql[] =
        "SELECT heartbeat_ms, connections, (SELECT count(*) FROM live_members)"
        " FROM broker_state WHERE id = 1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    out->up = false;
    out->connections = out->active_sessions = out->heartbeat_ms = 0;
    if (!st)
        return PERR_UNAVAILABLE;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->heartbeat_ms = sqlite3_column_int64(st, 0);
        out->up = out->heartbeat_ms >= now_ms - DB_LIVE_FRESH_MS;
        if (out->up) {
            out->connections = sqlite3_column_int64(st, 1);
            out->active_sessions = sqlite3_column_int64(st, 2);
        }
    }
    db_sqlite_stmt_done(st);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return PERR_OK;
    return db_sqlite_fail(db, __func__, "read live figures");
}
