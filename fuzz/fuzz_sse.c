/* fuzz_sse: libFuzzer harness for the LLM stream path of the broker: the SSE framing
 * (broker/sse.c) fed in splits the input chooses, each event handed to a provider's
 * stream parser (llm_parser_event, broker/llm_providers.c) as llm_http.c does, then
 * llm_parser_flush; and llm_error_text on the input as an HTTP error body.
 *
 * Input: byte 0 picks the provider (bit 0) and byte 1 seeds the split sizes; the rest is
 * the stream. Invariants checked (a violation traps): feeding the stream whole and in
 * pieces gives the same events and the same outcome; every event's data is NUL-
 * terminated at its length; after a FAIL the parser emits nothing more; TEXT and
 * REASONING pieces are non-empty. Not checked (yet): that text is valid UTF-8. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "log.h"
#include "sse.h"

/* What the SSE callback saw: a count and a hash of every event's bytes. */
struct seen {
    size_t events;
    uint64_t hash;
    struct llm_parser *parser; /* NULL: framing only */
};

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;

    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static int on_event(void *arg, const char *data, size_t len)
{
    struct seen *s = arg;

    if (data[len] != '\0')
        __builtin_trap();
    s->events++;
    s->hash = mix(mix(s->hash, &len, sizeof len), data, len);
    if (s->parser)
        return llm_parser_event(s->parser, data, len) < 0 ? -1 : 0;
    return 0;
}

/* What the provider parser emitted. */
struct emitted {
    bool failed;
    uint64_t sum;
};

static void on_emit(void *arg, enum llm_event_kind kind, const char *text, size_t len,
                    int64_t prompt_tokens, int64_t completion_tokens)
{
    struct emitted *e = arg;

    if (e->failed) /* nothing after a FAIL */
        __builtin_trap();
    switch (kind) {
    case LLM_TEXT:
    case LLM_REASONING:
    case LLM_FAIL:
    case LLM_MODEL:
        if (!text || len == 0)
            __builtin_trap();
        e->sum = mix(e->sum, text, len); /* reads every byte: ASan sees an overread */
        e->failed = kind == LLM_FAIL;
        break;
    case LLM_USAGE:
        e->sum = mix(e->sum, &prompt_tokens, sizeof prompt_tokens);
        e->sum = mix(e->sum, &completion_tokens, sizeof completion_tokens);
        break;
    case LLM_DONE:
        break;
    default:
        __builtin_trap();
    }
}

/* Feeds len bytes in pieces of 1 to 64 bytes chosen by seed; returns sse_feed's last
 * result (non-zero stops the feeding, as llm_http.c aborts the transfer). */
static int feed_split(struct sse *p, const char *buf, size_t len, unsigned seed, struct seen *s)
{
    uint32_t x = seed * 2654435761u + 1;
    size_t at = 0;
    int rc = 0;

    while (at < len && rc == 0) {
        size_t n;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        n = 1 + x % 64;
        if (n > len - at)
            n = len - at;
        rc = sse_feed(p, buf + at, n, on_event, s);
        at += n;
    }
    return rc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_sse", LOG_LEVEL_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sse whole, split;
    struct seen a = {.hash = 14695981039346656037ull}, b = a;
    struct llm_parser parser;
    struct emitted em = {0};
    char *body, msg[400];
    const char *stream;
    size_t len;
    int ra, rb;

    if (size < 2)
        return 0;
    stream = (const char *)data + 2;
    len = size - 2;

    /* 1. framing: whole and split give the same events */
    sse_init(&whole);
    ra = sse_feed(&whole, stream, len, on_event, &a);
    sse_cleanup(&whole);
    sse_init(&split);
    rb = feed_split(&split, stream, len, data[1], &b);
    sse_cleanup(&split);
    if (a.events != b.events || a.hash != b.hash || (ra != 0) != (rb != 0))
        __builtin_trap();

    /* 2. the provider's parser behind the framing */
    llm_parser_init(&parser, data[0] & 1 ? LLM_GEMINI : LLM_OPENAI, "http://127.0.0.1:1/v1",
                    on_emit, &em);
    b = (struct seen){.parser = &parser};
    sse_init(&split);
    if (feed_split(&split, stream, len, data[1], &b) == 0 && !parser.failed)
        llm_parser_flush(&parser);
    sse_cleanup(&split);
    if (parser.failed != em.failed)
        __builtin_trap();

    /* 3. the input as an HTTP error body */
    if ((body = malloc(len + 1))) {
        memcpy(body, stream, len);
        body[len] = '\0';
        if (llm_error_text(body, msg, sizeof msg) == 0 && !memchr(msg, '\0', sizeof msg))
            __builtin_trap();
        free(body);
    }
    return 0;
}
