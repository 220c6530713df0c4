/* keys_cmd: "parley-rest keys add NAME | list | revoke NAME", run against --db without
 * starting the server. list shows each key's use today (the UTC day of the quotas, SPEC 9)
 * beside the quotas this process was given. After a change the broker is told at once
 * (keys_changed), so a revoked key stops working for new connections immediately. */
#include "keys_cmd.h"

#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "db.h"
#include "log.h"
#include "notify.h"
#include "quota.h"

static const char usage[] = "usage: parley-rest [--db PATH] keys add NAME | keys list | "
                            "keys revoke NAME\n";

static int valid_name(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static void tell_broker(const struct cfg *cfg)
{
    struct notify_sender *s = notify_sender_for(cfg);
    json_t *ev = json_pack("{s:s}", "event", "keys_changed");

    notify_send(s, ev); /* a broker that is down reads the keys when it starts */
    json_decref(ev);
    notify_sender_free(s);
}

static int add(struct db *db, const struct cfg *cfg, const char *name)
{
    char key[AUTH_KEY_LEN + 1], salt[AUTH_SALT_HEX + 1], hash[AUTH_HASH_HEX + 1];
    char lookup[AUTH_LOOKUP_HEX + 1];
    enum perr e;

    if (auth_new_key(key, salt, hash) < 0) {
        fprintf(stderr, "parley-rest: could not make a key (no randomness from the kernel)\n");
        return 1;
    }
    auth_lookup(key, lookup);
    e = db_key_add(db, name, salt, hash, lookup);
    if (e == PERR_INVALID_FIELD) {
        fprintf(stderr,
                "parley-rest: a key named '%s' exists already ('parley-rest keys list' "
                "shows it); choose another name\n",
                name);
        return 1;
    }
    if (e)
        return 1;
    tell_broker(cfg);
    printf("%s\n", key);
    fprintf(stderr,
            "parley-rest: key '%s' added. This is the only time it is shown: store it "
            "now. Clients send it as 'Authorization: Bearer KEY'.\n",
            name);
    return 0;
}

/* "used" or, with a quota, "used/quota", into buf. */
static const char *use_shown(char *buf, size_t size, int64_t used, int64_t quota)
{
    if (quota > 0)
        snprintf(buf, size, "%lld/%lld", (long long)used, (long long)quota);
    else
        snprintf(buf, size, "%lld", (long long)used);
    return buf;
}

static int list(struct db *db, const struct cfg *cfg)
{
    struct db_key_info *v = NULL;
    char day[DB_DAY_LEN], msgs[48], tokens[48];
    size_t n = 0;
    int rc = 0;

    if (db_key_list(db, &v, &n))
        return 1;
    quota_day_of(quota_now_ms(cfg), day);
    printf("%-24s %-26s %-16s %-22s %s\n", "NAME", "CREATED", "MESSAGES_TODAY", "TOKENS_TODAY",
           "STATUS");
    for (size_t i = 0; i < n; i++) {
        int64_t m = 0, t = 0;
        if (db_key_usage(db, v[i].name, day, &m, &t)) {
            rc = 1;
            break;
        }
        printf("%-24s %-26s %-16s %-22s %s%s\n", v[i].name, v[i].created_at,
               use_shown(msgs, sizeof msgs, m, cfg->quota_messages_per_day),
               use_shown(tokens, sizeof tokens, t, cfg->quota_tokens_per_day),
               v[i].revoked_at[0] ? "revoked " : "valid", v[i].revoked_at);
    }
    db_key_list_free(v, n);
    return rc;
}

static int revoke(struct db *db, const struct cfg *cfg, const char *name)
{
    enum perr e = db_key_revoke(db, name);

    if (e == PERR_NOT_FOUND) {
        fprintf(stderr,
                "parley-rest: no valid key named '%s'; 'parley-rest keys list' shows "
                "them\n",
                name);
        return 1;
    }
    if (e)
        return 1;
    tell_broker(cfg);
    printf("revoked %s\n", name);
    return 0;
}

int keys_command(const struct cfg *cfg, int argc, char **argv)
{
    struct db *db;
    int rc;

    if (argc < 2 || (strcmp(argv[1], "list") == 0 && argc != 2) ||
        ((strcmp(argv[1], "add") == 0 || strcmp(argv[1], "revoke") == 0) && argc != 3) ||
        (strcmp(argv[1], "add") && strcmp(argv[1], "revoke") && strcmp(argv[1], "list"))) {
        fputs(usage, stderr);
        return 2;
    }
    if (argc == 3 && !valid_name(argv[2])) {
        fprintf(stderr, "parley-rest: key names are 1 to 64 of A-Z a-z 0-9 . _ -\n");
        return 2;
    }
    log_init("parley-rest", LOG_LEVEL_ERROR); /* a broker that is down is no news here */
    if (!(db = db_open(cfg->db_path)))
        return 1;
    if (strcmp(argv[1], "add") == 0)
        rc = add(db, cfg, argv[2]);
    else if (strcmp(argv[1], "revoke") == 0)
        rc = revoke(db, cfg, argv[2]);
    else
        rc = list(db, cfg);
    db_close(db);
    return rc;
}
