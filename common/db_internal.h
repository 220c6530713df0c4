/* db_internal: what the db_*.c files share. Not for use outside common/db*.c. */
#ifndef PARLEY_DB_INTERNAL_H
#define PARLEY_DB_INTERNAL_H

#include <sqlite3.h>

#include "db.h"

/* Returns the prepared statement for sql (prepared on first use, then cached on db),
 * ready to bind; NULL after logging when SQLite refuses it. sql must be a string with
 * static storage: the cache is keyed by its address. Finish with db_stmt_done. */
sqlite3_stmt *db_stmt(struct db *db, const char *sql);
/* Resets st and clears its bindings so the next db_stmt gets it clean. */
void db_stmt_done(sqlite3_stmt *st);
/* Logs a failed SQLite call with the function, what was being done and SQLite's message,
 * and returns PERR_UNAVAILABLE. */
enum perr db_fail(struct db *db, const char *func, const char *what);
/* Binds text, or NULL when s is NULL. */
int db_bind_text(sqlite3_stmt *st, int idx, const char *s);
/* A new malloc'd copy of column col, or NULL when the column is NULL. */
char *db_column_strdup(sqlite3_stmt *st, int col);
/* Copies column col into a fixed buffer, truncating to size-1 bytes. */
void db_column_copy(sqlite3_stmt *st, int col, char *buf, size_t size);
/* Runs st to the end (ignoring rows), then resets it for the next use. Returns
 * SQLITE_DONE on success. sqlite3_changes() and the last insert id stay readable. */
int db_run(sqlite3_stmt *st);
/* Adds delta to the named counter (inside the caller's transaction). */
enum perr db_counter_add(struct db *db, const char *name, int64_t delta);
/* Live member count cut-off: heartbeats at or after this are fresh. */
int64_t db_live_cutoff(void);

#endif
