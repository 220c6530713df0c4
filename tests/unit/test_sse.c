/* test_sse: the broker's LLM stream parsing as tables: the SSE framing of broker/sse.c
 * (every case fed whole, split at every byte, and a byte at a time; LF, CRLF and CR;
 * comments and other fields; multi-line data; the size limit), then each provider's
 * event parser of broker/llm_providers.c (OpenAI-compatible deltas, reasoning, usage,
 * [DONE], error objects; Gemini parts, thought parts, blockReason, usageMetadata; the
 * <think> splitter across pieces) and llm_error_text; the authors' names and prefixes of
 * broker/llm_room.c; and whole streams as servers send
 * them, one folder each in tests/unit/cases/stream/ (provider, stream, expected). Not a
 * test of the HTTP side. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.h"
#include "sse.h"
#include "unit.h"

/* ---- SSE framing ---- */

/* What the callback saw: each event's data as "[data]", appended. */
struct events {
    char text[512];
    size_t len;
    int stop_after; /* > 0: return 7 once this many events came */
    int count;
};

static int on_event(void *arg, const char *data, size_t len)
{
    struct events *e = arg;

    if (data[len] != '\0')
        UNIT_FAIL("event data not NUL-terminated at its length %zu", len);
    if (e->len + len + 3 < sizeof e->text) {
        e->text[e->len++] = '[';
        memcpy(e->text + e->len, data, len);
        e->len += len;
        e->text[e->len++] = ']';
        e->text[e->len] = '\0';
    }
    e->count++;
    return e->stop_after > 0 && e->count == e->stop_after ? 7 : 0;
}

struct sse_case {
    const char *name;
    const char *in;
    size_t len; /* 0: strlen(in) */
    const char *want;
    size_t want_len; /* 0: strlen(want) */
};

static const struct sse_case sse_cases[] = {
    {"LF", "data: a\n\n", 0, "[a]", 0},
    {"CRLF", "data: a\r\n\r\n", 0, "[a]", 0},
    {"CR", "data: a\r\r", 0, "[a]", 0},
    {"two events, LF", "data: a\n\ndata: b\n\n", 0, "[a][b]", 0},
    {"two events, CRLF", "data: a\r\n\r\ndata: b\r\n\r\n", 0, "[a][b]", 0},
    {"two events, CR", "data: a\r\rdata: b\r\r", 0, "[a][b]", 0},
    {"line endings mixed", "data: a\r\ndata: b\n\r\n", 0, "[a\nb]", 0},
    {"CR CR LF is two line ends", "data: a\r\r\ndata: b\n\n", 0, "[a][b]", 0},
    {"no space after the colon", "data:a\n\n", 0, "[a]", 0},
    {"only the first space is dropped", "data:  a \n\n", 0, "[ a ]", 0},
    {"empty data is an event", "data:\n\n", 0, "[]", 0},
    {"multi-line data joins with LF", "data: 1\ndata:2\ndata: 3\n\n", 0, "[1\n2\n3]", 0},
    {"an empty data line in the middle", "data: 1\ndata:\ndata: 3\n\n", 0, "[1\n\n3]", 0},
    {"comments are skipped", ": ping\n\n:\ndata: x\n: between\n\n", 0, "[x]", 0},
    {"other fields are skipped", "event: e\nid: 1\nretry: 5\ndata: y\nfoo: z\n\n", 0, "[y]", 0},
    {"a field named like data is not data", "dataX: 1\ndat: 2\ndata\n\n", 0, "", 0},
    {"blank lines alone make no event", "\n\n\r\n\r\r", 0, "", 0},
    {"an event without its blank line is not dispatched", "data: x\n", 0, "", 0},
    {"a line without its end is not dispatched", "data: x", 0, "", 0},
    {"a NUL in data is kept", "data: a\0b\n\n", 11, "[a\0b]", 5},
    {"JSON as LLM servers send it",
     "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n", 0,
     "[{\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}][[DONE]]", 0},
};

