/* db: the store, the one database interface of Parley. All SQL lives in common/db_*.c
 * and schema/.
 *
 * A struct db is one connection with its prepared statements, to SQLite (a file path:
 * db_sqlite*.c) or PostgreSQL (a postgres:// or postgresql:// URI: db_pg*.c); callers do
 * not know which. Use it from one thread at a time (each REST worker and the broker's
 * database thread open their own). Every function returns PERR_OK, PERR_SESSION_NOT_FOUND
 * where a session is named and absent, or PERR_UNAVAILABLE when the database fails
 * (logged here, with the database's message). Writes that touch several rows run in one
 * transaction; they nest inside db_tx_begin / db_tx_commit, so the broker can commit many
 * writes at once (group commit).
 *
 * Within a session, messages are ordered by seq (1, 2, 3, ... in commit order, never
 * reused); where a message id marks a place in that order (since, before, up_to), the
 * place is that message's seq, or, for an id the session does not hold, where that id
 * would be. */
#ifndef PARLEY_DB_H
#define PARLEY_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "clock.h"
#include "perr.h"

#define DB_ID_HEX 16 /* session ids: 16 lowercase hex characters */
#define DB_ID_LEN (DB_ID_HEX + 1)

struct db;

struct db_session {
    char id[DB_ID_LEN];
    char *title;   /* NULL when unset */
    char *model;   /* never NULL after a successful read */
    char *channel; /* envelope channel name, NULL for plain sessions */
    char created_at[CLOCK_ISO_LEN];
    char updated_at[CLOCK_ISO_LEN];
    int64_t message_count;
    int64_t clients; /* live members as the live brokers last published, summed */
};

struct db_message {
    int64_t id;
    int64_t seq; /* its place in the session: 1, 2, 3, ... */
    char session_id[DB_ID_LEN];
    char role[12]; /* user, assistant, system, event */
    char *content;
    char created_at[CLOCK_ISO_LEN];
    char *connection_id; /* NULL when absent, like the three below */
    char *client_msg_id;
    char *thread_id;
    char *status; /* assistant replies: complete, stopped, error, incomplete */
};

struct db_message_list {
    struct db_message *v;
    size_t n;
};

/* A new message to store. Strings are borrowed for the call. */
struct db_message_in {
    const char *session_id;
    const char *role;
    const char *content;
    const char *connection_id;
    const char *client_msg_id;
    const char *thread_id;
    bool want_reply; /* queue it for an assistant reply (reply_queue) */
};

/* A finished assistant reply to store. Strings are borrowed for the call. */
struct db_reply_in {
    const char *session_id;
    const char *content;
    const char *model;
    const char *status; /* complete, stopped, error, incomplete */
    const char *reasoning;
    const char *error;
    int64_t prompt_tokens; /* -1 when unknown */
    int64_t completion_tokens;
    int64_t duration_ms;
    int64_t reply_to; /* the user message it answers: removed from reply_queue; 0 none */
};

struct db_stats {
    int64_t sessions_created;
    int64_t messages_total;
    int64_t replies_total;
    int64_t reply_ms_total;
};

/* A broker's name in the live figures (SPEC 8: --node-id, default HOSTNAME:PORT): 1 to
 * DB_NODE_ID_MAX characters of A-Z a-z 0-9 . _ : - */
#define DB_NODE_ID_MAX 64
#define DB_NODE_ID_LEN (DB_NODE_ID_MAX + 1)

/* One live broker, from its last publish. */
struct db_live_node {
    char node_id[DB_NODE_ID_LEN];
    char started_at[CLOCK_ISO_LEN];
    char *model; /* NULL when it did not say */
    int64_t connections;
    int64_t heartbeat_ms; /* unix milliseconds of its last publish */
    int64_t last_seen_ms; /* the heartbeat's age at db_live_read's now_ms (0 if ahead) */
};

/* What REST knows of the brokers, from their last publishes: the live ones only (heartbeat
 * within DB_LIVE_FRESH_MS), and the sums over them. */
