/* map: string-keyed hash map for the broker's live sessions and connections.
 * Keys are borrowed: each key must stay valid while its entry is in the map (the broker
 * keys every entry by an id stored inside the value). */
#ifndef PARLEY_MAP_H
#define PARLEY_MAP_H

#include <stddef.h>

struct map;

struct map *map_new(void);
/* Frees the map, not the values. NULL is fine. */
void map_free(struct map *m);
void *map_get(const struct map *m, const char *key);
/* Inserts or replaces. Returns 0, or -1 when out of memory. */
int map_put(struct map *m, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *map_del(struct map *m, const char *key);
size_t map_count(const struct map *m);
/* Calls fn for every value. fn must not add to or remove from the map. */
void map_each(const struct map *m, void (*fn)(void *value, void *arg), void *arg);

#endif
