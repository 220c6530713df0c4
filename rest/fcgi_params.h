/* fcgi_params: a FastCGI request's parameters (the CGI variables a web server sends) as
 * the router's struct rt_request. Pure: no libfcgi, no I/O, so that unit tests and the
 * fuzzer call it as main_fcgi.c does. The body is not its business. */
#ifndef PARLEY_FCGI_PARAMS_H
#define PARLEY_FCGI_PARAMS_H

#include <stdbool.h>

#include "router.h"

#define FCGI_PATH_MAX  4096
#define FCGI_MOUNT_MAX 256

/* Where the API is mounted, from --mount-prefix. */
struct fcgi_mount {
    bool given;                /* set and not "auto": no guessing from SCRIPT_NAME */
    char path[FCGI_MOUNT_MAX]; /* without trailing slashes; empty: mounted at / */
};

/* One request's translation. req borrows from envp and from the buffers here. */
struct fcgi_params {
    struct rt_request req; /* body fields left empty for the caller */
    char path[FCGI_PATH_MAX];
    char *query; /* owned: the decoded QUERY_STRING req.args point into */
};

/* Reads --mount-prefix (NULL or "auto": not given). Returns 0, or -1 when it is not a
 * path such as /api or fits no buffer. */
int fcgi_mount_init(struct fcgi_mount *m, const char *mount_prefix);
/* The value of NAME in envp ("NAME=value" strings, NULL-terminated, as FCGX gives them),
 * or NULL. Borrowed from envp. */
const char *fcgi_param(char *const *envp, const char *name);
/* Fills p from envp: method (GET when absent), path (REQUEST_URI without its query,
 * percent-decoded, minus the mount point; "/(path too long)" when it does not fit), query
 * arguments, Content-Type (NULL when empty), Authorization and Host. p borrows from envp:
 * both must outlive p.req. Out of memory for the query, p has no arguments. Free with
 * fcgi_params_cleanup. */
void fcgi_params_parse(char *const *envp, const struct fcgi_mount *m, struct fcgi_params *p);
void fcgi_params_cleanup(struct fcgi_params *p);

#endif
