/* db: the store's dispatcher. db_open picks the backend --db names (db_pg*.c for a
 * PostgreSQL URI, db_sqlite*.c for anything else: a file path); every other db_* call
 * goes to the connection's backend table (db_backend.h). Also here: what every backend
 * shares (freeing what reads return, the sync setting, the live figures' cut-off). */
#include "db.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_backend.h"
#include "reply_policy.h"

static bool full_sync; /* set once at start, before any thread opens the database */

void db_use_full_sync(bool full)
{
    full_sync = full;
}

bool db_full_sync(void)
{
    return full_sync;
}

bool db_is_pg_uri(const char *path)
{
    return strncmp(path, "postgres://", 11) == 0 || strncmp(path, "postgresql://", 13) == 0;
}

struct db *db_open(const char *path)
{
    return db_is_pg_uri(path) ? db_pg_open(path) : db_sqlite_open(path);
}

const char *db_path(struct db *db)
{
    return db->path;
}

/* Appends len bytes of s to out (n bytes used of size), cut to fit. */
static void put(char *out, size_t size, size_t *n, const char *s, size_t len)
{
    if (len > size - 1 - *n)
        len = size - 1 - *n;
    memcpy(out + *n, s, len);
    *n += len;
    out[*n] = '\0';
}

char *db_path_shown(const char *path, char *out, size_t size)
{
    const char *p = path, *auth, *at, *colon = NULL;
    size_t n = 0, auth_len;

    assert(size > 0);
    out[0] = '\0';
    if (!db_is_pg_uri(path)) {
        put(out, size, &n, path, strlen(path));
        return out;
    }
    /* scheme://user:PASSWORD@host... */
    auth = strstr(path, "://") + 3;
    auth_len = strcspn(auth, "/?#");
    if ((at = memrchr(auth, '@', auth_len)))
        colon = memchr(auth, ':', (size_t)(at - auth));
    if (colon) {
        put(out, size, &n, path, (size_t)(colon + 1 - path));
        put(out, size, &n, "***", 3);
        p = at;
    }
    /* ...?password=PASSWORD&... */
    for (const char *key; (key = strstr(p, "password="));) {
        bool param = key[-1] == '?' || key[-1] == '&';
        put(out, size, &n, p, (size_t)(key + 9 - p));
        p = key + 9;
        if (param) {
            put(out, size, &n, "***", 3);
            p += strcspn(p, "&#");
        }
    }
    put(out, size, &n, p, strlen(p));
    return out;
}

const char *db_kind(struct db *db)
{
    return db->be->kind;
}

bool db_has_wal(struct db *db)
{
    return db->be->has_wal;
}

/* ---- connection ---- */

void db_close(struct db *db)
{
    if (db)
        db->be->close(db);
}

int db_user_version(struct db *db)
{
    return db->be->user_version(db);
}

int db_schema_version(struct db *db)
{
    return db->be->schema_version(db);
}

enum perr db_no_autocheckpoint(struct db *db)
{
    return db->be->no_autocheckpoint(db);
}

enum perr db_checkpoint(struct db *db, int *wal_frames)
{
    return db->be->checkpoint(db, wal_frames);
}

enum perr db_ping(struct db *db)
{
    return db->be->ping(db);
}

enum perr db_max_pages(struct db *db, int64_t pages)
{
    return db->be->max_pages(db, pages);
}

/* ---- transactions ---- */

enum perr db_tx_begin(struct db *db)
{
    return db->be->tx_begin(db);
}

enum perr db_tx_commit(struct db *db)
{
    return db->be->tx_commit(db);
}

void db_tx_rollback(struct db *db)
{
    db->be->tx_rollback(db);
}

bool db_tx_open(struct db *db)
{
    return db->be->tx_open(db);
}

/* ---- sessions ---- */

enum perr db_session_create(struct db *db, const char *model, const char *title,
                            const char *channel, struct db_session *out)
{
    return db->be->session_create(db, model, title, channel, POLICY_DEFAULT, out);
}

enum perr db_session_create_mode(struct db *db, const char *model, const char *title,
                                 const char *channel, const char *reply_mode,
                                 struct db_session *out)
{
    assert(!reply_mode || policy_mode_valid(reply_mode));
    return db->be->session_create(db, model, title, channel,
                                  reply_mode ? reply_mode : POLICY_DEFAULT, out);
}

enum perr db_session_update(struct db *db, const char *id, const char *reply_mode, bool set_title,
                            const char *title, struct db_session *out)
{
    assert(!reply_mode || policy_mode_valid(reply_mode));
    return db->be->session_update(db, id, reply_mode, set_title, title, out);
}

