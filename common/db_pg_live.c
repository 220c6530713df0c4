/* db_pg_live: how the brokers publish their live figures and how REST reads them, on
 * PostgreSQL (what they are: db_live in db.h; the SQLite twin says more). Each broker
 * writes only its own rows, keyed by its node id. Each call is one statement. Forgetting
 * the dead nodes skips a row another broker holds (SKIP LOCKED): brokers forgetting the
 * same node at once never wait for each other inside their batches. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_pg.h"

/* The nodes silent for DB_LIVE_FORGET_MS ($2, a bigint cut-off), other than this one ($1),
 * as a data-modifying WITH item; their members go with them (ON DELETE CASCADE). */
#define FORGET_DEAD                                                                                \
    " f AS (DELETE FROM broker_state WHERE node_id IN (SELECT node_id FROM broker_state"           \
    " WHERE heartbeat_ms < $2::bigint AND node_id <> $1 FOR UPDATE SKIP LOCKED))"

enum perr db_pg_live_reset(struct db *db, const char *node_id, int pid, const char *model)
{
    static const char sql[] = "WITH d AS (DELETE FROM live_members WHERE node_id = $1)," FORGET_DEAD
                              " INSERT INTO broker_state(node_id, pid, started_at,"
                              " heartbeat_ms, connections, model)"
                              " VALUES ($1, $3, $4::timestamptz, $5, 0, $6)"
                              " ON CONFLICT (node_id) DO UPDATE SET pid = EXCLUDED.pid,"
                              " started_at = EXCLUDED.started_at,"
                              " heartbeat_ms = EXCLUDED.heartbeat_ms, connections = 0,"
                              " model = EXCLUDED.model";
    int64_t now_ms = clock_now_ms();
    char now[CLOCK_ISO_LEN], forget[DB_PG_INT_LEN], pidb[DB_PG_INT_LEN], beat[DB_PG_INT_LEN];
    const char *params[] = {node_id,
                            db_pg_int(forget, now_ms - DB_LIVE_FORGET_MS),
                            db_pg_int(pidb, pid),
                            now,
                            db_pg_int(beat, now_ms),
                            model};

    clock_now_iso(now);
    return db_pg_run(db, __func__, "reset live figures", sql, 6, params, NULL);
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

enum perr db_pg_live_publish(struct db *db, const char *node_id, int64_t now_ms,
                             int64_t connections, const struct db_live_member *changed,
                             size_t n_changed)
{
    /* b: the heartbeat, an upsert since the row is there unless the node was forgotten
     * (db.h); ch: the changes, the last one of a session when it is named twice; a count
     * of 0 (or less) removes the session's row */
    static const char sql[] =
        "WITH b AS (INSERT INTO broker_state(node_id, pid, started_at, heartbeat_ms, connections,"
        " model) VALUES ($1, $3, $4::timestamptz, $5, $6, NULL) ON CONFLICT (node_id) DO UPDATE"
        " SET heartbeat_ms = EXCLUDED.heartbeat_ms,"
        " connections = EXCLUDED.connections)," FORGET_DEAD
        ", ch AS (SELECT DISTINCT ON (session_id) session_id, clients"
        " FROM unnest($7::text[], $8::bigint[]) WITH ORDINALITY AS c(session_id, clients, i)"
        " ORDER BY session_id, i DESC),"
        " d AS (DELETE FROM live_members l USING ch"
        " WHERE l.node_id = $1 AND l.session_id = ch.session_id AND ch.clients <= 0)"
        " INSERT INTO live_members(session_id, node_id, clients)"
        " SELECT session_id, $1, clients FROM ch WHERE clients > 0"
        " ON CONFLICT (session_id, node_id) DO UPDATE SET clients = EXCLUDED.clients";
    char now[CLOCK_ISO_LEN], forget[DB_PG_INT_LEN], pidb[DB_PG_INT_LEN], beat[DB_PG_INT_LEN],
        conns[DB_PG_INT_LEN], *ids, *counts;
    enum perr e;

    if (member_arrays(changed, n_changed, &ids, &counts) < 0)
        return PERR_INTERNAL;
    clock_now_iso(now);
    {
        const char *params[] = {node_id,
                                db_pg_int(forget, now_ms - DB_LIVE_FORGET_MS),
                                db_pg_int(pidb, (int64_t)getpid()),
                                now,
                                db_pg_int(beat, now_ms),
                                db_pg_int(conns, connections),
                                ids,
                                counts};
        e = db_pg_run(db, __func__, "publish live figures", sql, 8, params, NULL);
    }
    free(ids);
    free(counts);
    return e;
}

enum perr db_pg_live_down(struct db *db, const char *node_id)
{
    static const char sql[] = "DELETE FROM broker_state WHERE node_id = $1";
    const char *params[] = {node_id};

    return db_pg_run(db, __func__, "mark broker down", sql, 1, params, NULL);
}

enum perr db_pg_live_read(struct db *db, int64_t now_ms, struct db_live *out)
{
    /* every node (few: the dead ones are forgotten after a minute), in byte order, with
     * the number of sessions that have a member at a live one */
    static const char sql[] = "SELECT node_id, " DB_PG_ISO(
        "started_at") ", model, connections,"
                      " heartbeat_ms, (SELECT count(DISTINCT m.session_id)"
                      " FROM live_members m JOIN broker_state b ON b.node_id = m.node_id"
                      " WHERE b.heartbeat_ms >= $1::bigint)"
                      " FROM broker_state ORDER BY node_id COLLATE \"C\"";
    char cut[DB_PG_INT_LEN];
    const char *params[] = {db_pg_int(cut, now_ms - DB_LIVE_FRESH_MS)};
    enum perr e;
    PGresult *r;

    if (!(r = db_pg_query(db, __func__, "read live figures", sql, 1, params, &e)))
        return e;
    for (int i = 0; i < PQntuples(r); i++) {
        if (db_live_add_node(out, db_pg_text(r, i, 0), db_pg_text(r, i, 1), db_pg_strdup(r, i, 2),
                             db_pg_int64(r, i, 3), db_pg_int64(r, i, 4), now_ms) < 0) {
            PQclear(r);
            db_live_cleanup(out);
            return PERR_INTERNAL;
        }
        out->active_sessions = db_pg_int64(r, i, 5);
    }
    PQclear(r);
    return PERR_OK;
}
