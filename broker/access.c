/* access: who may connect to the broker and how fast they may talk.
 *
 * - API keys: the valid keys' salts and hashes are cached here, read by the database
 *   thread at start, when `parley-rest keys` says they changed (keys_changed), and every
 *   few seconds; a key is checked by hashing on the loop (microseconds, no I/O).
 * - Upgrades are refused with 403 (Origin not allowed), 429 (too many connections from
 *   the address) or 401 (a key that is not valid); a connection with no key may upgrade
 *   when keys are required, but is served nothing until it authenticates (envelope auth).
 * - Each connection has a token bucket of --rate-limit messages a second, --rate-burst
 *   deep. A message over it gets rate_limited; a flood that goes on for another burst's
 *   worth of messages is closed with 1008.
 * - Refusals are logged once per address and reason a minute, never once per message.
 * - The client's address (for --max-conns-per-ip and the logs) is the TCP peer's, or,
 *   when the peer is a trusted proxy (loopback, where parley-rest's GET /ws relay runs, or
 *   a --trusted-proxy address), the last address of its X-Forwarded-For. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "broker.h"
#include "clock.h"
#include "dbq.h"
#include "hostcheck.h"
#include "log.h"
#include "map.h"
#include "names.h"

#define KEYS_REFRESH_MS 5000
#define REFUSAL_LOG_MS  60000
#define REFUSAL_MAP_MAX 10000

struct ip_count {
    char ip[48];
    int64_t n;
};

struct refusal {
    char key[80]; /* "reason|address" */
    int64_t logged_mono;
};

/* ---- refusal log ---- */

static void free_value(void *value, void *arg)
{
    free(value);
}

void access_refused(struct per_vhost_data__chat *vhd, const char *ip, const char *reason,
                    const char *detail)
{
    char key[80];
    struct refusal *r;
    int64_t now = clock_mono_ms();

    snprintf(key, sizeof key, "%s|%s", reason, ip);
    r = map_get(vhd->refusals, key);
    if (r && now - r->logged_mono < REFUSAL_LOG_MS)
        return;
    if (!r) {
        if (map_count(vhd->refusals) >= REFUSAL_MAP_MAX) { /* bound the memory it takes */
            map_each(vhd->refusals, free_value, NULL);
            map_free(vhd->refusals);
            vhd->refusals = map_new();
        }
        if (vhd->refusals && (r = calloc(1, sizeof *r))) {
            snprintf(r->key, sizeof r->key, "%s", key);
            if (map_put(vhd->refusals, r->key, r) < 0) {
                free(r);
                r = NULL;
            }
        }
    }
    if (r)
        r->logged_mono = now;
    log_warn("refused %s: %s (%s); logged once a minute per address", ip, reason, detail);
}

/* ---- keys ---- */

struct keys_job {
    struct dbjob job;
    struct per_vhost_data__chat *vhd;
    struct auth_key *keys;
    size_t n;
};

static void keys_run(struct dbjob *job, struct db *db)
{
    struct keys_job *j = (struct keys_job *)job;

    job->err = db_key_hashes(db, &j->keys, &j->n);
}

static void keys_done(struct dbjob *job)
{
    struct keys_job *j = (struct keys_job *)job;
    struct per_vhost_data__chat *vhd = j->vhd;

    vhd->keys_loading = false;
    if (job->err == PERR_OK) {
        access_set_keys(vhd, j->keys, j->n);
        j->keys = NULL;
    }
    free(j->keys);
    free(j);
}

/* Whether a key with this hash is among keys. */
static bool key_listed(const struct auth_key *keys, size_t n, const char *hash)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].hash, hash) == 0)
            return true;
    return false;
}

/* Closes the connections that authenticated with a key no longer in keys (revoked):
 * revocation takes effect on live connections too, not only on new ones. */
static void close_revoked(struct per_vhost_data__chat *vhd, const struct auth_key *keys, size_t n)
{
    for (struct per_session_data__chat *pss = vhd->conns_list; pss; pss = pss->next) {
        if (!pss->key_hash[0] || key_listed(keys, n, pss->key_hash))
            continue;
        pss->key_hash[0] = '\0';
        pss->key_name[0] = '\0';
        pss->authed = false;
        fanout_error(vhd, pss, PERR_UNAUTHORIZED, NULL,
                     "the API key of this connection was revoked; connect again with a valid "
                     "key");
        ws_close(pss, LWS_CLOSE_STATUS_POLICY_VIOLATION);
    }
}

