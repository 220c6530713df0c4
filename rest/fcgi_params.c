/* fcgi_params: the CGI variables of one FastCGI request turned into the router's request:
 * which path the router sees below the mount point, the query, the headers it reads. */
#include "fcgi_params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fcgi_mount_init(struct fcgi_mount *m, const char *mount_prefix)
{
    size_t n;

    memset(m, 0, sizeof *m);
    if (!mount_prefix || strcmp(mount_prefix, "auto") == 0)
        return 0;
    n = strlen(mount_prefix);
    while (n > 0 && mount_prefix[n - 1] == '/')
        n--;
    if ((n > 0 && mount_prefix[0] != '/') || n >= sizeof m->path)
        return -1;
    memcpy(m->path, mount_prefix, n);
    m->path[n] = '\0';
    m->given = true;
    return 0;
}

const char *fcgi_param(char *const *envp, const char *name)
{
    size_t n = strlen(name);

    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

/* Removes the mount point prefix (length n) from the decoded path in buf when it is a
 * whole leading segment run ("/api" matches "/api" and "/api/x", not "/apix"). */
static void strip_prefix(char *buf, const char *prefix, size_t n)
{
    while (n > 0 && prefix[n - 1] == '/')
        n--;
    if (n == 0 || strncmp(buf, prefix, n) != 0 || (buf[n] != '/' && buf[n] != '\0'))
        return;
    memmove(buf, buf + n, strlen(buf + n) + 1);
    if (!buf[0])
        strcpy(buf, "/");
}

/* The router's path for this request, into buf (size bytes): REQUEST_URI without its
 * query, percent-decoded as parley-rest decodes its URL, minus the mount point (or, with
 * no REQUEST_URI, SCRIPT_NAME + PATH_INFO, which the server has decoded already). The
 * mount point is --mount-prefix when given ("/": none); otherwise SCRIPT_NAME when the
 * server split the path (PATH_INFO non-empty) and the path starts with it; otherwise
 * none. An unsplit SCRIPT_NAME is not a mount point: nginx's stock fastcgi_params sends
 * the whole path there and no PATH_INFO. Returns 0, or -1 when buf is too short. */
static int request_path(char *const *envp, const struct fcgi_mount *m, char *buf, size_t size)
{
    const char *uri = fcgi_param(envp, "REQUEST_URI");
    const char *script = fcgi_param(envp, "SCRIPT_NAME");
    const char *info = fcgi_param(envp, "PATH_INFO");
    size_t n;

    if (uri && *uri) {
        /* absolute form, "http://host/path": keep the path */
        if (strncmp(uri, "http://", 7) == 0 || strncmp(uri, "https://", 8) == 0) {
            const char *slash = strchr(strstr(uri, "//") + 2, '/');
            uri = slash ? slash : "/";
        }
        n = strcspn(uri, "?#");
        if (n >= size)
            return -1;
        memcpy(buf, uri, n);
        buf[n] = '\0';
        if (rt_url_decode(buf, false) < 0) { /* a malformed escape stays as it came */
            memcpy(buf, uri, n);
            buf[n] = '\0';
        }
    } else if ((size_t)snprintf(buf, size, "%s%s", script ? script : "", info ? info : "") >=
               size) {
        return -1;
    }
    if (m->given)
        strip_prefix(buf, m->path, strlen(m->path));
    else if (script && *script && info && *info)
        strip_prefix(buf, script, strlen(script));
    if (buf[0] != '/') { /* "" or a server that sent a relative path */
        if (strlen(buf) + 2 > size)
            return -1;
        memmove(buf + 1, buf, strlen(buf) + 1);
        buf[0] = '/';
    }
    return 0;
}

void fcgi_params_parse(char *const *envp, const struct fcgi_mount *m, struct fcgi_params *p)
{
    struct rt_request *req = &p->req;
    const char *query = fcgi_param(envp, "QUERY_STRING");

    memset(req, 0, sizeof *req);
    p->query = NULL;
    req->method = fcgi_param(envp, "REQUEST_METHOD");
    if (!req->method || !*req->method)
        req->method = "GET";
    if (request_path(envp, m, p->path, sizeof p->path) < 0)
        snprintf(p->path, sizeof p->path, "/(path too long)"); /* no route or file: 404 */
    req->path = p->path;
    req->content_type = fcgi_param(envp, "CONTENT_TYPE");
    if (req->content_type && !*req->content_type)
        req->content_type = NULL;
    req->authorization = fcgi_param(envp, "HTTP_AUTHORIZATION");
    req->host = fcgi_param(envp, "HTTP_HOST");
    if (query && *query && (p->query = strdup(query)))
        rt_parse_query(p->query, req);
}

void fcgi_params_cleanup(struct fcgi_params *p)
{
    if (!p)
        return;
    free(p->query);
    p->query = NULL;
}
