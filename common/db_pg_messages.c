/* db_pg_messages: storing messages and replies, the reply queue and its leases (SPEC 8),
 * and reading history pages, on PostgreSQL. Within a session every read is in seq order;
 * a message id that marks a place (since, before, up_to) is turned into a seq bound by the
 * SQL of SEQ_* below.
 *
 * A message or a reply is stored, and a lease claimed, by one statement (one round trip,
 * no savepoint): a store takes the session row's lock, so writers of one session take
 * turns and commit order is seq order; inside the caller's transaction when there is one
 * (the broker's group commit), else a transaction of its own. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_pg.h"
#include "log.h"

/* Columns every message read selects, in this order (see read_message). */
#define MESSAGE_COLS                                                                               \
    "id, session_id, role, content, " DB_PG_ISO(                                                   \
        "created_at") ", connection_id, client_msg_id,"                                            \
                      " thread_id, status, seq, author_name"
#define MESSAGE_NCOLS 11
/* A default history view (SPEC 9): without the replies regenerate superseded; with the
 * boolean parameter P true, every message. */
#define SHOWN(P)        " AND (" P " OR status IS DISTINCT FROM 'superseded')"
#define REPLY_QUEUE_MAX 10000
#define ADD_TRIES       8 /* a store looked at anew while others write to the session */

/* A place given as a message id P in session S (db.h), as a seq: the message's own, or
 * where the id would be when the session does not hold it. Within a session ids grow
 * with seq (both are taken under the session row's lock), so the message with the
 * highest id below P also has the highest seq there: one index lookup each. */
#define SEQ_OF(S, P) "(SELECT seq FROM messages WHERE session_id = " S " AND id = " P ")"
/* messages up to the place, it included: seq <= this; after it: seq > this */
#define SEQ_UPTO(S, P)                                                                             \
    "coalesce(" SEQ_OF(S, P) ", (SELECT seq FROM messages WHERE session_id = " S " AND id <= " P   \
                             " ORDER BY id DESC LIMIT 1), 0)"
/* messages before the place: seq < this */
#define SEQ_BELOW(S, P)                                                                            \
    "coalesce(" SEQ_OF(S, P) ", (SELECT seq + 1 FROM messages WHERE session_id = " S               \
                             " AND id < " P " ORDER BY id DESC LIMIT 1), 0)"

/* The places as the statements below bind them: session $1, the id in $2 (or $3, $4). */
#define BELOW_2 SEQ_BELOW("$1", "$2::bigint")
#define BELOW_4 SEQ_BELOW("$1", "$4::bigint")
#define UPTO_2  SEQ_UPTO("$1", "$2::bigint")
#define UPTO_3  SEQ_UPTO("$1", "$3::bigint")

/* Reads the message in columns first.. of row of r into m (new copies). */
static void read_message(const PGresult *r, int row, int first, struct db_message *m)
{
    memset(m, 0, sizeof *m);
    m->id = db_pg_int64(r, row, first);
    db_pg_copy(r, row, first + 1, m->session_id, sizeof m->session_id);
    db_pg_copy(r, row, first + 2, m->role, sizeof m->role);
    m->content = db_pg_strdup(r, row, first + 3);
    if (!m->content)
        m->content = strdup("");
    db_pg_copy(r, row, first + 4, m->created_at, sizeof m->created_at);
    m->connection_id = db_pg_strdup(r, row, first + 5);
    m->client_msg_id = db_pg_strdup(r, row, first + 6);
    m->thread_id = db_pg_strdup(r, row, first + 7);
    m->status = db_pg_strdup(r, row, first + 8);
    m->seq = db_pg_int64(r, row, first + 9);
    m->author_name = db_pg_strdup(r, row, first + 10);
}

