/* unit: the few macros the common/ unit tests share. Not a test framework.
 *
 * A test program is a table of cases; unit_run() calls each one and prints `ok - NAME` or
 * `not ok - NAME: detail` (the first failed check of the case), then returns the exit
 * status: 1 if any case failed, else 0. A case with a NULL name is a table of its own: it
 * brackets each row with unit_begin() and unit_end(NAME). CHECK and the EQ_* macros record
 * a failure and carry on; REQUIRE and REQ_INT also end the case at once (use them where
 * going on would use what was not made). */
#ifndef PARLEY_TESTS_UNIT_H
#define PARLEY_TESTS_UNIT_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct unit_case {
    const char *name;
    void (*fn)(void);
};

static int unit_failed;       /* the current case has failed */
static char unit_detail[512]; /* why: its first failed check */

#define UNIT_FAIL(...)                                                                             \
    do {                                                                                           \
        if (!unit_failed)                                                                          \
            snprintf(unit_detail, sizeof unit_detail, __VA_ARGS__);                                \
        unit_failed = 1;                                                                           \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            UNIT_FAIL("line %d: %s", __LINE__, #cond);                                             \
    } while (0)

#define EQ_INT(got, want)                                                                          \
    do {                                                                                           \
        long long got_ = (long long)(got), want_ = (long long)(want);                              \
        if (got_ != want_)                                                                         \
            UNIT_FAIL("line %d: %s is %lld, want %lld", __LINE__, #got, got_, want_);              \
    } while (0)

/* Either side may be NULL; NULL equals only NULL. */
#define EQ_STR(got, want)                                                                          \
    do {                                                                                           \
        const char *got_ = (got), *want_ = (want);                                                 \
        if ((got_ == NULL) != (want_ == NULL) || (got_ && strcmp(got_, want_) != 0))               \
            UNIT_FAIL("line %d: %s is \"%s\", want \"%s\"", __LINE__, #got,                        \
                      got_ ? got_ : "(null)", want_ ? want_ : "(null)");                           \
    } while (0)

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            UNIT_FAIL("line %d: %s", __LINE__, #cond);                                             \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define REQ_INT(got, want)                                                                         \
    do {                                                                                           \
        EQ_INT(got, want);                                                                         \
        if (unit_failed)                                                                           \
            return;                                                                                \
    } while (0)

static int unit_failures; /* cases failed so far */

/* Starts a case. */
static inline void unit_begin(void)
{
    unit_failed = 0;
    unit_detail[0] = '\0';
}

/* Ends the case begun last: prints its line. name may be a format. */
__attribute__((format(printf, 1, 2))) static inline void unit_end(const char *fmt, ...)
{
    char name[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    fflush(stderr);
    if (unit_failed) {
        printf("not ok - %s: %s\n", name, unit_detail);
        unit_failures++;
    } else {
        printf("ok - %s\n", name);
    }
}

/* Runs every case of the table; a case may also report rows of its own with
 * unit_begin/unit_end. Returns the exit status. */
static inline int unit_run(const struct unit_case *cases, size_t n)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < n; i++) {
        if (!cases[i].name) { /* reports its own rows */
            cases[i].fn();
            continue;
        }
        unit_begin();
        cases[i].fn();
        unit_end("%s", cases[i].name);
    }
    return unit_failures ? 1 : 0;
}

#define UNIT_COUNT(a) (sizeof(a) / sizeof((a)[0]))

#endif
