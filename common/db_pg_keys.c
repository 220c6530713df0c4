/* db_pg_keys: API keys on PostgreSQL, stored as salted hashes (see auth.h and
 * schema/pg/001_init.sql). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "db_pg.h"

#define CREATED_AT DB_PG_ISO("created_at")
#define REVOKED_AT DB_PG_ISO("revoked_at")

enum perr db_pg_keys_active(struct db *db, int64_t *n)
{
    static const char sql[] = "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL";
    enum perr e;
    PGresult *r = db_pg_query(db, __func__, "count keys", sql, 0, NULL, &e);

    *n = r ? db_pg_int64(r, 0, 0) : 0;
    PQclear(r);
    return e;
}

enum perr db_pg_key_add(struct db *db, const char *name, const char *salt, const char *hash,
                        const char *lookup)
{
    /* a taken name inserts nothing: no failed statement to spoil the caller's transaction */
    static const char sql[] = "INSERT INTO api_keys(name, salt, hash, created_at, lookup)"
                              " VALUES ($1, $2, $3, $4::timestamptz, $5)"
                              " ON CONFLICT (name) DO NOTHING";
    char now[CLOCK_ISO_LEN];
    const char *params[] = {name, salt, hash, now, lookup};
    int64_t added = 0;
    enum perr e;

    clock_now_iso(now);
    if ((e = db_pg_run(db, __func__, "add key", sql, 5, params, &added)))
        return e;
    return added ? PERR_OK : PERR_INVALID_FIELD; /* the name is taken */
}

enum perr db_pg_key_revoke(struct db *db, const char *name)
{
    static const char sql[] = "UPDATE api_keys SET revoked_at = $2::timestamptz"
                              " WHERE name = $1 AND revoked_at IS NULL";
    char now[CLOCK_ISO_LEN];
    const char *params[] = {name, now};
    int64_t changed = 0;
    enum perr e;

    clock_now_iso(now);
    if ((e = db_pg_run(db, __func__, "revoke key", sql, 2, params, &changed)))
        return e;
    return changed ? PERR_OK : PERR_NOT_FOUND;
}

/* Where a row's text columns go in one element of the array read_rows makes. */
struct row_layout {
    size_t elem_size;
    size_t offset[4];
    size_t size[4];
    int cols;
};

/* Runs sql, copying columns 0..cols-1 of each row into a new array of elements laid out
 * as l says (caller frees *out; NULL when there is no row, as on SQLite). */
static enum perr read_rows(struct db *db, const char *func, const char *sql, int n,
                           const char *const *params, const struct row_layout *l, void **out,
                           size_t *got, const char *what)
{
    enum perr e;
    PGresult *r = db_pg_query(db, func, what, sql, n, params, &e);
    size_t rows;
    char *v = NULL;

    if (!r)
        return e;
    rows = (size_t)PQntuples(r);
    if (rows && !(v = calloc(rows, l->elem_size))) {
        PQclear(r);
        return PERR_INTERNAL;
    }
    for (size_t i = 0; i < rows; i++)
        for (int c = 0; c < l->cols && c < PQnfields(r); c++)
            db_pg_copy(r, (int)i, c, v + i * l->elem_size + l->offset[c], l->size[c]);
    PQclear(r);
    *out = v;
    *got = rows;
    return PERR_OK;
}

enum perr db_pg_key_list(struct db *db, struct db_key_info **out, size_t *n)
{
    /* names in byte order, as SQLite's backend has them */
    static const char sql[] = "SELECT name, " CREATED_AT ", " REVOKED_AT " FROM api_keys"
                              " ORDER BY created_at, name COLLATE \"C\"";
    static const struct row_layout layout = {
        sizeof(struct db_key_info),
        {offsetof(struct db_key_info, name), offsetof(struct db_key_info, created_at),
         offsetof(struct db_key_info, revoked_at)},
        {sizeof out[0]->name, sizeof out[0]->created_at, sizeof out[0]->revoked_at},
        3};

    return read_rows(db, __func__, sql, 0, NULL, &layout, (void **)out, n, "list keys");
}

static const struct row_layout key_layout = {
    sizeof(struct auth_key),
    {offsetof(struct auth_key, name), offsetof(struct auth_key, salt),
     offsetof(struct auth_key, hash), offsetof(struct auth_key, lookup)},
    {sizeof(((struct auth_key *)0)->name), sizeof(((struct auth_key *)0)->salt),
     sizeof(((struct auth_key *)0)->hash), sizeof(((struct auth_key *)0)->lookup)},
    4};

enum perr db_pg_key_hashes(struct db *db, struct auth_key **out, size_t *n)
{
    static const char sql[] = "SELECT name, salt, hash, coalesce(lookup, '') FROM api_keys"
                              " WHERE revoked_at IS NULL";

    return read_rows(db, __func__, sql, 0, NULL, &key_layout, (void **)out, n, "read keys");
}

enum perr db_pg_key_candidates(struct db *db, const char *lookup, struct auth_key **out, size_t *n)
{
    static const char sql[] = "SELECT name, salt, hash, coalesce(lookup, '') FROM api_keys"
                              " WHERE revoked_at IS NULL AND (lookup = $1 OR lookup IS NULL)";
    const char *params[] = {lookup};

    return read_rows(db, __func__, sql, 1, params, &key_layout, (void **)out, n, "read keys");
}