/* Fills m with pointers into r's row (no copies): valid until PQclear(r). */
static void view_message(const PGresult *r, int row, struct db_message *m)
{
    memset(m, 0, sizeof *m);
    m->id = db_pg_int64(r, row, 0);
    db_pg_copy(r, row, 1, m->session_id, sizeof m->session_id);
    db_pg_copy(r, row, 2, m->role, sizeof m->role);
    m->content = (char *)db_pg_text(r, row, 3);
    if (!m->content)
        m->content = "";
    db_pg_copy(r, row, 4, m->created_at, sizeof m->created_at);
    m->connection_id = (char *)db_pg_text(r, row, 5);
    m->client_msg_id = (char *)db_pg_text(r, row, 6);
    m->thread_id = (char *)db_pg_text(r, row, 7);
    m->status = (char *)db_pg_text(r, row, 8);
    m->seq = db_pg_int64(r, row, 9);
    m->author_name = (char *)db_pg_text(r, row, 10);
}

static void reverse_list(struct db_message_list *l)
{
    for (size_t i = 0; i < l->n / 2; i++) {
        struct db_message t = l->v[i];
        l->v[i] = l->v[l->n - 1 - i];
        l->v[l->n - 1 - i] = t;
    }
}

/* Runs sql and reads up to limit of its rows (MESSAGE_COLS) into out. */
static enum perr read_list(struct db *db, const char *func, const char *sql, int n,
                           const char *const *params, int limit, struct db_message_list *out)
{
    enum perr e;
    PGresult *r;
    size_t got = 0;
    int rows;

    out->n = 0;
    out->v = NULL;
    if (!(r = db_pg_query(db, func, "read messages", sql, n, params, &e)))
        return e;
    rows = PQntuples(r) < limit ? PQntuples(r) : limit;
    if (!(out->v = calloc(rows > 0 ? (size_t)rows : 1, sizeof *out->v))) {
        PQclear(r);
        return PERR_INTERNAL;
    }
    for (int row = 0; row < rows; row++)
        read_message(r, row, 0, &out->v[got++]);
    PQclear(r);
    out->n = got;
    return PERR_OK;
}

enum perr db_pg_message_get(struct db *db, int64_t id, struct db_message *out)
{
    static const char sql[] = "SELECT " MESSAGE_COLS " FROM messages WHERE id = $1";
    char idb[DB_PG_INT_LEN];
    const char *params[] = {db_pg_int(idb, id)};
    enum perr e;
    PGresult *r = db_pg_query(db, __func__, "read message", sql, 1, params, &e);

    if (!r)
        return e;
    if (PQntuples(r) == 1)
        read_message(r, 0, 0, out);
    else
        e = PERR_NOT_FOUND;
    PQclear(r);
    return e;
}

/* Fills out with what was just stored (the copies SQLite's backend makes too). */
static void stored(struct db_message *out, int64_t id, int64_t seq, const struct db_message_in *in,
                   const char *status, const char *now)
{
    memset(out, 0, sizeof *out);
    out->id = id;
    out->seq = seq;
    snprintf(out->session_id, sizeof out->session_id, "%s", in->session_id);
    snprintf(out->role, sizeof out->role, "%s", in->role);
    memcpy(out->created_at, now, CLOCK_ISO_LEN);
    out->content = strdup(in->content);
    out->connection_id = in->connection_id ? strdup(in->connection_id) : NULL;
    out->client_msg_id = in->client_msg_id ? strdup(in->client_msg_id) : NULL;
    out->thread_id = in->thread_id ? strdup(in->thread_id) : NULL;
    out->status = status ? strdup(status) : NULL;
    out->author_name = in->author_name ? strdup(in->author_name) : NULL;
}

/* Storing a message (db_pg_message_add) is one of four statements: with or without a
 * client_msg_id, with or without a reply queued. s takes the session's next seq, count
 * and updated_at: the UPDATE takes the row's lock (waiting for another writer of the
 * session) and works on the row as that writer committed it. m stores the message with
 * that seq, q queues it for a reply. The answer is one row: the new message's id, seq
 * and the count; or (all NULL) the id of the message the client_msg_id stored before;
 * or neither, and whether the session exists.
 * With a client_msg_id, dup (read in the statement's snapshot) is only the truth if no
 * message was committed to the session after the snapshot was taken. Every store bumps
 * last_seq, so s stores only when last_seq is still what the snapshot saw; else neither
 * comes back and the statement is run anew, with a snapshot that sees the other writer's
 * message. */
#define ADD_S                                                                                      \
    " s AS (UPDATE sessions SET last_seq = last_seq + 1, message_count = message_count + 1,"       \
    " updated_at = $4::timestamptz WHERE id = $1"