struct db_live {
    bool up;                    /* at least one broker is live */
    int64_t connections;        /* summed over the live brokers */
    int64_t active_sessions;    /* sessions with at least one member at a live broker */
    int64_t heartbeat_ms;       /* the newest heartbeat of any broker, live or not; 0: none */
    struct db_live_node *nodes; /* the live brokers by node_id (byte order); db_live_cleanup */
    size_t n_nodes;
};

/* One session's member count, as the broker publishes it. */
struct db_live_member {
    const char *session_id;
    int64_t clients; /* 0 removes the row */
};

/* A broker heartbeat older than this means the broker is down. It publishes every second. */
#define DB_LIVE_FRESH_MS 3000
/* A broker silent this long is forgotten (its rows deleted) by the next reset or publish
 * of any broker, so dead nodes do not pile up. */
#define DB_LIVE_FORGET_MS 60000

/* ---- connection ---- */
/* How commits reach the disk, for every connection this process opens afterwards (call
 * once at start). false (the default): PRAGMA synchronous = NORMAL: in WAL mode a commit
 * survives the process being killed (kill -9), and only an OS crash or power loss can
 * take the last commits back. true: FULL, an fsync per commit, survives power loss too. */
void db_use_full_sync(bool full);
/* Opens the database --db names: a PostgreSQL URI (postgres://, postgresql://) or else
 * an SQLite file path (created if needed: WAL, foreign keys, busy timeout). Migrates the
 * schema up to the newest embedded one. Returns a new handle, or NULL after logging why
 * (with what to do). Free with db_close. On PostgreSQL the server must answer at open;
 * later, a connection that was lost is made anew by the next call (calls return
 * PERR_UNAVAILABLE until the server answers again). */
struct db *db_open(const char *path);
void db_close(struct db *db);
/* What the connection was opened on, as given to db_open (borrowed: valid while db is
 * open). */
const char *db_path(struct db *db);
/* path as it may be shown in logs: a PostgreSQL URI with its password (user:PASSWORD@,
 * password=...) replaced by ***. Writes at most size bytes (cut if longer) into out and
 * returns out. */
char *db_path_shown(const char *path, char *out, size_t size);
/* "sqlite" or "postgresql". */
const char *db_kind(struct db *db);
/* The schema version the database is at (SQLite: PRAGMA user_version; PostgreSQL: the
 * schema_version table). */
int db_user_version(struct db *db);
/* The number of migrations embedded in this binary for db's kind of database. */
int db_schema_version(struct db *db);
/* Whether the database is a WAL file that its writer should checkpoint (SQLite); the
 * three calls below do nothing elsewhere. */
bool db_has_wal(struct db *db);
/* Stops this connection from checkpointing the WAL as part of its commits (the broker's
 * writer: a checkpoint's fsyncs would stall every message queued behind it). */
enum perr db_no_autocheckpoint(struct db *db);
/* Copies committed WAL pages into the database without blocking writers or readers
 * (a PASSIVE checkpoint). Sets *wal_frames (NULL is fine) to the WAL's length in pages,
 * -1 when the checkpoint could not run. A WAL starts over only when a writer begins a
 * transaction with all of it copied: while another connection keeps committing, a
 * checkpoint of one's own never gets there and the WAL grows without bound, so the
 * broker's writer finishes what its checkpointer began (dbq.c). */
enum perr db_checkpoint(struct db *db, int *wal_frames);
/* A cheap query, for /health. */
enum perr db_ping(struct db *db);

/* ---- transactions (nestable: the outermost is SQLite's BEGIN IMMEDIATE, or PostgreSQL's
 * BEGIN with the write lock, ROW EXCLUSIVE, on the tables writes touch; inner levels are
 * savepoints) ----
 * On some errors inside a statement (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM, some
 * SQLITE_BUSY) SQLite rolls back the whole transaction by itself; on PostgreSQL a lost
 * connection does, and a failed statement spoils the transaction up to the innermost
 * level (db_tx_rollback of that level mends it). Every statement is then refused
 * (PERR_UNAVAILABLE) until the outermost level is rolled back, so nothing meant for the
 * lost transaction commits on its own; db_tx_open tells the caller of the outermost
 * level. A COMMIT that is busy is retried for up to the busy timeout. */
