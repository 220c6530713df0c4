/* db_backend: what a database backend gives the store (db.h). Not for use outside
 * common/db*.c.
 *
 * A backend's connection struct begins with a struct db whose be points at the
 * backend's table; db.c hands each db_* call to the table, so callers never know which
 * database they talk to. Each entry does what the db_* function of the same name says
 * in db.h. */
#ifndef PARLEY_DB_BACKEND_H
#define PARLEY_DB_BACKEND_H

#include "db.h"

struct db_backend {
    const char *kind; /* db_kind */
    bool has_wal;     /* db_has_wal */
    /* connection */
    void (*close)(struct db *db);
    int (*user_version)(struct db *db);
    int (*schema_version)(struct db *db);
    enum perr (*no_autocheckpoint)(struct db *db);
    enum perr (*checkpoint)(struct db *db, int *wal_frames);
    enum perr (*ping)(struct db *db);
    enum perr (*max_pages)(struct db *db, int64_t pages);
    /* transactions */
    enum perr (*tx_begin)(struct db *db);
    enum perr (*tx_commit)(struct db *db);
    void (*tx_rollback)(struct db *db);
    bool (*tx_open)(struct db *db);
    /* sessions */
    enum perr (*session_create)(struct db *db, const char *model, const char *title,
                                const char *channel, const char *reply_mode,
                                struct db_session *out); /* reply_mode never NULL */
    enum perr (*session_update)(struct db *db, const char *id, const char *reply_mode,
                                bool set_title, const char *title, struct db_session *out);
    enum perr (*session_get)(struct db *db, const char *id, struct db_session *out);
    enum perr (*session_by_channel)(struct db *db, const char *channel, struct db_session *out);
    enum perr (*session_list)(struct db *db, int limit, int offset, struct db_session **out,
                              size_t *n, int64_t *total);
    enum perr (*session_delete)(struct db *db, const char *id);
    enum perr (*session_clear)(struct db *db, const char *id, int64_t *cleared);
    /* messages */
    enum perr (*message_add)(struct db *db, const struct db_message_in *in, struct db_message *out,
                             bool *duplicate, int64_t *message_count);
    enum perr (*message_get)(struct db *db, int64_t id, struct db_message *out);
    enum perr (*messages_page)(struct db *db, const char *session_id, int limit, int64_t before,
                               bool all, struct db_message_list *out, bool *has_more);
    enum perr (*messages_page_each)(struct db *db, const char *session_id, int limit,
                                    int64_t before, bool all, bool *has_more, db_message_fn fn,
                                    void *arg);
    enum perr (*session_last)(struct db *db, const char *session_id, int64_t *last_id,
                              int64_t *last_seq);
    enum perr (*messages_since)(struct db *db, const char *session_id, int64_t since, int limit,
                                struct db_message_list *out);
    enum perr (*messages_after)(struct db *db, const char *session_id, int64_t after_seq, int limit,
                                struct db_message_list *out);
    enum perr (*messages_context)(struct db *db, const char *session_id, int64_t up_to, int n,
                                  struct db_message_list *out);
    enum perr (*messages_search)(struct db *db, const char *session_id, const char *words,
                                 int limit, int64_t before, struct db_message_list *out);
    enum perr (*search_index)(struct db *db, int max_rows, int *indexed);
    enum perr (*reply_add)(struct db *db, const struct db_reply_in *in, struct db_message *out,
                           int64_t *message_count);
    enum perr (*reply_queue)(struct db *db, const char *node, struct db_message_list *out);
    enum perr (*reply_claim)(struct db *db, int64_t message_id, const char *node, int lease_ms,
                             struct db_claim *out); /* out zeroed */
    enum perr (*reply_renew)(struct db *db, int64_t message_id, const char *node, int lease_ms,
                             const char *response_id, const char *partial, int64_t chunks,
                             bool *mine); /* *mine false */
    enum perr (*reply_queue_drop)(struct db *db, int64_t message_id);
    enum perr (*regenerate)(struct db *db, const char *session_id,
                            struct db_regen *out); /* zeroed */
    enum perr (*stats_read)(struct db *db, struct db_stats *out);
    /* keys */
    enum perr (*keys_active)(struct db *db, int64_t *n);
    enum perr (*key_add)(struct db *db, const char *name, const char *salt, const char *hash,
                         const char *lookup);
    enum perr (*key_revoke)(struct db *db, const char *name);
    enum perr (*key_list)(struct db *db, struct db_key_info **out, size_t *n);
    enum perr (*key_hashes)(struct db *db, struct auth_key **out, size_t *n);
    enum perr (*key_candidates)(struct db *db, const char *lookup, struct auth_key **out,
                                size_t *n);
    /* quotas (db_quota.c composes these with message_add and reply_add) */
    /* Counts one message for q->key in q->day unless the key is at a quota there: *ok then
     * false, nothing written, q->messages and q->tokens its use. */
    enum perr (*quota_take)(struct db *db, struct db_quota *q, bool *ok);
    /* Takes back what quota_take counted (the message was not stored after all). */
    enum perr (*quota_give_back)(struct db *db, const struct db_quota *q);
    /* Records which key message_id came with (messages.key_name). */
    enum perr (*message_set_key)(struct db *db, int64_t message_id, const char *key);
    /* Counts tokens in day for the key message_id came with (none: nothing). */
    enum perr (*quota_tokens)(struct db *db, int64_t message_id, const char *day, int64_t tokens);
    enum perr (*key_usage)(struct db *db, const char *key, const char *day, int64_t *messages,
                           int64_t *tokens);
    /* live figures */
    enum perr (*live_reset)(struct db *db, const char *node_id, int pid, const char *model);
    enum perr (*live_publish)(struct db *db, const char *node_id, int64_t now_ms,
                              int64_t connections, const struct db_live_member *changed,
                              size_t n_changed);
    enum perr (*live_down)(struct db *db, const char *node_id);
    enum perr (*live_read)(struct db *db, int64_t now_ms, struct db_live *out); /* out zeroed */
};

struct db {
    const struct db_backend *be;
    char *path; /* what db_open was given */
};

/* How commits reach the disk (db_use_full_sync): true for "full". */
bool db_full_sync(void);
/* Whether path is a PostgreSQL URI (postgres://, postgresql://). */
bool db_is_pg_uri(const char *path);
/* Live member count cut-off: heartbeats at or after this are fresh (db_live_read). */
int64_t db_live_cutoff(void);
/* Counts one broker_state row into out (db_live_read): its heartbeat into the newest, and
 * when it is fresh at now_ms, the broker into out->nodes (node_id and started_at copied,
 * model stolen) and its connections into the sum. Rows come in node_id order. Returns 0,
 * or -1 without memory (model freed). */
int db_live_add_node(struct db_live *out, const char *node_id, const char *started_at, char *model,
                     int64_t connections, int64_t heartbeat_ms, int64_t now_ms);

/* db_message_add and db_reply_add with a quota (db_quota.c): the backend's store and
 * its quota statements in one transaction (the caller's, else one of their own). */
enum perr db_quota_message_add(struct db *db, const struct db_message_in *in,
                               struct db_message *out, bool *duplicate, int64_t *message_count);
enum perr db_quota_reply_add(struct db *db, const struct db_reply_in *in, struct db_message *out,
                             int64_t *message_count);

/* The backends' openers: a new connection with be and path set, or NULL after logging. */
struct db *db_sqlite_open(const char *path);
struct db *db_pg_open(const char *uri);
extern const struct db_backend db_sqlite_backend;
extern const struct db_backend db_pg_backend;

#endif
