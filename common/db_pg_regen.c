/* db_pg_regen: regenerate (SPEC 9) on PostgreSQL, as db_sqlite_regen.c: the session's
 * last user message is queued for a reply again and the replies it had are marked
 * superseded, in one transaction. The session row's lock comes first, so a message being
 * stored in the session at that moment (db_pg_message_add takes the same lock) is either
 * before (and is the one answered again) or after. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_pg.h"
#include "log.h"

/* Reads "id,id,..." (ascending) into out. */
static void read_ids(const char *list, struct db_regen *out)
{
    const char *p = list;
    char *end;

    while (p && *p && out->n_superseded < DB_REGEN_TOLD) {
        long long v = strtoll(p, &end, 10);
        if (end == p)
            break;
        out->superseded[out->n_superseded++] = v;
        p = *end == ',' ? end + 1 : NULL;
    }
}

enum perr db_pg_regenerate(struct db *db, const char *session_id, struct db_regen *out)
{
    static const char sql_lock[] = "SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE";
    static const char sql_look[] =
        "SELECT EXISTS (SELECT 1 FROM reply_queue WHERE session_id = $1),"
        " (SELECT id FROM messages WHERE session_id = $1 AND role = 'user'"
        " ORDER BY seq DESC LIMIT 1)";
    /* u marks the shown replies to the message, c lowers the count by as many, q queues
     * the message; the answer: the count after, and the ids marked */
    static const char sql_do[] =
        "WITH u AS (UPDATE messages SET status = 'superseded' WHERE session_id = $1"
        " AND reply_to = $2::bigint AND role = 'assistant'"
        " AND status IS DISTINCT FROM 'superseded' RETURNING id),"
        " c AS (UPDATE sessions SET message_count = message_count - (SELECT count(*) FROM u),"
        " updated_at = $3::timestamptz WHERE id = $1 RETURNING message_count),"
        " q AS (INSERT INTO reply_queue(message_id, session_id, created_at)"
        " VALUES ($2::bigint, $1, $3::timestamptz))"
        " SELECT (SELECT message_count FROM c),"
        " (SELECT string_agg(id::text, ',' ORDER BY id) FROM u)";
    char now[CLOCK_ISO_LEN], pid[DB_PG_INT_LEN];
    const char *params[] = {session_id, NULL, now};
    PGresult *r = NULL;
    enum perr e;

    clock_now_iso(now);
    if ((e = db_tx_begin(db)))
        return e;
    if (!(r = db_pg_query(db, __func__, "lock the session", sql_lock, 1, params, &e)))
        goto fail;
    if (PQntuples(r) != 1) {
        e = PERR_SESSION_NOT_FOUND;
        goto fail;
    }
    PQclear(r);
    if (!(r = db_pg_query(db, __func__, "find the last user message", sql_look, 1, params, &e)))
        goto fail;
    if (PQntuples(r) != 1) {
        e = PERR_INTERNAL;
        goto fail;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
        out->busy = true; /* nothing to do */
        goto fail;
    }
    if (PQgetisnull(r, 0, 1)) {
        e = PERR_NOT_FOUND;
        goto fail;
    }
    out->prompt_id = db_pg_int64(r, 0, 1);
    PQclear(r);
    params[1] = db_pg_int(pid, out->prompt_id);
    if (!(r = db_pg_query(db, __func__, "supersede and queue", sql_do, 3, params, &e)))
        goto fail;
    if (PQntuples(r) != 1) {
        e = PERR_INTERNAL;
        goto fail;
    }
    out->message_count = db_pg_int64(r, 0, 0);
    read_ids(db_pg_text(r, 0, 1), out);
    PQclear(r);
    return db_tx_commit(db);
fail:
    PQclear(r);
    db_tx_rollback(db);
    return e;
}