/* Feeds in[0, len) in pieces cut at the given points (sorted, ending with len). */
static int feed_cut(const char *in, size_t len, const size_t *cuts, size_t n_cuts, struct events *e)
{
    struct sse p;
    size_t at = 0;
    int rc = 0;

    sse_init(&p);
    for (size_t i = 0; i < n_cuts && rc == 0; i++) {
        rc = sse_feed(&p, in + at, cuts[i] - at, on_event, e);
        at = cuts[i];
    }
    sse_cleanup(&p);
    return rc;
}

static void run_sse_cases(void)
{
    for (size_t i = 0; i < UNIT_COUNT(sse_cases); i++) {
        const struct sse_case *k = &sse_cases[i];
        size_t len = k->len ? k->len : strlen(k->in);
        size_t want_len = k->want_len ? k->want_len : strlen(k->want);
        struct events e = {0};
        size_t cuts[600];

        unit_begin();
        cuts[0] = len;
        EQ_INT(feed_cut(k->in, len, cuts, 1, &e), 0);
        if (e.len != want_len || memcmp(e.text, k->want, want_len) != 0)
            UNIT_FAIL("whole: got \"%.200s\", want \"%.200s\"", e.text, k->want);
        for (size_t at = 0; at <= len && !unit_failed; at++) { /* two pieces, cut at each */
            e = (struct events){0};
            cuts[0] = at;
            cuts[1] = len;
            feed_cut(k->in, len, cuts, 2, &e);
            if (e.len != want_len || memcmp(e.text, k->want, want_len) != 0)
                UNIT_FAIL("cut at %zu: got \"%.200s\", want \"%.200s\"", at, e.text, k->want);
        }
        e = (struct events){0};
        for (size_t at = 0; at < len && at < UNIT_COUNT(cuts); at++) /* a byte at a time */
            cuts[at] = at + 1;
        feed_cut(k->in, len, cuts, len, &e);
        if (e.len != want_len || memcmp(e.text, k->want, want_len) != 0)
            UNIT_FAIL("byte by byte: got \"%.200s\", want \"%.200s\"", e.text, k->want);
        unit_end("sse: %s", k->name);
    }
}

/* A callback's non-zero value stops the feed and comes back from sse_feed. */
static void test_sse_stop(void)
{
    struct sse p;
    struct events e = {.stop_after = 1};
    const char *in = "data: a\n\ndata: b\n\n";

    sse_init(&p);
    EQ_INT(sse_feed(&p, in, strlen(in), on_event, &e), 7);
    CHECK(strcmp(e.text, "[a]") == 0);
    sse_cleanup(&p);
}

/* An event of SSE_MAX_EVENT bytes or more is -1; one just below the limit passes. */
static void test_sse_limit(void)
{
    size_t n = SSE_MAX_EVENT + 16;
    char *big = malloc(n);
    struct sse p;
    struct events e = {0};
    size_t line = SSE_MAX_EVENT - 1; /* the longest line the parser holds */

    REQUIRE(big);
    memcpy(big, "data: ", 6);
    memset(big + 6, 'x', line - 6);
    memcpy(big + line, "\n\n", 2);
    sse_init(&p);
    EQ_INT(sse_feed(&p, big, line + 2, on_event, &e), 0);
    EQ_INT(e.count, 1);
    sse_cleanup(&p);

    memset(big + 6, 'x', line + 1 - 6); /* one byte more */
    memcpy(big + line + 1, "\n\n", 2);
    e = (struct events){0};
    sse_init(&p);
    EQ_INT(sse_feed(&p, big, line + 3, on_event, &e), -1);
    EQ_INT(e.count, 0);
    sse_cleanup(&p);

    /* the limit is on the event: many short data lines add up */
    e = (struct events){0};
    sse_init(&p);
    int rc = 0;
    for (size_t i = 0; i < SSE_MAX_EVENT / 2 + 1 && rc == 0; i++) /* "x" and "\n" each */
        rc = sse_feed(&p, "data: x\n", 8, on_event, &e);
    EQ_INT(rc, -1);
    EQ_INT(e.count, 0);
    sse_cleanup(&p);
    free(big);
}

/* ---- provider parsers ---- */

#define SHOWN  "http://u/v1"
#define MAX_EV 8

/* What the parser emitted: "T(text)R(text)U(p,c)F(message)"; consecutive TEXT or
 * REASONING pieces are joined, so cases do not depend on how text is cut. */