enum perr db_session_get(struct db *db, const char *id, struct db_session *out)
{
    return db->be->session_get(db, id, out);
}

enum perr db_session_by_channel(struct db *db, const char *channel, struct db_session *out)
{
    return db->be->session_by_channel(db, channel, out);
}

enum perr db_session_list(struct db *db, int limit, int offset, struct db_session **out, size_t *n,
                          int64_t *total)
{
    return db->be->session_list(db, limit, offset, out, n, total);
}

enum perr db_session_delete(struct db *db, const char *id)
{
    return db->be->session_delete(db, id);
}

enum perr db_session_clear(struct db *db, const char *id, int64_t *cleared)
{
    return db->be->session_clear(db, id, cleared);
}

/* ---- messages ---- */

enum perr db_message_add(struct db *db, const struct db_message_in *in, struct db_message *out,
                         bool *duplicate, int64_t *message_count)
{
    if (in->quota && strcmp(in->role, "user") == 0)
        return db_quota_message_add(db, in, out, duplicate, message_count);
    return db->be->message_add(db, in, out, duplicate, message_count);
}

enum perr db_message_get(struct db *db, int64_t id, struct db_message *out)
{
    return db->be->message_get(db, id, out);
}

enum perr db_messages_page(struct db *db, const char *session_id, int limit, int64_t before,
                           bool all, struct db_message_list *out, bool *has_more)
{
    return db->be->messages_page(db, session_id, limit, before, all, out, has_more);
}

enum perr db_messages_page_each(struct db *db, const char *session_id, int limit, int64_t before,
                                bool all, bool *has_more, db_message_fn fn, void *arg)
{
    return db->be->messages_page_each(db, session_id, limit, before, all, has_more, fn, arg);
}

enum perr db_session_last(struct db *db, const char *session_id, int64_t *last_id,
                          int64_t *last_seq)
{
    return db->be->session_last(db, session_id, last_id, last_seq);
}

enum perr db_messages_since(struct db *db, const char *session_id, int64_t since, int limit,
                            struct db_message_list *out)
{
    return db->be->messages_since(db, session_id, since, limit, out);
}

enum perr db_messages_after(struct db *db, const char *session_id, int64_t after_seq, int limit,
                            struct db_message_list *out)
{
    return db->be->messages_after(db, session_id, after_seq, limit, out);
}

enum perr db_messages_context(struct db *db, const char *session_id, int64_t up_to, int n,
                              struct db_message_list *out)
{
    return db->be->messages_context(db, session_id, up_to, n, out);
}

enum perr db_messages_search(struct db *db, const char *session_id, const char *words, int limit,
                             int64_t before, struct db_message_list *out)
{
    return db->be->messages_search(db, session_id, words, limit, before, out);
}

enum perr db_search_index(struct db *db, int max_rows, int *indexed)
{
    return db->be->search_index(db, max_rows, indexed);
}

enum perr db_reply_add(struct db *db, const struct db_reply_in *in, struct db_message *out,
                       int64_t *message_count)
{
    if (in->quota_day && in->reply_to > 0 && (in->prompt_tokens > 0 || in->completion_tokens > 0))
        return db_quota_reply_add(db, in, out, message_count);
    return db->be->reply_add(db, in, out, message_count);
}

enum perr db_reply_queue(struct db *db, const char *node, struct db_message_list *out)
{
    return db->be->reply_queue(db, node, out);
}

enum perr db_reply_claim(struct db *db, int64_t message_id, const char *node, int lease_ms,
                         struct db_claim *out)
{
    assert(node && *node && strlen(node) <= DB_NODE_ID_MAX && lease_ms >= 0);
    memset(out, 0, sizeof *out);
    return db->be->reply_claim(db, message_id, node, lease_ms, out);
}

enum perr db_reply_renew(struct db *db, int64_t message_id, const char *node, int lease_ms,
                         const char *response_id, const char *partial, int64_t chunks, bool *mine)
{
    assert(node && *node && lease_ms >= 0);
    *mine = false;
    return db->be->reply_renew(db, message_id, node, lease_ms, response_id, partial, chunks, mine);
}

enum perr db_reply_queue_drop(struct db *db, int64_t message_id)
{
    return db->be->reply_queue_drop(db, message_id);
}

enum perr db_regenerate(struct db *db, const char *session_id, struct db_regen *out)
{
    memset(out, 0, sizeof *out);
    return db->be->regenerate(db, session_id, out);
}

enum perr db_stats_read(struct db *db, struct db_stats *out)
{
    return db->be->stats_read(db, out);
}

/* ---- keys ---- */

enum perr db_keys_active(struct db *db, int64_t *n)
{
    return db->be->keys_active(db, n);
}

