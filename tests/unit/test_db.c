/* test_db: the database layer on temporary files: opening and migrating, sessions,
 * messages, replies and the reply queue, nested transactions and the broker's live
 * figures. What the layer writes is checked through a second, plain sqlite3 connection
 * where that is the only honest view (WAL, visibility before commit, cascades, FTS).
 * Not a test of SQLite itself. */
#include <dirent.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "log.h"
#include "unit.h"

/* Generated from schema/ by tools/embed_schema.sh (build/gen/schema_sql.c). */
extern const char *const parley_migrations[];
extern const size_t parley_migrations_count;

static char tmp_dir[] = "/tmp/parley-test-db-XXXXXX";
static char path[512]; /* the current case's database file */

/* ---- helpers ---- */

static const char *root(void)
{
    const char *r = getenv("PARLEY_ROOT");
    return r && *r ? r : ".";
}

/* Reads a whole file into a new malloc'd string (caller frees), or NULL. */
static char *read_file(const char *p)
{
    FILE *f = fopen(p, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* A fresh file name for this case in the temporary folder. */
static const char *new_path(const char *name)
{
    snprintf(path, sizeof path, "%s/%s.db", tmp_dir, name);
    return path;
}

static struct db *open_new(const char *name)
{
    return db_open(new_path(name));
}

/* Runs sql (several statements allowed) on a separate connection to path. 0 or -1. */
static int side_exec(const char *p, const char *sql)
{
    sqlite3 *c = NULL;
    char *err = NULL;
    int rc = -1;

    if (sqlite3_open_v2(p, &c, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) == SQLITE_OK &&
        sqlite3_exec(c, sql, NULL, NULL, &err) == SQLITE_OK)
        rc = 0;
    if (err) {
        fprintf(stderr, "side_exec: %s\n", err);
        sqlite3_free(err);
    }
    sqlite3_close(c);
    return rc;
}

/* The first column of the first row of sql on a separate connection, as an integer (-999
 * when there is none) or as text into buf (when buf is not NULL). */
static long long side_query(const char *p, const char *sql, const char *bind, char *buf,
                            size_t size)
{
    sqlite3 *c = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -999;

    if (buf)
        snprintf(buf, size, "(no row)");
    if (sqlite3_open_v2(p, &c, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(c, sql, -1, &st, NULL) == SQLITE_OK) {
        if (bind)
            sqlite3_bind_text(st, 1, bind, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            v = sqlite3_column_int64(st, 0);
            if (buf)
                snprintf(buf, size, "%s",
                         sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0)
                                                    : "(null)");
        }
    } else {
        fprintf(stderr, "side_query: %s\n", c ? sqlite3_errmsg(c) : "no connection");
    }
    sqlite3_finalize(st);
    sqlite3_close(c);
    return v;
}

static long long side_int(const char *sql, const char *bind)
{
    return side_query(path, sql, bind, NULL, 0);
}

/* How many messages_fts rows match term (what is indexed so far: db_search_index). */
static long long fts_hits(const char *term)
{
    return side_int("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?1", term);
}

/* db_search_index(db, max_rows): how many it indexed, or -1 on an error. */
static int index_now(struct db *db, int max_rows)
{
    int n = -1;

    return db_search_index(db, max_rows, &n) == PERR_OK ? n : -1;
}

/* 0 when the FTS5 index agrees with itself and with the messages table (SQLite 3.40
 * compares both: meaningful only when every message is indexed). */
static int fts_whole(void)
{
    return side_exec(path, "INSERT INTO messages_fts(messages_fts, rank)"
                           " VALUES ('integrity-check', 1)");
}

/* Adds a message; returns its id, or -1 (the failure is recorded). */
static int64_t add(struct db *db, const char *sid, const char *role, const char *content,
                   const char *cmid, bool want_reply)
{
    struct db_message_in in = {.session_id = sid,
                               .role = role,
                               .content = content,
                               .client_msg_id = cmid,
                               .want_reply = want_reply};
    struct db_message m;
    bool dup;
    int64_t count;
    enum perr e = db_message_add(db, &in, &m, &dup, &count);

    if (e) {
        UNIT_FAIL("db_message_add(%s, \"%s\") returned %d", role, content, (int)e);
        return -1;
    }
    int64_t id = m.id;
    db_message_cleanup(&m);
    return id;
}

/* The contents of a list joined with commas, into out. */
static const char *contents(const struct db_message_list *l, char *out, size_t size)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < l->n && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? "," : "", l->v[i].content);
    return out;
}

static void pause_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* ---- opening and migrations ---- */

/* The number NNN of a migration file .../NNN_name.sql. */
static int file_number(const char *p)
{
    const char *base = strrchr(p, '/');

    return (int)strtol(base ? base + 1 : p, NULL, 10);
}

/* The newest SQLite migration's number (tools/embed_schema.sh checks that they count from
 * 001 without gaps); -1 without files. */
static int schema_newest(void)
{
    char pattern[600];
    glob_t g;
    int n = -1;

    snprintf(pattern, sizeof pattern, "%s/schema/[0-9][0-9][0-9]_*.sql", root());
    if (glob(pattern, 0, NULL, &g) == 0) {
        n = g.gl_pathc ? file_number(g.gl_pathv[g.gl_pathc - 1]) : -1;
        globfree(&g);
    }
    return n;
}

static void open_empty(void)
{
    struct db *db = open_new("empty");
    char mode[32];
    glob_t g;
    char pattern[600];

    REQUIRE(db != NULL);
    snprintf(pattern, sizeof pattern, "%s/schema/[0-9][0-9][0-9]_*.sql", root());
    if (glob(pattern, 0, NULL, &g) == 0) {
        EQ_INT(db_schema_version(db), schema_newest());
        globfree(&g);
    } else {
        UNIT_FAIL("no schema files at %.400s", pattern);
    }
    EQ_INT(db_user_version(db), db_schema_version(db));
    EQ_INT(side_int("PRAGMA user_version", NULL), db_schema_version(db));
    side_query(path, "PRAGMA journal_mode", NULL, mode, sizeof mode);
    EQ_STR(mode, "wal");
    EQ_INT(side_int("SELECT count(*) FROM sqlite_master WHERE name = 'messages_fts'", NULL), 1);
    EQ_INT(db_ping(db), PERR_OK);
    db_close(db);
    db_close(NULL);
}

/* Several processes opening one new file at the same moment all succeed: children wait
 * on a pipe, the parent closes it, and each opens (switch to WAL, migrations) at once. */
