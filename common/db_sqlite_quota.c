/* db_sqlite_quota: the quota statements of the SQLite backend (db_backend.h; composed with
 * storing messages and replies by db_quota.c): counting a key's messages and tokens per
 * UTC day in key_usage (schema/011_quotas.sql). Writes run in the caller's write
 * transaction (BEGIN IMMEDIATE), which serializes them across processes, so a check and
 * its count cannot be split by another writer. */
#include <string.h>

#include "db_sqlite.h"

/* Reads the key's use in day into *messages and *tokens (0 and 0 without a row). */
static enum perr usage(struct db *db, const char *key, const char *day, int64_t *messages,
                       int64_t *tokens, const char *func)
{
    static const char sql[] = "SELECT messages, tokens FROM key_usage WHERE key_name = ?1"
                              " AND day = ?2";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    *messages = *tokens = 0;
    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, day, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *messages = sqlite3_column_int64(st, 0);
        *tokens = sqlite3_column_int64(st, 1);
    }
    db_sqlite_stmt_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, func, "read use");
}

enum perr db_sqlite_quota_take(struct db *db, struct db_quota *q, bool *ok)
{
    /* a new row is always under the quota (limits are at least 1); an existing one is
     * counted only while it is under both */
    static const char sql[] =
        "INSERT INTO key_usage(key_name, day, messages, tokens) VALUES (?1, ?2, 1, 0)"
        " ON CONFLICT (key_name, day) DO UPDATE SET messages = messages + 1"
        " WHERE (?3 = 0 OR messages < ?3) AND (?4 = 0 OR tokens < ?4)";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    *ok = false;
    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, q->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, q->day, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, q->max_messages);
    sqlite3_bind_int64(st, 4, q->max_tokens);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE)
        return db_sqlite_fail(db, __func__, "count the message");
    if (sqlite3_changes(sqlite3_db_handle(st)) > 0) {
        *ok = true;
        return PERR_OK;
    }
    return usage(db, q->key, q->day, &q->messages, &q->tokens, __func__);
}

enum perr db_sqlite_quota_give_back(struct db *db, const struct db_quota *q)
{
    static const char sql[] = "UPDATE key_usage SET messages = messages - 1"
                              " WHERE key_name = ?1 AND day = ?2 AND messages > 0";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, q->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, q->day, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    return rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, __func__, "uncount the message");
}

enum perr db_sqlite_message_set_key(struct db *db, int64_t message_id, const char *key)
{
    static const char sql[] = "UPDATE messages SET key_name = ?2 WHERE id = ?1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_int64(st, 1, message_id);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    return rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, __func__, "record the key");
}

enum perr db_sqlite_quota_tokens(struct db *db, int64_t message_id, const char *day, int64_t tokens)
{
    static const char sql[] =
        "INSERT INTO key_usage(key_name, day, messages, tokens)"
        " SELECT key_name, ?2, 0, ?3 FROM messages WHERE id = ?1 AND key_name IS NOT NULL"
        " ON CONFLICT (key_name, day) DO UPDATE SET tokens = tokens + excluded.tokens";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_int64(st, 1, message_id);
    sqlite3_bind_text(st, 2, day, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, tokens);
    rc = db_sqlite_run(st);
    return rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, __func__, "count the tokens");
}

enum perr db_sqlite_key_usage(struct db *db, const char *key, const char *day, int64_t *messages,
                              int64_t *tokens)
{
    return usage(db, key, day, messages, tokens, __func__);
}
