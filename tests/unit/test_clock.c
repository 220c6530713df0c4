/* test_clock: ISO-8601 text of known instants, random hex ids and the hex check.
 * Not a test of the kernel's clocks beyond a sanity bound. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "unit.h"

static const struct {
    int64_t ms;
    const char *want;
} iso_cases[] = {
    {0, "1970-01-01T00:00:00.000Z"},
    {1768912496789, "2026-01-20T12:34:56.789Z"},
    {999, "1970-01-01T00:00:00.999Z"},
    {1000, "1970-01-01T00:00:01.000Z"},
    {86400000, "1970-01-02T00:00:00.000Z"},
    {951782400000, "2000-02-29T00:00:00.000Z"},
    {1700000000123, "2023-11-14T22:13:20.123Z"},
    {4102444799999, "2099-12-31T23:59:59.999Z"},
    /* before the epoch: the milliseconds must count forward from the earlier second */
    {-1, "1969-12-31T23:59:59.999Z"},
    {-1000, "1969-12-31T23:59:59.000Z"},
    {-1001, "1969-12-31T23:59:58.999Z"},
};

static void iso_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(iso_cases); i++) {
        char out[CLOCK_ISO_LEN + 8];

        unit_begin();
        memset(out, 'x', sizeof out);
        clock_iso8601(iso_cases[i].ms, out);
        EQ_STR(out, iso_cases[i].want);
        EQ_INT(strlen(out), 24);
        EQ_INT(out[CLOCK_ISO_LEN], 'x'); /* nothing written past the buffer */
        unit_end("clock_iso8601(%lld) is %s", (long long)iso_cases[i].ms, iso_cases[i].want);
    }
}

static void now_iso_shape(void)
{
    char out[CLOCK_ISO_LEN];
    int64_t now = clock_now_ms();
    int64_t t = (int64_t)time(NULL) * 1000;

    /* CLOCK_REALTIME in milliseconds agrees with time(2) within two seconds */
    CHECK(now > t - 2000 && now < t + 2000);
    clock_now_iso(out);
    EQ_INT(strlen(out), 24);
    EQ_INT(out[4], '-');
    EQ_INT(out[10], 'T');
    EQ_INT(out[19], '.');
    EQ_INT(out[23], 'Z');
}

static void mono_nondecreasing(void)
{
    int64_t a = clock_mono_ms(), b;
    struct timespec ten_ms = {0, 10 * 1000 * 1000};

    nanosleep(&ten_ms, NULL);
    b = clock_mono_ms();
    CHECK(b >= a + 10);
    CHECK(b < a + 2000);
}

static const size_t hex_lengths[] = {0, 1, 8, 32, 64};

static void random_hex_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(hex_lengths); i++) {
        size_t nb = hex_lengths[i];
        char out[2 * 64 + 8];

        unit_begin();
        memset(out, 'X', sizeof out);
        EQ_INT(clock_random_hex(out, nb), 0);
        EQ_INT(strlen(out), 2 * nb);
        EQ_INT(clock_is_hex(out, 2 * nb), 1);
        EQ_INT(out[2 * nb + 1], 'X'); /* only 2*nbytes+1 bytes written */
        unit_end("clock_random_hex(%zu bytes) gives %zu lowercase hex characters", nb, 2 * nb);
    }
}

static void random_hex_too_long(void)
{
    char out[2 * 65 + 1];

    out[0] = 'X';
    EQ_INT(clock_random_hex(out, 65), -1);
    EQ_INT(out[0], 'X');
}

static void random_hex_differs(void)
{
    char a[17], b[17];

    REQUIRE(clock_random_hex(a, 8) == 0);
    REQUIRE(clock_random_hex(b, 8) == 0);
    CHECK(strcmp(a, b) != 0);
}

/* Over 20 calls of 64 bytes every hex digit shows up in both nibbles of a byte (a missing
 * one has odds of about 32 * (15/16)^1280), and nothing else does. */
static void random_hex_charset(void)
{
    int seen[2][256] = {{0}};
    char out[129];

    for (int i = 0; i < 20; i++) {
        REQUIRE(clock_random_hex(out, 64) == 0);
        for (size_t k = 0; out[k]; k++)
            seen[k % 2][(unsigned char)out[k]]++;
    }
    for (int half = 0; half < 2; half++)
        for (int c = 0; c < 256; c++) {
            int want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
            if (want && !seen[half][c])
                UNIT_FAIL("digit '%c' never produced as a %s nibble", c, half ? "low" : "high");
            if (!want && seen[half][c])
                UNIT_FAIL("character %d produced", c);
        }
}

static const struct {
    const char *s;
    size_t len;
    int want;
} is_hex_cases[] = {
    {"0123456789abcdef", 16, 1},
    {"", 0, 1},
    {"00ff", 4, 1},
    {"ABCDEF", 6, 0},  /* upper case is not an id */
    {"abc", 4, 0},     /* shorter than len */
    {"abcd", 3, 0},    /* longer than len */
    {"abcg", 4, 0},    /* g */
    {"ab d", 4, 0},    /* space */
    {"0x12", 4, 0},    /* prefix */
    {"abc\xe9", 4, 0}, /* high byte (printed as "abc?" below) */
};

static void is_hex_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(is_hex_cases); i++) {
        unit_begin();
        EQ_INT(clock_is_hex(is_hex_cases[i].s, is_hex_cases[i].len), is_hex_cases[i].want);
        char shown[32];
        size_t k = 0;

        for (const char *p = is_hex_cases[i].s; *p && k + 1 < sizeof shown; p++)
            shown[k++] = (unsigned char)*p < 0x80 ? *p : '?';
        shown[k] = '\0';
        unit_end("clock_is_hex(\"%s\", %zu) is %d", shown, is_hex_cases[i].len,
                 is_hex_cases[i].want);
    }
}

static const struct unit_case cases[] = {
    {NULL, iso_table},
    {"clock_now_ms is the wall clock; clock_now_iso has the ISO shape", now_iso_shape},
    {"clock_mono_ms moves forward across a 10 ms sleep", mono_nondecreasing},
    {NULL, random_hex_table},
    {"clock_random_hex refuses more than 64 bytes and writes nothing", random_hex_too_long},
    {"two clock_random_hex ids differ", random_hex_differs},
    {"clock_random_hex uses exactly the 16 lowercase hex digits", random_hex_charset},
    {NULL, is_hex_table},
};

int main(void)
{
    return unit_run(cases, UNIT_COUNT(cases));
}