#define ADD_S_END " RETURNING last_seq, message_count),"
#define ADD_PLAIN "WITH" ADD_S ADD_S_END
#define ADD_DUP                                                                                    \
    "WITH dup AS (SELECT id FROM messages WHERE session_id = $1 AND client_msg_id = $6)," ADD_S    \
    " AND NOT EXISTS (SELECT 1 FROM dup)"                                                          \
    " AND last_seq = (SELECT last_seq FROM sessions WHERE id = $1)" ADD_S_END
#define ADD_M                                                                                      \
    " m AS (INSERT INTO messages(session_id, seq, role, content, created_at, connection_id,"       \
    " client_msg_id, thread_id, author_name) SELECT $1, s.last_seq, $2, $3, $4::timestamptz, $5,"  \
    " $6, $7, $8"                                                                                  \
    " FROM s RETURNING id)"
#define ADD_Q                                                                                      \
    ", q AS (INSERT INTO reply_queue(message_id, session_id, created_at)"                          \
    " SELECT id, $1, $4::timestamptz FROM m ON CONFLICT DO NOTHING)"
#define ADD_NEW     " SELECT m.id, s.last_seq, s.message_count"
#define ADD_NEW_END " FROM m, s"
/* no session: no row; the session exists, is read only when nothing was stored */
#define ADD_NEW_OR_DUP                                                                             \
    " SELECT (SELECT id FROM m), (SELECT last_seq FROM s), (SELECT message_count FROM s),"         \
    " (SELECT id FROM dup) WHERE EXISTS (SELECT 1 FROM m)"                                         \
    " OR EXISTS (SELECT 1 FROM dup) OR EXISTS (SELECT 1 FROM sessions WHERE id = $1)"

/* Reads the message a client_msg_id stored before, and its session's count. */
static enum perr read_dup(struct db *db, int64_t id, const char *session_id, struct db_message *out,
                          int64_t *message_count)
{
    static const char sql[] = "SELECT " MESSAGE_COLS ", (SELECT message_count FROM sessions"
                              " WHERE id = $2) FROM messages WHERE id = $1";
    char idb[DB_PG_INT_LEN];
    const char *params[] = {db_pg_int(idb, id), session_id};
    enum perr e;
    PGresult *r =
        db_pg_query(db, "db_pg_message_add", "read the stored message", sql, 2, params, &e);

    if (!r)
        return e;
    if (PQntuples(r) == 1) {
        read_message(r, 0, 0, out);
        if (message_count)
            *message_count = db_pg_int64(r, 0, MESSAGE_NCOLS);
    } else {
        e = PERR_SESSION_NOT_FOUND; /* deleted meanwhile, with its session */
    }
    PQclear(r);
    return e;
}

enum perr db_pg_message_add(struct db *db, const struct db_message_in *in, struct db_message *out,
                            bool *duplicate, int64_t *message_count)
{
    static const char sql_plain[] = ADD_PLAIN ADD_M ADD_NEW ", NULL" ADD_NEW_END;
    static const char sql_plain_q[] = ADD_PLAIN ADD_M ADD_Q ADD_NEW ", NULL" ADD_NEW_END;
    static const char sql_dup[] = ADD_DUP ADD_M ADD_NEW_OR_DUP;
    static const char sql_dup_q[] = ADD_DUP ADD_M ADD_Q ADD_NEW_OR_DUP;
    const char *sql = in->client_msg_id ? (in->want_reply ? sql_dup_q : sql_dup)
                                        : (in->want_reply ? sql_plain_q : sql_plain);
    char now[CLOCK_ISO_LEN];
    const char *params[] = {in->session_id,    in->role,          in->content,   now,
                            in->connection_id, in->client_msg_id, in->thread_id, in->author_name};
    enum perr e;
    PGresult *r;

    if (duplicate)
        *duplicate = false;
    clock_now_iso(now);
    for (int tries = 0; tries < ADD_TRIES; tries++) {
        int64_t id, dup_id;
        if (!(r = db_pg_query(db, __func__, "store message", sql, 8, params, &e)))
            return e;
        if (PQntuples(r) == 0 || PQnfields(r) != 4) {
            PQclear(r);
            return PERR_SESSION_NOT_FOUND;
        }
        id = db_pg_int64(r, 0, 0);
        dup_id = db_pg_int64(r, 0, 3);
        if (id) {
            if (message_count)
                *message_count = db_pg_int64(r, 0, 2);
            stored(out, id, db_pg_int64(r, 0, 1), in, NULL, now);
            PQclear(r);
            return PERR_OK;
        }
        PQclear(r);
        if (dup_id) {
            if ((e = read_dup(db, dup_id, in->session_id, out, message_count)))
                return e;
            if (duplicate)
                *duplicate = true;
            return PERR_OK;
        }
        /* neither: another writer stored a message meanwhile */
        log_debug("session %s: another writer stored a message meanwhile; looking again",
                  in->session_id);
    }
    log_error("message of session %s: other writers kept storing first (%d tries); giving up",
              in->session_id, ADD_TRIES);
    return PERR_UNAVAILABLE;
}

