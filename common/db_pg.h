/* db_pg: what the PostgreSQL backend's files share. Not for use outside common/db_pg*.c.
 *
 * A connection is a struct db_pg (its struct db first). Statements are prepared once per
 * server connection and run with text parameters; a lost connection is made anew by the
 * next call outside a transaction (db_pg.c). */
#ifndef PARLEY_DB_PG_H
#define PARLEY_DB_PG_H

#include <libpq-fe.h>

#include "db_backend.h"

#define DB_PG_STMT_CACHE 128

struct db_pg {
    struct db base;
    PGconn *conn;
    char *where;       /* host, port, database and user, for logs: never the password */
    int tx_depth;      /* 0: none; 1: BEGIN; more: savepoints */
    bool down;         /* the connection was lost and that was logged; not back yet */
    int64_t retry_ms;  /* clock_mono_ms before which no new connection is tried */
    bool spoil_logged; /* a refusal in this (spoiled) transaction was logged */
    size_t n_stmts;    /* prepared on this server connection: stmts[i] is "p<i>" */
    const char *stmts[DB_PG_STMT_CACHE];
};

/* ---- statements ---- */
/* Runs sql (a string with static storage: the statement cache is keyed by its address)
 * with n text parameters (NULL elements are SQL NULLs). Returns a new result (PQclear it)
 * of a statement that succeeded, or NULL after logging with func and what, with *e set to
 * PERR_UNAVAILABLE. Outside a transaction, makes a lost connection anew first (at most
 * one try per 200 ms); inside one that is spoiled or lost, refuses the statement without
 * sending it. */
PGresult *db_pg_query(struct db *db, const char *func, const char *what, const char *sql, int n,
                      const char *const *params, enum perr *e);
/* As db_pg_query for a statement whose rows do not matter; *changed (NULL is fine) gets
 * the number of rows it inserted, updated or deleted. */
enum perr db_pg_run(struct db *db, const char *func, const char *what, const char *sql, int n,
                    const char *const *params, int64_t *changed);

/* ---- parameters and columns ---- */
/* A decimal int64 parameter, in a buffer of the caller's. */
#define DB_PG_INT_LEN 24
const char *db_pg_int(char buf[DB_PG_INT_LEN], int64_t v);
/* Column col of row row as a number (0 when NULL or not a number). */
int64_t db_pg_int64(const PGresult *r, int row, int col);
/* Column col as text borrowed from r (valid until PQclear), or NULL when it is NULL. */
const char *db_pg_text(const PGresult *r, int row, int col);
/* A new malloc'd copy of the column, or NULL when it is NULL. */
char *db_pg_strdup(const PGresult *r, int row, int col);
/* Copies the column into a fixed buffer, truncated to size-1 bytes ("" when NULL). */
void db_pg_copy(const PGresult *r, int row, int col, char *buf, size_t size);

/* A timestamptz column as the service's ISO-8601 UTC text, 2026-01-20T12:34:56.789Z. */
#define DB_PG_ISO(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* ---- the backend's entries (db_backend.h), each as the db_* function of its name ---- */
void db_pg_close(struct db *db);
int db_pg_user_version(struct db *db);
int db_pg_schema_version(struct db *db);
enum perr db_pg_no_autocheckpoint(struct db *db);
enum perr db_pg_checkpoint(struct db *db, int *wal_frames);
enum perr db_pg_ping(struct db *db);
enum perr db_pg_max_pages(struct db *db, int64_t pages);
enum perr db_pg_tx_begin(struct db *db);
enum perr db_pg_tx_commit(struct db *db);
void db_pg_tx_rollback(struct db *db);
bool db_pg_tx_open(struct db *db);
/* db_pg_sessions.c */
enum perr db_pg_session_create(struct db *db, const char *model, const char *title,
                               const char *channel, const char *reply_mode, struct db_session *out);
enum perr db_pg_session_update(struct db *db, const char *id, const char *reply_mode,
                               bool set_title, const char *title, struct db_session *out);
