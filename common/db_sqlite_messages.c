/* db_sqlite_messages: storing messages and replies, the reply queue and its leases
 * (SPEC 8), and reading history pages, on SQLite. Within a session every read is in seq
 * order; a message id that marks a place (since, before, up_to) is turned into a seq
 * bound by the SQL of SEQ_OF_* below. */
#include <stdio.h>
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "db_sqlite.h"
#include "log.h"

/* Columns every message read selects, in this order (see read_message). */
/* A default history view (SPEC 9): without the replies regenerate superseded; with the
 * parameter P true, every message. */
#define SHOWN(P)              " AND (" P " OR status IS NOT 'superseded')"
#define SEARCH_CATCH_UP_CHUNK 1000 /* messages a search indexes in one transaction */
#define MESSAGE_COLS                                                                               \
    "id, session_id, role, content, created_at, connection_id, client_msg_id, thread_id, status,"  \
    " seq, author_name"

/* A place given as a message id P in session S (db.h), as a seq: the message's own, or
 * where the id would be when the session does not hold it (ids grow with seq here). Each
 * is one or two index lookups. */
#define SEQ_OF(S, P) "(SELECT seq FROM messages WHERE session_id = " S " AND id = " P ")"
/* messages up to the place, it included: seq <= this; after it: seq > this */
#define SEQ_UPTO(S, P)                                                                             \
    "coalesce(" SEQ_OF(S, P) ", (SELECT seq FROM messages WHERE session_id = " S " AND id <= " P   \
                             " ORDER BY id DESC LIMIT 1), 0)"
/* messages before the place: seq < this */
#define SEQ_BELOW(S, P)                                                                            \
    "coalesce(" SEQ_OF(S, P) ", (SELECT seq + 1 FROM messages WHERE session_id = " S               \
                             " AND id < " P " ORDER BY id DESC LIMIT 1), 0)"

static void read_message(sqlite3_stmt *st, struct db_message *m)
{
    memset(m, 0, sizeof *m);
    m->id = sqlite3_column_int64(st, 0);
    db_sqlite_column_copy(st, 1, m->session_id, sizeof m->session_id);
    db_sqlite_column_copy(st, 2, m->role, sizeof m->role);
    m->content = db_sqlite_column_strdup(st, 3);
    if (!m->content)
        m->content = strdup("");
    db_sqlite_column_copy(st, 4, m->created_at, sizeof m->created_at);
    m->connection_id = db_sqlite_column_strdup(st, 5);
    m->client_msg_id = db_sqlite_column_strdup(st, 6);
    m->thread_id = db_sqlite_column_strdup(st, 7);
    m->status = db_sqlite_column_strdup(st, 8);
    m->seq = sqlite3_column_int64(st, 9);
    m->author_name = db_sqlite_column_strdup(st, 10);
}

static void reverse_list(struct db_message_list *l)
{
    for (size_t i = 0; i < l->n / 2; i++) {
        struct db_message t = l->v[i];
        l->v[i] = l->v[l->n - 1 - i];
        l->v[l->n - 1 - i] = t;
    }
}

/* Reads up to limit rows of st (bound by the caller) into out. Resets st. */
static enum perr read_list(struct db *db, sqlite3_stmt *st, int limit, struct db_message_list *out)
{
    size_t got = 0;
    int rc = SQLITE_DONE;

    out->n = 0;
    out->v = calloc(limit > 0 ? (size_t)limit : 1, sizeof *out->v);
    if (!out->v) {
        db_sqlite_stmt_done(st);
        return PERR_INTERNAL;
    }
    while (got < (size_t)limit && (rc = sqlite3_step(st)) == SQLITE_ROW)
        read_message(st, &out->v[got++]);
    db_sqlite_stmt_done(st);
    out->n = got;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        db_message_list_cleanup(out);
        return db_sqlite_fail(db, __func__, "read messages");
    }
    return PERR_OK;
}

enum perr db_sqlite_message_get(struct db *db, int64_t id, struct db_message *out)
{
    static const char sql[] = "SELECT " MESSAGE_COLS " FROM messages WHERE id = ?1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_message(st, out);
    db_sqlite_stmt_done(st);
    if (rc == SQLITE_ROW)
        return PERR_OK;
    return rc == SQLITE_DONE ? PERR_NOT_FOUND : db_sqlite_fail(db, __func__, "read message");
}

