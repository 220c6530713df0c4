/* db_keys: API keys (stored as salted hashes; see schema/001_init.sql). */
#include "db_internal.h"

enum perr db_keys_active(struct db *db, int64_t *n)
{
    static const char sql[] = "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL";
    sqlite3_stmt *st = db_stmt(db, sql);
    int rc;

    if (!st)
        return PERR_UNAVAILABLE;
    rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    db_stmt_done(st);
    return rc == SQLITE_ROW ? PERR_OK : db_fail(db, __func__, "count keys");
}