struct emitted {
    char text[1024];
    size_t len;
    enum llm_event_kind last;
    bool open; /* the last T( or R( is still open */
};

static void put(struct emitted *e, const char *s, size_t n)
{
    if (e->len + n + 1 < sizeof e->text) {
        memcpy(e->text + e->len, s, n);
        e->len += n;
        e->text[e->len] = '\0';
    }
}

static void close_run(struct emitted *e)
{
    if (e->open)
        put(e, ")", 1);
    e->open = false;
}

static void on_emit(void *arg, enum llm_event_kind kind, const char *text, size_t len,
                    int64_t prompt_tokens, int64_t completion_tokens)
{
    struct emitted *e = arg;
    char buf[64];

    if ((kind == LLM_TEXT || kind == LLM_REASONING) && e->open && e->last == kind) {
        put(e, text, len);
        return;
    }
    close_run(e);
    e->last = kind;
    switch (kind) {
    case LLM_TEXT:
    case LLM_REASONING:
        put(e, kind == LLM_TEXT ? "T(" : "R(", 2);
        put(e, text, len);
        e->open = true;
        break;
    case LLM_USAGE:
        snprintf(buf, sizeof buf, "U(%lld,%lld)", (long long)prompt_tokens,
                 (long long)completion_tokens);
        put(e, buf, strlen(buf));
        break;
    case LLM_FAIL:
        put(e, "F(", 2);
        put(e, text, len);
        put(e, ")", 1);
        break;
    case LLM_DONE:
        put(e, "D", 1);
        break;
    case LLM_MODEL: /* test_model_once */
        break;
    }
}

/* Ends the rendering and compares it with want (ending in '*': a prefix of it). */
static void check_emitted(struct emitted *e, const char *want)
{
    size_t wl = strlen(want);

    close_run(e);
    if (wl && want[wl - 1] == '*') {
        if (strncmp(e->text, want, wl - 1) != 0)
            UNIT_FAIL("emitted \"%.200s\", want a start of \"%.*s\"", e->text, (int)wl - 1, want);
    } else if (strcmp(e->text, want) != 0) {
        UNIT_FAIL("emitted \"%.200s\", want \"%.200s\"", e->text, want);
    }
}

struct parser_case {
    const char *name;
    enum llm_provider provider;
    const char *events[MAX_EV];
    const char *want; /* ending in '*': a prefix of what was emitted */
    const char *rcs;  /* llm_parser_event's results, e.g. "0,0,-1" */
    bool done;
};

#define OA(delta) "{\"choices\":[{\"index\":0,\"delta\":" delta ",\"finish_reason\":null}]}"
#define GM(parts) "{\"candidates\":[{\"content\":{\"parts\":" parts ",\"role\":\"model\"}}]}"