static void open_race(void)
{
    enum { ROUNDS = 20, PROCS = 6 };
    int failed = 0;

    for (int round = 0; round < ROUNDS; round++) {
        char name[32];
        int gate[2];
        pid_t kids[PROCS];

        snprintf(name, sizeof name, "race%d", round);
        new_path(name);
        REQUIRE(pipe(gate) == 0);
        for (int i = 0; i < PROCS; i++) {
            kids[i] = fork();
            REQUIRE(kids[i] >= 0);
            if (kids[i] == 0) {
                char c;
                struct db *db;
                close(gate[1]);
                if (read(gate[0], &c, 1) != 0)
                    _exit(3);
                db = db_open(path);
                if (!db)
                    _exit(1);
                _exit(db_user_version(db) == db_schema_version(db) ? 0 : 2);
            }
        }
        close(gate[0]);
        close(gate[1]); /* every child reads end-of-file at once */
        for (int i = 0; i < PROCS; i++) {
            int st = 0;
            waitpid(kids[i], &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                failed++;
        }
    }
    EQ_INT(failed, 0);
}

/* Opening twice (a second process, or REST worker) leaves the file as it was. */
static void open_twice(void)
{
    struct db *a = open_new("twice"), *b;
    struct db_session s, *v = NULL;
    size_t n = 0;
    int64_t total = -1;

    REQUIRE(a != NULL);
    b = db_open(path);
    REQUIRE(b != NULL);
    EQ_INT(db_user_version(b), db_schema_version(b));
    REQUIRE(db_session_create(a, "echo", "t", NULL, &s) == PERR_OK);
    REQUIRE(db_session_list(b, 10, 0, &v, &n, &total) == PERR_OK);
    EQ_INT(total, 1);
    EQ_INT(n, 1);
    if (n == 1)
        EQ_STR(v[0].id, s.id);
    db_session_list_free(v, n);
    db_session_cleanup(&s);
    db_close(a);
    db_close(b);
}

static void embedded_match_files(void)
{
    glob_t g;
    char pattern[600];

    snprintf(pattern, sizeof pattern, "%s/schema/[0-9][0-9][0-9]_*.sql", root());
    REQUIRE(glob(pattern, 0, NULL, &g) == 0);
    EQ_INT(parley_migrations_count, schema_newest());
    for (size_t k = 0; k < g.gl_pathc; k++) {
        size_t i = (size_t)file_number(g.gl_pathv[k]) - 1; /* migration NNN is [NNN - 1] */
        char *text = i < parley_migrations_count ? read_file(g.gl_pathv[k]) : NULL;
        if (!text)
            UNIT_FAIL("cannot read %s, or not embedded", g.gl_pathv[k]);
        else if (strcmp(text, parley_migrations[i]) != 0)
            UNIT_FAIL("parley_migrations[%zu] differs from %s", i, g.gl_pathv[k]);
        free(text);
    }
    globfree(&g);
}

static void migrate_old(void)
{
    char file[600], got[128];
    char *v1;
    struct db *db;
    struct db_session s;
    struct db_message_list l = {0};
    bool more = true;
    int64_t id;

    snprintf(file, sizeof file, "%s/schema/001_init.sql", root());
    v1 = read_file(file);
    REQUIRE(v1 != NULL);
    new_path("old");
    EQ_INT(side_exec(path, v1), 0);
    free(v1);
    EQ_INT(side_exec(path, "PRAGMA user_version = 1;"
                           "INSERT INTO sessions VALUES ('00000000000000aa', 'old title', 'echo',"
                           " NULL, '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z', 1);"
                           "INSERT INTO messages(session_id, role, content, created_at) VALUES"
                           " ('00000000000000aa', 'user', 'hello from the aardvark schema',"
                           " '2025-01-01T00:00:00.000Z');"),
           0);
    EQ_INT(side_int("PRAGMA user_version", NULL), 1);
    EQ_INT(side_int("SELECT count(*) FROM sqlite_master WHERE name = 'messages_fts'", NULL), 0);

    db = db_open(path);
    REQUIRE(db != NULL);
    EQ_INT(db_user_version(db), db_schema_version(db));
    EQ_INT(side_int("PRAGMA user_version", NULL), db_schema_version(db));
    REQUIRE(db_session_get(db, "00000000000000aa", &s) == PERR_OK);
    EQ_STR(s.title, "old title");
    EQ_INT(s.message_count, 1);
    EQ_STR(s.updated_at, "2025-01-01T00:00:00.000Z");
    db_session_cleanup(&s);
    EQ_INT(db_messages_page(db, "00000000000000aa", 10, 0, false, &l, &more), PERR_OK);
    EQ_STR(contents(&l, got, sizeof got), "hello from the aardvark schema");
    EQ_INT(more, false);
    db_message_list_cleanup(&l);
    /* 002 indexed the rows already there; 003 marked them indexed; new ones are indexed
     * after their commit */
    EQ_INT(fts_hits("aardvark"), 1);
    EQ_INT(side_int("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'aardvark'", NULL), 1);
    EQ_INT(side_int("SELECT indexed_id FROM search_state", NULL), 1);
    EQ_INT(index_now(db, 0), 0);
    id = add(db, "00000000000000aa", "user", "a zebra crossing", NULL, false);
    EQ_INT(fts_hits("zebra"), 0);
    EQ_INT(index_now(db, 0), 1);
    EQ_INT(side_int("SELECT indexed_id FROM search_state", NULL), id);
    EQ_INT(fts_hits("zebra"), 1);
    EQ_INT(fts_whole(), 0);
    EQ_INT(side_int("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'zebra'", NULL), id);
    EQ_INT(fts_hits("giraffe"), 0);
    db_close(db);

    /* opening the migrated file again changes nothing */
    db = db_open(path);
    REQUIRE(db != NULL);
    EQ_INT(db_user_version(db), db_schema_version(db));
    EQ_INT(side_int("SELECT count(*) FROM messages", NULL), 2);
    EQ_INT(fts_hits("aardvark OR zebra"), 2);
    db_close(db);
}

/* The SQLite migrations in schema/ (what db_schema_version says of an SQLite db). */
static int schema_files(void)
{
    return schema_newest();
}

static void refuse_newer(void)
{
    char sql[64];
    struct db *db;

    new_path("newer");
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", schema_files() + 1);
    REQUIRE(side_exec(path, sql) == 0);
    db = db_open(path);
    EQ_INT(db == NULL, 1);
    db_close(db);
    EQ_INT(side_int("PRAGMA user_version", NULL), schema_files() + 1);
    EQ_INT(side_int("SELECT count(*) FROM sqlite_master WHERE name = 'sessions'", NULL), 0);
}

static void open_missing_folder(void)
{
    char p[600];
    struct db *db;

    snprintf(p, sizeof p, "%s/no/such/folder/x.db", tmp_dir);
    db = db_open(p);
    EQ_INT(db == NULL, 1);
    db_close(db);
}

/* ---- sessions ---- */

static void session_create_get(void)
{
    struct db *db = open_new("sessions");
    struct db_session a, b, c;
    struct db_stats st;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", "First", NULL, &a) == PERR_OK);
    EQ_INT(clock_is_hex(a.id, DB_ID_HEX), 1);
    EQ_STR(a.title, "First");
    EQ_STR(a.model, "echo");
    EQ_STR(a.channel, NULL);
    EQ_INT(strlen(a.created_at), 24);
    EQ_STR(a.updated_at, a.created_at);
    EQ_INT(a.message_count, 0);
    EQ_INT(a.clients, 0);

    REQUIRE(db_session_get(db, a.id, &b) == PERR_OK);
    EQ_STR(b.id, a.id);
    EQ_STR(b.title, "First");
    EQ_STR(b.model, "echo");
    EQ_STR(b.channel, NULL);
    EQ_STR(b.created_at, a.created_at);
    EQ_STR(b.updated_at, a.created_at);
    EQ_INT(b.message_count, 0);
    EQ_INT(b.clients, 0);
    db_session_cleanup(&b);

    REQUIRE(db_session_create(db, "gpt", NULL, "lobby", &c) == PERR_OK);
    CHECK(strcmp(c.id, a.id) != 0);
    EQ_STR(c.title, NULL);
    EQ_STR(c.channel, "lobby");
    REQUIRE(db_session_by_channel(db, "lobby", &b) == PERR_OK);
    EQ_STR(b.id, c.id);
    EQ_STR(b.model, "gpt");
    EQ_STR(b.title, NULL);
    db_session_cleanup(&b);
    EQ_INT(db_session_by_channel(db, "nowhere", &b), PERR_SESSION_NOT_FOUND);
    EQ_INT(db_session_get(db, "0000000000000000", &b), PERR_SESSION_NOT_FOUND);

    REQUIRE(db_stats_read(db, &st) == PERR_OK);
    EQ_INT(st.sessions_created, 2);
    EQ_INT(st.messages_total, 0);
    EQ_INT(st.replies_total, 0);
    EQ_INT(st.reply_ms_total, 0);
    db_session_cleanup(&a);
    db_session_cleanup(&c);
    db_session_cleanup(NULL);
    db_close(db);
}

/* SPEC 9: a session's reply_mode, always by default, set at creation, changed with its
 * title by db_session_update (which bumps updated_at and answers the session as it is). */
static void session_reply_mode(void)
{
    struct db *db = open_new("reply_mode");
    struct db_session a, b, c;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", "plain", NULL, &a) == PERR_OK);
    EQ_STR(a.reply_mode, "always");
    REQUIRE(db_session_get(db, a.id, &b) == PERR_OK);
    EQ_STR(b.reply_mode, "always");
    db_session_cleanup(&b);
    REQUIRE(db_session_create_mode(db, "echo", NULL, NULL, "mention", &c) == PERR_OK);
    EQ_STR(c.reply_mode, "mention");
    REQUIRE(db_session_get(db, c.id, &b) == PERR_OK);
    EQ_STR(b.reply_mode, "mention");
    EQ_STR(b.title, NULL);
    db_session_cleanup(&b);

    /* the mode alone: the title stays */
    REQUIRE(db_session_update(db, a.id, "off", false, NULL, &b) == PERR_OK);
    EQ_STR(b.id, a.id);
    EQ_STR(b.reply_mode, "off");
    EQ_STR(b.title, "plain");
    EQ_STR(b.model, "echo");
    EQ_STR(b.created_at, a.created_at);
    CHECK(strcmp(b.updated_at, a.updated_at) >= 0);
    db_session_cleanup(&b);
    /* the title alone, then cleared: the mode stays */
    REQUIRE(db_session_update(db, a.id, NULL, true, "renamed", &b) == PERR_OK);
    EQ_STR(b.reply_mode, "off");
    EQ_STR(b.title, "renamed");
    db_session_cleanup(&b);
    REQUIRE(db_session_update(db, a.id, "always", true, NULL, &b) == PERR_OK);
    EQ_STR(b.reply_mode, "always");
    EQ_STR(b.title, NULL);
    db_session_cleanup(&b);
    REQUIRE(db_session_get(db, a.id, &b) == PERR_OK);
    EQ_STR(b.reply_mode, "always");
    EQ_STR(b.title, NULL);
    db_session_cleanup(&b);
    /* the other session is untouched; an unknown one is not found */
    REQUIRE(db_session_get(db, c.id, &b) == PERR_OK);
    EQ_STR(b.reply_mode, "mention");
    db_session_cleanup(&b);
    EQ_INT(db_session_update(db, "0000000000000000", "off", false, NULL, &b),
           PERR_SESSION_NOT_FOUND);
    db_session_cleanup(&a);
    db_session_cleanup(&c);
    db_close(db);
}

static void session_list(void)
{
    struct db *db = open_new("list");
    struct db_session s1, s2, s3, *v = NULL;
    size_t n = 99;
    int64_t total = -1;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", "one", NULL, &s1) == PERR_OK);
    pause_ms(3);
    REQUIRE(db_session_create(db, "echo", "two", NULL, &s2) == PERR_OK);
    pause_ms(3);
    REQUIRE(db_session_create(db, "echo", "three", NULL, &s3) == PERR_OK);
    pause_ms(3);
    add(db, s1.id, "user", "bump one", NULL, false); /* one is now the newest */

    REQUIRE(db_session_list(db, 10, 0, &v, &n, &total) == PERR_OK);
    EQ_INT(total, 3);
    REQUIRE(n == 3);
    EQ_STR(v[0].id, s1.id);
    EQ_STR(v[1].id, s3.id);
    EQ_STR(v[2].id, s2.id);
    EQ_STR(v[0].title, "one");
    EQ_INT(v[0].message_count, 1);
    EQ_INT(v[1].message_count, 0);
    CHECK(strcmp(v[0].updated_at, v[0].created_at) > 0);
    db_session_list_free(v, n);

    REQUIRE(db_session_list(db, 2, 0, &v, &n, &total) == PERR_OK);
    EQ_INT(total, 3);
    REQUIRE(n == 2);
    EQ_STR(v[0].id, s1.id);
    EQ_STR(v[1].id, s3.id);
    db_session_list_free(v, n);

    REQUIRE(db_session_list(db, 2, 2, &v, &n, &total) == PERR_OK);
    EQ_INT(total, 3);
    REQUIRE(n == 1);
    EQ_STR(v[0].id, s2.id);
    db_session_list_free(v, n);

    REQUIRE(db_session_list(db, 2, 5, &v, &n, &total) == PERR_OK);
    EQ_INT(total, 3);
    EQ_INT(n, 0);
    db_session_list_free(v, n);
    db_session_list_free(NULL, 0);

    db_session_cleanup(&s1);
    db_session_cleanup(&s2);
    db_session_cleanup(&s3);
    db_close(db);
}

/* Foreign keys are on: deleting a session removes its messages and queued replies. */
static void session_delete_cascades(void)
{
    struct db *db = open_new("delete");
    struct db_session s, keep, got;
    struct db_message m;
    int64_t id;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &keep) == PERR_OK);
    id = add(db, s.id, "user", "doomed wombat", NULL, true);
    add(db, s.id, "assistant", "doomed reply", NULL, false);
    add(db, keep.id, "user", "kept", NULL, true);
    EQ_INT(side_int("SELECT count(*) FROM reply_queue", NULL), 2);
    EQ_INT(index_now(db, 0), 3);
    EQ_INT(fts_hits("wombat"), 1);

    EQ_INT(db_session_delete(db, s.id), PERR_OK);
    EQ_INT(db_session_get(db, s.id, &got), PERR_SESSION_NOT_FOUND);
    EQ_INT(db_message_get(db, id, &m), PERR_NOT_FOUND);
    EQ_INT(side_int("SELECT count(*) FROM messages WHERE session_id = ?1", s.id), 0);
    EQ_INT(side_int("SELECT count(*) FROM reply_queue WHERE session_id = ?1", s.id), 0);
    EQ_INT(side_int("SELECT count(*) FROM messages WHERE session_id = ?1", keep.id), 1);
    EQ_INT(side_int("SELECT count(*) FROM reply_queue", NULL), 1);
    EQ_INT(fts_hits("wombat"), 0);
    EQ_INT(fts_whole(), 0);
    EQ_INT(db_session_delete(db, s.id), PERR_SESSION_NOT_FOUND);
    EQ_INT(db_session_delete(db, "ffffffffffffffff"), PERR_SESSION_NOT_FOUND);
    db_session_cleanup(&s);
    db_session_cleanup(&keep);
    db_close(db);
}