/* Finds a message of the session with this client_msg_id: PERR_OK and out filled,
 * PERR_NOT_FOUND, or a failure. */
static enum perr find_client_msg(struct db *db, const char *session_id, const char *cmid,
                                 struct db_message *out)
{
    static const char sql[] =
        "SELECT " MESSAGE_COLS " FROM messages WHERE session_id = ?1 AND client_msg_id = ?2";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, cmid, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_message(st, out);
    db_sqlite_stmt_done(st);
    if (rc == SQLITE_ROW)
        return PERR_OK;
    return rc == SQLITE_DONE ? PERR_NOT_FOUND : db_sqlite_fail(db, __func__, "find client_msg_id");
}

/* Takes the session's next seq and bumps its message count and updated_at; reads back
 * both. PERR_SESSION_NOT_FOUND when the session is gone. */
static enum perr touch_session(struct db *db, const char *session_id, const char *now, int64_t *seq,
                               int64_t *count)
{
    static const char sql[] = "UPDATE sessions SET message_count = message_count + 1,"
                              " last_seq = last_seq + 1, updated_at = ?2 WHERE id = ?1"
                              " RETURNING last_seq, message_count";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, now, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) { /* no row updated: the session is gone */
        db_sqlite_stmt_done(st);
        return PERR_SESSION_NOT_FOUND;
    }
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(st, 0);
        if (count)
            *count = sqlite3_column_int64(st, 1);
        rc = db_sqlite_run(st);
    } /* RETURNING: the update completes on the last step */
    db_sqlite_stmt_done(st);
    return rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, __func__, "update session");
}

static enum perr session_count(struct db *db, const char *session_id, int64_t *count)
{
    static const char sql[] = "SELECT message_count FROM sessions WHERE id = ?1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && count)
        *count = sqlite3_column_int64(st, 0);
    db_sqlite_stmt_done(st);
    if (rc == SQLITE_ROW)
        return PERR_OK;
    return rc == SQLITE_DONE ? PERR_SESSION_NOT_FOUND : db_sqlite_fail(db, __func__, "count");
}

/* Inserts the row; *id is its new id. */
static enum perr insert_row(struct db *db, const struct db_message_in *in,
                            const struct db_reply_in *reply, const char *now, int64_t seq,
                            int64_t *id)
{
    static const char sql[] =
        "INSERT INTO messages(session_id, role, content, created_at, connection_id,"
        " client_msg_id, thread_id, model, status, prompt_tokens, completion_tokens,"
        " duration_ms, reasoning, error, seq, author_name, reply_to)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, in->session_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, in->role, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, in->content, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, now, -1, SQLITE_STATIC);
    db_sqlite_bind_text(st, 5, in->connection_id);
    db_sqlite_bind_text(st, 6, in->client_msg_id);
    db_sqlite_bind_text(st, 7, in->thread_id);
    sqlite3_bind_int64(st, 15, seq);
    db_sqlite_bind_text(st, 16, in->author_name);
    if (reply) {
        db_sqlite_bind_text(st, 8, reply->model);
        db_sqlite_bind_text(st, 9, reply->status);
        if (reply->prompt_tokens >= 0)
            sqlite3_bind_int64(st, 10, reply->prompt_tokens);
        if (reply->completion_tokens >= 0)
            sqlite3_bind_int64(st, 11, reply->completion_tokens);
        sqlite3_bind_int64(st, 12, reply->duration_ms);
        db_sqlite_bind_text(st, 13, reply->reasoning);
        db_sqlite_bind_text(st, 14, reply->error);
        if (reply->reply_to > 0)
            sqlite3_bind_int64(st, 17, reply->reply_to);
    }
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE)
        return db_sqlite_fail(db, __func__, "insert message");
    *id = sqlite3_last_insert_rowid(sqlite3_db_handle(st));
    return PERR_OK;
}

static enum perr queue_reply(struct db *db, int64_t message_id, const char *session_id,
                             const char *now)
{
    static const char sql[] = "INSERT OR IGNORE INTO reply_queue(message_id, session_id,"
                              " created_at) VALUES (?1, ?2, ?3)";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_int64(st, 1, message_id);
    sqlite3_bind_text(st, 2, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, now, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    return rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, __func__, "queue reply");
}