enum perr db_pg_session_get(struct db *db, const char *id, struct db_session *out);
enum perr db_pg_session_by_channel(struct db *db, const char *channel, struct db_session *out);
enum perr db_pg_session_list(struct db *db, int limit, int offset, struct db_session **out,
                             size_t *n, int64_t *total);
enum perr db_pg_session_delete(struct db *db, const char *id);
enum perr db_pg_session_clear(struct db *db, const char *id, int64_t *cleared);
enum perr db_pg_stats_read(struct db *db, struct db_stats *out);
/* db_pg_messages.c */
enum perr db_pg_message_add(struct db *db, const struct db_message_in *in, struct db_message *out,
                            bool *duplicate, int64_t *message_count);
enum perr db_pg_message_get(struct db *db, int64_t id, struct db_message *out);
enum perr db_pg_messages_page(struct db *db, const char *session_id, int limit, int64_t before,
                              bool all, struct db_message_list *out, bool *has_more);
enum perr db_pg_messages_page_each(struct db *db, const char *session_id, int limit, int64_t before,
                                   bool all, bool *has_more, db_message_fn fn, void *arg);
enum perr db_pg_session_last(struct db *db, const char *session_id, int64_t *last_id,
                             int64_t *last_seq);
enum perr db_pg_messages_since(struct db *db, const char *session_id, int64_t since, int limit,
                               struct db_message_list *out);
enum perr db_pg_messages_after(struct db *db, const char *session_id, int64_t after_seq, int limit,
                               struct db_message_list *out);
enum perr db_pg_messages_context(struct db *db, const char *session_id, int64_t up_to, int n,
                                 struct db_message_list *out);
enum perr db_pg_messages_search(struct db *db, const char *session_id, const char *words, int limit,
                                int64_t before, struct db_message_list *out);
enum perr db_pg_search_index(struct db *db, int max_rows, int *indexed);
enum perr db_pg_reply_add(struct db *db, const struct db_reply_in *in, struct db_message *out,
                          int64_t *message_count);
enum perr db_pg_reply_queue(struct db *db, const char *node, struct db_message_list *out);
enum perr db_pg_reply_claim(struct db *db, int64_t message_id, const char *node, int lease_ms,
                            struct db_claim *out);
enum perr db_pg_reply_renew(struct db *db, int64_t message_id, const char *node, int lease_ms,
                            const char *response_id, const char *partial, int64_t chunks,
                            bool *mine);
enum perr db_pg_reply_queue_drop(struct db *db, int64_t message_id);
enum perr db_pg_regenerate(struct db *db, const char *session_id, struct db_regen *out);
/* db_pg_keys.c */
enum perr db_pg_keys_active(struct db *db, int64_t *n);
enum perr db_pg_key_add(struct db *db, const char *name, const char *salt, const char *hash,
                        const char *lookup);
enum perr db_pg_key_revoke(struct db *db, const char *name);
enum perr db_pg_key_list(struct db *db, struct db_key_info **out, size_t *n);
enum perr db_pg_key_hashes(struct db *db, struct auth_key **out, size_t *n);
enum perr db_pg_key_candidates(struct db *db, const char *lookup, struct auth_key **out, size_t *n);
/* quotas (db_pg_quota.c) */
enum perr db_pg_quota_take(struct db *db, struct db_quota *q, bool *ok);
enum perr db_pg_quota_give_back(struct db *db, const struct db_quota *q);
enum perr db_pg_message_set_key(struct db *db, int64_t message_id, const char *key);
enum perr db_pg_quota_tokens(struct db *db, int64_t message_id, const char *day, int64_t tokens);
enum perr db_pg_key_usage(struct db *db, const char *key, const char *day, int64_t *messages,
                          int64_t *tokens);
/* db_pg_live.c */
enum perr db_pg_live_reset(struct db *db, const char *node_id, int pid, const char *model);
enum perr db_pg_live_publish(struct db *db, const char *node_id, int64_t now_ms,
                             int64_t connections, const struct db_live_member *changed,
                             size_t n_changed);
enum perr db_pg_live_down(struct db *db, const char *node_id);
enum perr db_pg_live_read(struct db *db, int64_t now_ms, struct db_live *out);

#endif