static void session_clear(void)
{
    struct db *db = open_new("clear");
    struct db_session s, other, got;
    struct db_stats st;
    int64_t cleared = -1, last, next;
    char before[CLOCK_ISO_LEN];

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &other) == PERR_OK);
    add(db, s.id, "user", "alpha platypus", NULL, true);
    add(db, s.id, "assistant", "beta", NULL, false);
    last = add(db, s.id, "user", "gamma", NULL, false);
    add(db, other.id, "user", "other platypus", NULL, false);
    REQUIRE(db_session_get(db, s.id, &got) == PERR_OK);
    memcpy(before, got.updated_at, sizeof before);
    db_session_cleanup(&got);
    /* the first two indexed, the last two not: clear must take out only what is in */
    EQ_INT(index_now(db, 2), 2);
    EQ_INT(fts_hits("platypus"), 1);
    pause_ms(3);

    EQ_INT(db_session_clear(db, s.id, &cleared), PERR_OK);
    EQ_INT(cleared, 3);
    REQUIRE(db_session_get(db, s.id, &got) == PERR_OK);
    EQ_INT(got.message_count, 0);
    CHECK(strcmp(got.updated_at, before) > 0);
    db_session_cleanup(&got);
    EQ_INT(side_int("SELECT count(*) FROM messages WHERE session_id = ?1", s.id), 0);
    EQ_INT(side_int("SELECT count(*) FROM reply_queue", NULL), 0);
    EQ_INT(fts_hits("platypus"), 0); /* alpha's went; other's is not indexed yet */
    EQ_INT(index_now(db, 0), 1);     /* other's: gamma is gone */
    EQ_INT(fts_hits("platypus"), 1);
    EQ_INT(fts_whole(), 0);
    REQUIRE(db_session_get(db, other.id, &got) == PERR_OK);
    EQ_INT(got.message_count, 1);
    db_session_cleanup(&got);
    REQUIRE(db_stats_read(db, &st) == PERR_OK);
    EQ_INT(st.messages_total, 1);

    /* ids are never reused: `since` relies on it */
    next = add(db, s.id, "user", "after clear", NULL, false);
    CHECK(next > last + 1); /* other's message took last + 1 */

    cleared = -1;
    EQ_INT(db_session_clear(db, s.id, &cleared), PERR_OK);
    EQ_INT(cleared, 1);
    EQ_INT(db_session_clear(db, "ffffffffffffffff", &cleared), PERR_SESSION_NOT_FOUND);
    db_session_cleanup(&s);
    db_session_cleanup(&other);
    db_close(db);
}

static void ids_not_reused(void)
{
    struct db *db = open_new("ids");
    struct db_session s;
    int64_t a, b, c;
    int64_t cleared;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    a = add(db, s.id, "user", "1", NULL, false);
    b = add(db, s.id, "user", "2", NULL, false);
    EQ_INT(b, a + 1);
    REQUIRE(db_session_clear(db, s.id, &cleared) == PERR_OK);
    c = add(db, s.id, "user", "3", NULL, false);
    EQ_INT(c, b + 1);
    REQUIRE(db_session_delete(db, s.id) == PERR_OK);
    db_session_cleanup(&s);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    EQ_INT(add(db, s.id, "user", "4", NULL, false), c + 1);
    db_session_cleanup(&s);
    db_close(db);

    /* and not after reopening either */
    db = db_open(path);
    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    REQUIRE(db_session_clear(db, s.id, &cleared) == PERR_OK);
    EQ_INT(side_int("SELECT count(*) FROM messages", NULL), 1);
    EQ_INT(add(db, s.id, "user", "5", NULL, false), c + 2);
    db_session_cleanup(&s);
    db_close(db);
}

/* ---- messages ---- */

static void message_add_get(void)
{
    struct db *db = open_new("messages");
    struct db_session s, got;
    struct db_message_in in = {.role = "user",
                               .content = "hello",
                               .connection_id = "c-1",
                               .client_msg_id = "cm-1",
                               .thread_id = "t-1",
                               .author_name = "Alice ✓"};
    struct db_message m, r;
    bool dup = true;
    int64_t count = -1;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    in.session_id = s.id;
    pause_ms(3);
    REQUIRE(db_message_add(db, &in, &m, &dup, &count) == PERR_OK);
    EQ_INT(dup, false);
    EQ_INT(count, 1);
    CHECK(m.id > 0);
    EQ_STR(m.session_id, s.id);
    EQ_STR(m.role, "user");
    EQ_STR(m.content, "hello");
    EQ_STR(m.connection_id, "c-1");
    EQ_STR(m.client_msg_id, "cm-1");
    EQ_STR(m.thread_id, "t-1");
    EQ_STR(m.author_name, "Alice ✓");
    EQ_STR(m.status, NULL);
    EQ_INT(strlen(m.created_at), 24);

    REQUIRE(db_message_get(db, m.id, &r) == PERR_OK);
    EQ_INT(r.id, m.id);
    EQ_STR(r.session_id, s.id);
    EQ_STR(r.role, "user");
    EQ_STR(r.content, "hello");
    EQ_STR(r.created_at, m.created_at);
    EQ_STR(r.connection_id, "c-1");
    EQ_STR(r.client_msg_id, "cm-1");
    EQ_STR(r.thread_id, "t-1");
    EQ_STR(r.author_name, "Alice ✓");
    EQ_STR(r.status, NULL);
    db_message_cleanup(&r);

    REQUIRE(db_session_get(db, s.id, &got) == PERR_OK);
    EQ_INT(got.message_count, 1);
    EQ_STR(got.updated_at, m.created_at);
    CHECK(strcmp(got.updated_at, got.created_at) > 0);
    db_session_cleanup(&got);

    /* optional fields absent; the count goes on; NULL count pointer allowed */
    in.connection_id = in.client_msg_id = in.thread_id = in.author_name = NULL;
    in.role = "system";
    in.content = "";
    db_message_cleanup(&m);
    REQUIRE(db_message_add(db, &in, &m, &dup, &count) == PERR_OK);
    EQ_INT(count, 2);
    EQ_STR(m.content, "");
    REQUIRE(db_message_get(db, m.id, &r) == PERR_OK);
    EQ_STR(r.role, "system");
    EQ_STR(r.content, "");
    EQ_STR(r.connection_id, NULL);
    EQ_STR(r.client_msg_id, NULL);
    EQ_STR(r.thread_id, NULL);
    EQ_STR(r.author_name, NULL);
    db_message_cleanup(&r);
    db_message_cleanup(&m);
    REQUIRE(db_message_add(db, &in, &m, NULL, NULL) == PERR_OK);
    db_message_cleanup(&m);

    EQ_INT(db_message_get(db, 999999, &r), PERR_NOT_FOUND);
    db_session_cleanup(&s);
    db_message_cleanup(NULL);
    db_close(db);
}

/* A failed add leaves nothing behind: no row, no count bump. */
static void message_add_failures(void)
{
    struct db *db = open_new("add_fail");
    struct db_session s, got;
    struct db_message_in in = {.session_id = "ffffffffffffffff", .role = "user", .content = "x"};
    struct db_message m;
    bool dup;
    int64_t count = -1;

    REQUIRE(db != NULL);
    EQ_INT(db_message_add(db, &in, &m, &dup, &count), PERR_SESSION_NOT_FOUND);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    in.session_id = s.id;
    in.role = "robot"; /* refused by the schema's CHECK */
    EQ_INT(db_message_add(db, &in, &m, &dup, &count), PERR_UNAVAILABLE);
    REQUIRE(db_session_get(db, s.id, &got) == PERR_OK);
    EQ_INT(got.message_count, 0);
    EQ_STR(got.updated_at, got.created_at);
    db_session_cleanup(&got);
    EQ_INT(side_int("SELECT count(*) FROM messages", NULL), 0);
    /* the connection is still usable: no transaction was left open */
    in.role = "user";
    REQUIRE(db_message_add(db, &in, &m, &dup, &count) == PERR_OK);
    EQ_INT(count, 1);
    db_message_cleanup(&m);
    EQ_INT(side_int("SELECT count(*) FROM messages", NULL), 1);
    db_session_cleanup(&s);
    db_close(db);
}

