/* auth: API keys. A key is "pk_" and 40 random hex characters, shown once when made;
 * the database keeps only a random salt and the hex SHA-256 of salt || key. Keys are
 * long random secrets, so one salted hash (not a slow password hash) is the right cost. */
#ifndef PARLEY_AUTH_H
#define PARLEY_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#define AUTH_KEY_LEN    43 /* "pk_" + 40 hex */
#define AUTH_SALT_HEX   32 /* 16 random bytes */
#define AUTH_HASH_HEX   64 /* SHA-256 */
#define AUTH_LOOKUP_HEX 8  /* the key's first hex characters, stored to find it */

/* One stored key, as verification needs it. */
struct auth_key {
    char name[65];
    char salt[AUTH_SALT_HEX + 1];
    char hash[AUTH_HASH_HEX + 1];
    char lookup[AUTH_LOOKUP_HEX + 1]; /* "" for keys made before lookups existed */
};

/* Makes a new key into key (AUTH_KEY_LEN + 1 bytes) with its salt and hash. Returns 0,
 * or -1 when the kernel gave no randomness. */
int auth_new_key(char *key, char *salt, char *hash);
/* Writes the hex SHA-256 of salt || key into hash (AUTH_HASH_HEX + 1 bytes). */
void auth_hash(const char *salt, const char *key, char *hash);
/* Copies a key's lookup (its first AUTH_LOOKUP_HEX hex characters) into out
 * (AUTH_LOOKUP_HEX + 1 bytes); "" when key is not of the key format. */
void auth_lookup(const char *key, char *out);
/* The index in keys[] of the key that presented matches, or -1. Only keys whose lookup
 * matches (and old keys without one) are hashed: one hash, not one per key. Compares
 * hashes in constant time. */
int auth_verify(const struct auth_key *keys, size_t n, const char *presented);
/* The key in an "Authorization: Bearer KEY" header value, or NULL (borrowed from value). */
const char *auth_bearer(const char *value);

#endif