static const struct parser_case parser_cases[] = {
    /* OpenAI-compatible */
    {"openai: delta content, then [DONE]",
     LLM_OPENAI,
     {OA("{\"role\":\"assistant\",\"content\":\"\"}"), OA("{\"content\":\"Hel\"}"),
      OA("{\"content\":\"lo\"}"), "{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}",
      "[DONE]"},
     "T(Hello)",
     "0,0,0,0,0",
     true},
    {"openai: reasoning_content and reasoning are reasoning",
     LLM_OPENAI,
     {OA("{\"reasoning_content\":\"think\"}"), OA("{\"reasoning\":\" more\"}"),
      OA("{\"content\":\"answer\"}")},
     "R(think more)T(answer)",
     "0,0,0",
     false},
    {"openai: usage",
     LLM_OPENAI,
     {"{\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,"
      "\"total_tokens\":15}}",
      "[DONE]"},
     "U(12,3)",
     "0,0",
     true},
    {"openai: content and usage in one event",
     LLM_OPENAI,
     {"{\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":1,"
      "\"completion_tokens\":2}}"},
     "T(x)U(1,2)",
     "0",
     false},
    {"openai: an error object fails the stream, and nothing after it counts",
     LLM_OPENAI,
     {OA("{\"content\":\"partial\"}"),
      "{\"error\":{\"message\":\"context too long\",\"type\":\"exceed_context_size_error\"}}",
      OA("{\"content\":\"late\"}"), "[DONE]"},
     "T(partial)F(LLM server at " SHOWN " reported an error: context too long)",
     "0,-1,-1,-1",
     false},
    {"openai: an error string",
     LLM_OPENAI,
     {"{\"error\":\"model not loaded\"}"},
     "F(LLM server at " SHOWN " reported an error: model not loaded)",
     "-1",
     false},
    {"openai: an error without a message",
     LLM_OPENAI,
     {"{\"error\":{\"code\":500}}"},
     "F(LLM server at " SHOWN " reported an error: (no message))",
     "-1",
     false},
    {"openai: truncated JSON is a malformed stream",
     LLM_OPENAI,
     {"{\"choices\":"},
     "F(LLM server at " SHOWN " sent a malformed stream: *",
     "-1",
     false},
    {"openai: an event that is not an object",
     LLM_OPENAI,
     {"[1,2]"},
     "F(LLM server at " SHOWN " sent a malformed stream: an event that is not a JSON object*",
     "-1",
     false},
    {"openai: no choices, no usage: nothing",
     LLM_OPENAI,
     {"{\"id\":\"x\"}", "{\"choices\":[]}", "{\"choices\":[{\"delta\":{\"content\":5}}]}"},
     "",
     "0,0,0",
     false},
    {"openai: [DONE] with other text is not [DONE]",
     LLM_OPENAI,
     {"[DONE] "},
     "F(LLM server at " SHOWN " sent a malformed stream: *",
     "-1",
     false},
    /* <think> splitting */
    {"think: tags split across pieces",
     LLM_OPENAI,
     {OA("{\"content\":\"<thi\"}"), OA("{\"content\":\"nk>idea</th\"}"),
      OA("{\"content\":\"ink>answer\"}")},
     "R(idea)T(answer)",
     "0,0,0",
     false},
    {"think: tags a character per piece",
     LLM_OPENAI,
     {OA("{\"content\":\"<\"}"), OA("{\"content\":\"t\"}"), OA("{\"content\":\"hink>\"}"),
      OA("{\"content\":\"r</\"}"), OA("{\"content\":\"think\"}"), OA("{\"content\":\">a\"}")},
     "R(r)T(a)",
     "0,0,0,0,0,0",
     false},
    {"think: what looks like a tag but is not stays text",
     LLM_OPENAI,
     {OA("{\"content\":\"<b>x</b> <thinking> <<think>y</think>z\"}")},
     "T(<b>x</b> <thinking> <)R(y)T(z)",
     "0",
     false},
    {"think: a closing tag outside is text",
     LLM_OPENAI,
     {OA("{\"content\":\"a</think>b\"}")},
     "T(a</think>b)",
     "0",
     false},
    {"think: a tag begun at the end comes out at the flush",
     LLM_OPENAI,
     {OA("{\"content\":\"answer <thi\"}")},
     "T(answer <thi)",
     "0",
     false},
    {"think: an unclosed think flushes its partial end tag as reasoning",
     LLM_OPENAI,
     {OA("{\"content\":\"<think>abc</th\"}")},
     "R(abc</th)",
     "0",
     false},
    /* Gemini */
    {"gemini: parts",
     LLM_GEMINI,
     {GM("[{\"text\":\"Hello\"},{\"text\":\" world\"}]"), GM("[{\"text\":\"!\"}]")},
     "T(Hello world!)",
     "0,0",
     false},
    {"gemini: thought parts are reasoning",
     LLM_GEMINI,
     {GM("[{\"text\":\"hmm\",\"thought\":true},{\"text\":\"Answer\"},{\"text\":\"x\","
         "\"thought\":false}]")},
     "R(hmm)T(Answerx)",
     "0",
     false},
    {"gemini: usageMetadata",
     LLM_GEMINI,
     {"{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}],\"usageMetadata\":{"
      "\"promptTokenCount\":4,\"candidatesTokenCount\":2,\"totalTokenCount\":6}}"},
     "T(x)U(4,2)",
     "0",
     false},
    {"gemini: blockReason with no candidates fails",
     LLM_GEMINI,
     {"{\"promptFeedback\":{\"blockReason\":\"SAFETY\"},\"usageMetadata\":{"
      "\"promptTokenCount\":9}}",
      GM("[{\"text\":\"late\"}]")},
     "F(the model blocked the prompt (SAFETY))",
     "-1,-1",
     false},
    {"gemini: blockReason beside candidates does not",
     LLM_GEMINI,
     {"{\"promptFeedback\":{\"blockReason\":\"OTHER\"},\"candidates\":[{\"content\":{"
      "\"parts\":[{\"text\":\"ok\"}]}}]}"},
     "T(ok)",
     "0",
     false},
    {"gemini: an error object",
     LLM_GEMINI,
     {"{\"error\":{\"code\":400,\"message\":\"API key not valid\",\"status\":"
      "\"INVALID_ARGUMENT\"}}"},
     "F(LLM server at " SHOWN " reported an error: API key not valid)",
     "-1",
     false},
    {"gemini: <think> in text is split too",
     LLM_GEMINI,
     {GM("[{\"text\":\"<think>a</think>b\"}]")},
     "R(a)T(b)",
     "0",
     false},
    {"gemini: [DONE] is not Gemini's",
     LLM_GEMINI,
     {"[DONE]"},
     "F(LLM server at " SHOWN " sent a malformed stream: *",
     "-1",
     false},
    {"gemini: a candidate without content, parts not text",
     LLM_GEMINI,
     {"{\"candidates\":[{\"finishReason\":\"STOP\"}]}", GM("[{\"inlineData\":{}},{\"text\":7}]")},
     "",
     "0,0",
     false},
};