static void message_duplicate(void)
{
    struct db *db = open_new("dup");
    struct db_session s, s2, got;
    struct db_message_in in = {.role = "user", .content = "first", .client_msg_id = "abc"};
    struct db_message m1, m2;
    bool dup = true;
    int64_t count = -1;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s2) == PERR_OK);
    in.session_id = s.id;
    REQUIRE(db_message_add(db, &in, &m1, &dup, &count) == PERR_OK);
    EQ_INT(dup, false);
    EQ_INT(count, 1);

    in.content = "second try";
    in.want_reply = true;
    REQUIRE(db_message_add(db, &in, &m2, &dup, &count) == PERR_OK);
    EQ_INT(dup, true);
    EQ_INT(m2.id, m1.id);
    EQ_STR(m2.content, "first");
    EQ_STR(m2.client_msg_id, "abc");
    EQ_STR(m2.created_at, m1.created_at);
    EQ_INT(count, 1);
    db_message_cleanup(&m2);
    REQUIRE(db_session_get(db, s.id, &got) == PERR_OK);
    EQ_INT(got.message_count, 1);
    db_session_cleanup(&got);
    EQ_INT(side_int("SELECT count(*) FROM messages", NULL), 1);
    EQ_INT(side_int("SELECT count(*) FROM reply_queue", NULL), 0);

    /* the same client id in another session is another message */
    in.session_id = s2.id;
    REQUIRE(db_message_add(db, &in, &m2, &dup, &count) == PERR_OK);
    EQ_INT(dup, false);
    CHECK(m2.id != m1.id);
    EQ_INT(count, 1);
    db_message_cleanup(&m2);

    /* no client id: never a duplicate */
    in.session_id = s.id;
    in.client_msg_id = NULL;
    in.want_reply = false;
    for (int i = 0; i < 2; i++) {
        REQUIRE(db_message_add(db, &in, &m2, &dup, &count) == PERR_OK);
        EQ_INT(dup, false);
        EQ_INT(count, 2 + i);
        db_message_cleanup(&m2);
    }
    db_message_cleanup(&m1);
    db_session_cleanup(&s);
    db_session_cleanup(&s2);
    db_close(db);
}

static void messages_page(void)
{
    struct db *db = open_new("page");
    struct db_session s, o;
    struct db_message_list l = {0};
    int64_t id[6];
    bool more;
    char got[256];

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &o) == PERR_OK);
    for (int i = 1; i <= 5; i++) {
        char c[8];
        snprintf(c, sizeof c, "m%d", i);
        id[i] = add(db, s.id, "user", c, NULL, false);
        add(db, o.id, "user", "other", NULL, false); /* interleaved, never listed */
    }
    static const struct {
        int limit;
        int before; /* index into id[], 0: none */
        const char *want;
        bool more;
    } rows[] = {
        {2, 0, "m4,m5", true},       {2, 4, "m2,m3", true},
        {2, 2, "m1", false},         {5, 0, "m1,m2,m3,m4,m5", false},
        {4, 0, "m2,m3,m4,m5", true}, {10, 0, "m1,m2,m3,m4,m5", false},
        {10, 1, "", false},          {1, 5, "m4", true},
    };
    for (size_t i = 0; i < UNIT_COUNT(rows); i++) {
        more = !rows[i].more;
        if (db_messages_page(db, s.id, rows[i].limit, rows[i].before ? id[rows[i].before] : 0,
                             false, &l, &more) != PERR_OK) {
            UNIT_FAIL("row %zu: db_messages_page failed", i);
            continue;
        }
        if (strcmp(contents(&l, got, sizeof got), rows[i].want) != 0 || more != rows[i].more)
            UNIT_FAIL("limit %d before m%d: got \"%s\" has_more %d, want \"%s\" has_more %d",
                      rows[i].limit, rows[i].before, got, more, rows[i].want, rows[i].more);
        for (size_t k = 1; k < l.n; k++)
            CHECK(l.v[k].id > l.v[k - 1].id);
        db_message_list_cleanup(&l);
    }
    REQUIRE(db_messages_page(db, "0000000000000000", 10, 0, false, &l, &more) == PERR_OK);
    EQ_INT(l.n, 0);
    EQ_INT(more, false);
    db_message_list_cleanup(&l);
    db_session_cleanup(&s);
    db_session_cleanup(&o);
    db_close(db);
}

static void messages_since(void)
{
    struct db *db = open_new("since");
    struct db_session s, o;
    struct db_message_list l = {0};
    int64_t id[6];
    char got[256];

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &o) == PERR_OK);
    id[0] = 0;
    for (int i = 1; i <= 5; i++) {
        char c[8];
        snprintf(c, sizeof c, "m%d", i);
        add(db, o.id, "user", "other", NULL, false);
        id[i] = add(db, s.id, "user", c, NULL, false);
    }
    static const struct {
        int since; /* index into id[] */
        int limit;
        const char *want;
    } rows[] = {
        {2, 10, "m3,m4,m5"}, {2, 2, "m3,m4"}, {5, 10, ""}, {0, 10, "m1,m2,m3,m4,m5"}, {0, 1, "m1"},
    };
    for (size_t i = 0; i < UNIT_COUNT(rows); i++) {
        if (db_messages_since(db, s.id, id[rows[i].since], rows[i].limit, &l) != PERR_OK) {
            UNIT_FAIL("row %zu: db_messages_since failed", i);
            continue;
        }
        if (strcmp(contents(&l, got, sizeof got), rows[i].want) != 0)
            UNIT_FAIL("since m%d limit %d: got \"%s\", want \"%s\"", rows[i].since, rows[i].limit,
                      got, rows[i].want);
        db_message_list_cleanup(&l);
    }
    db_session_cleanup(&s);
    db_session_cleanup(&o);
    db_close(db);
}

static void messages_context(void)
{
    struct db *db = open_new("context");
    struct db_session s;
    struct db_message_list l = {0};
    char got[256];
    static const char *const roles[] = {"user", "assistant", "system", "event",
                                        "user", "assistant", "event"};
    static const char *const texts[] = {"u1", "a1", "sys", "ev1", "u2", "a2", "ev2"};

    int64_t ids[UNIT_COUNT(roles)];

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    for (size_t i = 0; i < UNIT_COUNT(roles); i++)
        ids[i] = add(db, s.id, roles[i], texts[i], NULL, false);
    /* up_to: index into ids of the message answered, -1 for no bound */
    static const struct {
        int up_to;
        int n;
        const char *want;
    } rows[] = {{-1, 3, "a1,u2,a2"}, {-1, 10, "u1,a1,u2,a2"}, {-1, 1, "a2"}, {-1, 4, "u1,a1,u2,a2"},
                {4, 10, "u1,a1,u2"}, {4, 2, "a1,u2"},         {0, 10, "u1"}, {4, 1, "u2"}};
    for (size_t i = 0; i < UNIT_COUNT(rows); i++) {
        int64_t up_to = rows[i].up_to < 0 ? 0 : ids[rows[i].up_to];
        if (db_messages_context(db, s.id, up_to, rows[i].n, &l) != PERR_OK) {
            UNIT_FAIL("n %d: db_messages_context failed", rows[i].n);
            continue;
        }
        if (strcmp(contents(&l, got, sizeof got), rows[i].want) != 0)
            UNIT_FAIL("up_to %lld n %d: got \"%s\", want \"%s\"", (long long)up_to, rows[i].n, got,
                      rows[i].want);
        db_message_list_cleanup(&l);
    }
    db_message_list_cleanup(&l);
    db_message_list_cleanup(NULL);
    db_session_cleanup(&s);
    db_close(db);
}

/* ---- replies and the reply queue ---- */

static void reply_queue_and_add(void)
{
    struct db *db = open_new("reply");
    struct db_session s;
    struct db_message_list q = {0};
    struct db_message m;
    struct db_stats st;
    int64_t u1, u2, count = -1;
    char reasoning[64];

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    u1 = add(db, s.id, "user", "question one", NULL, true);
    add(db, s.id, "user", "no reply wanted", NULL, false);
    u2 = add(db, s.id, "user", "question two", NULL, true);

    REQUIRE(db_reply_queue(db, NULL, &q) == PERR_OK);
    REQUIRE(q.n == 2);
    EQ_INT(q.v[0].id, u1);
    EQ_INT(q.v[1].id, u2);
    EQ_STR(q.v[0].session_id, s.id);
    EQ_STR(q.v[0].content, "question one");
    db_message_list_cleanup(&q);

    struct db_reply_in r = {.session_id = s.id,
                            .content = "answer one",
                            .model = "echo",
                            .status = "complete",
                            .reasoning = "thought about it",
                            .prompt_tokens = 12,
                            .completion_tokens = -1,
                            .duration_ms = 250,
                            .reply_to = u1};
    REQUIRE(db_reply_add(db, &r, &m, &count) == PERR_OK);
    EQ_INT(count, 4);
    CHECK(m.id > u2);
    EQ_STR(m.role, "assistant");
    EQ_STR(m.content, "answer one");
    EQ_STR(m.status, "complete");
    EQ_STR(m.session_id, s.id);
    EQ_STR(m.client_msg_id, NULL);
    EQ_INT(side_int("SELECT prompt_tokens FROM messages WHERE role = 'assistant'", NULL), 12);
    EQ_INT(
        side_int("SELECT completion_tokens IS NULL FROM messages WHERE role = 'assistant'", NULL),
        1);
    EQ_INT(side_int("SELECT duration_ms FROM messages WHERE role = 'assistant'", NULL), 250);
    side_query(path, "SELECT reasoning || '/' || model FROM messages WHERE role = 'assistant'",
               NULL, reasoning, sizeof reasoning);
    EQ_STR(reasoning, "thought about it/echo");
    db_message_cleanup(&m);

    REQUIRE(db_reply_queue(db, NULL, &q) == PERR_OK);
    REQUIRE(q.n == 1);
    EQ_INT(q.v[0].id, u2);
    db_message_list_cleanup(&q);
    REQUIRE(db_stats_read(db, &st) == PERR_OK);
    EQ_INT(st.replies_total, 1);
    EQ_INT(st.reply_ms_total, 250);
    EQ_INT(st.messages_total, 4);
    EQ_INT(st.sessions_created, 1);

    /* a second reply, ending in error, to the other question */
    r.content = "partial";
    r.status = "error";
    r.error = "upstream timed out";
    r.reasoning = NULL;
    r.duration_ms = 1000;
    r.reply_to = u2;
    REQUIRE(db_reply_add(db, &r, &m, NULL) == PERR_OK);
    EQ_STR(m.status, "error");
    db_message_cleanup(&m);
    REQUIRE(db_reply_queue(db, NULL, &q) == PERR_OK);
    EQ_INT(q.n, 0);
    db_message_list_cleanup(&q);
    REQUIRE(db_stats_read(db, &st) == PERR_OK);
    EQ_INT(st.replies_total, 2);
    EQ_INT(st.reply_ms_total, 1250);
    EQ_INT(st.messages_total, 5);

    /* a reply answering nothing queued (reply_to 0) still counts */
    r.reply_to = 0;
    r.status = "stopped";
    r.duration_ms = 5;
    REQUIRE(db_reply_add(db, &r, &m, &count) == PERR_OK);
    EQ_INT(count, 6);
    db_message_cleanup(&m);
    REQUIRE(db_stats_read(db, &st) == PERR_OK);
    EQ_INT(st.replies_total, 3);
    EQ_INT(st.reply_ms_total, 1255);

    /* clearing the history keeps the counters: they outlive rows */
    int64_t cleared;
    REQUIRE(db_session_clear(db, s.id, &cleared) == PERR_OK);
    REQUIRE(db_stats_read(db, &st) == PERR_OK);
    EQ_INT(st.replies_total, 3);
    EQ_INT(st.messages_total, 0);
    db_session_cleanup(&s);
    db_close(db);
}

