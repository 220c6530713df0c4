/* fuzz_router: libFuzzer harness for the REST router (rest/router.c router_handle) over a
 * real SQLite database in a temporary folder, opened once, with the real defaults
 * (cfg_load of parley-rest with --db and --notify-socket there; no broker listens on
 * that socket, so notifications fail quietly).
 *
 * Input: lines "METHOD\nPATH[?QUERY]\nCONTENT-TYPE\nAUTHORIZATION\nHOST\n" then the body
 * (the rest, any bytes). An empty header line is an absent header; a METHOD ending in
 * '!' is sent as a body over the size limit. In PATH, "@S" stands for the id of a session
 * that exists (made again whenever the input deleted it). The path is percent-decoded
 * as a front-end does (left as it came on a malformed escape), the query split with
 * rt_parse_query. Checks: an answer always has a status from 200 to 599, a body with its
 * length, and an error body of JSON. The database is emptied every few thousand inputs so
 * that it does not grow without bound. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "router.h"

#define FIELDS 5

static struct cfg cfg;
static struct db *db;
static struct router *router;
static char session_id[DB_ID_LEN];
static unsigned long inputs;

static void remove_tmpdir(void);
static char tmpdir[] = "/tmp/parley-fuzz-router-XXXXXX";

/* Makes the session "@S" names when it is gone. */
static void ensure_session(void)
{
    struct db_session s;

    if (session_id[0] && db_session_get(db, session_id, &s) == PERR_OK) {
        db_session_cleanup(&s);
        return;
    }
    if (db_session_create(db, "echo", "fuzz", NULL, &s) != PERR_OK)
        abort();
    memcpy(session_id, s.id, sizeof session_id);
    db_session_cleanup(&s);
}

/* Deletes every session (and so every message). */
static void empty_database(void)
{
    struct db_session *v;
    size_t n;
    int64_t total;

    while (db_session_list(db, 500, 0, &v, &n, &total) == PERR_OK) {
        for (size_t i = 0; i < n; i++)
            db_session_delete(db, v[i].id);
        db_session_list_free(v, n);
        if (n == 0)
            break;
    }
    session_id[0] = '\0';
}

static void remove_tmpdir(void)
{
    char cmd[128];

    router_free(router);
    db_close(db);
    cfg_cleanup(&cfg);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_router: could not remove %s\n", tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dbp[128], sock[128];
    char *args[] = {"parley-rest", "--db", dbp, "--notify-socket", sock, NULL};

    log_init("fuzz_router", LOG_LEVEL_ERROR);
    if (!mkdtemp(tmpdir))
        abort();
    snprintf(dbp, sizeof dbp, "%s/parley.db", tmpdir);
    snprintf(sock, sizeof sock, "%s/broker.sock", tmpdir);
    if (cfg_load(&cfg, CFG_REST, "parley-rest", 5, args) != CFG_OK || !(db = db_open(dbp)) ||
        !(router = router_new(&cfg)))
        abort();
    atexit(remove_tmpdir);
    return 0;
}

/* Splits the next line off *p (n bytes left) as a new NUL-terminated string, or NULL
 * when it is empty. */
static char *next_line(const char **p, size_t *n)
{
    const char *nl = memchr(*p, '\n', *n);
    size_t len = nl ? (size_t)(nl - *p) : *n;
    char *s = NULL;

    if (len && (s = malloc(len + 1))) {
        memcpy(s, *p, len);
        s[len] = '\0';
    }
    *p += nl ? len + 1 : len;
    *n -= nl ? len + 1 : len;
    return s;
}

/* path with the first "@S" replaced by the session id; new string. */
static char *with_session(const char *path)
{
    const char *at = strstr(path, "@S");
    char *out;

    if (!at)
        return strdup(path);
    if (asprintf(&out, "%.*s%s%s", (int)(at - path), path, session_id, at + 2) < 0)
        return NULL;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t n = size;
    char *f[FIELDS], *path = NULL, *query, *body;
    struct rt_request req = {0};
    struct rt_response res;

    if (++inputs % 4096 == 0)
        empty_database();
    ensure_session();
    for (int i = 0; i < FIELDS; i++)
        f[i] = next_line(&p, &n);
    body = malloc(n + 1);
    if (!body)
        goto out;
    memcpy(body, p, n);
    body[n] = '\0';
    req.method = f[0] ? f[0] : "GET";
    if (f[0] && strlen(f[0]) > 1 && f[0][strlen(f[0]) - 1] == '!') {
        f[0][strlen(f[0]) - 1] = '\0';
        req.body_too_large = true;
    }
    if (!(path = with_session(f[1] ? f[1] : "/")))
        goto out;
    if ((query = strchr(path, '?')))
        *query++ = '\0';
    if (query)
        rt_parse_query(query, &req);
    {
        char *copy = strdup(path);
        if (copy && rt_url_decode(path, false) < 0)
            strcpy(path, copy); /* a malformed escape stays as it came */
        free(copy);
    }
    req.path = path;
    req.content_type = f[2];
    req.authorization = f[3];
    req.host = f[4];
    req.body = body;
    req.body_len = n;
    router_handle(router, db, &req, &res);
    if (res.status < 200 || res.status > 599 || (res.body_len && !res.body))
        __builtin_trap();
    if (res.status >= 400 && (!res.body || res.body_len < 2 || res.body[0] != '{'))
        __builtin_trap();
    rt_response_cleanup(&res);
out:
    for (int i = 0; i < FIELDS; i++)
        free(f[i]);
    free(path);
    free(body);
    return 0;
}
