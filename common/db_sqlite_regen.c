/* db_sqlite_regen: regenerate (SPEC 9) on SQLite: the session's last user message is
 * queued for a reply again and the replies it had are marked superseded, in one
 * transaction. Not here: the reply itself (the broker stores it with db_reply_add, linked
 * to the message by reply_to). */
#include <stdio.h>
#include <string.h>

#include "db_sqlite.h"
#include "log.h"

/* Runs st (bound by the caller) for its first column of its first row into *v; *found
 * says whether there was a row. Resets st. */
static enum perr one_int(struct db *db, sqlite3_stmt *st, int64_t *v, bool *found, const char *what)
{
    int rc = sqlite3_step(st);

    *found = rc == SQLITE_ROW;
    if (*found)
        *v = sqlite3_column_int64(st, 0);
    db_sqlite_stmt_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PERR_OK
                                                 : db_sqlite_fail(db, "db_sqlite_regenerate", what);
}

/* Marks the shown replies to prompt_id superseded, their ids into out. */
static enum perr supersede(struct db *db, const char *session_id, struct db_regen *out)
{
    static const char sql[] = "UPDATE messages SET status = 'superseded' WHERE session_id = ?1"
                              " AND reply_to = ?2 AND role = 'assistant'"
                              " AND status IS NOT 'superseded' RETURNING id";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int64_t n = 0;
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, out->prompt_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n_superseded < DB_REGEN_TOLD)
            out->superseded[out->n_superseded++] = sqlite3_column_int64(st, 0);
        n++;
    }
    db_sqlite_stmt_done(st);
    if (rc != SQLITE_DONE)
        return db_sqlite_fail(db, "db_sqlite_regenerate", "mark superseded");
    /* RETURNING gives no order: oldest first for the members */
    for (size_t i = 1; i < out->n_superseded; i++)
        for (size_t k = i; k > 0 && out->superseded[k - 1] > out->superseded[k]; k--) {
            int64_t t = out->superseded[k];
            out->superseded[k] = out->superseded[k - 1];
            out->superseded[k - 1] = t;
        }
    out->message_count = -n; /* the session's count is lowered by as many below */
    return PERR_OK;
}

enum perr db_sqlite_regenerate(struct db *db, const char *session_id, struct db_regen *out)
{
    static const char sql_session[] = "SELECT 1 FROM sessions WHERE id = ?1";
    static const char sql_busy[] = "SELECT 1 FROM reply_queue WHERE session_id = ?1 LIMIT 1";
    static const char sql_prompt[] = "SELECT id FROM messages WHERE session_id = ?1"
                                     " AND role = 'user' ORDER BY seq DESC LIMIT 1";
    static const char sql_count[] = "UPDATE sessions SET message_count = message_count + ?2,"
                                    " updated_at = ?3 WHERE id = ?1 RETURNING message_count";
    static const char sql_queue[] = "INSERT INTO reply_queue(message_id, session_id, created_at)"
                                    " VALUES (?1, ?2, ?3)";
    const char *const what[] = {"find the session", "look at the reply queue",
                                "find the last user message"};
    const char *const sqls[] = {sql_session, sql_busy, sql_prompt};
    char now[CLOCK_ISO_LEN];
    sqlite3_stmt *st;
    int64_t v = 0;
    bool found;
    enum perr e;

    clock_now_iso(now);
    if ((e = db_tx_begin(db)))
        return e;
    for (int i = 0; i < 3; i++) {
        if (!(st = db_sqlite_stmt(db, sqls[i]))) {
            e = PERR_UNAVAILABLE;
            goto fail;
        }
        sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
        if ((e = one_int(db, st, &v, &found, what[i])))
            goto fail;
        if (i == 0 && !found) {
            e = PERR_SESSION_NOT_FOUND;
            goto fail;
        }
        if (i == 1 && found) {
            out->busy = true; /* nothing to do: leave the transaction without a write */
            goto fail;
        }
        if (i == 2 && !found) {
            e = PERR_NOT_FOUND;
            goto fail;
        }
    }
    out->prompt_id = v;
    if ((e = supersede(db, session_id, out)))
        goto fail;
    if (!(st = db_sqlite_stmt(db, sql_count))) {
        e = PERR_UNAVAILABLE;
        goto fail;
    }
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, out->message_count);
    sqlite3_bind_text(st, 3, now, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) /* RETURNING: stepped to the end below */
        out->message_count = sqlite3_column_int64(st, 0);
    if (db_sqlite_run(st) != SQLITE_DONE) {
        e = db_sqlite_fail(db, __func__, "count the session");
        goto fail;
    }
    if (!(st = db_sqlite_stmt(db, sql_queue))) {
        e = PERR_UNAVAILABLE;
        goto fail;
    }
    sqlite3_bind_int64(st, 1, out->prompt_id);
    sqlite3_bind_text(st, 2, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, now, -1, SQLITE_STATIC);
    if (db_sqlite_run(st) != SQLITE_DONE) {
        e = db_sqlite_fail(db, __func__, "queue the reply");
        goto fail;
    }
    return db_tx_commit(db);
fail:
    db_tx_rollback(db);
    return e;
}
