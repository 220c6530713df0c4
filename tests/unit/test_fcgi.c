/* test_fcgi: the FastCGI parameter translation (rest/fcgi_params.c) as tables: which
 * path the router sees for the CGI variables nginx, lighttpd and Apache send (prefix
 * stripping, decoding, the absolute form, SCRIPT_NAME + PATH_INFO), the query, and the
 * headers; fcgi_mount_init on --mount-prefix values. Not a test of libfcgi or of the
 * web servers (tests/scenarios/6*_deploy_*.py). */
#include <stdio.h>
#include <string.h>

#include "fcgi_params.h"
#include "unit.h"

#define MAX_PARAMS 10

/* One request: --mount-prefix (NULL: auto), its parameters, and what the router gets. */
struct fcgi_case {
    const char *name;
    const char *mount;
    const char *params[MAX_PARAMS]; /* "NAME=value" */
    const char *method;             /* NULL: GET */
    const char *path;
    const char *args; /* query arguments, "name=value" joined with '&'; NULL: none */
    const char *content_type, *authorization, *host;
};

static const struct fcgi_case fcgi_cases[] = {
    {.name = "nginx: REQUEST_URI with its query, whole path in SCRIPT_NAME",
     .params = {"REQUEST_METHOD=GET", "REQUEST_URI=/sessions?limit=5", "QUERY_STRING=limit=5",
                "SCRIPT_NAME=/sessions", "HTTP_HOST=127.0.0.1:8080"},
     .path = "/sessions",
     .args = "limit=5",
     .host = "127.0.0.1:8080"},
    {.name = "headers: Content-Type, Authorization, Host",
     .params = {"REQUEST_METHOD=POST", "REQUEST_URI=/sessions/new", "CONTENT_TYPE=application/json",
                "HTTP_AUTHORIZATION=Bearer pk_x", "HTTP_HOST=localhost"},
     .method = "POST",
     .path = "/sessions/new",
     .content_type = "application/json",
     .authorization = "Bearer pk_x",
     .host = "localhost"},
    {.name = "an empty CONTENT_TYPE is none; no REQUEST_METHOD is GET",
     .params = {"REQUEST_URI=/health", "CONTENT_TYPE="},
     .path = "/health"},
    {.name = "an empty REQUEST_METHOD is GET",
     .params = {"REQUEST_METHOD=", "REQUEST_URI=/health"},
     .path = "/health"},
    {.name = "REQUEST_URI is percent-decoded; '+' stays",
     .params = {"REQUEST_URI=/sessions/a%20b+c%2Fd"},
     .path = "/sessions/a b+c/d"},
    {.name = "a malformed escape leaves the path as it came",
     .params = {"REQUEST_URI=/sessions/%zz%4"},
     .path = "/sessions/%zz%4"},
    {.name = "a fragment is not part of the path",
     .params = {"REQUEST_URI=/health#top"},
     .path = "/health"},
    {.name = "absolute form: the path of http://host/path",
     .params = {"REQUEST_URI=http://example.org/sessions/abc?x=1", "QUERY_STRING=x=1"},
     .path = "/sessions/abc",
     .args = "x=1"},
    {.name = "absolute form without a path is /",
     .params = {"REQUEST_URI=https://example.org"},
     .path = "/"},
    {.name = "auto mount: lighttpd's SCRIPT_NAME + PATH_INFO split strips SCRIPT_NAME",
     .params = {"REQUEST_URI=/api/sessions/abc?limit=1", "SCRIPT_NAME=/api",
                "PATH_INFO=/sessions/abc", "QUERY_STRING=limit=1"},
     .path = "/sessions/abc",
     .args = "limit=1"},
    {.name = "auto mount: an unsplit SCRIPT_NAME (empty PATH_INFO) is no mount point",
     .params = {"REQUEST_URI=/api", "SCRIPT_NAME=/api", "PATH_INFO="},
     .path = "/api"},
    {.name = "auto mount: SCRIPT_NAME must be whole segments (/api is not a prefix of /apix)",
     .params = {"REQUEST_URI=/apix/health", "SCRIPT_NAME=/api", "PATH_INFO=x/health"},
     .path = "/apix/health"},
    {.name = "--mount-prefix /api/: stripped from the decoded path",
     .mount = "/api/",
     .params = {"REQUEST_URI=/api/sessions/abc%20def", "SCRIPT_NAME=/ignored", "PATH_INFO=/x"},
     .path = "/sessions/abc def"},
    {.name = "--mount-prefix /api: the mount point itself is /",
     .mount = "/api",
     .params = {"REQUEST_URI=/api"},
     .path = "/"},
    {.name = "--mount-prefix /api: a path outside it is left alone",
     .mount = "/api",
     .params = {"REQUEST_URI=/other/health"},
     .path = "/other/health"},
    {.name = "--mount-prefix /: nothing stripped, SCRIPT_NAME ignored",
     .mount = "/",
     .params = {"REQUEST_URI=/api/health", "SCRIPT_NAME=/api", "PATH_INFO=/health"},
     .path = "/api/health"},
    {.name = "no REQUEST_URI: SCRIPT_NAME + PATH_INFO, not decoded again, mount stripped",
     .params = {"SCRIPT_NAME=/api", "PATH_INFO=/sessions/a%20b"},
     .path = "/sessions/a%20b"},
    {.name = "nothing at all is GET /", .path = "/"},
    {.name = "a relative REQUEST_URI gets its leading /",
     .params = {"REQUEST_URI=sessions"},
     .path = "/sessions"},
    {.name = "a path longer than the buffer is /(path too long)",
     .params = {"REQUEST_URI=@LONG"},
     .path = "/(path too long)"},
    {.name = "the query: decoded, '+' a space, malformed arguments dropped",
     .params = {"REQUEST_URI=/sessions/x/messages", "QUERY_STRING=q=a+b%21&bad=%zz&limit=2"},
     .path = "/sessions/x/messages",
     .args = "q=a b!&limit=2"},
    {.name = "a parameter name is matched whole (HTTP_HOSTX is not HTTP_HOST)",
     .params = {"HTTP_HOSTX=evil", "HTTP_HOST", "REQUEST_URI=/", "HTTP_HOST=good"},
     .path = "/",
     .host = "good"},
};