static void run_parser_cases(void)
{
    for (size_t i = 0; i < UNIT_COUNT(parser_cases); i++) {
        const struct parser_case *k = &parser_cases[i];
        struct llm_parser p;
        struct emitted e = {0};
        char rcs[64] = "";
        size_t used = 0;

        unit_begin();
        llm_parser_init(&p, k->provider, SHOWN, on_emit, &e);
        for (size_t j = 0; j < MAX_EV && k->events[j]; j++) {
            int rc = llm_parser_event(&p, k->events[j], strlen(k->events[j]));
            used += (size_t)snprintf(rcs + used, sizeof rcs - used, "%s%d", j ? "," : "", rc);
        }
        if (!p.failed)
            llm_parser_flush(&p);
        check_emitted(&e, k->want);
        EQ_STR(rcs, k->rcs);
        EQ_INT(p.done, k->done);
        unit_end("%s", k->name);
    }
}

/* ---- llm_error_text ---- */

struct error_case {
    const char *body;
    size_t size;
    int rc;
    const char *want;
};

static const struct error_case error_cases[] = {
    {"{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":\"invalid_request_error\"}}",
     400, 0, "Incorrect API key provided"},
    {"{\"error\":\"plain text\"}", 400, 0, "plain text"},
    {"{\"error\":{\"message\":\"0123456789\"}}", 8, 0, "0123456"}, /* cut to the buffer */
    {"{\"error\":{\"code\":1}}", 400, -1, ""},
    {"{\"message\":\"no error member\"}", 400, -1, ""},
    {"[{\"error\":{\"message\":\"an array\"}}]", 400, -1, ""},
    {"<html>502 Bad Gateway</html>", 400, -1, ""},
    {"", 400, -1, ""},
    {NULL, 400, -1, ""},
};

static void run_error_cases(void)
{
    for (size_t i = 0; i < UNIT_COUNT(error_cases); i++) {
        const struct error_case *k = &error_cases[i];
        char out[400] = "";

        unit_begin();
        EQ_INT(llm_error_text(k->body, out, k->size), k->rc);
        if (k->rc == 0)
            EQ_STR(out, k->want);
        unit_end("llm_error_text(%.40s) -> %d", k->body ? k->body : "NULL", k->rc);
    }
}

/* ---- who said what (broker/llm_room.c, SPEC 9) ---- */

struct room_case {
    const char *role, *author, *content;
    const char *want; /* llm_content */
    bool named;       /* llm_author is the author */
};

