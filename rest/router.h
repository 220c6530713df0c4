/* router: Parley's REST API, knowing nothing of its transport.
 *
 * A front-end (main_mhd.c for libmicrohttpd, main_fcgi.c for FastCGI) turns an HTTP
 * request into a struct rt_request, calls router_handle, and sends the struct rt_response
 * back. The router is shared by every worker thread; each thread passes its own database
 * connection. */
#ifndef PARLEY_ROUTER_H
#define PARLEY_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "db.h"

#define RT_MAX_ARGS 32

struct rt_arg {
    const char *name; /* borrowed, percent-decoded */
    const char *value;
};

/* Everything borrowed from the front-end for the duration of router_handle. */
struct rt_request {
    const char *method;
    const char *path; /* percent-decoded, without the query string or any mount prefix */
    struct rt_arg args[RT_MAX_ARGS];
    size_t n_args;
    const char *content_type;  /* NULL when absent */
    const char *authorization; /* NULL when absent */
    const char *host;          /* Host header, NULL when absent */
    const char *body;
    size_t body_len;
    bool body_too_large; /* the front-end stopped reading above --max-message-size */
};

struct rt_response {
    int status;
    const char *content_type; /* static string */
    char *body;               /* owned (malloc) */
    size_t body_len;
    char allow[64];        /* Allow header for 405, empty otherwise */
    bool challenge;        /* 401: send WWW-Authenticate: Bearer */
    char disposition[160]; /* Content-Disposition for downloads, empty otherwise */
};

struct router;

/* Returns a new router over cfg (borrowed: must outlive the router), or NULL.
 * Free with router_free. */
struct router *router_new(const struct cfg *cfg);
void router_free(struct router *r);
/* Answers req into res (res->body is new: free with rt_response_cleanup). db may be NULL
 * when the worker could not open the database: routes that need it answer 503.
 * Thread-safe. */
void router_handle(struct router *r, struct db *db, const struct rt_request *req,
                   struct rt_response *res);
void rt_response_cleanup(struct rt_response *res);
/* Splits a raw query string ("a=1&b=x%20y") into req->args, decoding in place: buf is
 * modified and must outlive req. Extra arguments beyond RT_MAX_ARGS are ignored. */
void rt_parse_query(char *buf, struct rt_request *req);
/* Decodes %XX and '+' (when plus_is_space) in place. Returns -1 on a malformed escape. */
int rt_url_decode(char *s, bool plus_is_space);

#endif
