/* hostcheck: the Host rule for servers with no API key. Splits a Host value into name and
 * port and compares the name with loopback and the configured hosts. Not the decision of
 * whether keys are configured: the caller asks that only when this says no. */
#include "hostcheck.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#define NAME_MAX_LEN 256

/* Whether the len bytes at s are empty or ":" and up to 5 digits. */
static bool port_ok(const char *s, size_t len)
{
    if (len == 0)
        return true;
    if (s[0] != ':' || len > 6)
        return false;
    for (size_t i = 1; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Copies the name part of "name", "name:port", "[v6]" or "[v6]:port" (the first len
 * bytes of s) into name (brackets kept, one trailing dot dropped). Returns 0, or -1 when
 * s is not of that form or the name does not fit. */
static int host_name(const char *s, size_t len, char name[NAME_MAX_LEN])
{
    const char *end = len > 0 && s[0] == '[' ? memchr(s, ']', len) : NULL;
    size_t n;

    if (len > 0 && s[0] == '[' && !end)
        return -1;
    if (end)
        n = (size_t)(end - s) + 1;
    else
        n = memchr(s, ':', len) ? (size_t)((const char *)memchr(s, ':', len) - s) : len;
    if (!port_ok(s + n, len - n))
        return -1;
    if (n > 1 && s[n - 1] == '.')
        n--;
    if (n == 0 || n >= NAME_MAX_LEN || memchr(s, '\0', n))
        return -1;
    memcpy(name, s, n);
    name[n] = '\0';
    return 0;
}

/* Whether a name from host_name is loopback: localhost, an IPv4 address in 127.0.0.0/8
 * (dotted quad only: "127.evil.example" is a DNS name), [::1] or [::ffff:127.x.x.x]. */
static bool is_loopback(char *name)
{
    struct in_addr a4;
    struct in6_addr a6;
    size_t n = strlen(name);

    if (strcasecmp(name, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, name, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (n < 3 || name[0] != '[' || name[n - 1] != ']')
        return false;
    name[n - 1] = '\0';
    bool v6 = inet_pton(AF_INET6, name + 1, &a6) == 1;
    name[n - 1] = ']';
    return v6 &&
           (IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127));
}

/* Whether the authority of url ("scheme://[user@]host[:port]/...") names host. */
static bool url_names(const char *url, const char *host)
{
    const char *p = url ? strstr(url, "://") : NULL;
    const char *at;
    char name[NAME_MAX_LEN];
    size_t len;

    if (!p)
        return false;
    p += 3;
    len = strcspn(p, "/?#");
    if ((at = memchr(p, '@', len))) {
        len -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    return host_name(p, len, name) == 0 && strcasecmp(name, host) == 0;
}

bool host_allowed(const struct cfg *cfg, const char *host)
{
    char name[NAME_MAX_LEN], entry[NAME_MAX_LEN];

    if (!host || !*host)
        return true;
    if (host_name(host, strlen(host), name) < 0)
        return false;
    if (is_loopback(name) || url_names(cfg->public_url, name) ||
        url_names(cfg->public_ws_url, name))
        return true;
    for (size_t i = 0; i < cfg->allowed_host.n; i++) {
        const char *h = cfg->allowed_host.v[i];
        if (strcmp(h, "*") == 0 ||
            (host_name(h, strlen(h), entry) == 0 && strcasecmp(entry, name) == 0))
            return true;
    }
    return false;
}
