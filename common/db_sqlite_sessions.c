/* db_sqlite_sessions: creating, reading, changing (reply_mode, title), listing, deleting and
 * clearing sessions. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_sqlite.h"
#include "log.h"

/* Columns every session read selects, in this order (see read_session). The member
 * count is the sum of the brokers' last publishes, of those whose heartbeat is fresh
 * (at or after ?9). */
#define SESSION_COLS                                                                               \
    "s.id, s.title, s.model, s.channel, s.created_at, s.updated_at, s.message_count,"              \
    " s.reply_mode,"                                                                               \
    " coalesce((SELECT sum(m.clients) FROM live_members m"                                         \
    " JOIN broker_state b ON b.node_id = m.node_id"                                                \
    " WHERE m.session_id = s.id AND b.heartbeat_ms >= ?9), 0)"

static void read_session(sqlite3_stmt *st, struct db_session *s)
{
    db_sqlite_column_copy(st, 0, s->id, sizeof s->id);
    s->title = db_sqlite_column_strdup(st, 1);
    s->model = db_sqlite_column_strdup(st, 2);
    s->channel = db_sqlite_column_strdup(st, 3);
    db_sqlite_column_copy(st, 4, s->created_at, sizeof s->created_at);
    db_sqlite_column_copy(st, 5, s->updated_at, sizeof s->updated_at);
    s->message_count = sqlite3_column_int64(st, 6);
    db_sqlite_column_copy(st, 7, s->reply_mode, sizeof s->reply_mode);
    s->clients = sqlite3_column_int64(st, 8);
}

/* Reads the one session st selects (bound by the caller). */
static enum perr get_one(struct db *db, sqlite3_stmt *st, struct db_session *out)
{
    int rc;

    sqlite3_bind_int64(st, 9, db_live_cutoff());
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof *out);
        read_session(st, out);
    }
    db_sqlite_stmt_done(st);
    if (rc == SQLITE_ROW)
        return PERR_OK;
    return rc == SQLITE_DONE ? PERR_SESSION_NOT_FOUND
                             : db_sqlite_fail(db, __func__, "read session");
}

enum perr db_sqlite_session_get(struct db *db, const char *id, struct db_session *out)
{
    static const char sql[] = "SELECT " SESSION_COLS " FROM sessions s WHERE s.id = ?1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    return get_one(db, st, out);
}

enum perr db_sqlite_session_by_channel(struct db *db, const char *channel, struct db_session *out)
{
    static const char sql[] = "SELECT " SESSION_COLS " FROM sessions s WHERE s.channel = ?1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, channel, -1, SQLITE_STATIC);
    return get_one(db, st, out);
}

enum perr db_sqlite_session_create(struct db *db, const char *model, const char *title,
                                   const char *channel, const char *reply_mode,
                                   struct db_session *out)
{
    static const char sql[] = "INSERT INTO sessions(id, title, model, channel, created_at,"
                              " updated_at, reply_mode) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)";
    sqlite3_stmt *st;
    char id[DB_ID_LEN], now[CLOCK_ISO_LEN];
    enum perr e;
    int rc;

    if (clock_random_hex(id, DB_ID_HEX / 2) < 0) {
        log_error("no randomness from the kernel for a session id");
        return PERR_INTERNAL;
    }
    clock_now_iso(now);
    if ((e = db_tx_begin(db)))
        return e;
    st = db_sqlite_stmt(db, sql);
    if (!st) {
        db_tx_rollback(db);
        return PERR_UNAVAILABLE;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    db_sqlite_bind_text(st, 2, title);
    db_sqlite_bind_text(st, 3, model);
    db_sqlite_bind_text(st, 4, channel);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, reply_mode, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE) {
        e = db_sqlite_fail(db, __func__, "insert session");
        db_tx_rollback(db);
        return e;
    }
    if ((e = db_sqlite_counter_add(db, "sessions_created", 1)) || (e = db_tx_commit(db))) {
        db_tx_rollback(db);
        return e;
    }
    memset(out, 0, sizeof *out);
    memcpy(out->id, id, sizeof id);
    out->title = title ? strdup(title) : NULL;
    out->model = strdup(model);
    out->channel = channel ? strdup(channel) : NULL;
    snprintf(out->reply_mode, sizeof out->reply_mode, "%s", reply_mode);
    memcpy(out->created_at, now, sizeof now);
    memcpy(out->updated_at, now, sizeof now);
    return PERR_OK;
}

