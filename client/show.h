/* show: plain-text renderings of REST answers, shared by the interactive commands and the
 * scripting commands so both print the same thing. */
#ifndef PARLEY_CLIENT_SHOW_H
#define PARLEY_CLIENT_SHOW_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* How long ago an ISO-8601 UTC time was, as "42s", "5m", "3h" or "2d" ("?" if unparsable). */
void show_age(const char *iso, char *out, size_t size);
/* Parses "2026-01-20T12:34:56.789Z" to unix milliseconds; -1 when it does not parse. */
int64_t show_parse_iso(const char *iso);

/* Calls emit(ud, line) for each line of a table of a GET /sessions answer (borrowed):
 * a header, then one row per session; the row of current (may be NULL) is marked '*'. */
void show_sessions(const json_t *body, const char *current,
                   void (*emit)(void *ud, const char *line), void *ud);
/* One history line for a message {id, role, content, created_at, author?}:
 * "#12 2026-01-20T12:34:56.789Z alice: hello" (a user message by its author's name, else
 * its role: "user", "assistant"). Returns a new string (free with free), NULL
 * when out of memory. */
char *show_message(const json_t *msg);

#endif