enum perr db_pg_reply_add(struct db *db, const struct db_reply_in *rin, struct db_message *out,
                          int64_t *message_count)
{
    /* l: with an owner ($12), the queue row of the user message answered ($11) while the
     * owner holds its lease, locked (waiting for a broker claiming it at this moment, and
     * then looking at the row as it left it); s takes the session's next seq (and its
     * row's lock) only without an owner or with l, m stores the reply with that seq, q
     * drops the user message from the queue unless keep_queued ($13), c counts the reply
     * for /stats: every stored reply, an interrupted one kept queued too (replies_total is
     * the assistant messages ever stored, as for stopped and error ones). The answer is
     * one row: the reply's id and seq and the count (NULL when nothing was stored),
     * whether the lease was held, whether the session exists. */
    static const char sql[] =
        "WITH l AS (SELECT 1 FROM reply_queue WHERE message_id = $11::bigint AND owner = $12"
        " FOR UPDATE),"
        " s AS (UPDATE sessions SET last_seq = last_seq + 1,"
        " message_count = message_count + 1, updated_at = $3::timestamptz WHERE id = $1"
        " AND ($12::text IS NULL OR EXISTS (SELECT 1 FROM l))"
        " RETURNING last_seq, message_count),"
        " m AS (INSERT INTO messages(session_id, seq, role, content, created_at, model, status,"
        " prompt_tokens, completion_tokens, duration_ms, reasoning, error, reply_to)"
        " SELECT $1, s.last_seq, 'assistant', $2, $3::timestamptz, $4, $5, $6::bigint,"
        " $7::bigint, $8::bigint, $9, $10, nullif($11::bigint, 0) FROM s RETURNING id, seq),"
        " q AS (DELETE FROM reply_queue WHERE message_id = $11::bigint AND NOT $13::boolean"
        " AND EXISTS (SELECT 1 FROM m)),"
        " c AS (UPDATE counters SET value = value"
        " + CASE name WHEN 'replies_total' THEN 1 ELSE $8::bigint END"
        " WHERE name IN ('replies_total', 'reply_ms_total') AND EXISTS (SELECT 1 FROM m))"
        " SELECT (SELECT id FROM m), (SELECT seq FROM m), (SELECT message_count FROM s),"
        " $12::text IS NULL OR EXISTS (SELECT 1 FROM l),"
        " EXISTS (SELECT 1 FROM sessions WHERE id = $1)";
    struct db_message_in in = {
        .session_id = rin->session_id, .role = "assistant", .content = rin->content};
    char now[CLOCK_ISO_LEN], pt[DB_PG_INT_LEN], ct[DB_PG_INT_LEN], ms[DB_PG_INT_LEN],
        to[DB_PG_INT_LEN];
    const char *params[] = {rin->session_id,
                            rin->content,
                            now,
                            rin->model,
                            rin->status,
                            rin->prompt_tokens >= 0 ? db_pg_int(pt, rin->prompt_tokens) : NULL,
                            rin->completion_tokens >= 0 ? db_pg_int(ct, rin->completion_tokens)
                                                        : NULL,
                            db_pg_int(ms, rin->duration_ms),
                            rin->reasoning,
                            rin->error,
                            db_pg_int(to, rin->reply_to),
                            rin->owner,
                            rin->keep_queued ? "true" : "false"};
    enum perr e;
    PGresult *r;

    clock_now_iso(now);
    if (!(r = db_pg_query(db, __func__, "store reply", sql, 13, params, &e)))
        return e;
    if (PQntuples(r) != 1 || PQnfields(r) != 5) {
        PQclear(r);
        return PERR_INTERNAL;
    }
    if (PQgetisnull(r, 0, 0)) { /* nothing stored: the session is gone, or the lease */
        bool held = strcmp(PQgetvalue(r, 0, 3), "t") == 0;
        bool session = strcmp(PQgetvalue(r, 0, 4), "t") == 0;
        PQclear(r);
        return session && !held ? PERR_NOT_FOUND : PERR_SESSION_NOT_FOUND;
    }
    if (message_count)
        *message_count = db_pg_int64(r, 0, 2);
    stored(out, db_pg_int64(r, 0, 0), db_pg_int64(r, 0, 1), &in, rin->status, now);
    PQclear(r);
    return PERR_OK;
}

