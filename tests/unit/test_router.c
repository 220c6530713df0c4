/* test_router: the REST router's transport-free parts: route matching (literal routes
 * win over {id}, 405 with Allow, HEAD as GET, 413 before routing) through router_handle
 * over a database in a temporary folder; rt_url_decode and rt_parse_query as tables.
 * Not a test of the handlers' answers beyond status and error code (the scenarios). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "router.h"
#include "unit.h"

static char tmp_dir[] = "/tmp/parley-test-router-XXXXXX";
static struct cfg cfg;
static struct db *db;
static struct router *router;
static char sid[DB_ID_LEN]; /* an existing session, for "@S" in paths */

/* ---- routing: one request each ---- */

struct route_case {
    const char *method;
    const char *path; /* "@S": the existing session's id */
    int status;
    const char *code;  /* error.code, NULL for a success */
    const char *allow; /* the Allow header, "" when none */
    bool too_large;
};

#define LONG_ID                                                                                    \
    "/sessions/"                                                                                   \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"   \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct route_case route_cases[] = {
    {"GET", "/", 200, NULL, "", false},
    {"GET", "/health", 200, NULL, "", false},
    {"HEAD", "/health", 200, NULL, "", false},
    {"GET", "/sessions", 200, NULL, "", false},
    {"GET", "/sessions/@S", 200, NULL, "", false},
    {"GET", "/sessions/@S/messages", 200, NULL, "", false},
    {"GET", "/sessions/@S/export", 200, NULL, "", false},
    {"GET", "/openapi.json", 200, NULL, "", false},
    /* {id} matches one segment of any text: an unknown id is the session's 404 */
    {"GET", "/sessions/0123456789abcdef", 404, "session_not_found", "", false},
    {"POST", "/sessions/0123456789abcdef/clear", 404, "session_not_found", "", false},
    /* a literal route wins: /sessions/new is never an {id} */
    {"GET", "/sessions/new", 405, "method_not_allowed", "POST", false},
    {"DELETE", "/sessions/new", 405, "method_not_allowed", "POST", false},
    /* 405 lists every method of the path, in table order */
    {"PUT", "/sessions/@S", 405, "method_not_allowed", "GET, PATCH, DELETE", false},
    {"PATCH", "/sessions/@S/messages", 405, "method_not_allowed", "POST, GET", false},
    {"DELETE", "/sessions", 405, "method_not_allowed", "GET", false},
    {"POST", "/health", 405, "method_not_allowed", "GET", false},
    {"GET", "/sessions/@S/clear", 405, "method_not_allowed", "POST", false},
    /* no route: GET looks in www/, other methods are 404 */
    {"GET", "/sessions/", 404, "not_found", "", false},
    {"GET", "/sessions/@S/nope", 404, "not_found", "", false},
    {"GET", "/sessions//messages", 404, "not_found", "", false},
    {"GET", "/Sessions", 404, "not_found", "", false},
    {"GET", "/health/", 404, "not_found", "", false},
    {"POST", "/nope", 404, "not_found", "", false},
    {"GET", LONG_ID, 404, "not_found", "",
     false}, /* an {id} of 128 bytes or more matches nothing */
    {"DELETE", LONG_ID, 404, "not_found", "", false}, /* so no 405 either */
    /* a body over the limit is refused before routing */
    {"POST", "/sessions/new", 413, "payload_too_large", "", true},
    {"POST", "/nope", 413, "payload_too_large", "", true},
};

/* The error code of a JSON error body, into out ("" when none). */
static void error_code(const struct rt_response *res, char *out, size_t size)
{
    json_t *root = res->body ? json_loadb(res->body, res->body_len, 0, NULL) : NULL;
    const char *code = json_string_value(json_object_get(json_object_get(root, "error"), "code"));

    snprintf(out, size, "%s", code ? code : "");
    json_decref(root);
}

static void run_route_cases(void)
{
    for (size_t i = 0; i < UNIT_COUNT(route_cases); i++) {
        const struct route_case *k = &route_cases[i];
        struct rt_request req = {.method = k->method, .host = "127.0.0.1", .body = ""};
        struct rt_response res;
        char path[512], code[64];
        const char *at = strstr(k->path, "@S");

        unit_begin();
        if (at)
            snprintf(path, sizeof path, "%.*s%s%s", (int)(at - k->path), k->path, sid, at + 2);
        else
            snprintf(path, sizeof path, "%s", k->path);
        req.path = path;
        req.body_too_large = k->too_large;
        router_handle(router, db, &req, &res);
        error_code(&res, code, sizeof code);
        EQ_INT(res.status, k->status);
        EQ_STR(code, k->code ? k->code : "");
        EQ_STR(res.allow, k->allow);
        EQ_STR(res.content_type, "application/json");
        rt_response_cleanup(&res);
        unit_end("%s %s -> %d%s%s", k->method, k->path, k->status, k->allow[0] ? " Allow " : "",
                 k->allow);
    }
}

