/* db_pg_sessions: creating, reading, changing (reply_mode, title), listing, deleting and
 * clearing sessions, and the
 * figures of /stats, on PostgreSQL. Each is one statement: atomic on its own, inside the
 * caller's transaction when there is one. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_pg.h"
#include "log.h"

/* Columns every session read selects, in this order (see read_session). The member
 * count is the sum of the brokers' last publishes, of those whose heartbeat is at or
 * after CUT. */
#define SESSION_COLS(CUT)                                                                          \
    "s.id, s.title, s.model, s.channel, " CREATED_AT ", " UPDATED_AT ", s.message_count,"          \
    " s.reply_mode,"                                                                               \
    " coalesce((SELECT sum(m.clients) FROM live_members m"                                         \
    " JOIN broker_state b ON b.node_id = m.node_id"                                                \
    " WHERE m.session_id = s.id AND b.heartbeat_ms >= " CUT "::bigint), 0)::bigint"
#define CREATED_AT     DB_PG_ISO("s.created_at")
#define UPDATED_AT     DB_PG_ISO("s.updated_at")
#define SESSION_NCOLS  9
#define SESSION_COLS_2 SESSION_COLS("$2")
#define SESSION_COLS_3 SESSION_COLS("$3")

/* Reads the session in columns first.. of row of r. */
static void read_session(const PGresult *r, int row, int first, struct db_session *s)
{
    memset(s, 0, sizeof *s);
    db_pg_copy(r, row, first, s->id, sizeof s->id);
    s->title = db_pg_strdup(r, row, first + 1);
    s->model = db_pg_strdup(r, row, first + 2);
    s->channel = db_pg_strdup(r, row, first + 3);
    db_pg_copy(r, row, first + 4, s->created_at, sizeof s->created_at);
    db_pg_copy(r, row, first + 5, s->updated_at, sizeof s->updated_at);
    s->message_count = db_pg_int64(r, row, first + 6);
    db_pg_copy(r, row, first + 7, s->reply_mode, sizeof s->reply_mode);
    s->clients = db_pg_int64(r, row, first + 8);
}

/* Reads the one session sql selects with key as $1. */
static enum perr get_one(struct db *db, const char *func, const char *sql, const char *key,
                         struct db_session *out)
{
    char cut[DB_PG_INT_LEN];
    const char *params[] = {key, db_pg_int(cut, db_live_cutoff())};
    enum perr e;
    PGresult *r = db_pg_query(db, func, "read session", sql, 2, params, &e);

    if (!r)
        return e;
    if (PQntuples(r) == 1 && PQnfields(r) == SESSION_NCOLS)
        read_session(r, 0, 0, out);
    else
        e = PERR_SESSION_NOT_FOUND;
    PQclear(r);
    return e;
}

enum perr db_pg_session_get(struct db *db, const char *id, struct db_session *out)
{
    static const char sql[] = "SELECT " SESSION_COLS_2 " FROM sessions s WHERE s.id = $1";

    return get_one(db, __func__, sql, id, out);
}

enum perr db_pg_session_by_channel(struct db *db, const char *channel, struct db_session *out)
{
    static const char sql[] = "SELECT " SESSION_COLS_2 " FROM sessions s WHERE s.channel = $1";

    return get_one(db, __func__, sql, channel, out);
}