enum perr db_key_add(struct db *db, const char *name, const char *salt, const char *hash,
                     const char *lookup)
{
    return db->be->key_add(db, name, salt, hash, lookup);
}

enum perr db_key_revoke(struct db *db, const char *name)
{
    return db->be->key_revoke(db, name);
}

enum perr db_key_list(struct db *db, struct db_key_info **out, size_t *n)
{
    return db->be->key_list(db, out, n);
}

enum perr db_key_hashes(struct db *db, struct auth_key **out, size_t *n)
{
    return db->be->key_hashes(db, out, n);
}

enum perr db_key_candidates(struct db *db, const char *lookup, struct auth_key **out, size_t *n)
{
    return db->be->key_candidates(db, lookup, out, n);
}

/* ---- quotas ---- */

enum perr db_key_usage(struct db *db, const char *key, const char *day, int64_t *messages,
                       int64_t *tokens)
{
    return db->be->key_usage(db, key, day, messages, tokens);
}

/* ---- live figures ---- */

enum perr db_live_reset(struct db *db, const char *node_id, int pid, const char *model)
{
    assert(node_id && *node_id && strlen(node_id) <= DB_NODE_ID_MAX);
    return db->be->live_reset(db, node_id, pid, model);
}

enum perr db_live_publish(struct db *db, const char *node_id, int64_t now_ms, int64_t connections,
                          const struct db_live_member *changed, size_t n_changed)
{
    assert(node_id && *node_id && strlen(node_id) <= DB_NODE_ID_MAX);
    return db->be->live_publish(db, node_id, now_ms, connections, changed, n_changed);
}

enum perr db_live_down(struct db *db, const char *node_id)
{
    assert(node_id && *node_id);
    return db->be->live_down(db, node_id);
}

enum perr db_live_read(struct db *db, int64_t now_ms, struct db_live *out)
{
    memset(out, 0, sizeof *out);
    return db->be->live_read(db, now_ms, out);
}

/* ---- what reads return, freed ---- */

void db_session_cleanup(struct db_session *s)
{
    if (!s)
        return;
    free(s->title);
    free(s->model);
    free(s->channel);
    s->title = s->model = s->channel = NULL;
}

void db_session_list_free(struct db_session *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        db_session_cleanup(&v[i]);
    free(v);
}

void db_message_cleanup(struct db_message *m)
{
    if (!m)
        return;
    free(m->content);
    free(m->connection_id);
    free(m->client_msg_id);
    free(m->thread_id);
    free(m->author_name);
    free(m->status);
    memset(m, 0, sizeof *m);
}

void db_message_list_cleanup(struct db_message_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        db_message_cleanup(&l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

void db_claim_cleanup(struct db_claim *c)
{
    if (!c)
        return;
    free(c->partial);
    c->partial = NULL;
}

void db_key_list_free(struct db_key_info *v, size_t n)
{
    (void)n;
    free(v);
}

void db_live_cleanup(struct db_live *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n_nodes; i++)
        free(l->nodes[i].model);
    free(l->nodes);
    memset(l, 0, sizeof *l);
}

int64_t db_live_cutoff(void)
{
    return clock_now_ms() - DB_LIVE_FRESH_MS;
}

int db_live_add_node(struct db_live *out, const char *node_id, const char *started_at, char *model,
                     int64_t connections, int64_t heartbeat_ms, int64_t now_ms)
{
    struct db_live_node *node;

    if (heartbeat_ms > out->heartbeat_ms)
        out->heartbeat_ms = heartbeat_ms;
    if (heartbeat_ms < now_ms - DB_LIVE_FRESH_MS) {
        free(model);
        return 0;
    }
    if ((out->n_nodes & (out->n_nodes - 1)) == 0) { /* full at 0, 1, 2, 4...: double */
        size_t cap = out->n_nodes ? out->n_nodes * 2 : 1;
        struct db_live_node *grown = realloc(out->nodes, cap * sizeof *grown);
        if (!grown) {
            free(model);
            return -1;
        }
        out->nodes = grown;
    }
    node = &out->nodes[out->n_nodes++];
    memset(node, 0, sizeof *node);
    snprintf(node->node_id, sizeof node->node_id, "%s", node_id ? node_id : "");
    snprintf(node->started_at, sizeof node->started_at, "%s", started_at ? started_at : "");
    node->model = model;
    node->connections = connections;
    node->heartbeat_ms = heartbeat_ms;
    node->last_seen_ms = now_ms > heartbeat_ms ? now_ms - heartbeat_ms : 0;
    out->up = true;
    out->connections += connections;
    return 0;
}