/* Whether reply->owner still holds the lease of reply->reply_to (db_reply_add with an
 * owner): PERR_OK; PERR_NOT_FOUND when it does not (another broker took the reply over,
 * or it was answered or deleted); PERR_SESSION_NOT_FOUND when the session is gone. Inside
 * add's transaction, so nobody can take the lease between this check and the store. */
static enum perr lease_held(struct db *db, const struct db_reply_in *reply)
{
    static const char sql[] = "SELECT 1 FROM reply_queue WHERE message_id = ?1 AND owner = ?2";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    enum perr e;
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_int64(st, 1, reply->reply_to);
    sqlite3_bind_text(st, 2, reply->owner, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    db_sqlite_stmt_done(st);
    if (rc == SQLITE_ROW)
        return PERR_OK;
    if (rc != SQLITE_DONE)
        return db_sqlite_fail(db, "db_sqlite_reply_add", "check the lease");
    e = session_count(db, reply->session_id, NULL);
    return e ? e : PERR_NOT_FOUND;
}

/* Stores in (and reply, for assistant rows) in one transaction. */
static enum perr add(struct db *db, const struct db_message_in *in, const struct db_reply_in *reply,
                     struct db_message *out, bool *duplicate, int64_t *message_count)
{
    char now[CLOCK_ISO_LEN];
    int64_t id = 0, seq = 0;
    enum perr e;

    if (duplicate)
        *duplicate = false;
    clock_now_iso(now);
    if ((e = db_tx_begin(db)))
        return e;
    if (in->client_msg_id) {
        e = find_client_msg(db, in->session_id, in->client_msg_id, out);
        if (e == PERR_OK) {
            if (duplicate)
                *duplicate = true;
            e = session_count(db, in->session_id, message_count);
            if (e) {
                db_message_cleanup(out);
                goto fail;
            }
            return db_tx_commit(db);
        }
        if (e != PERR_NOT_FOUND)
            goto fail;
    }
    if (reply && reply->owner && (e = lease_held(db, reply)))
        goto fail;
    if ((e = touch_session(db, in->session_id, now, &seq, message_count)))
        goto fail;
    if ((e = insert_row(db, in, reply, now, seq, &id)))
        goto fail;
    if (in->want_reply && (e = queue_reply(db, id, in->session_id, now)))
        goto fail;
    if (reply) {
        if (reply->reply_to > 0 && !reply->keep_queued &&
            (e = db_reply_queue_drop(db, reply->reply_to)))
            goto fail;
        /* Every stored reply counts, an interrupted one kept queued too: replies_total is
         * the assistant messages ever stored (as for stopped and error ones), not the
         * user messages answered. */
        if ((e = db_sqlite_counter_add(db, "replies_total", 1)) ||
            (e = db_sqlite_counter_add(db, "reply_ms_total", reply->duration_ms)))
            goto fail;
    }
    if ((e = db_tx_commit(db)))
        return e;
    memset(out, 0, sizeof *out);
    out->id = id;
    out->seq = seq;
    snprintf(out->session_id, sizeof out->session_id, "%s", in->session_id);
    snprintf(out->role, sizeof out->role, "%s", in->role);
    memcpy(out->created_at, now, sizeof now);
    out->content = strdup(in->content);
    out->connection_id = in->connection_id ? strdup(in->connection_id) : NULL;
    out->client_msg_id = in->client_msg_id ? strdup(in->client_msg_id) : NULL;
    out->thread_id = in->thread_id ? strdup(in->thread_id) : NULL;
    out->status = reply && reply->status ? strdup(reply->status) : NULL;
    out->author_name = in->author_name ? strdup(in->author_name) : NULL;
    return PERR_OK;
fail:
    db_tx_rollback(db);
    return e;
}

enum perr db_sqlite_message_add(struct db *db, const struct db_message_in *in,
                                struct db_message *out, bool *duplicate, int64_t *message_count)
{
    return add(db, in, NULL, out, duplicate, message_count);
}

enum perr db_sqlite_reply_add(struct db *db, const struct db_reply_in *r, struct db_message *out,
                              int64_t *message_count)
{
    struct db_message_in in = {
        .session_id = r->session_id, .role = "assistant", .content = r->content};

    return add(db, &in, r, out, NULL, message_count);
}

enum perr db_sqlite_messages_page(struct db *db, const char *session_id, int limit, int64_t before,
                                  bool all, struct db_message_list *out, bool *has_more)
{
    /* One row more than asked tells whether older messages exist. */
    static const char sql[] = "SELECT " MESSAGE_COLS " FROM messages"
                              " WHERE session_id = ?1 AND seq < " SEQ_BELOW("?1", "?2")
                                  SHOWN("?4") " ORDER BY seq DESC LIMIT ?3";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    enum perr e;

    assert(limit >= 0);
    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, before > 0 ? before : INT64_MAX);
    sqlite3_bind_int(st, 3, limit + 1);
    sqlite3_bind_int(st, 4, all);
    if ((e = read_list(db, st, limit + 1, out)))
        return e;
    *has_more = out->n > (size_t)limit;
    if (*has_more) {
        out->n--;
        db_message_cleanup(&out->v[out->n]);
    }
    reverse_list(out);
    return PERR_OK;
}

