/* names: display names of the people in a room (SPEC 9 "Names"): what a valid one is, the
 * default a connection gets, and the form an LLM API accepts. Shared by REST (the name of
 * POST /sessions/{id}/messages) and the broker (create_session, join_session, ?name=). */
#ifndef PARLEY_NAMES_H
#define PARLEY_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define NAME_MAX_CHARS 64
#define NAME_LEN       (NAME_MAX_CHARS * 4 + 1) /* bytes, with the NUL */
#define NAME_GUEST     "guest-"                 /* + the first 4 characters of a connection id */

/* Whether s (len bytes) is a valid name: 1 to NAME_MAX_CHARS characters of valid UTF-8,
 * with no control character (C0, DEL, C1) and no NUL. */
bool name_valid(const char *s, size_t len);
/* Writes the default name of connection conn_id ("guest-" and its first 4 characters)
 * into out (NAME_LEN bytes). Returns out. */
char *name_guest(char *out, const char *conn_id);
/* Writes name as an OpenAI message name (^[a-zA-Z0-9_-]{1,64}$: every other byte of a
 * character becomes one '_', at most 64) into out (65 bytes). Returns out. */
char *name_llm(char *out, const char *name);

#endif
