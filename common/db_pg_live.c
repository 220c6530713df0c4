/* db_pg_live: how the broker publishes its live figures and how REST reads them, on
 * PostgreSQL (what they are: db_live in db.h). One broker for now: broker_state has the
 * single row id = 1. Each call is one statement. */
#include <stdlib.h>
#include <string.h>

#include "db_pg.h"

enum perr db_pg_live_reset(struct db *db, int pid, const char *model)
{
    static const char sql[] = "WITH d AS (DELETE FROM live_members)"
                              " INSERT INTO broker_state(id, pid, started_at, heartbeat_ms,"
                              " connections, model) VALUES (1, $1, $2::timestamptz, $3, 0, $4)"
                              " ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid,"
                              " started_at = EXCLUDED.started_at,"
                              " heartbeat_ms = EXCLUDED.heartbeat_ms, connections = 0,"
                              " model = EXCLUDED.model";
    char now[CLOCK_ISO_LEN], pidb[DB_PG_INT_LEN], beat[DB_PG_INT_LEN];
    const char *params[] = {db_pg_int(pidb, pid), now, db_pg_int(beat, clock_now_ms()), model};

    clock_now_iso(now);
    return db_pg_run(db, __func__, "reset live figures", sql, 4, params, NULL);
}

/* The changed members as two array literals, {"id",...} and {n,...} (new strings:
 * free). Returns 0, or -1 without memory. */
static int member_arrays(const struct db_live_member *changed, size_t n, char **ids, char **counts)
{
    size_t id_cap = 3, count_cap = 3, il = 0, cl = 0;

    for (size_t i = 0; i < n; i++) {
        id_cap += 2 * strlen(changed[i].session_id) + 3;
        count_cap += DB_PG_INT_LEN + 1;
    }
    *ids = malloc(id_cap);
    *counts = malloc(count_cap);
    if (!*ids || !*counts) {
        free(*ids);
        free(*counts);
        return -1;
    }
    (*ids)[il++] = '{';
    (*counts)[cl++] = '{';
    for (size_t i = 0; i < n; i++) {
        char num[DB_PG_INT_LEN];
        size_t len = strlen(db_pg_int(num, changed[i].clients));
        if (i) {
            (*ids)[il++] = ',';
            (*counts)[cl++] = ',';
        }
        (*ids)[il++] = '"';
        for (const char *s = changed[i].session_id; *s; s++) {
            if (*s == '"' || *s == '\\')
                (*ids)[il++] = '\\';
            (*ids)[il++] = *s;
        }
        (*ids)[il++] = '"';
        memcpy(*counts + cl, num, len);
        cl += len;
    }
    (*ids)[il++] = '}';
    (*counts)[cl++] = '}';
    (*ids)[il] = '\0';
    (*counts)[cl] = '\0';
    return 0;
}

enum perr db_pg_live_publish(struct db *db, int64_t now_ms, int64_t connections,
                             const struct db_live_member *changed, size_t n_changed)
{
    /* ch: the changes, the last one of a session when it is named twice; a count of 0
     * (or less) removes the session's row */
    static const char sql[] =
        "WITH b AS (UPDATE broker_state SET heartbeat_ms = $1, connections = $2 WHERE id = 1),"
        " ch AS (SELECT DISTINCT ON (session_id) session_id, clients"
        " FROM unnest($3::text[], $4::bigint[]) WITH ORDINALITY AS c(session_id, clients, i)"
        " ORDER BY session_id, i DESC),"
        " d AS (DELETE FROM live_members l USING ch"
        " WHERE l.session_id = ch.session_id AND ch.clients <= 0)"
        " INSERT INTO live_members(session_id, clients)"
        " SELECT session_id, clients FROM ch WHERE clients > 0"
        " ON CONFLICT (session_id) DO UPDATE SET clients = EXCLUDED.clients";
    char beat[DB_PG_INT_LEN], conns[DB_PG_INT_LEN], *ids, *counts;
    enum perr e;

    if (member_arrays(changed, n_changed, &ids, &counts) < 0)
        return PERR_INTERNAL;
    {
        const char *params[] = {db_pg_int(beat, now_ms), db_pg_int(conns, connections), ids,
                                counts};
        e = db_pg_run(db, __func__, "publish live figures", sql, 4, params, NULL);
    }
    free(ids);
    free(counts);
    return e;
}

enum perr db_pg_live_down(struct db *db)
{
    static const char sql[] = "UPDATE broker_state SET heartbeat_ms = 0, connections = 0";

    return db_pg_run(db, __func__, "mark broker down", sql, 0, NULL, NULL);
}

enum perr db_pg_live_read(struct db *db, int64_t now_ms, struct db_live *out)
{
    static const char sql[] = "SELECT heartbeat_ms, connections,"
                              " (SELECT count(*) FROM live_members)"
                              " FROM broker_state WHERE id = 1";
    enum perr e;
    PGresult *r;

    out->up = false;
    out->connections = out->active_sessions = out->heartbeat_ms = 0;
    if (!(r = db_pg_query(db, __func__, "read live figures", sql, 0, NULL, &e)))
        return e;
    if (PQntuples(r) == 1) {
        out->heartbeat_ms = db_pg_int64(r, 0, 0);
        out->up = out->heartbeat_ms >= now_ms - DB_LIVE_FRESH_MS;
        if (out->up) {
            out->connections = db_pg_int64(r, 0, 1);
            out->active_sessions = db_pg_int64(r, 0, 2);
        }
    }
    PQclear(r);
    return PERR_OK;
}