/* Runs sql (a read of messages of session ?1 after the place ?2, at most ?3) into out. */
static enum perr after(struct db *db, const char *sql, const char *session_id, int64_t place,
                       int limit, struct db_message_list *out)
{
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);

    assert(limit >= 0);
    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, place);
    sqlite3_bind_int(st, 3, limit);
    return read_list(db, st, limit, out);
}

enum perr db_sqlite_messages_since(struct db *db, const char *session_id, int64_t since, int limit,
                                   struct db_message_list *out)
{
    static const char sql[] = "SELECT " MESSAGE_COLS " FROM messages"
                              " WHERE session_id = ?1 AND seq > " SEQ_UPTO("?1", "?2")
                                  SHOWN("0") " ORDER BY seq LIMIT ?3";

    return after(db, sql, session_id, since, limit, out);
}

enum perr db_sqlite_messages_after(struct db *db, const char *session_id, int64_t after_seq,
                                   int limit, struct db_message_list *out)
{
    static const char sql[] = "SELECT " MESSAGE_COLS " FROM messages"
                              " WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

    return after(db, sql, session_id, after_seq, limit, out);
}

enum perr db_sqlite_messages_context(struct db *db, const char *session_id, int64_t up_to, int n,
                                     struct db_message_list *out)
{
    static const char sql[] =
        "SELECT " MESSAGE_COLS " FROM messages WHERE session_id = ?1"
        " AND seq <= " SEQ_UPTO("?1", "?3") " AND role IN ('user', 'assistant')" SHOWN(
            "0") " ORDER BY seq DESC LIMIT ?2";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    enum perr e;

    assert(n >= 0);
    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, n);
    sqlite3_bind_int64(st, 3, up_to > 0 ? up_to : INT64_MAX);
    if ((e = read_list(db, st, n, out)))
        return e;
    reverse_list(out);
    return PERR_OK;
}

/* ---- the reply lease (SPEC 8) ----
 * lease_until is ISO-8601 UTC text like every timestamp here, so it compares as text; the
 * process's clock is the database host's (the file is local). */

enum perr db_sqlite_reply_queue(struct db *db, const char *node, struct db_message_list *out)
{
    static const char sql[] = "SELECT " MESSAGE_COLS " FROM messages WHERE id IN"
                              " (SELECT message_id FROM reply_queue WHERE owner IS NULL"
                              " OR owner = ?1 OR lease_until < ?2) ORDER BY id LIMIT 10000";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    char now[CLOCK_ISO_LEN];

    if (!st)
        return PERR_UNAVAILABLE;
    clock_now_iso(now);
    db_sqlite_bind_text(st, 1, node); /* NULL: only the unclaimed and the expired */
    sqlite3_bind_text(st, 2, now, -1, SQLITE_STATIC);
    return read_list(db, st, 10000, out);
}

/* Read and taken in one transaction (BEGIN IMMEDIATE, or a savepoint in the caller's):
 * brokers claiming at once take turns, and the second sees the first's owner. */
enum perr db_sqlite_reply_claim(struct db *db, int64_t message_id, const char *node, int lease_ms,
                                struct db_claim *out)
{
    static const char sql_read[] = "SELECT owner IS NULL OR owner = ?2 OR lease_until < ?3,"
                                   " owner IS NOT NULL, response_id, partial, chunks"
                                   " FROM reply_queue WHERE message_id = ?1";
    static const char sql_take[] = "UPDATE reply_queue SET owner = ?2, lease_until = ?3,"
                                   " response_id = NULL, partial = NULL, chunks = 0"
                                   " WHERE message_id = ?1";
    char now[CLOCK_ISO_LEN], until[CLOCK_ISO_LEN];
    sqlite3_stmt *st;
    int64_t now_ms;
    enum perr e;
    int rc;

