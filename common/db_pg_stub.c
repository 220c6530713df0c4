/* db_pg_stub: stands in for the PostgreSQL backend (db_pg*.c) until it lands: a
 * postgres:// URI is refused with a readable message. */
#include "db_backend.h"
#include "log.h"

const struct db_backend db_pg_backend = {.kind = "postgresql"};

struct db *db_pg_open(const char *uri)
{
    (void)uri;
    log_error("this build has no PostgreSQL backend; use an SQLite file for --db");
    return NULL;
}