static void reply_queue_drop(void)
{
    struct db *db = open_new("drop");
    struct db_session s;
    struct db_message_list q = {0};
    int64_t a, b;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    a = add(db, s.id, "user", "a", NULL, true);
    b = add(db, s.id, "user", "b", NULL, true);
    EQ_INT(db_reply_queue_drop(db, a), PERR_OK);
    EQ_INT(db_reply_queue_drop(db, a), PERR_OK); /* already gone: still fine */
    REQUIRE(db_reply_queue(db, NULL, &q) == PERR_OK);
    REQUIRE(q.n == 1);
    EQ_INT(q.v[0].id, b);
    db_message_list_cleanup(&q);
    db_session_cleanup(&s);
    db_close(db);
}

/* Stores a user message with key under q; returns db_message_add's result (message freed). */
static enum perr quota_add(struct db *db, const char *sid, const char *content, const char *cmid,
                           struct db_quota *q)
{
    struct db_message_in in = {.session_id = sid,
                               .role = "user",
                               .content = content,
                               .client_msg_id = cmid,
                               .want_reply = true,
                               .quota = q};
    struct db_message m;
    bool dup;
    int64_t count;
    enum perr e = db_message_add(db, &in, &m, &dup, &count);

    if (e == PERR_OK)
        db_message_cleanup(&m);
    return e;
}

static void quotas(void)
{
    struct db *db = open_new("quotas");
    struct db_session s;
    struct db_quota qa = {.key = "alice", .day = "2026-12-08", .max_messages = 2},
                    qb = {.key = "bob", .day = "2026-12-08", .max_tokens = 30};
    struct db_message m;
    int64_t msgs = -1, tokens = -1, u1;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    EQ_INT(db_key_usage(db, "alice", "2026-12-08", &msgs, &tokens), PERR_OK);
    EQ_INT(msgs, 0);
    EQ_INT(tokens, 0);
    EQ_INT(quota_add(db, s.id, "one", "c1", &qa), PERR_OK);
    EQ_INT(quota_add(db, s.id, "one again", "c1", &qa), PERR_OK); /* a resend: not counted */
    EQ_INT(quota_add(db, s.id, "two", NULL, &qa), PERR_OK);
    EQ_INT(quota_add(db, s.id, "three", NULL, &qa), PERR_QUOTA_EXCEEDED);
    EQ_INT(qa.messages, 2);
    EQ_INT(side_int("SELECT count(*) FROM messages WHERE content = 'three'", NULL), 0);
    EQ_INT(side_int("SELECT count(*) FROM messages WHERE key_name = 'alice'", NULL), 2);
    EQ_INT(db_key_usage(db, "alice", "2026-12-08", &msgs, &tokens), PERR_OK);
    EQ_INT(msgs, 2);
    /* another day starts from 0; a gone session is not counted */
    qa.messages = 0;
    memcpy(qa.day, "2026-12-09", DB_DAY_LEN);
    EQ_INT(quota_add(db, "ffffffffffffffff", "lost", NULL, &qa), PERR_SESSION_NOT_FOUND);
    EQ_INT(quota_add(db, s.id, "next day", NULL, &qa), PERR_OK);
    EQ_INT(db_key_usage(db, "alice", "2026-12-09", &msgs, &tokens), PERR_OK);
    EQ_INT(msgs, 1);
    /* tokens: counted for the key of the message answered, refused at the quota */
    EQ_INT(quota_add(db, s.id, "bob asks", NULL, &qb), PERR_OK);
    u1 = (int64_t)side_int("SELECT max(id) FROM messages WHERE key_name = 'bob'", NULL);
    struct db_reply_in r = {.session_id = s.id,
                            .content = "answer",
                            .model = "m",
                            .status = "complete",
                            .prompt_tokens = 17,
                            .completion_tokens = 13,
                            .reply_to = u1,
                            .quota_day = "2026-12-08"};
    REQUIRE(db_reply_add(db, &r, &m, NULL) == PERR_OK);
    db_message_cleanup(&m);
    EQ_INT(db_key_usage(db, "bob", "2026-12-08", &msgs, &tokens), PERR_OK);
    EQ_INT(msgs, 1);
    EQ_INT(tokens, 30);
    EQ_INT(quota_add(db, s.id, "bob again", NULL, &qb), PERR_QUOTA_EXCEEDED);
    EQ_INT(qb.tokens, 30);
    EQ_INT(db_key_usage(db, "alice", "2026-12-08", &msgs, &tokens), PERR_OK);
    EQ_INT(tokens, 0); /* bob's tokens are bob's */
    /* no quota pointer: nothing counted */
    add(db, s.id, "user", "keyless", NULL, false);
    EQ_INT(side_int("SELECT sum(messages) FROM key_usage", NULL), 4);
    db_session_cleanup(&s);
    db_close(db);
}

/* ---- the reply lease (SPEC 8): the rules both backends share, then SQLite's own ---- */

static struct db *lease_open(const char *name)
{
    return open_new(name);
}

static struct db *lease_again(void)
{
    return db_open(path);
}

#include "lease_cases.h"

/* A file at schema version 6 migrates to the reply lease: a question queued before is
 * unclaimed (owner NULL, chunks 0) and can be claimed. */
static void migrate_lease(void)
{
    struct db_claim c;
    struct db *db;
    char got[64];

    new_path("lease-old");
    REQUIRE(parley_migrations_count >= 7);
    for (int v = 0; v < 6; v++)
        EQ_INT(side_exec(path, parley_migrations[v]), 0);
    EQ_INT(side_exec(path, "PRAGMA user_version = 6;"
                           "INSERT INTO sessions(id, model, created_at, updated_at, message_count,"
                           " last_seq) VALUES ('00000000000000aa', 'echo',"
                           " '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z', 1, 1);"
                           "INSERT INTO messages(id, session_id, role, content, created_at, seq)"
                           " VALUES (7, '00000000000000aa', 'user', 'q',"
                           " '2025-01-01T00:00:00.000Z', 1);"
                           "INSERT INTO reply_queue VALUES (7, '00000000000000aa',"
                           " '2025-01-01T00:00:00.000Z');"),
           0);
    db = db_open(path);
    REQUIRE(db != NULL);
    EQ_INT(db_user_version(db), db_schema_version(db));
    EQ_INT(side_int("SELECT count(*) FROM reply_queue WHERE owner IS NULL AND lease_until IS NULL"
                    " AND response_id IS NULL AND partial IS NULL AND chunks = 0",
                    NULL),
           1);
    EQ_STR(lease_queue(db, NULL, got, sizeof got), "7");
    REQ_INT(db_reply_claim(db, 7, LEASE_A, LEASE_LONG, &c), PERR_OK);
    CHECK(c.claimed);
    CHECK(!c.taken_over);
    db_claim_cleanup(&c);
    /* as a person reads it in the sqlite3 shell: the holder and an ISO-8601 time */
    side_query(path, "SELECT owner FROM reply_queue", NULL, got, sizeof got);
    EQ_STR(got, LEASE_A);
    side_query(path, "SELECT lease_until FROM reply_queue", NULL, got, sizeof got);
    CHECK(strlen(got) == CLOCK_ISO_LEN - 1 && got[10] == 'T' && got[CLOCK_ISO_LEN - 2] == 'Z');
    db_close(db);
}

/* ---- transactions ---- */