enum perr db_pg_messages_page(struct db *db, const char *session_id, int limit, int64_t before,
                              bool all, struct db_message_list *out, bool *has_more)
{
    /* One row more than asked tells whether older messages exist. */
    static const char sql[] = "SELECT " MESSAGE_COLS " FROM messages"
                              " WHERE session_id = $1 AND seq < " BELOW_2 SHOWN(
                                  "$4::boolean") " ORDER BY seq DESC LIMIT $3";
    char b[DB_PG_INT_LEN], l[DB_PG_INT_LEN];
    const char *params[] = {session_id, db_pg_int(b, before > 0 ? before : INT64_MAX),
                            db_pg_int(l, (int64_t)limit + 1), all ? "true" : "false"};
    enum perr e;

    assert(limit >= 0);
    if ((e = read_list(db, __func__, sql, 4, params, limit + 1, out)))
        return e;
    *has_more = out->n > (size_t)limit;
    if (*has_more) {
        out->n--;
        db_message_cleanup(&out->v[out->n]);
    }
    reverse_list(out);
    return PERR_OK;
}

enum perr db_pg_messages_page_each(struct db *db, const char *session_id, int limit, int64_t before,
                                   bool all, bool *has_more, db_message_fn fn, void *arg)
{
    /* p: the newest `limit` before `before`, as many as fit in the byte cap (at least
     * one: the running total counts content from the newest down); then whether any older
     * message exists. Content beyond the cap never leaves the server. */
    static const char sql[] =
        "WITH p AS (SELECT * FROM (SELECT " MESSAGE_COLS ","
        " sum(octet_length(content)) OVER w AS bytes, row_number() OVER w AS n FROM messages"
        " WHERE session_id = $1 AND seq < " BELOW_2 SHOWN(
            "$5::boolean") " WINDOW w AS (ORDER BY seq DESC) ORDER BY seq DESC LIMIT $3) t"
                           " WHERE n = 1 OR bytes <= $4)"
                           " SELECT p.*, EXISTS (SELECT 1 FROM messages o WHERE o.session_id = $1"
                           " AND o.seq < (SELECT min(seq) FROM p)"
                           " AND ($5::boolean OR o.status IS DISTINCT FROM 'superseded')) FROM p "
                           "ORDER BY seq";
    char b[DB_PG_INT_LEN], l[DB_PG_INT_LEN], cap[DB_PG_INT_LEN];
    const char *params[] = {session_id, db_pg_int(b, before > 0 ? before : INT64_MAX),
                            db_pg_int(l, limit), db_pg_int(cap, DB_PAGE_MAX_BYTES),
                            all ? "true" : "false"};
    struct db_message m;
    enum perr e;
    PGresult *r;
    int rows;

    assert(limit >= 0);
    *has_more = false;
    if (!(r = db_pg_query(db, __func__, "read messages", sql, 5, params, &e)))
        return e;
    rows = PQntuples(r);
    for (int row = 0; row < rows; row++) {
        view_message(r, row, &m);
        fn(arg, &m);
    }
    if (rows > 0)
        *has_more = strcmp(PQgetvalue(r, 0, MESSAGE_NCOLS + 2), "t") == 0;
    PQclear(r);
    return PERR_OK;
}

