/* script: the non-interactive commands, for shell scripts. Each prints its result on
 * stdout and returns the exit status: 0 on success, 1 on failure (after saying why on
 * stderr), 2 on wrong usage. */
#ifndef PARLEY_CLIENT_SCRIPT_H
#define PARLEY_CLIENT_SCRIPT_H

#include "config.h"

/* parley send [--session ID] [TEXT...]: sends TEXT (the words joined with spaces; stdin when
 * none) as a chat, in a new session or --session, and prints the assistant's reply as it
 * streams, then a newline. */
int script_send(const struct cfg *cfg, int argc, char **argv);
/* parley sessions [--json]: the sessions as a table, or GET /sessions's JSON as is. */
int script_sessions(const struct cfg *cfg);
/* parley history ID [--json]: the session's messages one per line, or its JSON as is. */
int script_history(const struct cfg *cfg, const char *id);

#endif