/* POST /sessions/new makes a session; the new id answers GET. */
static void test_create_then_get(void)
{
    struct rt_request req = {.method = "POST", .path = "/sessions/new", .host = "localhost"};
    struct rt_response res;
    json_t *root;
    char path[64];

    req.body = "{\"title\":\"unit\"}";
    req.body_len = strlen(req.body);
    req.content_type = "application/json";
    router_handle(router, db, &req, &res);
    REQ_INT(res.status, 201);
    root = json_loadb(res.body, res.body_len, 0, NULL);
    rt_response_cleanup(&res);
    REQUIRE(json_string_value(json_object_get(root, "session_id")));
    snprintf(path, sizeof path, "/sessions/%s",
             json_string_value(json_object_get(root, "session_id")));
    json_decref(root);
    req = (struct rt_request){.method = "GET", .path = path, .body = ""};
    router_handle(router, db, &req, &res);
    EQ_INT(res.status, 200);
    rt_response_cleanup(&res);
}

/* Without a database, what needs it answers 503 unavailable; the rest still works. */
static void test_no_database(void)
{
    struct rt_request req = {.method = "GET", .path = "/sessions", .body = ""};
    struct rt_response res;
    char code[64];

    router_handle(router, NULL, &req, &res);
    error_code(&res, code, sizeof code);
    EQ_INT(res.status, 503);
    EQ_STR(code, "unavailable");
    rt_response_cleanup(&res);
    req.path = "/openapi.json";
    router_handle(router, NULL, &req, &res);
    EQ_INT(res.status, 200);
    rt_response_cleanup(&res);
}

/* ---- rt_url_decode ---- */

struct decode_case {
    const char *in;
    bool plus_is_space;
    int rc;
    const char *out; /* when rc is 0 */
};

static const struct decode_case decode_cases[] = {
    {"/plain/path", false, 0, "/plain/path"},
    {"", false, 0, ""},
    {"a%20b", false, 0, "a b"},
    {"%41%4a%4A%7e%7E", false, 0, "AJJ~~"},
    {"%2F%2e%2E", false, 0, "/.."},
    {"%e2%9c%93", false, 0, "\xe2\x9c\x93"},
    {"a+b", false, 0, "a+b"},
    {"a+b", true, 0, "a b"},
    {"%2B+", true, 0, "+ "},
    {"100%25", false, 0, "100%"},
    {"%2525", false, 0, "%25"}, /* decoded once only */
    {"%", false, -1, NULL},
    {"abc%", false, -1, NULL},
    {"%4", false, -1, NULL},
    {"x%4", false, -1, NULL},
    {"%zz", false, -1, NULL},
    {"%g0", false, -1, NULL},
    {"%0g", false, -1, NULL},
    {"%G0", false, -1, NULL},
    {"%:0", false, -1, NULL}, /* ':' to '?' follow '9' in ASCII: not hex digits */
    {"%0?", false, -1, NULL},
    {"%@1", false, -1, NULL},
    {"%-1", false, -1, NULL},
    {"% 1", false, -1, NULL},
    {"ok%2", false, -1, NULL},
};

static void run_decode_cases(void)
{
    for (size_t i = 0; i < UNIT_COUNT(decode_cases); i++) {
        const struct decode_case *k = &decode_cases[i];
        char buf[64];

        unit_begin();
        snprintf(buf, sizeof buf, "%s", k->in);
        EQ_INT(rt_url_decode(buf, k->plus_is_space), k->rc);
        if (k->rc == 0)
            EQ_STR(buf, k->out);
        unit_end("rt_url_decode(\"%s\"%s) -> %s", k->in, k->plus_is_space ? ", +" : "",
                 k->rc == 0 ? "decoded" : "-1");
    }
}

/* %00 decodes to a NUL: the string ends there. */
static void test_decode_nul(void)
{
    char buf[] = "a%00b";

    EQ_INT(rt_url_decode(buf, false), 0);
    EQ_STR(buf, "a");
    EQ_INT(buf[2], 'b');
}

