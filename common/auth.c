/* auth: making, hashing and checking API keys (see auth.h). SHA-256 is OpenSSL's. */
#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

#include "clock.h"

void auth_hash(const char *salt, const char *key, char *hash)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    hash[0] = '\0';
    if (!ctx)
        return;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
        EVP_DigestUpdate(ctx, salt, strlen(salt)) == 1 &&
        EVP_DigestUpdate(ctx, key, strlen(key)) == 1 && EVP_DigestFinal_ex(ctx, md, &len) == 1) {
        for (unsigned int i = 0; i < len && i < AUTH_HASH_HEX / 2; i++) {
            hash[2 * i] = hex[md[i] >> 4];
            hash[2 * i + 1] = hex[md[i] & 15];
        }
        hash[2 * len] = '\0';
    }
    EVP_MD_CTX_free(ctx);
}

int auth_new_key(char *key, char *salt, char *hash)
{
    memcpy(key, "pk_", 3);
    if (clock_random_hex(key + 3, (AUTH_KEY_LEN - 3) / 2) < 0 ||
        clock_random_hex(salt, AUTH_SALT_HEX / 2) < 0)
        return -1;
    auth_hash(salt, key, hash);
    return hash[0] ? 0 : -1;
}

void auth_lookup(const char *key, char *out)
{
    out[0] = '\0';
    if (key && strlen(key) == AUTH_KEY_LEN && strncmp(key, "pk_", 3) == 0) {
        memcpy(out, key + 3, AUTH_LOOKUP_HEX);
        out[AUTH_LOOKUP_HEX] = '\0';
    }
}

int auth_verify(const struct auth_key *keys, size_t n, const char *presented)
{
    char hash[AUTH_HASH_HEX + 1], lookup[AUTH_LOOKUP_HEX + 1];
    int found = -1;

    if (!presented || strlen(presented) != AUTH_KEY_LEN)
        return -1;
    auth_lookup(presented, lookup);
    for (size_t i = 0; i < n; i++) {
        if (keys[i].lookup[0] && strcmp(keys[i].lookup, lookup) != 0)
            continue; /* not this one: no hash needed */
        auth_hash(keys[i].salt, presented, hash);
        if (strlen(keys[i].hash) == AUTH_HASH_HEX &&
            CRYPTO_memcmp(hash, keys[i].hash, AUTH_HASH_HEX) == 0)
            found = (int)i;
    }
    return found;
}

const char *auth_bearer(const char *value)
{
    if (!value || strncasecmp(value, "Bearer ", 7) != 0)
        return NULL;
    value += 7;
    while (*value == ' ')
        value++;
    return *value ? value : NULL;
}