static const struct room_case room_cases[] = {
    {"user", "Ana", "hi", "Ana: hi", true},
    {"user", "Zoë Ann", "ça va ✓", "Zoë Ann: ça va ✓", true},
    {"user", "Ana", "", "Ana: ", true},
    {"user", "Ana", "Ana: signed", "Ana: signed", true},
    {"user", "Ana", "Ana:no space", "Ana: Ana:no space", true},
    {"user", "Ana", "Ana", "Ana: Ana", true},
    {"user", "Ana", "Bob: quoting", "Ana: Bob: quoting", true},
    {"user", "Ana", "ana: other case", "Ana: ana: other case", true},
    {"user", NULL, "no author", "no author", false},
    {"user", "", "empty author", "empty author", false},
    {"user", "bad\nname", "a control character", "a control character", false},
    {"user", "\xff", "not UTF-8", "not UTF-8", false},
    {"assistant", "Ana", "a reply", "a reply", false},
};

static void run_room_cases(void)
{
    for (size_t i = 0; i < UNIT_COUNT(room_cases); i++) {
        const struct room_case *k = &room_cases[i];
        struct db_message m = {.content = (char *)k->content, .author_name = (char *)k->author};
        struct db_message_list l = {.v = &m, .n = 1};
        char *got, *sys, *bare;

        snprintf(m.role, sizeof m.role, "%s", k->role);
        unit_begin();
        got = llm_content(&m);
        sys = llm_system_text("P", &l);
        bare = llm_system_text(NULL, &l);
        EQ_STR(got, k->want);
        EQ_STR(llm_author(&m), k->named ? k->author : NULL);
        EQ_STR(sys, k->named ? "P\n\n" LLM_ROOM_PROMPT : "P");
        EQ_STR(bare, k->named ? LLM_ROOM_PROMPT : "");
        unit_end("llm_room case %zu (%s, %s): \"%s\"", i, k->role, k->named ? "named" : "no author",
                 k->want);
        free(got);
        free(sys);
        free(bare);
    }
}

static void test_room_any_author(void)
{
    struct db_message v[3] = {{.role = "user", .content = "x"},
                              {.role = "assistant", .content = "y", .author_name = "Ana"},
                              {.role = "user", .content = "z", .author_name = "Bo"}};
    struct db_message_list l = {.v = v, .n = 2}, none = {.v = v, .n = 0};
    char *s;

    s = llm_system_text("", &l); /* no user message with an author */
    EQ_STR(s, "");
    free(s);
    l.n = 3;
    s = llm_system_text("", &l);
    EQ_STR(s, LLM_ROOM_PROMPT);
    free(s);
    s = llm_system_text("P", &none);
    EQ_STR(s, "P");
    free(s);
}

/* ---- whole streams, one folder per case ---- */

/* Reads a whole file into a new NUL-terminated string (caller frees), or NULL. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = '\0';
        *len = (size_t)n;
    } else {
        free(buf);
        buf = NULL;
    }
    if (f)
        fclose(f);
    return buf;
}

static int to_parser(void *arg, const char *data, size_t len)
{
    return llm_parser_event(arg, data, len) < 0 ? -1 : 0;
}

/* Feeds a stream through the framing (step bytes at a time, 0: whole) into a parser. */
static void parse_stream(enum llm_provider provider, const char *stream, size_t len, size_t step,
                         struct emitted *e)
{
    struct sse sse;
    struct llm_parser p;
    int rc = 0;

    llm_parser_init(&p, provider, SHOWN, on_emit, e);
    sse_init(&sse);
    for (size_t at = 0; at < len && rc == 0; at += step ? step : len)
        rc = sse_feed(&sse, stream + at, step && len - at > step ? step : len - at, to_parser, &p);
    if (!p.failed)
        llm_parser_flush(&p);
    sse_cleanup(&sse);
}