/* ---- rt_parse_query ---- */

struct query_case {
    const char *name;
    const char *in;
    const char *want; /* "name=value" pairs joined with '&', as parsed */
    size_t n;
};

static const struct query_case query_cases[] = {
    {"two arguments", "a=1&b=x%20y", "a=1&b=x y", 2},
    {"plus is a space", "q=hello+world&r=%2B", "q=hello world&r=+", 2},
    {"no value, empty value", "a&b=", "a=&b=", 2},
    {"empty name", "=v", "=v", 1},
    {"empty pieces are skipped", "&&a=1&&", "a=1", 1},
    {"a second '=' belongs to the value", "a=1=2", "a=1=2", 1},
    {"a malformed escape drops that argument only", "a=%zz&b=2&c%=3&d=%4", "b=2", 1},
    {"repeated names are all kept, in order", "x=1&x=2", "x=1&x=2", 2},
    {"decoded names", "na%6de=v", "name=v", 1},
    {"empty", "", "", 0},
};

static void join_args(const struct rt_request *req, char *out, size_t size)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < req->n_args && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s=%s", i ? "&" : "",
                                 req->args[i].name, req->args[i].value);
}

static void run_query_cases(void)
{
    for (size_t i = 0; i < UNIT_COUNT(query_cases); i++) {
        const struct query_case *k = &query_cases[i];
        struct rt_request req = {0};
        char buf[256], got[256];

        unit_begin();
        snprintf(buf, sizeof buf, "%s", k->in);
        rt_parse_query(buf, &req);
        join_args(&req, got, sizeof got);
        EQ_INT(req.n_args, k->n);
        EQ_STR(got, k->want);
        unit_end("rt_parse_query: %s", k->name);
    }
}

/* More than RT_MAX_ARGS arguments: the first RT_MAX_ARGS are kept, the rest ignored. */
static void test_query_max_args(void)
{
    struct rt_request req = {0};
    char buf[1024], name[16];
    size_t used = 0;

    for (int i = 0; i < RT_MAX_ARGS + 8; i++)
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%sa%d=%d", i ? "&" : "", i, i);
    rt_parse_query(buf, &req);
    REQ_INT(req.n_args, RT_MAX_ARGS);
    snprintf(name, sizeof name, "a%d", RT_MAX_ARGS - 1);
    EQ_STR(req.args[0].name, "a0");
    EQ_STR(req.args[RT_MAX_ARGS - 1].name, name);
    EQ_STR(req.args[RT_MAX_ARGS - 1].value, name + 1);
}

/* ---- setup ---- */

static void remove_tmp(void)
{
    char cmd[128];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp_dir);
}

int main(void)
{
    static const struct unit_case cases[] = {
        {NULL, run_route_cases},
        {"POST /sessions/new, then GET of the new id", test_create_then_get},
        {"no database: 503 where it is needed, 200 elsewhere", test_no_database},
        {NULL, run_decode_cases},
        {"rt_url_decode: %00 ends the string", test_decode_nul},
        {NULL, run_query_cases},
        {"rt_parse_query: more than RT_MAX_ARGS arguments", test_query_max_args},
    };
    char dbp[128], sock[128];
    char *args[] = {"parley-rest", "--db", dbp, "--notify-socket", sock, NULL};
    struct db_session s;
    int rc;

    log_init("test_router", LOG_LEVEL_ERROR);
    if (!mkdtemp(tmp_dir)) {
        printf("not ok - mkdtemp: %s\n", tmp_dir);
        return 1;
    }
    snprintf(dbp, sizeof dbp, "%s/parley.db", tmp_dir);
    snprintf(sock, sizeof sock, "%s/broker.sock", tmp_dir);
    if (cfg_load(&cfg, CFG_REST, "parley-rest", 5, args) != CFG_OK || !(db = db_open(dbp)) ||
        !(router = router_new(&cfg)) ||
        db_session_create(db, "echo", "unit", NULL, &s) != PERR_OK) {
        printf("not ok - setup: a database and a router in %s\n", tmp_dir);
        remove_tmp();
        return 1;
    }
    memcpy(sid, s.id, sizeof sid);
    db_session_cleanup(&s);
    rc = unit_run(cases, UNIT_COUNT(cases));
    router_free(router);
    db_close(db);
    cfg_cleanup(&cfg);
    remove_tmp();
    return rc;
}