enum perr db_sqlite_session_update(struct db *db, const char *id, const char *reply_mode,
                                   bool set_title, const char *title, struct db_session *out)
{
    static const char sql[] = "UPDATE sessions SET reply_mode = coalesce(?2, reply_mode),"
                              " title = CASE WHEN ?3 THEN ?4 ELSE title END, updated_at = ?5"
                              " WHERE id = ?1";
    sqlite3_stmt *st;
    char now[CLOCK_ISO_LEN];
    enum perr e;
    int rc;

    clock_now_iso(now);
    if ((e = db_tx_begin(db)))
        return e;
    if (!(st = db_sqlite_stmt(db, sql))) {
        db_tx_rollback(db);
        return PERR_UNAVAILABLE;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    db_sqlite_bind_text(st, 2, reply_mode);
    sqlite3_bind_int(st, 3, set_title);
    db_sqlite_bind_text(st, 4, title);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE) {
        e = db_sqlite_fail(db, __func__, "update session");
        db_tx_rollback(db);
        return e;
    }
    if (sqlite3_changes(sqlite3_db_handle(st)) == 0) {
        db_tx_rollback(db);
        return PERR_SESSION_NOT_FOUND;
    }
    if ((e = db_sqlite_session_get(db, id, out))) {
        db_tx_rollback(db);
        return e;
    }
    if ((e = db_tx_commit(db))) {
        db_session_cleanup(out);
        db_tx_rollback(db);
    }
    return e;
}

enum perr db_sqlite_session_list(struct db *db, int limit, int offset, struct db_session **out,
                                 size_t *n, int64_t *total)
{
    static const char sql_count[] = "SELECT count(*) FROM sessions";
    static const char sql[] = "SELECT " SESSION_COLS " FROM sessions s"
                              " ORDER BY s.updated_at DESC, s.created_at DESC, s.id"
                              " LIMIT ?1 OFFSET ?2";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql_count);
    struct db_session *v;
    size_t got = 0;
    int rc;

    assert(limit >= 0);
    if (!st)
        return PERR_UNAVAILABLE;
    rc = sqlite3_step(st);
    *total = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    db_sqlite_stmt_done(st);
    if (rc != SQLITE_ROW)
        return db_sqlite_fail(db, __func__, "count sessions");
    if (!(st = db_sqlite_stmt(db, sql)))
        return PERR_UNAVAILABLE;
    v = calloc(limit > 0 ? (size_t)limit : 1, sizeof *v);
    if (!v) {
        db_sqlite_stmt_done(st);
        return PERR_INTERNAL;
    }
    sqlite3_bind_int(st, 1, limit);
    sqlite3_bind_int(st, 2, offset);
    sqlite3_bind_int64(st, 9, db_live_cutoff());
    while (got < (size_t)limit && (rc = sqlite3_step(st)) == SQLITE_ROW)
        read_session(st, &v[got++]);
    db_sqlite_stmt_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        db_session_list_free(v, got);
        return db_sqlite_fail(db, __func__, "list sessions");
    }
    *out = v;
    *n = got;
    return PERR_OK;
}

enum perr db_sqlite_session_delete(struct db *db, const char *id)
{
    static const char sql[] = "DELETE FROM sessions WHERE id = ?1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE)
        return db_sqlite_fail(db, __func__, "delete session");
    return sqlite3_changes(sqlite3_db_handle(st)) ? PERR_OK : PERR_SESSION_NOT_FOUND;
}

enum perr db_sqlite_session_clear(struct db *db, const char *id, int64_t *cleared)
{
    static const char sql_del[] = "DELETE FROM messages WHERE session_id = ?1";
    static const char sql_upd[] = "UPDATE sessions SET message_count = 0, updated_at = ?2"
                                  " WHERE id = ?1";
    sqlite3_stmt *st;
    char now[CLOCK_ISO_LEN];
    enum perr e;
    int rc;

    clock_now_iso(now);
    if ((e = db_tx_begin(db)))
        return e;
    if (!(st = db_sqlite_stmt(db, sql_upd)))
        goto fail;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, now, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE)
        goto fail;
    if (sqlite3_changes(sqlite3_db_handle(st)) == 0) {
        db_tx_rollback(db);
        return PERR_SESSION_NOT_FOUND;
    }
    if (!(st = db_sqlite_stmt(db, sql_del)))
        goto fail;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE)
        goto fail;
    *cleared = sqlite3_changes(sqlite3_db_handle(st));
    return db_tx_commit(db);
fail:
    e = db_sqlite_fail(db, __func__, "clear session");
    db_tx_rollback(db);
    return e;
}