void access_set_keys(struct per_vhost_data__chat *vhd, struct auth_key *keys, size_t n)
{
    bool gone = false;

    for (size_t i = 0; i < vhd->n_keys && !gone; i++)
        gone = !key_listed(keys, n, vhd->keys[i].hash);
    if (gone)
        close_revoked(vhd, keys, n);
    free(vhd->keys);
    vhd->keys = keys;
    vhd->n_keys = n;
    vhd->auth_required = n > 0 || vhd->cfg->require_auth;
    vhd->keys_loaded_mono = clock_mono_ms();
}

void access_reload_keys(struct per_vhost_data__chat *vhd)
{
    struct keys_job *j;

    if (vhd->keys_loading || vhd->stopping || !(j = calloc(1, sizeof *j)))
        return;
    j->vhd = vhd;
    j->job.run = keys_run;
    j->job.done = keys_done;
    j->job.essential = true; /* one in flight: vhd->keys_loading */
    vhd->keys_loading = true;
    dbq_push(vhd->dbq, &j->job);
}

void access_tick(struct per_vhost_data__chat *vhd)
{
    if (clock_mono_ms() - vhd->keys_loaded_mono >= KEYS_REFRESH_MS)
        access_reload_keys(vhd);
}

bool access_key_valid(const struct per_vhost_data__chat *vhd, const char *key)
{
    return auth_verify(vhd->keys, vhd->n_keys, key) >= 0;
}

/* Authenticates pss with key, remembering which key it used (for revocation). */
static bool authenticate(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                         const char *key)
{
    int i = key ? auth_verify(vhd->keys, vhd->n_keys, key) : -1;

    if (i < 0)
        return false;
    snprintf(pss->key_hash, sizeof pss->key_hash, "%s", vhd->keys[i].hash);
    snprintf(pss->key_name, sizeof pss->key_name, "%s", vhd->keys[i].name);
    pss->authed = true;
    if (!pss->name_given && vhd->keys[i].name[0]) /* the key's name is the default name */
        snprintf(pss->name, sizeof pss->name, "%s", vhd->keys[i].name);
    return true;
}

bool access_authenticate(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                         const char *key)
{
    if (pss->authed)
        return true;
    if (authenticate(vhd, pss, key))
        return true;
    access_refused(vhd, pss->ip, "API key not valid", "envelope auth");
    return false;
}

/* The key the upgrade request carries (?api_key= or Authorization: Bearer), copied into
 * buf; NULL when there is none. */
static const char *presented_key(struct lws *wsi, char *buf, size_t size)
{
    char auth[128];
    const char *k;

    /* lws copies "api_key=VALUE" into buf and returns a pointer to VALUE */
    if ((k = lws_get_urlarg_by_name(wsi, "api_key=", buf, (int)size)))
        return k;
    if (lws_hdr_copy(wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
        (k = auth_bearer(auth))) {
        snprintf(buf, size, "%s", k);
        return buf;
    }
    return NULL;
}

/* The name the upgrade URL gives (?name=, percent-decoded by lws), copied into buf
 * (NAME_URLARG_LEN bytes): 1 with a valid one, 0 with none, -1 with one that is not a
 * valid name (SPEC 9: 1 to 64 characters, no control characters). The arguments are read
 * one by one: lws_get_urlarg_by_name of lws 4.1 hands back "name=" with the value. The
 * last ?name= counts. */
#define NAME_URLARG_LEN 4096 /* lws keeps no longer header than this */
static int upgrade_name(struct lws *wsi, char *buf)
{
    char frag[NAME_URLARG_LEN];
    int found = 0;

    for (int i = 0; lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) >= 0;
         i++) {
        if (strncmp(frag, "name=", 5) != 0)
            continue;
        found = name_valid(frag + 5, strlen(frag + 5)) ? 1 : -1;
        memcpy(buf, frag + 5, strlen(frag + 5) + 1);
    }
    return found;
}

/* ---- origins ---- */