static void tx_nested(void)
{
    struct db *db = open_new("tx");
    struct db_session a, b, c, got;
    struct db_stats st;

    REQUIRE(db != NULL);
    db_tx_rollback(db); /* depth 0: nothing to do */
    REQUIRE(db_tx_begin(db) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", "A", NULL, &a) == PERR_OK);
    REQUIRE(db_tx_begin(db) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", "B", NULL, &b) == PERR_OK);
    add(db, b.id, "user", "in b", NULL, false);
    db_tx_rollback(db); /* the inner one only */
    REQUIRE(db_session_create(db, "echo", "C", NULL, &c) == PERR_OK);
    /* nothing is visible to another connection before the outer commit */
    EQ_INT(side_int("SELECT count(*) FROM sessions", NULL), 0);
    EQ_INT(db_tx_commit(db), PERR_OK);

    EQ_INT(side_int("SELECT count(*) FROM sessions", NULL), 2);
    EQ_INT(db_session_get(db, a.id, &got), PERR_OK);
    db_session_cleanup(&got);
    EQ_INT(db_session_get(db, b.id, &got), PERR_SESSION_NOT_FOUND);
    EQ_INT(db_session_get(db, c.id, &got), PERR_OK);
    db_session_cleanup(&got);
    EQ_INT(side_int("SELECT count(*) FROM messages", NULL), 0);
    REQUIRE(db_stats_read(db, &st) == PERR_OK);
    EQ_INT(st.sessions_created, 2); /* B's count went with it */

    /* three deep: commit the innermost, roll back the middle, commit the outer */
    db_session_cleanup(&b);
    REQUIRE(db_tx_begin(db) == PERR_OK);
    REQUIRE(db_tx_begin(db) == PERR_OK);
    REQUIRE(db_tx_begin(db) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", "D", NULL, &b) == PERR_OK);
    EQ_INT(db_tx_commit(db), PERR_OK);
    db_tx_rollback(db);
    EQ_INT(db_tx_commit(db), PERR_OK);
    EQ_INT(db_session_get(db, b.id, &got), PERR_SESSION_NOT_FOUND);
    EQ_INT(side_int("SELECT count(*) FROM sessions", NULL), 2);

    /* an outer rollback discards what the inner ones committed */
    db_session_cleanup(&b);
    REQUIRE(db_tx_begin(db) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", "E", NULL, &b) == PERR_OK);
    add(db, a.id, "user", "in a", NULL, false);
    db_tx_rollback(db);
    EQ_INT(db_session_get(db, b.id, &got), PERR_SESSION_NOT_FOUND);
    REQUIRE(db_session_get(db, a.id, &got) == PERR_OK);
    EQ_INT(got.message_count, 0);
    db_session_cleanup(&got);

    /* and the connection works normally afterwards, outside any transaction */
    add(db, a.id, "user", "after", NULL, false);
    EQ_INT(side_int("SELECT count(*) FROM messages", NULL), 1);
    db_session_cleanup(&a);
    db_session_cleanup(&b);
    db_session_cleanup(&c);
    db_close(db);
}

/* A failing write inside the caller's transaction rolls back only itself. */
static void tx_inner_failure_keeps_outer(void)
{
    struct db *db = open_new("tx_fail");
    struct db_session s, got;
    struct db_message_in bad = {.role = "robot", .content = "x"};
    struct db_message m;
    bool dup;
    int64_t count;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    bad.session_id = s.id;
    REQUIRE(db_tx_begin(db) == PERR_OK);
    add(db, s.id, "user", "kept", NULL, false);
    EQ_INT(db_message_add(db, &bad, &m, &dup, &count), PERR_UNAVAILABLE);
    add(db, s.id, "user", "kept too", NULL, false);
    EQ_INT(db_tx_commit(db), PERR_OK);
    REQUIRE(db_session_get(db, s.id, &got) == PERR_OK);
    EQ_INT(got.message_count, 2);
    db_session_cleanup(&got);
    EQ_INT(side_int("SELECT count(*) FROM messages", NULL), 2);
    db_session_cleanup(&s);
    db_close(db);
}

/* A full disk inside a transaction: SQLite rolls the whole transaction back by itself.
 * Nothing written after that commits on its own (it would be reported stored while the
 * earlier writes of the same transaction were lost); once rolled back, writes work again. */
static void tx_lost_refuses_writes(void)
{
    struct db *db = open_new("tx_lost");
    struct db_session s;
    struct db_message_in in = {.role = "user"};
    struct db_message m;
    bool dup;
    int64_t count;
    static char big[64 * 1024];

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    in.session_id = s.id;
    memset(big, 'x', sizeof big - 1);
    REQUIRE(db_max_pages(db, side_int("PRAGMA page_count", NULL) + 4) == PERR_OK);
    REQUIRE(db_tx_begin(db) == PERR_OK);
    CHECK(db_tx_open(db));
    add(db, s.id, "user", "lost with its transaction", NULL, false);
    in.content = big;
    EQ_INT(db_message_add(db, &in, &m, &dup, &count), PERR_UNAVAILABLE); /* disk full */
    CHECK(!db_tx_open(db));
    in.content = "after the rollback";
    EQ_INT(db_message_add(db, &in, &m, &dup, &count), PERR_UNAVAILABLE); /* refused */
    EQ_INT(db_tx_begin(db), PERR_UNAVAILABLE);                           /* a savepoint too */
    EQ_INT(db_tx_commit(db), PERR_UNAVAILABLE);                          /* ends the level */
    EQ_INT(side_int("SELECT count(*) FROM messages", NULL), 0);
    CHECK(!db_tx_open(db));
    REQUIRE(db_max_pages(db, 1000000) == PERR_OK);
    REQUIRE(db_tx_begin(db) == PERR_OK);
    add(db, s.id, "user", "stored", NULL, false);
    EQ_INT(db_tx_commit(db), PERR_OK);
    EQ_INT(side_int("SELECT count(*) FROM messages", NULL), 1);
    EQ_INT(side_int("SELECT message_count FROM sessions", NULL), 1);
    db_session_cleanup(&s);
    db_close(db);
}

/* A person holding a read transaction open in the sqlite3 shell stalls nothing (WAL). */
static void reader_does_not_stall(void)
{
    struct db *db = open_new("reader");
    struct db_session s, got;
    sqlite3 *shell = NULL;
    sqlite3_stmt *st = NULL;
    int64_t t0;

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    add(db, s.id, "user", "before", NULL, false);
    REQUIRE(sqlite3_open_v2(path, &shell, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK);
    CHECK(sqlite3_exec(shell, "BEGIN", NULL, NULL, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(shell, "SELECT count(*) FROM messages", -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 1);
    sqlite3_reset(st);

    t0 = clock_mono_ms();
    for (int i = 0; i < 20; i++)
        add(db, s.id, "user", "while a reader waits", NULL, i % 2 == 0);
    EQ_INT(db_session_clear(db, s.id, &(int64_t){0}), PERR_OK);
    add(db, s.id, "user", "after clear", NULL, false);
    CHECK(clock_mono_ms() - t0 < 2000); /* the busy timeout is 5 s: nobody waited on it */
    /* the reader still sees its snapshot */
    CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 1);
    sqlite3_finalize(st);
    sqlite3_exec(shell, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(shell);
    REQUIRE(db_session_get(db, s.id, &got) == PERR_OK);
    EQ_INT(got.message_count, 1);
    db_session_cleanup(&got);
    db_session_cleanup(&s);
    db_close(db);
}

/* ---- the broker's live figures ---- */

static int64_t clients_of(struct db *db, const char *id)
{
    struct db_session s;
    int64_t n;

    if (db_session_get(db, id, &s) != PERR_OK)
        return -1;
    n = s.clients;
    db_session_cleanup(&s);
    return n;
}

static void live(void)
{
    struct db *db = open_new("live");
    struct db_session s1, s2, *v = NULL;
    struct db_live lv;
    size_t n;
    int64_t total, t0, now;
    char model[32];

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s1) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s2) == PERR_OK);

    /* no broker has ever run */
    lv.up = true;
    lv.connections = lv.active_sessions = lv.heartbeat_ms = 7;
    EQ_INT(db_live_read(db, clock_now_ms(), &lv), PERR_OK);
    EQ_INT(lv.up, false);
    EQ_INT(lv.connections, 0);
    EQ_INT(lv.active_sessions, 0);
    EQ_INT(lv.heartbeat_ms, 0);
    EQ_INT(lv.n_nodes, 0);
    db_live_cleanup(&lv);

    t0 = clock_now_ms();
    REQUIRE(db_live_reset(db, "b1", 4242, "echo") == PERR_OK);
    now = clock_now_ms();
    EQ_INT(db_live_read(db, now, &lv), PERR_OK);
    EQ_INT(lv.up, true);
    EQ_INT(lv.connections, 0);
    EQ_INT(lv.active_sessions, 0);
    CHECK(lv.heartbeat_ms >= t0 && lv.heartbeat_ms <= now);
    EQ_INT(lv.n_nodes, 1);
    if (lv.n_nodes == 1) {
        EQ_STR(lv.nodes[0].node_id, "b1");
        EQ_STR(lv.nodes[0].model ? lv.nodes[0].model : "(null)", "echo");
        EQ_INT(lv.nodes[0].last_seen_ms, now - lv.nodes[0].heartbeat_ms);
        CHECK(strlen(lv.nodes[0].started_at) == CLOCK_ISO_LEN - 1);
    }
    db_live_cleanup(&lv);
    EQ_INT(side_int("SELECT pid FROM broker_state WHERE node_id = 'b1'", NULL), 4242);
    side_query(path, "SELECT model FROM broker_state", NULL, model, sizeof model);
    EQ_STR(model, "echo");

    struct db_live_member m[] = {{s1.id, 2}, {s2.id, 1}};
    now = clock_now_ms();
    REQUIRE(db_live_publish(db, "b1", now, 5, m, 2) == PERR_OK);
    EQ_INT(db_live_read(db, now, &lv), PERR_OK);
    EQ_INT(lv.up, true);
    EQ_INT(lv.connections, 5);
    EQ_INT(lv.active_sessions, 2);
    EQ_INT(lv.heartbeat_ms, now);
    db_live_cleanup(&lv);
    EQ_INT(clients_of(db, s1.id), 2);
    EQ_INT(clients_of(db, s2.id), 1);
    REQUIRE(db_session_list(db, 10, 0, &v, &n, &total) == PERR_OK);
    EQ_INT(n, 2);
    EQ_INT(n == 2 ? v[0].clients + v[1].clients : -1, 3);
    db_session_list_free(v, n);

    /* a second broker: its own rows, summed with the first's; listed in node_id order */
    REQUIRE(db_live_reset(db, "a2", 4343, NULL) == PERR_OK);
    struct db_live_member m2[] = {{s1.id, 3}};
    now = clock_now_ms();
    REQUIRE(db_live_publish(db, "a2", now, 4, m2, 1) == PERR_OK);
    EQ_INT(db_live_read(db, now, &lv), PERR_OK);
    EQ_INT(lv.connections, 9);
    EQ_INT(lv.active_sessions, 2);
    EQ_INT(lv.n_nodes, 2);
    if (lv.n_nodes == 2) {
        EQ_STR(lv.nodes[0].node_id, "a2");
        EQ_INT(lv.nodes[0].connections, 4);
        CHECK(lv.nodes[0].model == NULL);
        EQ_STR(lv.nodes[1].node_id, "b1");
        EQ_INT(lv.nodes[1].connections, 5);
    }
    db_live_cleanup(&lv);
    EQ_INT(clients_of(db, s1.id), 5);
    EQ_INT(clients_of(db, s2.id), 1);

    /* a count of 0 removes that node's member row only */
    struct db_live_member gone[] = {{s2.id, 0}, {s1.id, 0}};
    now = clock_now_ms();
    REQUIRE(db_live_publish(db, "b1", now, 4, gone, 1) == PERR_OK);
    EQ_INT(db_live_read(db, now, &lv), PERR_OK);
    EQ_INT(lv.connections, 8);
    EQ_INT(lv.active_sessions, 1);
    db_live_cleanup(&lv);
    EQ_INT(clients_of(db, s1.id), 5);
    EQ_INT(clients_of(db, s2.id), 0);
    EQ_INT(side_int("SELECT count(*) FROM live_members", NULL), 2);
    REQUIRE(db_live_publish(db, "a2", now, 4, &gone[1], 1) == PERR_OK);
    EQ_INT(clients_of(db, s1.id), 2);
    REQUIRE(db_live_publish(db, "a2", now, 4, m2, 1) == PERR_OK);
    EQ_INT(clients_of(db, s1.id), 5);

    /* a2's heartbeat 10 s old: a2 is down and none of its figures count; b1's still do */
    now = clock_now_ms();
    REQUIRE(db_live_publish(db, "a2", now - 10000, 7, NULL, 0) == PERR_OK);
    REQUIRE(db_live_publish(db, "b1", now - 10000 + 500, 6, NULL, 0) == PERR_OK);
    EQ_INT(db_live_read(db, now - 10000 + 500, &lv), PERR_OK);
    EQ_INT(lv.n_nodes, 2);
    EQ_INT(lv.connections, 13);
    db_live_cleanup(&lv);
    REQUIRE(db_live_publish(db, "b1", now, 6, NULL, 0) == PERR_OK);
    EQ_INT(db_live_read(db, now, &lv), PERR_OK);
    EQ_INT(lv.up, true);
    EQ_INT(lv.connections, 6);
    EQ_INT(lv.active_sessions, 1);
    EQ_INT(lv.heartbeat_ms, now);
    EQ_INT(lv.n_nodes, 1);
    EQ_STR(lv.n_nodes == 1 ? lv.nodes[0].node_id : "", "b1");
    db_live_cleanup(&lv);
    EQ_INT(clients_of(db, s1.id), 2);
    /* every broker stale: every figure reads 0 */
    REQUIRE(db_live_publish(db, "b1", now - 10000, 6, NULL, 0) == PERR_OK);
    EQ_INT(db_live_read(db, now, &lv), PERR_OK);
    EQ_INT(lv.up, false);
    EQ_INT(lv.connections, 0);
    EQ_INT(lv.active_sessions, 0);
    EQ_INT(lv.n_nodes, 0);
    EQ_INT(lv.heartbeat_ms, now - 10000);
    db_live_cleanup(&lv);
    EQ_INT(clients_of(db, s1.id), 0);
    /* fresh means within DB_LIVE_FRESH_MS, inclusive */
    EQ_INT(db_live_read(db, now - 10000 + DB_LIVE_FRESH_MS, &lv), PERR_OK);
    EQ_INT(lv.up, true);
    EQ_INT(lv.connections, 13);
    EQ_INT(lv.active_sessions, 1);
    EQ_INT(lv.n_nodes, 2);
    EQ_INT(lv.n_nodes == 2 ? lv.nodes[0].last_seen_ms : -1, DB_LIVE_FRESH_MS);
    db_live_cleanup(&lv);
    EQ_INT(db_live_read(db, now - 10000 + DB_LIVE_FRESH_MS + 1, &lv), PERR_OK);
    EQ_INT(lv.up, false);
    EQ_INT(lv.connections, 0);
    db_live_cleanup(&lv);

    /* fresh again: the member counts come back */
    now = clock_now_ms();
    REQUIRE(db_live_publish(db, "b1", now, 3, NULL, 0) == PERR_OK);
    EQ_INT(clients_of(db, s1.id), 2);

    /* a node silent for DB_LIVE_FORGET_MS is forgotten, members and all, by the next
     * publish of another node; it comes back as it publishes again */
    REQUIRE(db_live_publish(db, "a2", now - DB_LIVE_FORGET_MS - 1, 4, NULL, 0) == PERR_OK);
    EQ_INT(side_int("SELECT count(*) FROM live_members WHERE node_id = 'a2'", NULL), 1);
    REQUIRE(db_live_publish(db, "b1", now, 3, NULL, 0) == PERR_OK);
    EQ_INT(side_int("SELECT count(*) FROM broker_state WHERE node_id = 'a2'", NULL), 0);
    EQ_INT(side_int("SELECT count(*) FROM live_members WHERE node_id = 'a2'", NULL), 0);
    REQUIRE(db_live_publish(db, "a2", now, 1, m2, 1) == PERR_OK);
    EQ_INT(side_int("SELECT pid FROM broker_state WHERE node_id = 'a2'", NULL), (int)getpid());
    EQ_INT(side_int("SELECT model IS NULL FROM broker_state WHERE node_id = 'a2'", NULL), 1);
    EQ_INT(db_live_read(db, now, &lv), PERR_OK);
    EQ_INT(lv.connections, 4);
    db_live_cleanup(&lv);
    EQ_INT(clients_of(db, s1.id), 5);
    /* ...and by a reset, but a node never forgets itself */
    REQUIRE(db_live_publish(db, "a2", now - DB_LIVE_FORGET_MS - 1, 4, NULL, 0) == PERR_OK);
    REQUIRE(db_live_publish(db, "a2", now - DB_LIVE_FORGET_MS - 1, 4, NULL, 0) == PERR_OK);
    EQ_INT(side_int("SELECT count(*) FROM broker_state WHERE node_id = 'a2'", NULL), 1);
    REQUIRE(db_live_reset(db, "c3", 4444, "echo") == PERR_OK);
    side_query(path,
               "SELECT group_concat(node_id) FROM (SELECT node_id FROM broker_state"
               " ORDER BY node_id)",
               NULL, model, sizeof model);
    EQ_STR(model, "b1,c3");

    /* clean shutdown: that node is gone at once, the others stay */
    EQ_INT(db_live_down(db, "b1"), PERR_OK);
    EQ_INT(db_live_down(db, "c3"), PERR_OK);
    EQ_INT(db_live_read(db, clock_now_ms(), &lv), PERR_OK);
    EQ_INT(lv.up, false);
    EQ_INT(lv.connections, 0);
    EQ_INT(lv.heartbeat_ms, 0);
    db_live_cleanup(&lv);
    EQ_INT(clients_of(db, s1.id), 0);
    EQ_INT(side_int("SELECT count(*) FROM live_members", NULL), 0);

    /* a restarted broker forgets its old member counts, not another's */
    REQUIRE(db_live_reset(db, "b1", 4242, NULL) == PERR_OK);
    REQUIRE(db_live_publish(db, "b1", clock_now_ms(), 1, m, 1) == PERR_OK);
    REQUIRE(db_live_reset(db, "a2", 4343, NULL) == PERR_OK);
    REQUIRE(db_live_publish(db, "a2", clock_now_ms(), 1, m2, 1) == PERR_OK);
    EQ_INT(clients_of(db, s1.id), 5);
    REQUIRE(db_live_reset(db, "b1", 4545, NULL) == PERR_OK);
    EQ_INT(db_live_read(db, clock_now_ms(), &lv), PERR_OK);
    EQ_INT(lv.up, true);
    EQ_INT(lv.active_sessions, 1);
    db_live_cleanup(&lv);
    EQ_INT(clients_of(db, s1.id), 3);
    EQ_INT(side_int("SELECT count(*) FROM live_members", NULL), 1);
    EQ_INT(side_int("SELECT pid FROM broker_state WHERE node_id = 'b1'", NULL), 4545);
    EQ_INT(side_int("SELECT model IS NULL FROM broker_state WHERE node_id = 'b1'", NULL), 1);
    db_session_cleanup(&s1);
    db_session_cleanup(&s2);
    db_close(db);
}

/* A file at schema version 5 with the single-broker live figures migrates to one row per
 * node: the old heartbeat and member counts are dropped, the rest kept. */
static void migrate_nodes(void)
{
    static const char *const names[] = {"001_init", "002_search", "003_search_later",
                                        "004_key_lookup", "005_seq"};
    struct db_live lv;
    struct db *db;
    char file[600];

    new_path("nodes-old");
    for (size_t v = 0; v < UNIT_COUNT(names); v++) {
        char *sql;
        snprintf(file, sizeof file, "%s/schema/%s.sql", root(), names[v]);
        REQUIRE((sql = read_file(file)) != NULL);
        EQ_INT(side_exec(path, sql), 0);
        free(sql);
    }
    EQ_INT(side_exec(path, "PRAGMA user_version = 5;"
                           "INSERT INTO sessions(id, model, created_at, updated_at) VALUES"
                           " ('00000000000000aa', 'echo', '2025-01-01T00:00:00.000Z',"
                           " '2025-01-01T00:00:00.000Z');"
                           "INSERT INTO broker_state VALUES (1, 99, '2025-01-01T00:00:00.000Z',"
                           " 9999999999999, 3, 'echo');"
                           "INSERT INTO live_members VALUES ('00000000000000aa', 2);"),
           0);
    db = db_open(path);
    REQUIRE(db != NULL);
    EQ_INT(db_user_version(db), db_schema_version(db));
    EQ_INT(side_int("SELECT count(*) FROM broker_state", NULL), 0);
    EQ_INT(side_int("SELECT count(*) FROM live_members", NULL), 0);
    EQ_INT(side_int("SELECT count(*) FROM sessions", NULL), 1);
    EQ_INT(clients_of(db, "00000000000000aa"), 0);
    REQUIRE(db_live_reset(db, "vm:8001", 1, "echo") == PERR_OK);
    struct db_live_member m[] = {{"00000000000000aa", 2}};
    REQUIRE(db_live_publish(db, "vm:8001", clock_now_ms(), 3, m, 1) == PERR_OK);
    EQ_INT(clients_of(db, "00000000000000aa"), 2);
    EQ_INT(db_live_read(db, clock_now_ms(), &lv), PERR_OK);
    EQ_INT(lv.n_nodes, 1);
    EQ_INT(lv.connections, 3);
    db_live_cleanup(&lv);
    db_close(db);
}

/* Removes the temporary folder and what the cases left in it. */
static void remove_tmp(void)
{
    DIR *d = opendir(tmp_dir);
    struct dirent *e;
    char p[1024];

    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", tmp_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmp_dir);
}

/* ---- seq (SPEC 7) ---- */

/* The seqs of a list, comma-separated, into out. */
static const char *seqs(const struct db_message_list *l, char *out, size_t size)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < l->n && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%lld", i ? "," : "",
                                 (long long)l->v[i].seq);
    return out;
}

/* A file at schema version 4 with messages of two sessions interleaved gets seq 1, 2, 3
 * per session in id order, and last_seq; new messages go on from there. */
static void migrate_seq(void)
{
    char file[600], got[64];
    struct db_message_list l = {0};
    struct db_message m;
    struct db *db;
    int64_t last_id = -1, last_seq = -1;
    int rc;

    new_path("seq-old");
    for (int v = 1; v <= 4; v++) {
        static const char *const names[] = {"001_init", "002_search", "003_search_later",
                                            "004_key_lookup"};
        char *sql;
        snprintf(file, sizeof file, "%s/schema/%s.sql", root(), names[v - 1]);
        REQUIRE((sql = read_file(file)) != NULL);
        EQ_INT(side_exec(path, sql), 0);
        free(sql);
    }
    rc = side_exec(path, "PRAGMA user_version = 4;"
                         "INSERT INTO sessions VALUES ('00000000000000aa', NULL, 'echo', NULL,"
                         " '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z', 3);"
                         "INSERT INTO sessions VALUES ('00000000000000bb', NULL, 'echo', NULL,"
                         " '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z', 2);"
                         "INSERT INTO messages(session_id, role, content, created_at) VALUES"
                         " ('00000000000000aa', 'user', 'a1', '2025-01-01T00:00:00.000Z'),"
                         " ('00000000000000bb', 'user', 'b1', '2025-01-01T00:00:00.000Z'),"
                         " ('00000000000000aa', 'user', 'a2', '2025-01-01T00:00:00.000Z'),"
                         " ('00000000000000bb', 'user', 'b2', '2025-01-01T00:00:00.000Z'),"
                         " ('00000000000000aa', 'user', 'a3', '2025-01-01T00:00:00.000Z');");
    EQ_INT(rc, 0);
    db = db_open(path);
    REQUIRE(db != NULL);
    EQ_INT(db_user_version(db), db_schema_version(db));
    side_query(path,
               "SELECT group_concat(seq) FROM (SELECT seq FROM messages"
               " WHERE session_id = ?1 ORDER BY id)",
               "00000000000000aa", got, sizeof got);
    EQ_STR(got, "1,2,3");
    REQUIRE(db_messages_since(db, "00000000000000aa", 0, 10, &l) == PERR_OK);
    EQ_STR(seqs(&l, got, sizeof got), "1,2,3");
    EQ_STR(contents(&l, got, sizeof got), "a1,a2,a3");
    db_message_list_cleanup(&l);
    REQUIRE(db_messages_since(db, "00000000000000bb", 0, 10, &l) == PERR_OK);
    EQ_STR(seqs(&l, got, sizeof got), "1,2");
    db_message_list_cleanup(&l);
    EQ_INT(side_int("SELECT last_seq FROM sessions WHERE id = ?1", "00000000000000aa"), 3);
    EQ_INT(side_int("SELECT last_seq FROM sessions WHERE id = ?1", "00000000000000bb"), 2);
    add(db, "00000000000000bb", "user", "b3", NULL, false);
    REQUIRE(db_session_last(db, "00000000000000bb", &last_id, &last_seq) == PERR_OK);
    EQ_INT(last_seq, 3);
    EQ_INT(last_id, 6);
    REQUIRE(db_message_get(db, last_id, &m) == PERR_OK);
    EQ_INT(m.seq, 3);
    db_message_cleanup(&m);
    db_close(db);
}

/* seq counts on after a clear; since/before/after place a deleted id where it was. */
static void seq_places(void)
{
    struct db *db = open_new("seq");
    struct db_message_list l = {0};
    struct db_session s, o;
    int64_t id[5], cleared, last_id, last_seq;
    bool more;
    char got[64];

    REQUIRE(db != NULL);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &s) == PERR_OK);
    REQUIRE(db_session_create(db, "echo", NULL, NULL, &o) == PERR_OK);
    REQUIRE(db_session_last(db, s.id, &last_id, &last_seq) == PERR_OK);
    EQ_INT(last_id, 0);
    EQ_INT(last_seq, 0);
    for (int i = 0; i < 5; i++) {
        char c[8];
        snprintf(c, sizeof c, "m%d", i + 1);
        id[i] = add(db, s.id, "user", c, NULL, false);
        add(db, o.id, "user", "other", NULL, false);
    }
    /* take m3 out: its id still marks its place */
    EQ_INT(side_exec(path, "PRAGMA foreign_keys = ON; DELETE FROM messages WHERE content = 'm3'"),
           0);
    REQUIRE(db_messages_since(db, s.id, id[2], 10, &l) == PERR_OK);
    EQ_STR(contents(&l, got, sizeof got), "m4,m5");
    EQ_STR(seqs(&l, got, sizeof got), "4,5");
    db_message_list_cleanup(&l);
    REQUIRE(db_messages_page(db, s.id, 10, id[2], false, &l, &more) == PERR_OK);
    EQ_STR(contents(&l, got, sizeof got), "m1,m2");
    db_message_list_cleanup(&l);
    REQUIRE(db_messages_after(db, s.id, 3, 10, &l) == PERR_OK);
    EQ_STR(seqs(&l, got, sizeof got), "4,5");
    db_message_list_cleanup(&l);
    REQUIRE(db_messages_after(db, s.id, 0, 2, &l) == PERR_OK);
    EQ_STR(seqs(&l, got, sizeof got), "1,2");
    db_message_list_cleanup(&l);
    REQUIRE(db_messages_context(db, s.id, id[2], 10, &l) == PERR_OK);
    EQ_STR(contents(&l, got, sizeof got), "m1,m2");
    db_message_list_cleanup(&l);

    REQUIRE(db_session_clear(db, s.id, &cleared) == PERR_OK);
    add(db, s.id, "user", "after clear", NULL, false);
    REQUIRE(db_session_last(db, s.id, &last_id, &last_seq) == PERR_OK);
    EQ_INT(last_seq, 6); /* never reused, also not after a clear */
    REQUIRE(db_messages_since(db, s.id, id[4], 10, &l) == PERR_OK);
    EQ_STR(contents(&l, got, sizeof got), "after clear");
    db_message_list_cleanup(&l);
    REQUIRE(db_session_last(db, o.id, &last_id, &last_seq) == PERR_OK);
    EQ_INT(last_seq, 5);
    db_session_cleanup(&s);
    db_session_cleanup(&o);
    db_close(db);
}

