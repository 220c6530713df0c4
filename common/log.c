/* log: formats a whole line in a local buffer and writes it with one write(2), so lines
 * from different threads never interleave. Not a general logging framework: no files, no
 * rotation; the service manager or terminal collects stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"

static const char *log_prog = "parley";
static enum log_level log_min = LOG_LEVEL_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

void log_init(const char *prog, enum log_level min)
{
    log_prog = prog;
    log_min = min;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(enum log_level level)
{
    return level_names[level];
}

int log_enabled(enum log_level level)
{
    return level >= log_min;
}

void log_write(enum log_level level, const char *func, const char *fmt, ...)
{
    char line[2048];
    char now[CLOCK_ISO_LEN];
    size_t len;
    int n;
    va_list ap;

    if (level < log_min)
        return;
    clock_now_iso(now);
    n = snprintf(line, sizeof line, "%s %s %s: ", now, level_tags[level], log_prog);
    len = (size_t)n;
    if (func) {
        n = snprintf(line + len, sizeof line - len, "%s: ", func);
        len += (size_t)n;
    }
    va_start(ap, fmt);
    n = vsnprintf(line + len, sizeof line - len, fmt, ap);
    va_end(ap);
    len = n < 0 ? len : len + (size_t)n;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: keep the newline */
    line[len++] = '\n';
    if (write(STDERR_FILENO, line, len) < 0) {
        /* nowhere left to report it */
    }
}