/* Whether host (n bytes) is an IPv4 literal in 127.0.0.0/8: four numbers, dots between. */
static bool loopback_ipv4(const char *host, size_t n)
{
    int dots = 0, digits = 0;

    if (n < 9 || strncmp(host, "127.", 4) != 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (host[i] == '.') {
            if (digits == 0)
                return false;
            dots++;
            digits = 0;
        } else if (host[i] < '0' || host[i] > '9' || ++digits > 3) {
            return false;
        }
    }
    return dots == 3 && digits > 0;
}

/* Whether an Origin's host is loopback: http://127.x.y.z, http://localhost, http://[::1]
 * (exactly: http://127.0.0.1.evil.example is not). */
static bool loopback_origin(const char *origin)
{
    const char *host = strstr(origin, "://");
    size_t n;

    if (!host)
        return false;
    host += 3;
    n = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":/");
    if (host[n] != '\0' && host[n] != ':' && host[n] != '/')
        return false;
    return loopback_ipv4(host, n) || (n == 9 && !strncasecmp(host, "localhost", 9)) ||
           (n == 5 && strncmp(host, "[::1]", 5) == 0);
}

/* Whether the Origin's host is the host the client reached us at (the REST service's
 * pages are served from the same host). */
static bool same_host_origin(struct lws *wsi, const char *origin)
{
    char host[256];
    const char *o = strstr(origin, "://");
    size_t n, hn;

    if (!o || lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) <= 0)
        return false;
    o += 3;
    n = o[0] == '[' ? strcspn(o, "]") + 1 : strcspn(o, ":/");
    hn = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":");
    return n == hn && strncasecmp(o, host, n) == 0;
}

static bool origin_allowed(const struct per_vhost_data__chat *vhd, struct lws *wsi,
                           const char *origin)
{
    const struct cfg_list *allowed = &vhd->cfg->allowed_origin;

    if (!origin[0])
        return true; /* not a browser: Origin protects browsers' users only */
    for (size_t i = 0; i < allowed->n; i++)
        if (strcmp(allowed->v[i], "*") == 0 || strcasecmp(allowed->v[i], origin) == 0)
            return true;
    return allowed->n == 0 && (loopback_origin(origin) || same_host_origin(wsi, origin));
}

/* ---- the client's address ---- */

/* Whether the peer ip may speak for its clients: a --trusted-proxy address, or with none
 * given, loopback (127.0.0.0/8, ::1). */
static bool trusted_proxy(const struct cfg *cfg, const char *ip)
{
    const struct cfg_list *l = &cfg->trusted_proxy;

    if (l->n == 0)
        return loopback_ipv4(ip, strlen(ip)) || strcmp(ip, "::1") == 0 ||
               strncmp(ip, "::ffff:127.", 11) == 0;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], ip) == 0)
            return true;
    return false;
}

/* The client's address into ip (48 bytes): the peer's, or the last X-Forwarded-For entry
 * when the peer is a trusted proxy and that entry is an IP address. */
static void client_ip(const struct per_vhost_data__chat *vhd, struct lws *wsi, char ip[48])
{
    char xff[512], *last;
    unsigned char bin[sizeof(struct in6_addr)];
    size_t n;

    lws_get_peer_simple(wsi, ip, 48);
    if (!trusted_proxy(vhd->cfg, ip) ||
        lws_hdr_copy(wsi, xff, sizeof xff, WSI_TOKEN_X_FORWARDED_FOR) <= 0)
        return;
    last = strrchr(xff, ',');
    last = last ? last + 1 : xff;
    while (*last == ' ' || *last == '\t')
        last++;
    n = strcspn(last, " \t");
    last[n] = '\0';
    if (n > 0 && n < 48 &&
        (inet_pton(AF_INET, last, bin) == 1 || inet_pton(AF_INET6, last, bin) == 1))
        memcpy(ip, last, n + 1);
}

/* ---- upgrades and connections ---- */

static int64_t *ip_slot(struct per_vhost_data__chat *vhd, const char *ip, bool create)
{
    struct ip_count *c = map_get(vhd->per_ip, ip);

    if (!c && create && (c = calloc(1, sizeof *c))) {
        snprintf(c->ip, sizeof c->ip, "%s", ip);
        if (map_put(vhd->per_ip, c->ip, c) < 0) {
            free(c);
            c = NULL;
        }
    }
    return c ? &c->n : NULL;
}