    if ((e = db_tx_begin(db)))
        return e;
    now_ms = clock_now_ms(); /* after the wait for the write lock */
    clock_iso8601(now_ms, now);
    clock_iso8601(now_ms + lease_ms, until);
    if (!(st = db_sqlite_stmt(db, sql_read))) {
        e = PERR_UNAVAILABLE;
        goto fail;
    }
    sqlite3_bind_int64(st, 1, message_id);
    sqlite3_bind_text(st, 2, node, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, now, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    /* what the earlier holder said only goes to the one that takes over */
    if (rc == SQLITE_ROW && (out->claimed = sqlite3_column_int(st, 0) != 0)) {
        out->taken_over = sqlite3_column_int(st, 1) != 0;
        db_sqlite_column_copy(st, 2, out->response_id, sizeof out->response_id);
        out->partial = db_sqlite_column_strdup(st, 3);
        out->chunks = sqlite3_column_int64(st, 4);
    }
    db_sqlite_stmt_done(st);
    if (rc != SQLITE_ROW) {
        e = rc == SQLITE_DONE ? PERR_NOT_FOUND : db_sqlite_fail(db, __func__, "read the lease");
        goto fail;
    }
    if (out->claimed) {
        if (!(st = db_sqlite_stmt(db, sql_take))) {
            e = PERR_UNAVAILABLE;
            goto fail;
        }
        sqlite3_bind_int64(st, 1, message_id);
        sqlite3_bind_text(st, 2, node, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, until, -1, SQLITE_STATIC);
        if (db_sqlite_run(st) != SQLITE_DONE) {
            e = db_sqlite_fail(db, __func__, "take the lease");
            goto fail;
        }
    }
    if ((e = db_tx_commit(db)))
        goto cleanup; /* rolled back by the commit */
    return PERR_OK;
fail:
    db_tx_rollback(db);
cleanup:
    db_claim_cleanup(out);
    memset(out, 0, sizeof *out);
    return e;
}

enum perr db_sqlite_reply_renew(struct db *db, int64_t message_id, const char *node, int lease_ms,
                                const char *response_id, const char *partial, int64_t chunks,
                                bool *mine)
{
    static const char sql[] = "UPDATE reply_queue SET lease_until = ?3, response_id = ?4,"
                              " partial = ?5, chunks = ?6 WHERE message_id = ?1 AND owner = ?2";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    char until[CLOCK_ISO_LEN];

    if (!st)
        return PERR_UNAVAILABLE;
    clock_iso8601(clock_now_ms() + lease_ms, until);
    sqlite3_bind_int64(st, 1, message_id);
    sqlite3_bind_text(st, 2, node, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, until, -1, SQLITE_STATIC);
    db_sqlite_bind_text(st, 4, response_id);
    db_sqlite_bind_text(st, 5, partial);
    sqlite3_bind_int64(st, 6, chunks);
    if (db_sqlite_run(st) != SQLITE_DONE)
        return db_sqlite_fail(db, __func__, "renew the lease");
    *mine = sqlite3_changes(sqlite3_db_handle(st)) > 0;
    return PERR_OK;
}

enum perr db_sqlite_reply_queue_drop(struct db *db, int64_t message_id)
{
    static const char sql[] = "DELETE FROM reply_queue WHERE message_id = ?1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_int64(st, 1, message_id);
    rc = db_sqlite_run(st);
    return rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, __func__, "drop from reply queue");
}

/* Runs sql with ?1 bound to id, for db_search_index. */
static enum perr run_upto(struct db *db, const char *sql, int64_t id, const char *what)
{
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_int64(st, 1, id);
    return db_sqlite_run(st) == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, "db_search_index", what);
}

/* How many messages (at most max_rows, 0: all) are not indexed yet, and the id of the
 * last of them. */
static enum perr unindexed(struct db *db, int max_rows, int *n, int64_t *upto)
{
    static const char sql[] = "SELECT count(*), max(id) FROM (SELECT id FROM messages"
                              " WHERE id > (SELECT indexed_id FROM search_state)"
                              " ORDER BY id LIMIT ?1)";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_int64(st, 1, max_rows > 0 ? max_rows : INT64_MAX);
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        *n = sqlite3_column_int(st, 0);
        *upto = sqlite3_column_int64(st, 1);
    }
    db_sqlite_stmt_done(st);
    return rc == SQLITE_ROW ? PERR_OK
                            : db_sqlite_fail(db, "db_search_index", "find messages to index");
}

