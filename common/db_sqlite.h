/* db_sqlite: what the SQLite backend's files share. Not for use outside
 * common/db_sqlite*.c. */
#ifndef PARLEY_DB_SQLITE_H
#define PARLEY_DB_SQLITE_H

#include <sqlite3.h>

#include "db_backend.h"

/* Returns the prepared statement for sql (prepared on first use, then cached on db),
 * ready to bind; NULL after logging when SQLite refuses it. sql must be a string with
 * static storage: the cache is keyed by its address. Finish with db_sqlite_stmt_done. */
sqlite3_stmt *db_sqlite_stmt(struct db *db, const char *sql);
/* Resets st and clears its bindings so the next db_sqlite_stmt gets it clean. */
void db_sqlite_stmt_done(sqlite3_stmt *st);
/* Logs a failed SQLite call with the function, what was being done and SQLite's message,
 * and returns PERR_UNAVAILABLE. */
enum perr db_sqlite_fail(struct db *db, const char *func, const char *what);
/* Binds text, or NULL when s is NULL. */
int db_sqlite_bind_text(sqlite3_stmt *st, int idx, const char *s);
/* A new malloc'd copy of column col, or NULL when the column is NULL. */
char *db_sqlite_column_strdup(sqlite3_stmt *st, int col);
/* Copies column col into a fixed buffer, truncating to size-1 bytes. */
void db_sqlite_column_copy(sqlite3_stmt *st, int col, char *buf, size_t size);
/* Runs st to the end (ignoring rows), then resets it for the next use. Returns
 * SQLITE_DONE on success. sqlite3_changes() and the last insert id stay readable. */
int db_sqlite_run(sqlite3_stmt *st);
/* Adds delta to the named counter (inside the caller's transaction). */
enum perr db_sqlite_counter_add(struct db *db, const char *name, int64_t delta);

/* The backend's entries (db_backend.h), each as the db_* function of its name in db.h. */
void db_sqlite_close(struct db *db);
int db_sqlite_user_version(struct db *db);
int db_sqlite_schema_version(struct db *db);
enum perr db_sqlite_no_autocheckpoint(struct db *db);
enum perr db_sqlite_checkpoint(struct db *db, int *wal_frames);
enum perr db_sqlite_ping(struct db *db);
enum perr db_sqlite_tx_begin(struct db *db);
enum perr db_sqlite_tx_commit(struct db *db);
void db_sqlite_tx_rollback(struct db *db);
bool db_sqlite_tx_open(struct db *db);
enum perr db_sqlite_max_pages(struct db *db, int64_t pages);
enum perr db_sqlite_session_create(struct db *db, const char *model, const char *title,
                                   const char *channel, const char *reply_mode,
                                   struct db_session *out);
enum perr db_sqlite_session_update(struct db *db, const char *id, const char *reply_mode,
                                   bool set_title, const char *title, struct db_session *out);
enum perr db_sqlite_session_get(struct db *db, const char *id, struct db_session *out);
enum perr db_sqlite_session_by_channel(struct db *db, const char *channel, struct db_session *out);
enum perr db_sqlite_session_list(struct db *db, int limit, int offset, struct db_session **out,
                                 size_t *n, int64_t *total);
enum perr db_sqlite_session_delete(struct db *db, const char *id);
enum perr db_sqlite_session_clear(struct db *db, const char *id, int64_t *cleared);
enum perr db_sqlite_message_add(struct db *db, const struct db_message_in *in,
                                struct db_message *out, bool *duplicate, int64_t *message_count);
enum perr db_sqlite_message_get(struct db *db, int64_t id, struct db_message *out);
enum perr db_sqlite_messages_page(struct db *db, const char *session_id, int limit, int64_t before,
                                  bool all, struct db_message_list *out, bool *has_more);
enum perr db_sqlite_messages_page_each(struct db *db, const char *session_id, int limit,
                                       int64_t before, bool all, bool *has_more, db_message_fn fn,
                                       void *arg);
enum perr db_sqlite_session_last(struct db *db, const char *session_id, int64_t *last_id,
                                 int64_t *last_seq);
enum perr db_sqlite_messages_since(struct db *db, const char *session_id, int64_t since, int limit,
                                   struct db_message_list *out);
enum perr db_sqlite_messages_after(struct db *db, const char *session_id, int64_t after_seq,
                                   int limit, struct db_message_list *out);
enum perr db_sqlite_messages_context(struct db *db, const char *session_id, int64_t up_to, int n,
                                     struct db_message_list *out);
enum perr db_sqlite_messages_search(struct db *db, const char *session_id, const char *words,
                                    int limit, int64_t before, struct db_message_list *out);
enum perr db_sqlite_search_index(struct db *db, int max_rows, int *indexed);
enum perr db_sqlite_reply_add(struct db *db, const struct db_reply_in *in, struct db_message *out,
                              int64_t *message_count);
enum perr db_sqlite_reply_queue(struct db *db, const char *node, struct db_message_list *out);
enum perr db_sqlite_reply_claim(struct db *db, int64_t message_id, const char *node, int lease_ms,
                                struct db_claim *out);
enum perr db_sqlite_reply_renew(struct db *db, int64_t message_id, const char *node, int lease_ms,
                                const char *response_id, const char *partial, int64_t chunks,
                                bool *mine);
enum perr db_sqlite_reply_queue_drop(struct db *db, int64_t message_id);
enum perr db_sqlite_regenerate(struct db *db, const char *session_id, struct db_regen *out);
enum perr db_sqlite_stats_read(struct db *db, struct db_stats *out);
enum perr db_sqlite_keys_active(struct db *db, int64_t *n);
enum perr db_sqlite_key_add(struct db *db, const char *name, const char *salt, const char *hash,
                            const char *lookup);
enum perr db_sqlite_key_revoke(struct db *db, const char *name);
enum perr db_sqlite_key_list(struct db *db, struct db_key_info **out, size_t *n);
enum perr db_sqlite_key_hashes(struct db *db, struct auth_key **out, size_t *n);
enum perr db_sqlite_key_candidates(struct db *db, const char *lookup, struct auth_key **out,
                                   size_t *n);
/* quotas (db_sqlite_quota.c) */
enum perr db_sqlite_quota_take(struct db *db, struct db_quota *q, bool *ok);
enum perr db_sqlite_quota_give_back(struct db *db, const struct db_quota *q);
enum perr db_sqlite_message_set_key(struct db *db, int64_t message_id, const char *key);
enum perr db_sqlite_quota_tokens(struct db *db, int64_t message_id, const char *day,
                                 int64_t tokens);
enum perr db_sqlite_key_usage(struct db *db, const char *key, const char *day, int64_t *messages,
                              int64_t *tokens);
enum perr db_sqlite_live_reset(struct db *db, const char *node_id, int pid, const char *model);
enum perr db_sqlite_live_publish(struct db *db, const char *node_id, int64_t now_ms,
                                 int64_t connections, const struct db_live_member *changed,
                                 size_t n_changed);
enum perr db_sqlite_live_down(struct db *db, const char *node_id);
enum perr db_sqlite_live_read(struct db *db, int64_t now_ms, struct db_live *out);

#endif
