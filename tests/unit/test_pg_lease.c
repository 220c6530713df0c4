/* test_pg_lease: the reply lease (SPEC 8) on PostgreSQL: the rules of lease_cases.h, the
 * same as test_db checks on SQLite, each on a database of its own, and the migration of a
 * version 2 database. The cluster is the PostgreSQL pass's, a throwaway one (tests/run.py
 * exports PARLEY_TEST_PG_HOST, _PORT and _USER); without it every case is skipped. The
 * databases are made and dropped here, through the cluster's `postgres` database. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db.h"
#include "log.h"
#include "unit.h"

/* Generated from schema/pg/ by tools/embed_schema.sh (build/gen/schema_pg_sql.c). */
extern const char *const parley_pg_migrations[];
extern const size_t parley_pg_migrations_count;

#define MAX_DATABASES 32

static const char *pg_host, *pg_port, *pg_user;
static char uri[512];                /* the current case's database */
static char made[MAX_DATABASES][64]; /* the databases made, dropped at the end */
static int n_made;

/* Runs sql on database name of the cluster. 0, or -1 (printed). */
static int admin(const char *name, const char *sql)
{
    const char *const keys[] = {"host", "port", "user", "dbname", NULL};
    const char *const vals[] = {pg_host, pg_port, pg_user, name, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 0);
    PGresult *r = NULL;
    int rc = -1;

    if (PQstatus(c) == CONNECTION_OK) {
        r = PQexec(c, sql);
        rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;
    }
    if (rc < 0)
        fprintf(stderr, "test_pg_lease: %s: %s", name, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return rc;
}

/* Makes an empty database for the case (its URI in uri). NULL name on failure. */
static const char *make_database(const char *tag)
{
    char sql[160];
    char *name;

    if (n_made == MAX_DATABASES)
        return NULL;
    name = made[n_made];
    snprintf(name, sizeof made[0], "parley_lease_%d_%d", (int)getpid(), n_made);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    if (admin("postgres", sql) < 0)
        return NULL;
    n_made++;
    snprintf(uri, sizeof uri, "postgresql:///%s?host=%s&port=%s&user=%s", name, pg_host, pg_port,
             pg_user);
    fprintf(stderr, "test_pg_lease: %s on database %s\n", tag, name);
    return name;
}

static void drop_databases(void)
{
    for (int i = 0; i < n_made; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %.63s WITH (FORCE)", made[i]);
        admin("postgres", sql);
    }
    n_made = 0;
}

static struct db *lease_open(const char *name)
{
    return make_database(name) ? db_open(uri) : NULL;
}

static struct db *lease_again(void)
{
    return db_open(uri);
}

#include "lease_cases.h"

/* A database at schema version 2 migrates to the reply lease: a question queued before is
 * unclaimed (owner NULL, chunks 0) and can be claimed. */
static void migrate_lease(void)
{
    static const char old_rows[] =
        "CREATE TABLE schema_version (version integer NOT NULL);"
        "INSERT INTO schema_version VALUES (2);"
        "INSERT INTO sessions(id, model, created_at, updated_at, message_count, last_seq)"
        " VALUES ('00000000000000aa', 'echo', now(), now(), 1, 1);"
        "WITH m AS (INSERT INTO messages(session_id, seq, role, content, created_at)"
        " VALUES ('00000000000000aa', 1, 'user', 'q', now()) RETURNING id)"
        " INSERT INTO reply_queue SELECT id, '00000000000000aa', now() FROM m";
    struct db_message_list q = {0};
    const char *name = make_database("migration");
    struct db_claim c;
    struct db *db;

    REQUIRE(name != NULL);
    REQUIRE(parley_pg_migrations_count >= 3);
    for (int v = 0; v < 2; v++)
        REQ_INT(admin(name, parley_pg_migrations[v]), 0);
    REQ_INT(admin(name, old_rows), 0);
    db = db_open(uri);
    REQUIRE(db != NULL);
    EQ_INT(db_user_version(db), db_schema_version(db));
    EQ_INT(admin(name, "DO $$ BEGIN IF (SELECT count(*) FROM reply_queue WHERE owner IS NULL"
                       " AND lease_until IS NULL AND response_id IS NULL AND partial IS NULL"
                       " AND chunks = 0) <> 1 THEN RAISE 'not migrated'; END IF; END $$"),
           0);
    REQ_INT(db_reply_queue(db, NULL, &q), PERR_OK);
    EQ_INT(q.n, 1);
    if (q.n == 1) {
        EQ_STR(q.v[0].content, "q");
        EQ_INT(db_reply_claim(db, q.v[0].id, LEASE_A, LEASE_LONG, &c), PERR_OK);
        CHECK(c.claimed);
        CHECK(!c.taken_over);
        db_claim_cleanup(&c);
    }
    db_message_list_cleanup(&q);
    db_close(db);
}

static const struct unit_case cases[] = {
    {NULL, lease_run_all},
    {"lease: a version 2 database migrates to the reply lease", migrate_lease},
};

int main(void)
{
    int rc;

    log_init("test_pg_lease", LOG_LEVEL_WARN);
    pg_host = getenv("PARLEY_TEST_PG_HOST");
    pg_port = getenv("PARLEY_TEST_PG_PORT");
    pg_user = getenv("PARLEY_TEST_PG_USER");
    if (!pg_host || !*pg_host || !pg_port || !*pg_port || !pg_user || !*pg_user) {
        for (size_t i = 0; i < UNIT_COUNT(lease_cases); i++)
            printf("ok - %s # skip no PostgreSQL (PARLEY_TEST_PG_HOST, _PORT, _USER unset)\n",
                   lease_cases[i].name);
        printf("ok - %s # skip no PostgreSQL\n", cases[1].name);
        return 0;
    }
    rc = unit_run(cases, UNIT_COUNT(cases));
    drop_databases();
    return rc;
}
