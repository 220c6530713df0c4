/* log: levelled log lines to stderr, one write per line, safe from any thread.
 *
 *   2026-01-20T12:34:56.789Z INFO  parley-rest: listening on http://127.0.0.1:8000
 *
 * Never log message bodies, API keys or tokens. */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* ---- setup: call once from main before any thread starts ---- */
void log_init(const char *prog, enum log_level min);
/* Parses "debug", "info", "warn" or "error"; returns 0, or -1 for anything else. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);
/* Whether a line at this level would be written (to skip costly formatting). */
int log_enabled(enum log_level level);

/* ---- writing ---- */
void log_write(enum log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(...) log_write(LOG_LEVEL_DEBUG, __func__, __VA_ARGS__)
#define log_info(...)  log_write(LOG_LEVEL_INFO, NULL, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LEVEL_WARN, __func__, __VA_ARGS__)
#define log_error(...) log_write(LOG_LEVEL_ERROR, __func__, __VA_ARGS__)

#endif