/* A password in a PostgreSQL URI never reaches a log line. */
static void path_shown(void)
{
    static const struct {
        const char *path, *want;
    } rows[] = {
        {"var/parley.db", "var/parley.db"},
        {"/tmp/user:pw@x.db", "/tmp/user:pw@x.db"}, /* a file, not a URI */
        {"postgresql:///parley?host=/run/pg", "postgresql:///parley?host=/run/pg"},
        {"postgres://alice:s3cret@db.example:5432/parley",
         "postgres://alice:***@db.example:5432/parley"},
        {"postgresql://alice@db/parley", "postgresql://alice@db/parley"},
        {"postgresql://a:b:c@h/d", "postgresql://a:***@h/d"},
        {"postgresql://h/d?user=a&password=p%40ss&sslmode=require",
         "postgresql://h/d?user=a&password=***&sslmode=require"},
        {"postgresql://h/d?password=x", "postgresql://h/d?password=***"},
        {"postgresql://u:p@h/d?application_name=mypassword=x",
         "postgresql://u:***@h/d?application_name=mypassword=x"},
    };
    char out[128], tiny[12];

    for (size_t i = 0; i < UNIT_COUNT(rows); i++)
        EQ_STR(db_path_shown(rows[i].path, out, sizeof out), rows[i].want);
    EQ_STR(db_path_shown("postgres://alice:s3cret@db/p", tiny, sizeof tiny), "postgres://");
}