static char long_uri[FCGI_PATH_MAX + 64];

static void run_fcgi_cases(void)
{
    for (size_t i = 0; i < UNIT_COUNT(fcgi_cases); i++) {
        const struct fcgi_case *k = &fcgi_cases[i];
        char *envp[MAX_PARAMS + 1], args[512];
        struct fcgi_mount m;
        struct fcgi_params p;
        size_t n = 0, used = 0;

        unit_begin();
        for (; n < MAX_PARAMS && k->params[n]; n++)
            envp[n] =
                strcmp(k->params[n], "REQUEST_URI=@LONG") == 0 ? long_uri : (char *)k->params[n];
        envp[n] = NULL;
        REQ_INT(fcgi_mount_init(&m, k->mount), 0);
        fcgi_params_parse(envp, &m, &p);
        args[0] = '\0';
        for (size_t a = 0; a < p.req.n_args; a++)
            used += (size_t)snprintf(args + used, sizeof args - used, "%s%s=%s", a ? "&" : "",
                                     p.req.args[a].name, p.req.args[a].value);
        EQ_STR(p.req.method, k->method ? k->method : "GET");
        EQ_STR(p.req.path, k->path);
        EQ_STR(args, k->args ? k->args : "");
        EQ_STR(p.req.content_type, k->content_type);
        EQ_STR(p.req.authorization, k->authorization);
        EQ_STR(p.req.host, k->host);
        CHECK(p.req.body == NULL && p.req.body_len == 0 && !p.req.body_too_large);
        fcgi_params_cleanup(&p);
        unit_end("%s", k->name);
    }
}

/* --mount-prefix values: accepted (with what is kept) or refused. */
struct mount_case {
    const char *in;
    int rc;
    bool given;
    const char *path;
};

static const struct mount_case mount_cases[] = {
    {NULL, 0, false, ""},       {"auto", 0, false, ""},      {"/", 0, true, ""},
    {"///", 0, true, ""},       {"", 0, true, ""},           {"/api", 0, true, "/api"},
    {"/api/", 0, true, "/api"}, {"/a/b//", 0, true, "/a/b"}, {"api", -1, false, ""},
    {"api/", -1, false, ""},    {"@LONG", -1, false, ""},    {"/auto", 0, true, "/auto"},
};

static void run_mount_cases(void)
{
    static char long_mount[FCGI_MOUNT_MAX + 1];

    memset(long_mount, 'a', sizeof long_mount - 1);
    long_mount[0] = '/';
    for (size_t i = 0; i < UNIT_COUNT(mount_cases); i++) {
        const struct mount_case *k = &mount_cases[i];
        const char *in = k->in && strcmp(k->in, "@LONG") == 0 ? long_mount : k->in;
        struct fcgi_mount m;

        unit_begin();
        EQ_INT(fcgi_mount_init(&m, in), k->rc);
        EQ_INT(m.given, k->given);
        EQ_STR(m.path, k->path);
        unit_end("fcgi_mount_init(%s) -> %d", k->in ? k->in : "NULL", k->rc);
    }
}

static void test_param(void)
{
    char *envp[] = {"A=1", "AB=2", "B", "C=", "A=3", NULL};

    EQ_STR(fcgi_param(envp, "A"), "1");
    EQ_STR(fcgi_param(envp, "AB"), "2");
    EQ_STR(fcgi_param(envp, "B"), NULL);
    EQ_STR(fcgi_param(envp, "C"), "");
    EQ_STR(fcgi_param(envp, "D"), NULL);
    EQ_STR(fcgi_param(NULL, "A"), NULL);
}

int main(void)
{
    static const struct unit_case cases[] = {
        {NULL, run_fcgi_cases},
        {NULL, run_mount_cases},
        {"fcgi_param: the first NAME=value, matched whole", test_param},
    };

    snprintf(long_uri, sizeof long_uri, "REQUEST_URI=/");
    memset(long_uri + 13, 'a', sizeof long_uri - 14);
    long_uri[sizeof long_uri - 1] = '\0';
    return unit_run(cases, UNIT_COUNT(cases));
}
