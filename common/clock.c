/* clock: the only place that reads clocks or the kernel's random source. */
#include "clock.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static int64_t ts_ms(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_now_ms(void)
{
    return ts_ms(CLOCK_REALTIME);
}

int64_t clock_mono_ms(void)
{
    return ts_ms(CLOCK_MONOTONIC);
}

int64_t clock_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void clock_iso8601(int64_t unix_ms, char out[CLOCK_ISO_LEN])
{
    /* floor division, so instants before 1970 keep a positive millisecond part */
    int64_t ms_part = ((unix_ms % 1000) + 1000) % 1000;
    time_t secs = (time_t)((unix_ms - ms_part) / 1000);
    unsigned ms = (unsigned)ms_part;
    struct tm tm;

    gmtime_r(&secs, &tm);
    strftime(out, CLOCK_ISO_LEN, "%Y-%m-%dT%H:%M:%S", &tm); /* 19 characters */
    snprintf(out + 19, CLOCK_ISO_LEN - 19, ".%03uZ", ms % 1000);
}

void clock_now_iso(char out[CLOCK_ISO_LEN])
{
    clock_iso8601(clock_now_ms(), out);
}

int clock_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64];
    size_t got = 0;

    if (nbytes > sizeof raw)
        return -1;
    while (got < nbytes) {
        ssize_t n = getrandom(raw + got, nbytes - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * nbytes] = '\0';
    return 0;
}

int clock_is_hex(const char *s, size_t len)
{
    if (strlen(s) != len)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    }
    return 1;
}
