/* map: separate chaining, power-of-two buckets, FNV-1a, doubling at load factor 1. */
#include "map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    const char *key;
    void *value;
    struct entry *next;
};

struct map {
    struct entry **buckets;
    size_t n_buckets; /* a power of two */
    size_t count;
};

static size_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return (size_t)h;
}

struct map *map_new(void)
{
    struct map *m = calloc(1, sizeof *m);

    if (!m)
        return NULL;
    m->n_buckets = 64;
    m->buckets = calloc(m->n_buckets, sizeof *m->buckets);
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    return m;
}

void map_free(struct map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_buckets; i++) {
        struct entry *e = m->buckets[i];
        while (e) {
            struct entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    free(m);
}

static struct entry **slot(const struct map *m, const char *key)
{
    struct entry **p = &m->buckets[hash(key) & (m->n_buckets - 1)];

    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->next;
    return p;
}

void *map_get(const struct map *m, const char *key)
{
    struct entry *e = *slot(m, key);

    return e ? e->value : NULL;
}

static void grow(struct map *m)
{
    size_t n = m->n_buckets * 2;
    struct entry **b = calloc(n, sizeof *b);

    if (!b)
        return; /* keep working, just slower */
    for (size_t i = 0; i < m->n_buckets; i++) {
        struct entry *e = m->buckets[i];
        while (e) {
            struct entry *next = e->next;
            size_t k = hash(e->key) & (n - 1);
            e->next = b[k];
            b[k] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = n;
}

int map_put(struct map *m, const char *key, void *value)
{
    struct entry **p = slot(m, key), *e;

    if (*p) {
        (*p)->key = key;
        (*p)->value = value;
        return 0;
    }
    e = malloc(sizeof *e);
    if (!e)
        return -1;
    e->key = key;
    e->value = value;
    e->next = NULL;
    *p = e;
    if (++m->count > m->n_buckets)
        grow(m);
    return 0;
}

void *map_del(struct map *m, const char *key)
{
    struct entry **p = slot(m, key), *e = *p;
    void *value;

    if (!e)
        return NULL;
    *p = e->next;
    value = e->value;
    free(e);
    m->count--;
    return value;
}

size_t map_count(const struct map *m)
{
    return m->count;
}

void map_each(const struct map *m, void (*fn)(void *value, void *arg), void *arg)
{
    for (size_t i = 0; i < m->n_buckets; i++)
        for (struct entry *e = m->buckets[i]; e; e = e->next)
            fn(e->value, arg);
}
