/* h_static: files of www/ (the demo page, the API docs and what they load).
 * A path is served only when it stays inside --www-dir after every link is resolved;
 * anything else is 404, never a file from elsewhere. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "rest.h"

#define STATIC_MAX_BYTES (16 * 1024 * 1024)

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".map", "application/json"},
    {".woff2", "font/woff2"},
};

static const char *type_of(const char *path)
{
    const char *dot = strrchr(path, '.');

    for (size_t i = 0; dot && i < sizeof content_types / sizeof content_types[0]; i++)
        if (strcmp(dot, content_types[i].ext) == 0)
            return content_types[i].type;
    return "application/octet-stream";
}

/* Whether every segment of path is a plain name: no "..", ".", or empty segments. */
static int plain_path(const char *path)
{
    const char *s = path;

    if (*s != '/')
        return 0;
    while (*s == '/') {
        size_t n;
        s++;
        n = strcspn(s, "/");
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.') ||
            memchr(s, '\\', n))
            return 0;
        s += n;
    }
    return *s == '\0';
}

/* Serves www_dir + rel. */
static void serve(struct rt_ctx *c, const char *rel)
{
    const char *www = c->r->cfg->www_dir;
    char root[PATH_MAX], want[PATH_MAX], real[PATH_MAX];
    struct stat st;
    size_t rootlen;
    ssize_t got = 0;
    char *buf;
    int fd;

    if (!plain_path(rel) || !realpath(www, root) ||
        snprintf(want, sizeof want, "%s%s", root, rel) >= (int)sizeof want || !realpath(want, real))
        goto not_found;
    rootlen = strlen(root);
    if (strncmp(real, root, rootlen) != 0 || real[rootlen] != '/')
        goto not_found;
    fd = open(real, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        goto not_found;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > STATIC_MAX_BYTES) {
        close(fd);
        goto not_found;
    }
    buf = malloc((size_t)st.st_size + 1);
    while (buf && got < st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)(st.st_size - got));
        if (n <= 0)
            break;
        got += n;
    }
    close(fd);
    if (!buf || got != st.st_size) {
        free(buf);
        log_error("reading %s: %s", real, buf ? "short read" : "out of memory");
        rt_error(c, PERR_INTERNAL, "could not read the file; the server log has the details");
        return;
    }
    free(c->res->body);
    c->res->body = buf;
    c->res->body_len = (size_t)got;
    c->res->status = 200;
    c->res->content_type = type_of(real);
    return;
not_found:
    rt_error(c, PERR_NOT_FOUND, "no route or file for GET %s; GET / lists the endpoints",
             c->req->path);
}

void h_static(struct rt_ctx *c)
{
    serve(c, c->req->path);
}

void h_demo(struct rt_ctx *c)
{
    serve(c, "/demo.html");
}

void h_docs(struct rt_ctx *c)
{
    serve(c, "/docs.html");
}

/* Generated from schema/openapi.json by tools/embed_file.sh. */
extern const char parley_openapi[];
extern const size_t parley_openapi_len;

void h_openapi(struct rt_ctx *c)
{
    free(c->res->body);
    c->res->body = strdup(parley_openapi);
    c->res->body_len = c->res->body ? parley_openapi_len : 0;
    c->res->status = c->res->body ? 200 : 500;
    c->res->content_type = "application/json";
}