enum perr db_pg_session_last(struct db *db, const char *session_id, int64_t *last_id,
                             int64_t *last_seq)
{
    static const char sql[] = "SELECT id, seq FROM messages WHERE session_id = $1"
                              " ORDER BY seq DESC LIMIT 1";
    const char *params[] = {session_id};
    enum perr e;
    PGresult *r = db_pg_query(db, __func__, "read the newest", sql, 1, params, &e);

    *last_id = *last_seq = 0;
    if (!r)
        return e;
    if (PQntuples(r) == 1) {
        *last_id = db_pg_int64(r, 0, 0);
        *last_seq = db_pg_int64(r, 0, 1);
    }
    PQclear(r);
    return PERR_OK;
}

enum perr db_pg_messages_since(struct db *db, const char *session_id, int64_t since, int limit,
                               struct db_message_list *out)
{
    static const char sql[] =
        "SELECT " MESSAGE_COLS " FROM messages"
        " WHERE session_id = $1 AND seq > " UPTO_2 SHOWN("false") " ORDER BY seq LIMIT $3";
    char s[DB_PG_INT_LEN], l[DB_PG_INT_LEN];
    const char *params[] = {session_id, db_pg_int(s, since), db_pg_int(l, limit)};

    assert(limit >= 0);
    return read_list(db, __func__, sql, 3, params, limit, out);
}

enum perr db_pg_messages_after(struct db *db, const char *session_id, int64_t after_seq, int limit,
                               struct db_message_list *out)
{
    static const char sql[] = "SELECT " MESSAGE_COLS " FROM messages"
                              " WHERE session_id = $1 AND seq > $2::bigint ORDER BY seq LIMIT $3";
    char s[DB_PG_INT_LEN], l[DB_PG_INT_LEN];
    const char *params[] = {session_id, db_pg_int(s, after_seq), db_pg_int(l, limit)};

    assert(limit >= 0);
    return read_list(db, __func__, sql, 3, params, limit, out);
}

enum perr db_pg_messages_context(struct db *db, const char *session_id, int64_t up_to, int n,
                                 struct db_message_list *out)
{
    static const char sql[] =
        "SELECT " MESSAGE_COLS " FROM messages WHERE session_id = $1"
        " AND seq <= " UPTO_3
        " AND role IN ('user', 'assistant')" SHOWN("false") " ORDER BY seq DESC LIMIT $2";
    char l[DB_PG_INT_LEN], u[DB_PG_INT_LEN];
    const char *params[] = {session_id, db_pg_int(l, n),
                            db_pg_int(u, up_to > 0 ? up_to : INT64_MAX)};
    enum perr e;

    assert(n >= 0);
    if ((e = read_list(db, __func__, sql, 3, params, n, out)))
        return e;
    reverse_list(out);
    return PERR_OK;
}

/* ---- the reply lease (SPEC 8) ----
 * Measured by the server's clock (clock_timestamp(): now, not the transaction's start),
 * so that the brokers' hosts need not agree on the time. */
#define LEASE_UNTIL "clock_timestamp() + $3::bigint * interval '1 millisecond'"

enum perr db_pg_reply_queue(struct db *db, const char *node, struct db_message_list *out)
{
    static const char sql[] = "SELECT " MESSAGE_COLS " FROM messages WHERE id IN"
                              " (SELECT message_id FROM reply_queue WHERE owner IS NULL"
                              " OR owner = $1 OR lease_until < clock_timestamp())"
                              " ORDER BY id LIMIT 10000";
    const char *params[] = {node}; /* NULL: only the unclaimed and the expired */

    return read_list(db, __func__, sql, 1, params, REPLY_QUEUE_MAX, out);
}

/* One statement: old reads the queue row and locks it (FOR UPDATE: a broker claiming it at
 * the same moment is waited for, and then the row is read as that broker left it, so the
 * second of two sees the first's owner), t takes the lease when old says it may. */