enum perr db_tx_begin(struct db *db);
enum perr db_tx_commit(struct db *db);
void db_tx_rollback(struct db *db);
/* Whether a transaction is open on the connection (false once it was rolled back
 * by the database, or the connection was lost). */
bool db_tx_open(struct db *db);
/* Caps the file at pages pages, for this connection only (PRAGMA max_page_count): writes
 * beyond it fail as on a full disk. For fault tests; SQLite only (elsewhere
 * PERR_UNAVAILABLE). */
enum perr db_max_pages(struct db *db, int64_t pages);

/* ---- sessions ---- */
/* Creates a session; channel may be NULL. Fills out (caller cleans up). */
enum perr db_session_create(struct db *db, const char *model, const char *title,
                            const char *channel, struct db_session *out);
enum perr db_session_get(struct db *db, const char *id, struct db_session *out);
enum perr db_session_by_channel(struct db *db, const char *channel, struct db_session *out);
/* Newest updated_at first. *out is a new array of *n sessions: free with
 * db_session_list_free. *total counts every session. */
enum perr db_session_list(struct db *db, int limit, int offset, struct db_session **out, size_t *n,
                          int64_t *total);
void db_session_list_free(struct db_session *v, size_t n);
enum perr db_session_delete(struct db *db, const char *id);
/* Deletes the session's messages; *cleared counts them. */
enum perr db_session_clear(struct db *db, const char *id, int64_t *cleared);
void db_session_cleanup(struct db_session *s);

/* ---- messages ---- */
/* Stores a message and bumps the session's count and updated_at, in one transaction.
 * A client_msg_id already stored in the session is not stored again: *duplicate is set
 * and out is the stored message. *message_count (may be NULL) is the session's count. */
enum perr db_message_add(struct db *db, const struct db_message_in *in, struct db_message *out,
                         bool *duplicate, int64_t *message_count);
enum perr db_message_get(struct db *db, int64_t id, struct db_message *out);
/* The newest limit messages with id < before (before <= 0: no bound), ascending.
 * *has_more tells whether older ones exist. */
enum perr db_messages_page(struct db *db, const char *session_id, int limit, int64_t before,
                           struct db_message_list *out, bool *has_more);
/* Called for each message of a page; m and its strings are borrowed: valid only during
 * the call (they point into SQLite's row). */
typedef void (*db_message_fn)(void *arg, const struct db_message *m);
#define DB_PAGE_MAX_BYTES (4 * 1024 * 1024) /* content in one history page: has_more beyond */
/* As db_messages_page, handing each message to fn (ascending) instead of copying them:
 * for answers that only write the rows out. The page holds at most DB_PAGE_MAX_BYTES of
 * content (at least one message): the older rest is has_more, for the next page. */
enum perr db_messages_page_each(struct db *db, const char *session_id, int limit, int64_t before,
                                bool *has_more, db_message_fn fn, void *arg);
/* The id and seq of the session's newest message, 0 and 0 when it has none. */
enum perr db_session_last(struct db *db, const char *session_id, int64_t *last_id,
                          int64_t *last_seq);
/* Messages committed after message since (an id; 0: from the start), in seq order, at
 * most limit. */
enum perr db_messages_since(struct db *db, const char *session_id, int64_t since, int limit,
                            struct db_message_list *out);
/* Messages with seq > after_seq, in seq order, at most limit. */
enum perr db_messages_after(struct db *db, const char *session_id, int64_t after_seq, int limit,
                            struct db_message_list *out);
/* The last n user and assistant messages with id <= up_to (0: no bound), ascending: the
 * assistant's context for a reply to message up_to, which ends with that message. */
enum perr db_messages_context(struct db *db, const char *session_id, int64_t up_to, int n,
                              struct db_message_list *out);
/* The newest limit messages of the session that hold every word of words (what a
 * person typed: never a syntax error; words without a word in them match nothing),
 * before message before (<= 0: no bound), ascending. Every stored message can be found
 * (SQLite indexes what is not indexed yet first: db_search_index). */