enum perr db_sqlite_search_index(struct db *db, int max_rows, int *indexed)
{
    static const char sql_add[] = "INSERT INTO messages_fts(rowid, content) SELECT id, content"
                                  " FROM messages WHERE id > (SELECT indexed_id FROM"
                                  " search_state) AND id <= ?1 ORDER BY id";
    static const char sql_mark[] = "UPDATE search_state SET indexed_id = ?1";
    int64_t upto = 0;
    int n = 0;
    enum perr e;

    if (indexed)
        *indexed = 0;
    /* Most calls find nothing new: that takes a read, not the write lock. */
    if ((e = unindexed(db, max_rows, &n, &upto)) || n == 0)
        return e;
    if ((e = db_tx_begin(db)))
        return e;
    if (!(e = unindexed(db, max_rows, &n, &upto)) && n > 0 &&
        !(e = run_upto(db, sql_add, upto, "index messages")))
        e = run_upto(db, sql_mark, upto, "mark messages indexed");
    if (e) {
        db_tx_rollback(db);
        return e;
    }
    if ((e = db_tx_commit(db)))
        return e;
    if (indexed)
        *indexed = n;
    return PERR_OK;
}

/* Turns what a person typed into an FTS5 query that cannot be a syntax error: every
 * word becomes a quoted term (quotes doubled), all of them required. Returns a new
 * string (free), or NULL when there is no word (or no memory). */
static char *fts_query(const char *q)
{
    size_t n = strlen(q), len = 0;
    char *out = malloc(n * 2 + 3 * (n / 2 + 1) + 1);

    if (!out)
        return NULL;
    for (const char *p = q; *p;) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        if (len)
            out[len++] = ' ';
        out[len++] = '"';
        while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
            if (*p == '"')
                out[len++] = '"';
            out[len++] = *p++;
        }
        out[len++] = '"';
    }
    out[len] = '\0';
    if (len == 0) {
        free(out);
        return NULL;
    }
    return out;
}

enum perr db_sqlite_messages_search(struct db *db, const char *session_id, const char *words,
                                    int limit, int64_t before, struct db_message_list *out)
{
    /* the newest `limit` matches before `before`, handed over oldest first */
    static const char sql[] = "SELECT * FROM (SELECT m.id, m.session_id, m.role, m.content,"
                              " m.created_at, m.connection_id, m.client_msg_id, m.thread_id,"
                              " m.status, m.seq, m.author_name FROM messages_fts f JOIN messages m"
                              " ON m.id = f.rowid WHERE messages_fts MATCH ?1"
                              " AND m.session_id = ?2 AND m.seq < " SEQ_BELOW(
                                  "?2", "?4") " ORDER BY m.seq DESC LIMIT ?3) ORDER BY seq";
    sqlite3_stmt *st;
    char *match;
    enum perr e;
    int n = 0;

    assert(limit >= 0);
    memset(out, 0, sizeof *out);
    if (!(match = fts_query(words)))
        return strspn(words, " \t\n") == strlen(words) ? PERR_OK : PERR_INTERNAL;
    do /* in chunks: between them, another writer (the broker) may commit */
        e = db_search_index(db, SEARCH_CATCH_UP_CHUNK, &n);
    while (e == PERR_OK && n == SEARCH_CATCH_UP_CHUNK);
    if (e || !(st = db_sqlite_stmt(db, sql))) {
        free(match);
        return e ? e : PERR_UNAVAILABLE;
    }
    sqlite3_bind_text(st, 1, match, -1, SQLITE_TRANSIENT);
    free(match);
    sqlite3_bind_text(st, 2, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, limit);
    sqlite3_bind_int64(st, 4, before > 0 ? before : INT64_MAX);
    return read_list(db, st, limit, out);
}