static void run_one_stream(const char *dir, const char *name)
{
    char path[1024];
    char *provider, *stream, *want;
    size_t plen, slen, wlen;
    struct emitted whole = {0}, bytes = {0};

    unit_begin();
    snprintf(path, sizeof path, "%s/%s/provider", dir, name);
    provider = read_file(path, &plen);
    snprintf(path, sizeof path, "%s/%s/stream", dir, name);
    stream = read_file(path, &slen);
    snprintf(path, sizeof path, "%s/%s/expected", dir, name);
    want = read_file(path, &wlen);
    if (!provider || !stream || !want) {
        UNIT_FAIL("%.200s/%.60s needs the files provider, stream and expected", dir, name);
    } else {
        want[strcspn(want, "\n")] = '\0';
        provider[strcspn(provider, "\n")] = '\0';
        if (strcmp(provider, "openai") != 0 && strcmp(provider, "gemini") != 0)
            UNIT_FAIL("provider is '%s', want openai or gemini", provider);
        parse_stream(strcmp(provider, "gemini") == 0 ? LLM_GEMINI : LLM_OPENAI, stream, slen, 0,
                     &whole);
        check_emitted(&whole, want);
        parse_stream(strcmp(provider, "gemini") == 0 ? LLM_GEMINI : LLM_OPENAI, stream, slen, 1,
                     &bytes);
        check_emitted(&bytes, want);
    }
    free(provider);
    free(stream);
    free(want);
    unit_end("stream case %s", name);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_stream_dirs(void)
{
    const char *root = getenv("PARLEY_ROOT");
    char dir[512], *names[64];
    size_t n = 0;
    struct dirent *d;
    DIR *dp;

    snprintf(dir, sizeof dir, "%s/tests/unit/cases/stream", root && *root ? root : ".");
    if ((dp = opendir(dir))) {
        while ((d = readdir(dp)) && n < UNIT_COUNT(names))
            if (d->d_name[0] != '.')
                names[n++] = strdup(d->d_name);
        closedir(dp);
    }
    unit_begin();
    if (n == 0)
        UNIT_FAIL("no cases in %.400s", dir);
    unit_end("stream cases found in tests/unit/cases/stream");
    qsort(names, n, sizeof names[0], by_name);
    for (size_t i = 0; i < n; i++) {
        if (names[i])
            run_one_stream(dir, names[i]);
        free(names[i]);
    }
}

struct models {
    int n;
    char first[200];
};

static void on_model(void *arg, enum llm_event_kind kind, const char *text, size_t len,
                     int64_t prompt_tokens, int64_t completion_tokens)
{
    struct models *m = arg;

    if (kind != LLM_MODEL)
        return;
    if (m->n++ == 0)
        snprintf(m->first, sizeof m->first, "%.*s", (int)len, text);
}

static void model_case(enum llm_provider provider, const char *const *events, int want_n,
                       const char *want_first)
{
    struct llm_parser p;
    struct models m = {0};

    llm_parser_init(&p, provider, SHOWN, on_model, &m);
    for (size_t i = 0; events[i]; i++)
        llm_parser_event(&p, events[i], strlen(events[i]));
    EQ_INT(m.n, want_n);
    if (want_first)
        EQ_STR(m.first, want_first);
}

static void test_model_once(void)
{
    static const char *const openai[] = {
        "{\"model\":\"qwen2.5\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
        "{\"model\":\"other\",\"choices\":[{\"delta\":{\"content\":\"b\"}}]}", NULL};
    static const char *const gemini[] = {
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],"
        "\"modelVersion\":\"gemini-x\"}",
        "{\"candidates\":[],\"modelVersion\":\"gemini-y\"}", NULL};
    static const char *const odd[] = {"{\"model\":5,\"choices\":[]}", "{\"model\":\"\"}", NULL};

    model_case(LLM_OPENAI, openai, 1, "qwen2.5");
    model_case(LLM_GEMINI, gemini, 1, "gemini-x");
    model_case(LLM_OPENAI, odd, 0, NULL);
}

int main(void)
{
    static const struct unit_case cases[] = {
        {NULL, run_sse_cases},
        {"sse: the callback's value stops the feed", test_sse_stop},
        {"sse: SSE_MAX_EVENT bounds a line and an event", test_sse_limit},
        {NULL, run_parser_cases},
        {NULL, run_error_cases},
        {NULL, run_room_cases},
        {"llm_room: the room sentence once one user message of the context has an author",
         test_room_any_author},
        {NULL, run_stream_dirs},
        {"the model the server names is emitted once, the first one", test_model_once},
    };

    return unit_run(cases, UNIT_COUNT(cases));
}
