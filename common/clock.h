/* clock: wall and monotonic time, ISO-8601 UTC text, random ids. */
#ifndef PARLEY_CLOCK_H
#define PARLEY_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* "2026-01-20T12:34:56.789Z" plus the NUL. */
#define CLOCK_ISO_LEN 25

/* ---- time ---- */
int64_t clock_now_ms(void);  /* unix milliseconds (CLOCK_REALTIME) */
int64_t clock_mono_ms(void); /* milliseconds of CLOCK_MONOTONIC, for intervals */
int64_t clock_mono_us(void); /* microseconds of CLOCK_MONOTONIC */
/* Writes unix_ms as ISO-8601 UTC with milliseconds into out. */
void clock_iso8601(int64_t unix_ms, char out[CLOCK_ISO_LEN]);
void clock_now_iso(char out[CLOCK_ISO_LEN]);

/* ---- ids ---- */
/* Fills out with 2*nbytes lowercase hex characters from getrandom(2) and a NUL;
 * out must hold 2*nbytes+1. Returns 0, or -1 if the kernel gave no randomness. */
int clock_random_hex(char *out, size_t nbytes);
/* Whether s is exactly len lowercase hex characters. */
int clock_is_hex(const char *s, size_t len);

#endif
