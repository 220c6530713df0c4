/* asst_echo: the echo assistant. It replies with the user's message itself, one word per
 * chunk (each word keeps the spaces after it, so the chunks concatenate to the message),
 * paced like a model at ECHO_CHUNK_MS a chunk on the loop's own timer. For demos and
 * tests: no network, no model. */
#include <stdlib.h>
#include <string.h>

#include "assistant.h"

#define ECHO_CHUNK_MS 20

struct echo {
    char *text;
    size_t pos, len;
};

static void echo_tick(lws_sorted_usec_list_t *sul)
{
    struct reply *r = lws_container_of(sul, struct reply, sul);
    struct echo *e = r->drv;
    size_t end = e->pos;

    /* leading spaces (only at the very start), the word, then its trailing spaces */
    while (end < e->len && (e->text[end] == ' ' || e->text[end] == '\n' || e->text[end] == '\t'))
        end++;
    while (end < e->len && !(e->text[end] == ' ' || e->text[end] == '\n' || e->text[end] == '\t'))
        end++;
    while (end < e->len && (e->text[end] == ' ' || e->text[end] == '\n' || e->text[end] == '\t'))
        end++;
    reply_chunk(r, e->text + e->pos, end - e->pos);
    e->pos = end;
    if (e->pos < e->len) {
        lws_sul_schedule(r->vhd->context, 0, &r->sul, echo_tick, ECHO_CHUNK_MS * LWS_US_PER_MS);
        return;
    }
    r->drv = NULL;
    free(e->text);
    free(e);
    reply_end(r, "complete", NULL);
}

static int echo_start(struct reply *r, const struct db_message *prompt,
                      const struct db_message_list *context)
{
    struct echo *e = calloc(1, sizeof *e);

    if (!e || !(e->text = strdup(prompt->content))) {
        free(e);
        return -1;
    }
    e->len = strlen(e->text);
    r->drv = e;
    lws_sul_schedule(r->vhd->context, 0, &r->sul, echo_tick, ECHO_CHUNK_MS * LWS_US_PER_MS);
    return 0;
}

static void echo_cancel(struct reply *r)
{
    struct echo *e = r->drv;

    lws_sul_cancel(&r->sul);
    if (e) {
        free(e->text);
        free(e);
        r->drv = NULL;
    }
}

const struct asst_driver asst_echo = {
    .name = "echo",
    .start = echo_start,
    .cancel = echo_cancel,
};