enum perr db_pg_session_create(struct db *db, const char *model, const char *title,
                               const char *channel, const char *reply_mode, struct db_session *out)
{
    /* a channel another writer took meanwhile stores nothing (and fails nothing around) */
    static const char sql[] =
        "WITH s AS (INSERT INTO sessions(id, title, model, channel, created_at, updated_at,"
        " reply_mode) VALUES ($1, $2, $3, $4, $5::timestamptz, $5::timestamptz, $6)"
        " ON CONFLICT (channel) WHERE channel IS NOT NULL DO NOTHING RETURNING id)"
        " UPDATE counters SET value = value + 1"
        " WHERE name = 'sessions_created' AND EXISTS (SELECT 1 FROM s)";
    char id[DB_ID_LEN], now[CLOCK_ISO_LEN];
    const char *params[] = {id, title, model, channel, now, reply_mode};
    int64_t created = 0;
    enum perr e;

    if (clock_random_hex(id, DB_ID_HEX / 2) < 0) {
        log_error("no randomness from the kernel for a session id");
        return PERR_INTERNAL;
    }
    clock_now_iso(now);
    if ((e = db_pg_run(db, __func__, "insert session", sql, 6, params, &created)))
        return e;
    if (!created) {
        log_warn("channel %s: made by another writer meanwhile", channel ? channel : "");
        return PERR_UNAVAILABLE;
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

enum perr db_pg_session_update(struct db *db, const char *id, const char *reply_mode,
                               bool set_title, const char *title, struct db_session *out)
{
    /* one statement: the row as it is after the change (the member count as in every read) */
    static const char sql[] =
        "WITH u AS (UPDATE sessions SET reply_mode = coalesce($3, reply_mode),"
        " title = CASE WHEN $4::boolean THEN $5 ELSE title END, updated_at = $6::timestamptz"
        " WHERE id = $1 RETURNING *)"
        " SELECT " SESSION_COLS_2 " FROM u s";
    char cut[DB_PG_INT_LEN], now[CLOCK_ISO_LEN];
    const char *params[] = {
        id, db_pg_int(cut, db_live_cutoff()), reply_mode, set_title ? "t" : "f", title, now};
    enum perr e;
    PGresult *r;

    clock_now_iso(now);
    if (!(r = db_pg_query(db, __func__, "update session", sql, 6, params, &e)))
        return e;
    if (PQntuples(r) == 1 && PQnfields(r) == SESSION_NCOLS)
        read_session(r, 0, 0, out);
    else
        e = PERR_SESSION_NOT_FOUND;
    PQclear(r);
    return e;
}

enum perr db_pg_session_list(struct db *db, int limit, int offset, struct db_session **out,
                             size_t *n, int64_t *total)
{
    /* the count and the page in one read: one row with NULLs when the page is empty */
    static const char sql[] = "SELECT t.total, p.* FROM (SELECT count(*) AS total FROM sessions) t"
                              " LEFT JOIN LATERAL (SELECT " SESSION_COLS_3 " FROM sessions s"
                              " ORDER BY s.updated_at DESC, s.created_at DESC, s.id"
                              " LIMIT $1 OFFSET $2) p ON true";
    char lim[DB_PG_INT_LEN], off[DB_PG_INT_LEN], cut[DB_PG_INT_LEN];
    const char *params[] = {db_pg_int(lim, limit), db_pg_int(off, offset),
                            db_pg_int(cut, db_live_cutoff())};
    struct db_session *v;
    size_t got = 0;
    enum perr e;
    PGresult *r;

    assert(limit >= 0);
    if (!(r = db_pg_query(db, __func__, "list sessions", sql, 3, params, &e)))
        return e;
    *total = PQntuples(r) ? db_pg_int64(r, 0, 0) : 0;
    if (!(v = calloc(PQntuples(r) > 0 ? (size_t)PQntuples(r) : 1, sizeof *v))) {
        PQclear(r);
        return PERR_INTERNAL;
    }
    for (int row = 0; row < PQntuples(r) && got < (size_t)limit; row++)
        if (!PQgetisnull(r, row, 1))
            read_session(r, row, 1, &v[got++]);
    PQclear(r);
    *out = v;
    *n = got;
    return PERR_OK;
}

enum perr db_pg_session_delete(struct db *db, const char *id)
{
    static const char sql[] = "DELETE FROM sessions WHERE id = $1";
    const char *params[] = {id};
    int64_t changed = 0;
    enum perr e = db_pg_run(db, __func__, "delete session", sql, 1, params, &changed);

    if (e)
        return e;
    return changed ? PERR_OK : PERR_SESSION_NOT_FOUND;
}

enum perr db_pg_session_clear(struct db *db, const char *id, int64_t *cleared)
{
    /* last_seq stays: a seq is never used twice, also not after a clear */
    static const char sql[] = "WITH s AS (UPDATE sessions SET message_count = 0,"
                              " updated_at = $2::timestamptz WHERE id = $1 RETURNING id),"
                              " d AS (DELETE FROM messages WHERE session_id IN (SELECT id FROM s)"
                              " RETURNING 1)"
                              " SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM d)";
    char now[CLOCK_ISO_LEN];
    const char *params[] = {id, now};
    enum perr e;
    PGresult *r;

    clock_now_iso(now);
    if (!(r = db_pg_query(db, __func__, "clear session", sql, 2, params, &e)))
        return e;
    if (PQntuples(r) != 1 || db_pg_int64(r, 0, 0) == 0)
        e = PERR_SESSION_NOT_FOUND;
    else
        *cleared = db_pg_int64(r, 0, 1);
    PQclear(r);
    return e;
}

enum perr db_pg_stats_read(struct db *db, struct db_stats *out)
{
    static const char sql[] = "SELECT (SELECT value FROM counters WHERE name = 'sessions_created'),"
                              " (SELECT coalesce(sum(message_count), 0)::bigint FROM sessions),"
                              " (SELECT value FROM counters WHERE name = 'replies_total'),"
                              " (SELECT value FROM counters WHERE name = 'reply_ms_total')";
    enum perr e;
    PGresult *r = db_pg_query(db, __func__, "read counters", sql, 0, NULL, &e);

    if (!r)
        return e;
    out->sessions_created = db_pg_int64(r, 0, 0);
    out->messages_total = db_pg_int64(r, 0, 1);
    out->replies_total = db_pg_int64(r, 0, 2);
    out->reply_ms_total = db_pg_int64(r, 0, 3);
    PQclear(r);
    return PERR_OK;
}