int access_check_upgrade(struct per_vhost_data__chat *vhd, struct lws *wsi, const char **why)
{
    char ip[48] = "", origin[256] = "", host[256] = "", keybuf[128], namebuf[NAME_URLARG_LEN];
    const char *key;
    int64_t *count;

    client_ip(vhd, wsi, ip);
    if (lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) < 0)
        host[0] = '\0';
    /* DNS rebinding: with no key, only loopback and the configured hosts are answered */
    if (!vhd->auth_required && !host_allowed(vhd->cfg, host)) {
        access_refused(vhd, ip, "Host not allowed", host);
        *why = "this Host is not served without API keys; add it with --allowed-host (or "
               "--public-url), or configure an API key";
        return 403;
    }
    if (lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) < 0)
        origin[0] = '\0';
    if (!origin_allowed(vhd, wsi, origin)) {
        access_refused(vhd, ip, "origin not allowed", origin);
        *why = "this Origin is not allowed (--allowed-origin)";
        return 403;
    }
    count = ip_slot(vhd, ip, false);
    if (count && *count >= vhd->cfg->max_conns_per_ip) {
        access_refused(vhd, ip, "too many connections from the address", "--max-conns-per-ip");
        return 429;
    }
    key = presented_key(wsi, keybuf, sizeof keybuf);
    if (key && vhd->auth_required && !access_key_valid(vhd, key)) {
        access_refused(vhd, ip, "API key not valid", "mistyped or revoked");
        return 401;
    }
    if (upgrade_name(wsi, namebuf) < 0) {
        *why = "query parameter 'name' must be 1 to 64 characters, without control characters";
        return 400;
    }
    return 0;
}

void access_conn_filter(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                        struct lws *wsi)
{
    char keybuf[128], namebuf[NAME_URLARG_LEN];
    const char *key = presented_key(wsi, keybuf, sizeof keybuf);

    client_ip(vhd, wsi, pss->ip);
    if (upgrade_name(wsi, namebuf) > 0) {                /* checked at HTTP_CONFIRM_UPGRADE */
        memcpy(pss->name, namebuf, strlen(namebuf) + 1); /* valid: at most NAME_LEN bytes */
        pss->name_given = true;
    }
    if (!authenticate(vhd, pss, key))
        pss->authed = !vhd->auth_required;
}

void access_conn_open(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss)
{
    int64_t *count = ip_slot(vhd, pss->ip, true);

    if (count)
        (*count)++;
    log_debug("connection %s from %s", pss->id, pss->ip);
    pss->tokens = vhd->cfg->rate_burst;
    pss->refill_mono = clock_mono_ms();
}

void access_conn_close(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss)
{
    int64_t *count = ip_slot(vhd, pss->ip, false);

    if (count && --*count <= 0)
        free(map_del(vhd->per_ip, pss->ip));
}

enum rate_verdict access_rate(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss)
{
    const struct cfg *cfg = vhd->cfg;
    int64_t now = clock_mono_ms();

    pss->tokens += (double)(now - pss->refill_mono) * cfg->rate_limit / 1000.0;
    if (pss->tokens > cfg->rate_burst)
        pss->tokens = cfg->rate_burst;
    pss->refill_mono = now;
    if (pss->tokens >= 1.0) {
        pss->tokens -= 1.0;
        pss->flood = 0;
        return RATE_OK;
    }
    if (++pss->flood > (unsigned)cfg->rate_burst) {
        access_refused(vhd, pss->ip, "flooding", "closed with 1008");
        return RATE_CLOSE;
    }
    if (pss->flood == 1)
        access_refused(vhd, pss->ip, "over the rate limit", "--rate-limit");
    return RATE_REFUSE;
}

int access_init(struct per_vhost_data__chat *vhd, struct auth_key *keys, size_t n)
{
    vhd->per_ip = map_new();
    vhd->refusals = map_new();
    access_set_keys(vhd, keys, n);
    return vhd->per_ip && vhd->refusals ? 0 : -1;
}

void access_cleanup(struct per_vhost_data__chat *vhd)
{
    if (vhd->per_ip)
        map_each(vhd->per_ip, free_value, NULL);
    if (vhd->refusals)
        map_each(vhd->refusals, free_value, NULL);
    map_free(vhd->per_ip);
    map_free(vhd->refusals);
    free(vhd->keys);
    vhd->per_ip = vhd->refusals = NULL;
    vhd->keys = NULL;
}