enum perr db_pg_reply_claim(struct db *db, int64_t message_id, const char *node, int lease_ms,
                            struct db_claim *out)
{
    static const char sql[] =
        "WITH old AS (SELECT owner IS NULL OR owner = $2 OR lease_until < clock_timestamp()"
        " AS claimable, owner IS NOT NULL AS owned, response_id, partial, chunks"
        " FROM reply_queue WHERE message_id = $1::bigint FOR UPDATE),"
        " t AS (UPDATE reply_queue SET owner = $2, lease_until = " LEASE_UNTIL ","
        " response_id = NULL, partial = NULL, chunks = 0"
        " WHERE message_id = $1::bigint AND (SELECT claimable FROM old))"
        " SELECT claimable, owned, response_id, partial, chunks FROM old";
    char idb[DB_PG_INT_LEN], ms[DB_PG_INT_LEN];
    const char *params[] = {db_pg_int(idb, message_id), node, db_pg_int(ms, lease_ms)};
    enum perr e;
    PGresult *r = db_pg_query(db, __func__, "claim a reply", sql, 3, params, &e);

    if (!r)
        return e;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PERR_NOT_FOUND;
    }
    /* what the earlier holder said only goes to the one that takes over */
    if ((out->claimed = strcmp(PQgetvalue(r, 0, 0), "t") == 0)) {
        out->taken_over = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
        db_pg_copy(r, 0, 2, out->response_id, sizeof out->response_id);
        out->partial = db_pg_strdup(r, 0, 3);
        out->chunks = db_pg_int64(r, 0, 4);
    }
    PQclear(r);
    return PERR_OK;
}

enum perr db_pg_reply_renew(struct db *db, int64_t message_id, const char *node, int lease_ms,
                            const char *response_id, const char *partial, int64_t chunks,
                            bool *mine)
{
    static const char sql[] = "UPDATE reply_queue SET lease_until = " LEASE_UNTIL ","
                              " response_id = $4, partial = $5, chunks = $6::bigint"
                              " WHERE message_id = $1::bigint AND owner = $2";
    char idb[DB_PG_INT_LEN], ms[DB_PG_INT_LEN], nb[DB_PG_INT_LEN];
    const char *params[] = {
        db_pg_int(idb, message_id), node, db_pg_int(ms, lease_ms), response_id, partial,
        db_pg_int(nb, chunks)};
    int64_t changed = 0;
    enum perr e = db_pg_run(db, __func__, "renew the lease", sql, 6, params, &changed);

    *mine = e == PERR_OK && changed > 0;
    return e;
}

enum perr db_pg_reply_queue_drop(struct db *db, int64_t message_id)
{
    static const char sql[] = "DELETE FROM reply_queue WHERE message_id = $1";
    char idb[DB_PG_INT_LEN];
    const char *params[] = {db_pg_int(idb, message_id)};

    return db_pg_run(db, __func__, "drop from reply queue", sql, 1, params, NULL);
}

enum perr db_pg_search_index(struct db *db, int max_rows, int *indexed)
{
    (void)db;
    (void)max_rows;
    if (indexed)
        *indexed = 0; /* content_tsv is computed as each message is stored */
    return PERR_OK;
}

enum perr db_pg_messages_search(struct db *db, const char *session_id, const char *words, int limit,
                                int64_t before, struct db_message_list *out)
{
    /* plainto_tsquery: every word required, what a person typed is never a syntax error,
     * and no word at all is a query that matches nothing. The newest `limit` matches
     * before `before`, handed over oldest first. */
    static const char sql[] = "SELECT * FROM (SELECT " MESSAGE_COLS " FROM messages"
                              " WHERE session_id = $1"
                              " AND content_tsv @@ plainto_tsquery('simple', $2)"
                              " AND seq < " BELOW_4 " ORDER BY seq DESC LIMIT $3) t ORDER BY seq";
    char l[DB_PG_INT_LEN], b[DB_PG_INT_LEN];
    const char *params[] = {session_id, words, db_pg_int(l, limit),
                            db_pg_int(b, before > 0 ? before : INT64_MAX)};

    assert(limit >= 0);
    return read_list(db, __func__, sql, 4, params, limit, out);
}
