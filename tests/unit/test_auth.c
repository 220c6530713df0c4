/* test_auth: API keys are found by their lookup (one hash per check, not one per stored
 * key), old keys without a lookup still verify, and a wrong key never does. */
#include <string.h>

#include "auth.h"
#include "unit.h"

static void make(struct auth_key *k, const char *name, char *key, bool with_lookup)
{
    memset(k, 0, sizeof *k);
    snprintf(k->name, sizeof k->name, "%s", name);
    auth_new_key(key, k->salt, k->hash);
    if (with_lookup)
        auth_lookup(key, k->lookup);
}

static void lookup_format(void)
{
    char out[AUTH_LOOKUP_HEX + 1];

    auth_lookup("pk_0123456789abcdef0123456789abcdef01234567", out);
    EQ_STR(out, "01234567");
    auth_lookup("pk_short", out);
    EQ_STR(out, "");
    auth_lookup("xx_0123456789abcdef0123456789abcdef01234567", out);
    EQ_STR(out, "");
    auth_lookup(NULL, out);
    EQ_STR(out, "");
}

static void verify_by_lookup(void)
{
    struct auth_key keys[3];
    char k0[AUTH_KEY_LEN + 1], k1[AUTH_KEY_LEN + 1], k2[AUTH_KEY_LEN + 1];

    make(&keys[0], "new-a", k0, true);
    make(&keys[1], "old", k1, false); /* made before lookups: checked by hash alone */
    make(&keys[2], "new-b", k2, true);
    EQ_INT(auth_verify(keys, 3, k0), 0);
    EQ_INT(auth_verify(keys, 3, k1), 1);
    EQ_INT(auth_verify(keys, 3, k2), 2);
    k2[AUTH_KEY_LEN - 1] = k2[AUTH_KEY_LEN - 1] == '0' ? '1' : '0';
    EQ_INT(auth_verify(keys, 3, k2), -1);
    EQ_INT(auth_verify(keys, 3, "pk_"), -1);
    EQ_INT(auth_verify(keys, 3, NULL), -1);
}

/* A key whose stored lookup differs is not even hashed: with the right hash but another
 * lookup it is not found, which is what makes a check one hash. */
static void lookup_filters(void)
{
    struct auth_key k;
    char key[AUTH_KEY_LEN + 1];

    make(&k, "a", key, true);
    EQ_INT(auth_verify(&k, 1, key), 0);
    k.lookup[0] = k.lookup[0] == 'f' ? 'e' : 'f';
    EQ_INT(auth_verify(&k, 1, key), -1);
}

static const struct unit_case cases[] = {
    {"auth_lookup: the 8 hex characters after pk_, or nothing", lookup_format},
    {"auth_verify: new keys by lookup, old keys by hash, wrong keys never", verify_by_lookup},
    {"auth_verify: only keys with the presented key's lookup are hashed", lookup_filters},
};

int main(void)
{
    return unit_run(cases, UNIT_COUNT(cases));
}
