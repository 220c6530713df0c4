/* quota: the quota day (UTC, from the wall clock plus the testing offset), its reset time
 * and the refusal's wording. Not the counting: that is the store's (db_quota.c). */
#include "quota.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t quota_now_ms(const struct cfg *cfg)
{
    return clock_now_ms() + cfg->test_clock_offset_s * 1000;
}

void quota_day_of(int64_t unix_ms, char out[DB_DAY_LEN])
{
    char iso[CLOCK_ISO_LEN];

    clock_iso8601(unix_ms, iso);
    memcpy(out, iso, DB_DAY_LEN - 1);
    out[DB_DAY_LEN - 1] = '\0';
}

struct db_quota *quota_for(const struct cfg *cfg, const char *key, struct db_quota *q)
{
    if (!key || !*key)
        return NULL;
    memset(q, 0, sizeof *q);
    q->key = key;
    quota_day_of(quota_now_ms(cfg), q->day);
    q->max_messages = cfg->quota_messages_per_day;
    q->max_tokens = cfg->quota_tokens_per_day;
    return q;
}

int64_t quota_resets_at(const char *day, char out[CLOCK_ISO_LEN])
{
    struct tm tm;
    int64_t ms;

    memset(&tm, 0, sizeof tm);
    if (sscanf(day, "%4d-%2d-%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) != 3)
        tm.tm_year = 1970, tm.tm_mon = 1, tm.tm_mday = 1; /* not a day: a bug upstream */
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_mday += 1; /* timegm normalises the day after the last of a month */
    ms = (int64_t)timegm(&tm) * 1000;
    clock_iso8601(ms, out);
    return ms;
}

/* "3 h 12 min", "12 min", "40 s": how long until a reset ms milliseconds away. */
static void span(int64_t ms, char *buf, size_t size)
{
    int64_t s = ms > 0 ? (ms + 999) / 1000 : 0;

    if (s >= 3600)
        snprintf(buf, size, "%lld h %lld min", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else if (s >= 60)
        snprintf(buf, size, "%lld min", (long long)((s + 59) / 60));
    else
        snprintf(buf, size, "%lld s", (long long)s);
}

void quota_message(const struct db_quota *q, int64_t now_ms, char *buf, size_t size)
{
    char at[CLOCK_ISO_LEN], in[40];
    int64_t reset = quota_resets_at(q->day, at);

    span(reset - now_ms, in, sizeof in);
    at[19] = '\0'; /* 2026-12-09T00:00:00 */
    if (q->max_messages > 0 && q->messages >= q->max_messages)
        snprintf(buf, size,
                 "this API key has sent its %lld messages for today (its quota per UTC day); "
                 "the quota resets at %sZ, in %s",
                 (long long)q->max_messages, at, in);
    else
        snprintf(buf, size,
                 "this API key has used %lld of its %lld assistant tokens for today (its quota "
                 "per UTC day), so chats are refused until the quota resets at %sZ, in %s",
                 (long long)q->tokens, (long long)q->max_tokens, at, in);
}
