/* db_sqlite_live: how the brokers publish their live figures and how REST reads them.
 *
 * Each broker's database thread writes its own broker_state row (a heartbeat with the
 * connection count, keyed by its node id) about once a second, and its own live_members
 * row of each session whose member count changed since its last publish. REST reads them
 * for /health, /stats and /sessions: a heartbeat older than DB_LIVE_FRESH_MS means that
 * broker is down and none of its figures count. The figures are at most about a second
 * old. Not here: what the figures mean to the broker (broker/sessions.c). */
#include <unistd.h>

#include "db_sqlite.h"
#include "log.h"

/* Deletes the nodes silent for DB_LIVE_FORGET_MS, other than node_id (their members go
 * with them: ON DELETE CASCADE). Inside the caller's transaction. Returns SQLITE_DONE or
 * an error. */
static int forget_dead(struct db *db, const char *node_id, int64_t now_ms)
{
    static const char sql[] = "DELETE FROM broker_state WHERE heartbeat_ms < ?1 AND node_id <> ?2";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);

    if (!st)
        return SQLITE_ERROR;
    sqlite3_bind_int64(st, 1, now_ms - DB_LIVE_FORGET_MS);
    sqlite3_bind_text(st, 2, node_id, -1, SQLITE_STATIC);
    return db_sqlite_run(st);
}

enum perr db_sqlite_live_reset(struct db *db, const char *node_id, int pid, const char *model)
{
    static const char sql_del[] = "DELETE FROM live_members WHERE node_id = ?1";
    static const char sql_state[] =
        "INSERT INTO broker_state(node_id, pid, started_at, heartbeat_ms, connections, model)"
        " VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT (node_id) DO UPDATE SET pid = excluded.pid,"
        " started_at = excluded.started_at, heartbeat_ms = excluded.heartbeat_ms,"
        " connections = 0, model = excluded.model";
    char now[CLOCK_ISO_LEN];
    int64_t now_ms = clock_now_ms();
    sqlite3_stmt *st;
    enum perr e;
    int rc;

    clock_now_iso(now);
    if ((e = db_tx_begin(db)))
        return e;
    if (!(st = db_sqlite_stmt(db, sql_del)))
        goto fail;
    sqlite3_bind_text(st, 1, node_id, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE || !(st = db_sqlite_stmt(db, sql_state)))
        goto fail;
    sqlite3_bind_text(st, 1, node_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, pid);
    sqlite3_bind_text(st, 3, now, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms);
    db_sqlite_bind_text(st, 5, model);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE || forget_dead(db, node_id, now_ms) != SQLITE_DONE)
        goto fail;
    return db_tx_commit(db);
fail:
    e = db_sqlite_fail(db, __func__, "reset live figures");
    db_tx_rollback(db);
    return e;
}

enum perr db_sqlite_live_publish(struct db *db, const char *node_id, int64_t now_ms,
                                 int64_t connections, const struct db_live_member *changed,
                                 size_t n_changed)
{
    /* an upsert: the row is there unless the node was forgotten (see db.h) */
    static const char sql_beat[] =
        "INSERT INTO broker_state(node_id, pid, started_at, heartbeat_ms, connections, model)"
        " VALUES (?1, ?2, ?3, ?4, ?5, NULL) ON CONFLICT (node_id) DO UPDATE SET"
        " heartbeat_ms = excluded.heartbeat_ms, connections = excluded.connections";
    static const char sql_set[] = "INSERT OR REPLACE INTO live_members(session_id, node_id,"
                                  " clients) VALUES (?1, ?2, ?3)";
    static const char sql_del[] = "DELETE FROM live_members WHERE session_id = ?1 AND node_id = ?2";
    char now[CLOCK_ISO_LEN];
    sqlite3_stmt *st;
    enum perr e;
    int rc;

    clock_now_iso(now);
    if ((e = db_tx_begin(db)))
        return e;
    if (!(st = db_sqlite_stmt(db, sql_beat)))
        goto fail;
    sqlite3_bind_text(st, 1, node_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, (int)getpid());
    sqlite3_bind_text(st, 3, now, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms);
    sqlite3_bind_int64(st, 5, connections);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE)
        goto fail;
    for (size_t i = 0; i < n_changed; i++) {
        const struct db_live_member *m = &changed[i];
        if (!(st = db_sqlite_stmt(db, m->clients > 0 ? sql_set : sql_del)))
            goto fail;
        sqlite3_bind_text(st, 1, m->session_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, node_id, -1, SQLITE_STATIC);
        if (m->clients > 0)
            sqlite3_bind_int64(st, 3, m->clients);
        rc = db_sqlite_run(st);
        if (rc != SQLITE_DONE)
            goto fail;
    }
    if (forget_dead(db, node_id, now_ms) != SQLITE_DONE)
        goto fail;
    return db_tx_commit(db);
fail:
    e = db_sqlite_fail(db, __func__, "publish live figures");
    db_tx_rollback(db);
    return e;
}

enum perr db_sqlite_live_down(struct db *db, const char *node_id)
{
    static const char sql[] = "DELETE FROM broker_state WHERE node_id = ?1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, node_id, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    return rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, __func__, "mark broker down");
}

enum perr db_sqlite_live_read(struct db *db, int64_t now_ms, struct db_live *out)
{
    /* every node (few: the dead ones are forgotten after a minute), with the number of
     * sessions that have a member at a live one */
    static const char sql[] =
        "SELECT node_id, started_at, model, connections, heartbeat_ms,"
        " (SELECT count(DISTINCT m.session_id) FROM live_members m"
        " JOIN broker_state b ON b.node_id = m.node_id WHERE b.heartbeat_ms >= ?1)"
        " FROM broker_state ORDER BY node_id";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_int64(st, 1, now_ms - DB_LIVE_FRESH_MS);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (db_live_add_node(out, (const char *)sqlite3_column_text(st, 0),
                             (const char *)sqlite3_column_text(st, 1),
                             db_sqlite_column_strdup(st, 2), sqlite3_column_int64(st, 3),
                             sqlite3_column_int64(st, 4), now_ms) < 0) {
            db_sqlite_stmt_done(st);
            db_live_cleanup(out);
            return PERR_INTERNAL;
        }
        out->active_sessions = sqlite3_column_int64(st, 5);
    }
    db_sqlite_stmt_done(st);
    if (rc == SQLITE_DONE)
        return PERR_OK;
    db_live_cleanup(out);
    return db_sqlite_fail(db, __func__, "read live figures");
}