enum perr db_messages_search(struct db *db, const char *session_id, const char *words, int limit,
                             int64_t before, struct db_message_list *out);
/* Adds at most max_rows (0: all) of the messages not yet in the search index to it, in
 * one transaction, oldest first; *indexed (NULL is fine) says how many. Messages are
 * stored without indexing (schema/003_search_later.sql): indexing many at once costs a
 * fraction of indexing each in its own commit. */
enum perr db_search_index(struct db *db, int max_rows, int *indexed);
void db_message_cleanup(struct db_message *m);
void db_message_list_cleanup(struct db_message_list *l);

/* ---- assistant replies ---- */
/* Stores a finished reply, counts it for /stats and drops reply_to from the reply queue,
 * in one transaction. */
enum perr db_reply_add(struct db *db, const struct db_reply_in *in, struct db_message *out,
                       int64_t *message_count);
/* User messages still waiting for a reply, oldest first (message ids and sessions). */
enum perr db_reply_queue(struct db *db, struct db_message_list *out);
/* Drops a message from the reply queue without a reply (e.g. the assistant is none). */
enum perr db_reply_queue_drop(struct db *db, int64_t message_id);

/* ---- figures ---- */
enum perr db_stats_read(struct db *db, struct db_stats *out);

/* ---- API keys (db_keys.c) ---- */
struct db_key_info {
    char name[65];
    char created_at[CLOCK_ISO_LEN];
    char revoked_at[CLOCK_ISO_LEN]; /* empty while the key is valid */
};

/* How many keys exist that are not revoked. */
enum perr db_keys_active(struct db *db, int64_t *n);
/* Stores a key's salt and hash. PERR_INVALID_FIELD when the name is taken. */
enum perr db_key_add(struct db *db, const char *name, const char *salt, const char *hash,
                     const char *lookup);
/* Revokes a key. PERR_NOT_FOUND when no valid key has that name. */
enum perr db_key_revoke(struct db *db, const char *name);
/* Every key, revoked ones too, oldest first. *out is new: free with db_key_list_free. */
enum perr db_key_list(struct db *db, struct db_key_info **out, size_t *n);
void db_key_list_free(struct db_key_info *v, size_t n);
/* The valid keys' salts and hashes, for auth_verify. *out is new: free with free(). */
enum perr db_key_hashes(struct db *db, struct auth_key **out, size_t *n);
/* The same for the valid keys a presented key can be: those with its lookup (auth_lookup)
 * and the old ones without a lookup. One row for a key in use. */
enum perr db_key_candidates(struct db *db, const char *lookup, struct auth_key **out, size_t *n);

/* ---- the broker's live figures (db_*_live.c) ----
 * Each broker writes only its own rows, named by its node id (DB_NODE_ID_MAX at most);
 * REST sums over the live ones. */
/* Broker side: at start, forget this node's member counts of a previous run and mark it
 * live with no connections; forgets nodes silent for DB_LIVE_FORGET_MS. */
enum perr db_live_reset(struct db *db, const char *node_id, int pid, const char *model);
/* Broker side: this node's heartbeat with its connection count, plus the member counts that
 * changed; forgets nodes silent for DB_LIVE_FORGET_MS. A node forgotten meanwhile is made
 * anew (with this process's pid, started_at now, no model; its members as they change). */
enum perr db_live_publish(struct db *db, const char *node_id, int64_t now_ms, int64_t connections,
                          const struct db_live_member *changed, size_t n_changed);
/* Broker side, at clean shutdown: this node is down at once (its rows are deleted). */
enum perr db_live_down(struct db *db, const char *node_id);
/* REST side: the live brokers and the sums. On failure out is empty (no broker, every
 * figure 0). Free out with db_live_cleanup either way. */
enum perr db_live_read(struct db *db, int64_t now_ms, struct db_live *out);
/* Frees what db_live_read put in l and empties it. NULL is fine. */
void db_live_cleanup(struct db_live *l);

#endif
