/* db_keys: API keys, stored as salted hashes (see auth.h and schema/001_init.sql). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "db_sqlite.h"

enum perr db_sqlite_keys_active(struct db *db, int64_t *n)
{
    static const char sql[] = "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    db_sqlite_stmt_done(st);
    return rc == SQLITE_ROW ? PERR_OK : db_sqlite_fail(db, __func__, "count keys");
}

enum perr db_sqlite_key_add(struct db *db, const char *name, const char *salt, const char *hash,
                            const char *lookup)
{
    static const char sql[] = "INSERT INTO api_keys(name, salt, hash, created_at, lookup)"
                              " VALUES (?1, ?2, ?3, ?4, ?5)";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    char now[CLOCK_ISO_LEN];
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    clock_now_iso(now);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, salt, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, lookup, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        return PERR_INVALID_FIELD; /* the name is taken */
    return rc == SQLITE_DONE ? PERR_OK : db_sqlite_fail(db, __func__, "add key");
}

enum perr db_sqlite_key_revoke(struct db *db, const char *name)
{
    static const char sql[] = "UPDATE api_keys SET revoked_at = ?2"
                              " WHERE name = ?1 AND revoked_at IS NULL";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);
    char now[CLOCK_ISO_LEN];
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    clock_now_iso(now);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, now, -1, SQLITE_STATIC);
    rc = db_sqlite_run(st);
    if (rc != SQLITE_DONE)
        return db_sqlite_fail(db, __func__, "revoke key");
    return sqlite3_changes(sqlite3_db_handle(st)) ? PERR_OK : PERR_NOT_FOUND;
}

/* Where a row's text columns go in one element of the array read_rows makes. */
struct row_layout {
    size_t elem_size;
    size_t offset[4];
    size_t size[4];
    int cols;
};

/* Steps st to the end, copying columns 0..cols-1 of each row into a new array of elements
 * laid out as l says (caller frees *out). Resets st. */
static enum perr read_rows(struct db *db, sqlite3_stmt *st, const struct row_layout *l, void **out,
                           size_t *n, const char *what)
{
    char *v = NULL, *grown;
    size_t got = 0, cap = 0;
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (got == cap) {
            cap = cap ? cap * 2 : 8;
            if (!(grown = realloc(v, cap * l->elem_size))) {
                rc = SQLITE_NOMEM;
                break;
            }
            v = grown;
        }
        memset(v + got * l->elem_size, 0, l->elem_size);
        for (int c = 0; c < l->cols; c++)
            db_sqlite_column_copy(st, c, v + got * l->elem_size + l->offset[c], l->size[c]);
        got++;
    }
    db_sqlite_stmt_done(st);
    if (rc != SQLITE_DONE) {
        free(v);
        return db_sqlite_fail(db, __func__, what);
    }
    *out = v;
    *n = got;
    return PERR_OK;
}

enum perr db_sqlite_key_list(struct db *db, struct db_key_info **out, size_t *n)
{
    static const char sql[] = "SELECT name, created_at, revoked_at FROM api_keys"
                              " ORDER BY created_at, name";
    static const struct row_layout layout = {
        sizeof(struct db_key_info),
        {offsetof(struct db_key_info, name), offsetof(struct db_key_info, created_at),
         offsetof(struct db_key_info, revoked_at)},
        {sizeof out[0]->name, sizeof out[0]->created_at, sizeof out[0]->revoked_at},
        3};
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);

    if (!st)
        return PERR_UNAVAILABLE;
    return read_rows(db, st, &layout, (void **)out, n, "list keys");
}

static const struct row_layout key_layout = {
    sizeof(struct auth_key),
    {offsetof(struct auth_key, name), offsetof(struct auth_key, salt),
     offsetof(struct auth_key, hash), offsetof(struct auth_key, lookup)},
    {sizeof(((struct auth_key *)0)->name), sizeof(((struct auth_key *)0)->salt),
     sizeof(((struct auth_key *)0)->hash), sizeof(((struct auth_key *)0)->lookup)},
    4};

enum perr db_sqlite_key_hashes(struct db *db, struct auth_key **out, size_t *n)
{
    static const char sql[] = "SELECT name, salt, hash, coalesce(lookup, '') FROM api_keys"
                              " WHERE revoked_at IS NULL";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);

    if (!st)
        return PERR_UNAVAILABLE;
    return read_rows(db, st, &key_layout, (void **)out, n, "read keys");
}

enum perr db_sqlite_key_candidates(struct db *db, const char *lookup, struct auth_key **out,
                                   size_t *n)
{
    static const char sql[] = "SELECT name, salt, hash, coalesce(lookup, '') FROM api_keys"
                              " WHERE revoked_at IS NULL AND (lookup = ?1 OR lookup IS NULL)";
    sqlite3_stmt *st = db_sqlite_stmt(db, sql);

    if (!st)
        return PERR_UNAVAILABLE;
    sqlite3_bind_text(st, 1, lookup, -1, SQLITE_STATIC);
    return read_rows(db, st, &key_layout, (void **)out, n, "read keys");
}
