/* redisc: the Redis URL, a connection with time limits, the channel names. */
#include "redisc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static int fail(char *err, size_t err_len, const char *url, const char *why)
{
    snprintf(err, err_len,
             "--redis '%s': %s; give redis://[:PASSWORD@]HOST[:PORT][/DB], e.g. "
             "redis://10.0.0.5:6379/0",
             url, why);
    return -1;
}

int redisc_url_parse(const char *url, struct redisc_url *out, char *err, size_t err_len)
{
    static const char scheme[] = "redis://";
    const char *p = url, *at, *host_end, *slash;
    size_t host_len;
    int64_t n;

    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (strncmp(p, scheme, sizeof scheme - 1) != 0)
        return fail(err, err_len, url, "it does not start with redis://");
    p += sizeof scheme - 1;
    slash = strchr(p, '/');
    at = memchr(p, '@', slash ? (size_t)(slash - p) : strlen(p));
    if (at) { /* [user]:password@ (Redis 6 users are not supported: the password only) */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t plen = colon ? (size_t)(at - colon - 1) : 0;
        if (!colon || plen == 0 || plen >= sizeof out->password)
            return fail(err, err_len, url, "the part before '@' must be :PASSWORD");
        memcpy(out->password, colon + 1, plen);
        p = at + 1;
    }
    if (*p == '[') { /* [IPv6] */
        host_end = strchr(p, ']');
        if (!host_end)
            return fail(err, err_len, url, "'[' without ']'");
        host_len = (size_t)(host_end - p - 1);
        p++;
        host_end++;
    } else {
        host_end = p + strcspn(p, ":/");
        host_len = (size_t)(host_end - p);
    }
    if (host_len == 0 || host_len >= sizeof out->host)
        return fail(err, err_len, url, "the host is missing or too long");
    memcpy(out->host, p, host_len);
    p = host_end;
    if (*p == ':') {
        char buf[8];
        size_t len = strcspn(p + 1, "/");
        if (len == 0 || len >= sizeof buf)
            return fail(err, err_len, url, "the port is not a number from 1 to 65535");
        memcpy(buf, p + 1, len);
        buf[len] = '\0';
        if (cfg_parse_int(buf, 1, 65535, &n) < 0)
            return fail(err, err_len, url, "the port is not a number from 1 to 65535");
        out->port = (int)n;
        p += 1 + len;
    }
    if (*p == '/' && p[1]) {
        if (cfg_parse_int(p + 1, 0, 1000000, &n) < 0)
            return fail(err, err_len, url, "the database after '/' is not a number");
        out->db = (int)n;
    } else if (*p && strcmp(p, "/") != 0) {
        return fail(err, err_len, url, "unexpected text after the host");
    }
    return 0;
}

/* Runs one command whose answer must be +OK. Returns 0, or -1 with err set. */
static int expect_ok(redisContext *c, char *err, size_t err_len, const char *what, int argc,
                     const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    int ok = r && r->type == REDIS_REPLY_STATUS;

    if (!ok)
        snprintf(err, err_len, "%s failed: %s", what,
                 r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

redisContext *redisc_connect(const struct redisc_url *u, int timeout_ms, char *err, size_t err_len)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);
    char db[16];

    if (!c || c->err) {
        snprintf(err, err_len, "cannot connect to Redis at %s:%d: %s", u->host, u->port,
                 c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(err, err_len, "cannot set a time limit on the Redis connection");
        redisFree(c);
        return NULL;
    }
    if (u->password[0] &&
        expect_ok(c, err, err_len, "AUTH", 2, (const char *[]){"AUTH", u->password}) < 0)
        goto fail;
    snprintf(db, sizeof db, "%d", u->db);
    if (u->db && expect_ok(c, err, err_len, "SELECT", 2, (const char *[]){"SELECT", db}) < 0)
        goto fail;
    return c;
fail:
    redisFree(c);
    return NULL;
}

void redisc_session_channel(char *buf, const struct redisc_url *u, const char *session_id)
{
    snprintf(buf, REDISC_CHANNEL_MAX, "parley:%d:s:%.64s", u->db, session_id);
}

void redisc_all_channel(char *buf, const struct redisc_url *u)
{
    snprintf(buf, REDISC_CHANNEL_MAX, "parley:%d:all", u->db);
}
