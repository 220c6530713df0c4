/* quota: the daily quotas per API key (SPEC 9) as the processes see them: which UTC day a
 * message counts in, when that day's quota resets, and what a refused client is told. The
 * counting itself is the store's (db.h, struct db_quota), in the transaction that stores
 * the message. No API key, no quota: with auth off nothing is counted or refused. */
#ifndef PARLEY_QUOTA_H
#define PARLEY_QUOTA_H

#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "config.h"
#include "db.h"

/* The wall clock the quota day is read from: unix milliseconds plus
 * --test-clock-offset-s (PARLEY_TEST_CLOCK_OFFSET_S, a testing aid; 0 normally). */
int64_t quota_now_ms(const struct cfg *cfg);
/* The UTC day of unix_ms, "2026-12-08", into out. */
void quota_day_of(int64_t unix_ms, char out[DB_DAY_LEN]);
/* The quota of a user message sent with the API key named key, for db_message_in.quota:
 * fills q (its key borrows key: keep it alive while q is used) and returns q; NULL when
 * key is NULL or "" (no key: no quota, nothing counted). */
struct db_quota *quota_for(const struct cfg *cfg, const char *key, struct db_quota *q);
/* When the quota of day resets, the next UTC midnight, as ISO-8601 UTC text
 * ("2026-12-09T00:00:00.000Z"), and as unix milliseconds (the return value). */
int64_t quota_resets_at(const char *day, char out[CLOCK_ISO_LEN]);
/* What a client refused with PERR_QUOTA_EXCEEDED is told (q as db_message_add left it):
 * which quota, what was used, and when it resets, seen from now_ms (quota_now_ms). */
void quota_message(const struct db_quota *q, int64_t now_ms, char *buf, size_t size);

#endif
