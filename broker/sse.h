/* sse: incremental parser of text/event-stream (Server-Sent Events), as LLM servers send
 * it. Bytes go in as they arrive, split anywhere; each complete event's data (its data:
 * lines joined with "\n") comes out through the callback. Comments (":..."), other fields
 * and empty events are skipped; "\n", "\r\n" and "\r" all end lines. */
#ifndef PARLEY_SSE_H
#define PARLEY_SSE_H

#include <stddef.h>

#define SSE_MAX_EVENT (1024 * 1024) /* a larger event is a malformed stream */

/* Called with one event's data (NUL-terminated, borrowed for the call). Return 0 to go
 * on, non-zero to stop parsing (sse_feed then returns that value). */
typedef int (*sse_event_fn)(void *arg, const char *data, size_t len);

struct sse {
    char *line; /* the line being read */
    size_t line_len, line_cap;
    char *data; /* the event's data so far */
    size_t data_len, data_cap;
    int has_data;
    int after_cr; /* the last byte was '\r': a following '\n' belongs to it */
};

void sse_init(struct sse *p);
void sse_cleanup(struct sse *p);
/* Feeds bytes. Returns 0, the callback's non-zero value, or -1 when an event is larger
 * than SSE_MAX_EVENT or memory ran out. */
int sse_feed(struct sse *p, const char *buf, size_t len, sse_event_fn fn, void *arg);

#endif