/* Fills m with pointers into st's current row (no copies): valid until the next step. */
static void view_message(sqlite3_stmt *st, struct db_message *m)
{
    memset(m, 0, sizeof *m);
    m->id = sqlite3_column_int64(st, 0);
    db_sqlite_column_copy(st, 1, m->session_id, sizeof m->session_id);
    db_sqlite_column_copy(st, 2, m->role, sizeof m->role);
    m->content = (char *)sqlite3_column_text(st, 3);
    if (!m->content)
        m->content = "";
    db_sqlite_column_copy(st, 4, m->created_at, sizeof m->created_at);
    m->connection_id = (char *)sqlite3_column_text(st, 5);
    m->client_msg_id = (char *)sqlite3_column_text(st, 6);
    m->thread_id = (char *)sqlite3_column_text(st, 7);
    m->status = (char *)sqlite3_column_text(st, 8);
    m->seq = sqlite3_column_int64(st, 9);
    m->author_name = (char *)sqlite3_column_text(st, 10);
}

/* The seq of the oldest message of the page of the newest `limit` before `before` that
 * fits in DB_PAGE_MAX_BYTES of content (at least the newest one), or 0 for none. */
static enum perr page_start(struct db *db, const char *session_id, int limit, int64_t before,
                            bool all, int64_t *start)
{
    static const char sql[] = "SELECT seq, length(CAST(content AS BLOB)) FROM messages"
                              " WHERE session_id = ?1 AND seq < " SEQ_BELOW("?1", "?2")
                                  SHOWN("?4") " ORDER BY seq DESC LIMIT ?3";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int64_t bytes = 0;
    int rc;

    *start = 0;
    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, before > 0 ? before : INT64_MAX);
    sqlite3_bind_int(st, 3, limit);
    sqlite3_bind_int(st, 4, all);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        bytes += sqlite3_column_int64(st, 1);
        if (*start && bytes > DB_PAGE_MAX_BYTES)
            break;
        *start = sqlite3_column_int64(st, 0);
    }
    db_sqlite_stmt_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PERR_OK
                                                 : db_sqlite_fail(db, __func__, "size the page");
}

enum perr db_sqlite_messages_page_each(struct db *db, const char *session_id, int limit,
                                       int64_t before, bool all, bool *has_more, db_message_fn fn,
                                       void *arg)
{
    /* the newest `limit` before `before` (as many as fit), handed over oldest first */
    static const char sql[] = "SELECT " MESSAGE_COLS " FROM messages"
                              " WHERE session_id = ?1 AND seq >= ?3"
                              " AND seq < " SEQ_BELOW("?1", "?2") SHOWN("?4") " ORDER BY seq";
    static const char sql_older[] = "SELECT EXISTS(SELECT 1 FROM messages"
                                    " WHERE session_id = ?1 AND seq < ?2" SHOWN("?3") ")";
    struct db_message m;
    int64_t oldest = 0, start;
    sqlite3_stmt *st;
    enum perr e;
    int rc;

    assert(limit >= 0);
    *has_more = false;
    if ((e = page_start(db, session_id, limit, before, all, &start)) || !start)
        return e;
    if (!(st = db_sqlite_stmt(db, sql)))
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, before > 0 ? before : INT64_MAX);
    sqlite3_bind_int64(st, 3, start);
    sqlite3_bind_int(st, 4, all);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        view_message(st, &m);
        if (!oldest)
            oldest = m.seq;
        fn(arg, &m);
    }
    db_sqlite_stmt_done(st);
    if (rc != SQLITE_DONE)
        return db_sqlite_fail(db, __func__, "read messages");
    *has_more = false;
    if (!oldest)
        return PERR_OK; /* none in this page: none older either */
    if (!(st = db_sqlite_stmt(db, sql_older)))
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, oldest);
    sqlite3_bind_int(st, 3, all);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *has_more = sqlite3_column_int(st, 0) != 0;
    db_sqlite_stmt_done(st);
    return rc == SQLITE_ROW ? PERR_OK : db_sqlite_fail(db, __func__, "look for older messages");
}

enum perr db_sqlite_session_last(struct db *db, const char *session_id, int64_t *last_id,
                                 int64_t *last_seq)
{
    static const char sql[] = "SELECT id, seq FROM messages WHERE session_id = ?1"
                              " ORDER BY seq DESC LIMIT 1";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, session_id, -1, SQLITE_STATIC);
    *last_id = *last_seq = 0;
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        *last_id = sqlite3_column_int64(st, 0);
        *last_seq = sqlite3_column_int64(st, 1);
    }
    db_sqlite_stmt_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PERR_OK
                                                 : db_sqlite_fail(db, __func__, "read the newest");
}
