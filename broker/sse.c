/* sse: the event-stream framing of sse.h; knows nothing of what the data means. */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

void sse_init(struct sse *p)
{
    memset(p, 0, sizeof *p);
}

void sse_cleanup(struct sse *p)
{
    free(p->line);
    free(p->data);
    memset(p, 0, sizeof *p);
}

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    char *grown;

    if (*len + n + 1 > SSE_MAX_EVENT)
        return -1;
    if (*len + n + 1 > *cap) {
        size_t c = (*len + n + 1) * 2;
        if (!(grown = realloc(*buf, c)))
            return -1;
        *buf = grown;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

/* Handles one complete line (without its ending). */
static int line_done(struct sse *p, sse_event_fn fn, void *arg)
{
    const char *l = p->line ? p->line : "";
    size_t n = p->line_len;
    int rc = 0;

    p->line_len = 0;
    if (n == 0) { /* blank line: dispatch */
        if (p->has_data)
            rc = fn(arg, p->data ? p->data : "", p->data_len);
        p->data_len = 0;
        if (p->data)
            p->data[0] = '\0';
        p->has_data = 0;
        return rc;
    }
    if (l[0] == ':' || n < 5 || strncmp(l, "data:", 5) != 0)
        return 0; /* a comment, or a field we do not use (event:, id:, retry:) */
    l += 5;
    n -= 5;
    if (n && l[0] == ' ') {
        l++;
        n--;
    }
    if (p->has_data && append(&p->data, &p->data_len, &p->data_cap, "\n", 1) < 0)
        return -1;
    if (append(&p->data, &p->data_len, &p->data_cap, l, n) < 0)
        return -1;
    p->has_data = 1;
    return 0;
}

int sse_feed(struct sse *p, const char *buf, size_t len, sse_event_fn fn, void *arg)
{
    size_t start = 0;
    int rc;

    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (c != '\n' && c != '\r') {
            p->after_cr = 0;
            continue;
        }
        if (c == '\n' && p->after_cr && i == start) { /* the \n of a \r\n */
            p->after_cr = 0;
            start = i + 1;
            continue;
        }
        if (append(&p->line, &p->line_len, &p->line_cap, buf + start, i - start) < 0)
            return -1;
        p->after_cr = c == '\r';
        start = i + 1;
        if ((rc = line_done(p, fn, arg)) != 0)
            return rc;
    }
    if (start < len && append(&p->line, &p->line_len, &p->line_cap, buf + start, len - start) < 0)
        return -1;
    return 0;
}