static const struct unit_case cases[] = {
    {"open an empty file: newest schema, WAL, ping", open_empty},
    {"open the same file twice", open_twice},
    {"6 processes opening one new file at once all succeed (20 rounds)", open_race},
    {"embedded migrations are the schema/*.sql files", embedded_match_files},
    {"a version 1 file migrates, keeps its data and becomes searchable", migrate_old},
    {"a file newer than this binary is refused and left alone", refuse_newer},
    {"a file in a missing folder is refused", open_missing_folder},
    {"session create, get, by channel, not found", session_create_get},
    {"session reply_mode: always by default, set at creation, changed with the title",
     session_reply_mode},
    {"session list: newest updated first, total, limit and offset", session_list},
    {"session delete cascades to messages, queue and search (foreign keys on)",
     session_delete_cascades},
    {"session clear counts, empties and keeps other sessions", session_clear},
    {"message ids are never reused (clear, delete, reopen)", ids_not_reused},
    {"message add and get round-trip every field", message_add_get},
    {"a failed message add leaves nothing behind", message_add_failures},
    {"client_msg_id duplicates return the stored message", message_duplicate},
    {"db_messages_page: limit, before, has_more", messages_page},
    {"db_messages_since: after an id, ascending, limited", messages_since},
    {"db_messages_context: last n user/assistant up to the one answered, ascending",
     messages_context},
    {"reply queue and db_reply_add with counters", reply_queue_and_add},
    {"db_reply_queue_drop", reply_queue_drop},
    {"quotas per key and day: counted, refused, resend, tokens (SPEC 9)", quotas},
    {"nested transactions: inner rollback keeps outer work", tx_nested},
    {"a failed write inside a transaction keeps the outer work", tx_inner_failure_keeps_outer},
    {"a transaction SQLite rolled back (disk full) refuses later writes", tx_lost_refuses_writes},
    {"an open read transaction elsewhere stalls no write", reader_does_not_stall},
    {"live figures per node: reset, publish, sums, stale heartbeat, forgetting, down", live},
    {"a version 5 file migrates to live figures per node", migrate_nodes},
    {"a version 4 file gets seq per session in id order, then counts on", migrate_seq},
    {"seq: never reused after a clear; a deleted id keeps its place", seq_places},
    {"db_path_shown hides a PostgreSQL password", path_shown},
    {NULL, lease_run_all},
    {"a version 6 file migrates to the reply lease", migrate_lease},
};

int main(void)
{
    int rc;

    log_init("test_db", LOG_LEVEL_WARN);
    if (!mkdtemp(tmp_dir)) {
        printf("not ok - mkdtemp: %s\n", tmp_dir);
        return 1;
    }
    rc = unit_run(cases, UNIT_COUNT(cases));
    remove_tmp();
    return rc;
}
