/* db_pg_quota: the quota statements of the PostgreSQL backend (db_backend.h; composed with
 * storing messages and replies by db_quota.c): counting a key's messages and tokens per
 * UTC day in key_usage (schema/pg/007_quotas.sql). The count is one upsert that counts
 * only under the quota: a second process at the limit waits for the row's lock and then
 * sees the first one's count, so two cannot both pass. The day is the process's (bound
 * as text), never the server's clock. */
#include <string.h>

#include "db_pg.h"

/* Reads the key's use in day into *messages and *tokens (0 and 0 without a row). */
static enum perr usage(struct db *db, const char *key, const char *day, int64_t *messages,
                       int64_t *tokens, const char *func)
{
    static const char sql[] = "SELECT messages, tokens FROM key_usage WHERE key_name = $1"
                              " AND day = $2::date";
    const char *params[] = {key, day};
    enum perr e;
    PGresult *r = db_pg_query(db, func, "read use", sql, 2, params, &e);

    *messages = *tokens = 0;
    if (!r)
        return e;
    if (PQntuples(r) == 1) {
        *messages = db_pg_int64(r, 0, 0);
        *tokens = db_pg_int64(r, 0, 1);
    }
    PQclear(r);
    return PERR_OK;
}

enum perr db_pg_quota_take(struct db *db, struct db_quota *q, bool *ok)
{
    /* a new row is always under the quota (limits are at least 1); an existing one is
     * counted only while it is under both */
    static const char sql[] =
        "INSERT INTO key_usage(key_name, day, messages, tokens) VALUES ($1, $2::date, 1, 0)"
        " ON CONFLICT (key_name, day) DO UPDATE SET messages = key_usage.messages + 1"
        " WHERE ($3::bigint = 0 OR key_usage.messages < $3::bigint)"
        " AND ($4::bigint = 0 OR key_usage.tokens < $4::bigint)";
    char mb[DB_PG_INT_LEN], tb[DB_PG_INT_LEN];
    const char *params[] = {q->key, q->day, db_pg_int(mb, q->max_messages),
                            db_pg_int(tb, q->max_tokens)};
    int64_t changed = 0;
    enum perr e;

    *ok = false;
    if ((e = db_pg_run(db, __func__, "count the message", sql, 4, params, &changed)))
        return e;
    if (changed > 0) {
        *ok = true;
        return PERR_OK;
    }
    return usage(db, q->key, q->day, &q->messages, &q->tokens, __func__);
}

enum perr db_pg_quota_give_back(struct db *db, const struct db_quota *q)
{
    static const char sql[] = "UPDATE key_usage SET messages = messages - 1"
                              " WHERE key_name = $1 AND day = $2::date AND messages > 0";
    const char *params[] = {q->key, q->day};

    return db_pg_run(db, __func__, "uncount the message", sql, 2, params, NULL);
}

enum perr db_pg_message_set_key(struct db *db, int64_t message_id, const char *key)
{
    static const char sql[] = "UPDATE messages SET key_name = $2 WHERE id = $1::bigint";
    char idb[DB_PG_INT_LEN];
    const char *params[] = {db_pg_int(idb, message_id), key};

    return db_pg_run(db, __func__, "record the key", sql, 2, params, NULL);
}

enum perr db_pg_quota_tokens(struct db *db, int64_t message_id, const char *day, int64_t tokens)
{
    static const char sql[] =
        "INSERT INTO key_usage(key_name, day, messages, tokens)"
        " SELECT key_name, $2::date, 0, $3::bigint FROM messages"
        " WHERE id = $1::bigint AND key_name IS NOT NULL"
        " ON CONFLICT (key_name, day) DO UPDATE SET tokens = key_usage.tokens + excluded.tokens";
    char idb[DB_PG_INT_LEN], tb[DB_PG_INT_LEN];
    const char *params[] = {db_pg_int(idb, message_id), day, db_pg_int(tb, tokens)};

    return db_pg_run(db, __func__, "count the tokens", sql, 3, params, NULL);
}

enum perr db_pg_key_usage(struct db *db, const char *key, const char *day, int64_t *messages,
                          int64_t *tokens)
{
    return usage(db, key, day, messages, tokens, __func__);
}
