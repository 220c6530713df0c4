/* llm_providers: the two wire protocols. Requests are built on the loop thread; stream
 * events are parsed on the HTTP thread. See docs/llm-decisions.md. */
#include "llm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonx.h"
#include "names.h"

#define OPENAI_URL "http://127.0.0.1:1234/v1"
#define GEMINI_URL "https://generativelanguage.googleapis.com/v1beta"

const char *llm_default_url(enum llm_provider provider)
{
    return provider == LLM_GEMINI ? GEMINI_URL : OPENAI_URL;
}

const char *llm_default_model(enum llm_provider provider)
{
    return provider == LLM_GEMINI ? "gemini-2.0-flash" : "default";
}

void llm_request_free(struct llm_request *r)
{
    if (!r)
        return;
    free(r->url);
    free(r->shown_url);
    free(r->body);
    free(r->auth_header);
    free(r);
}

/* A new copy of s with every byte but A-Z a-z 0-9 - . _ ~ percent-encoded: a model name
 * becomes one path segment of the Gemini URL, whatever it holds ("../", "?", "#"). */
static char *url_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1), *o = out;

    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* One context message as OpenAI sends it: role, content with its author's prefix, and
 * name when it has an author (llm_room.c). Returns a new reference, NULL when out of
 * memory. */
static json_t *openai_message(const struct db_message *m)
{
    const char *author = llm_author(m);
    char *content = llm_content(m), name[NAME_MAX_CHARS + 1];
    json_t *o = NULL;

    if (!content)
        return NULL;
    if (author)
        o = json_pack("{s:s, s:s, s:s}", "role", m->role, "name", name_llm(name, author), "content",
                      content);
    else
        o = json_pack("{s:s, s:s}", "role", m->role, "content", content);
    free(content);
    return o;
}

/* Returns a new reference, NULL when out of memory. */
static json_t *openai_body(const char *model, const char *system_prompt,
                           const struct db_message_list *context)
{
    json_t *messages = json_array();

    if (!messages)
        return NULL;
    if (*system_prompt && json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "system",
                                                                    "content", system_prompt)) < 0)
        goto fail;
    for (size_t i = 0; i < context->n; i++)
        if (json_array_append_new(messages, openai_message(&context->v[i])) < 0)
            goto fail;
    return json_pack("{s:s, s:b, s:{s:b}, s:o}", "model", model, "stream", 1, "stream_options",
                     "include_usage", 1, "messages", messages);
fail:
    json_decref(messages);
    return NULL;
}

/* Returns a new reference, NULL when out of memory. */
static json_t *gemini_body(const char *system_prompt, const struct db_message_list *context)
{
    json_t *contents = json_array(), *body;

    if (!contents)
        return NULL;
    for (size_t i = 0; i < context->n; i++) {
        const char *role = strcmp(context->v[i].role, "assistant") == 0 ? "model" : "user";
        char *text = llm_content(&context->v[i]); /* Gemini has no name: the prefix only */
        int rc = text ? json_array_append_new(contents, json_pack("{s:s, s:[{s:s}]}", "role", role,
                                                                  "parts", "text", text))
                      : -1;
        free(text);
        if (rc < 0) {
            json_decref(contents);
            return NULL;
        }
    }
    body = json_pack("{s:o}", "contents", contents);
    if (body && *system_prompt &&
        json_object_set_new(body, "systemInstruction",
                            json_pack("{s:[{s:s}]}", "parts", "text", system_prompt)) < 0) {
        json_decref(body);
        return NULL;
    }
    return body;
}

struct llm_request *llm_request_new(enum llm_provider provider, const struct cfg *cfg,
                                    const char *model, const char *system_prompt,
                                    const struct db_message_list *context)
{
    struct llm_request *r = calloc(1, sizeof *r);
    const char *base = cfg->llm_url ? cfg->llm_url : llm_default_url(provider);
    size_t blen = strlen(base);
    json_t *body = NULL;
    char *url = NULL, *system = llm_system_text(system_prompt, context);
    int n;

    if (!r || !system) {
        free(r);
        free(system);
        return NULL;
    }
    while (blen && base[blen - 1] == '/')
        blen--; /* "http://host/v1/" and "http://host/v1" are the same base */
    if (provider == LLM_GEMINI) {
        char *escaped = url_escape(model);
        n = escaped ? asprintf(&url, "%.*s/models/%s:streamGenerateContent?alt=sse", (int)blen,
                               base, escaped)
                    : -1;
        free(escaped);
        body = gemini_body(system, context);
        if (cfg->llm_api_key &&
            asprintf(&r->auth_header, "x-goog-api-key: %s", cfg->llm_api_key) < 0)
            r->auth_header = NULL;
    } else {
        n = asprintf(&url, "%.*s/chat/completions", (int)blen, base);
        body = openai_body(model, system, context);
        if (cfg->llm_api_key &&
            asprintf(&r->auth_header, "Authorization: Bearer %s", cfg->llm_api_key) < 0)
            r->auth_header = NULL;
    }
    r->provider = provider;
    r->url = n < 0 ? NULL : url;
    r->shown_url = strndup(base, blen);
    r->body = body ? jx_dump(body, NULL) : NULL;
    r->timeout_s = cfg->llm_timeout_s;
    r->idle_timeout_s = cfg->llm_idle_timeout_s;
    json_decref(body);
    free(system);
    if (!r->url || !r->shown_url || !r->body || (cfg->llm_api_key && !r->auth_header)) {
        llm_request_free(r);
        return NULL;
    }
    return r;
}

/* ---- parsing (HTTP thread) ---- */

void llm_parser_init(struct llm_parser *p, enum llm_provider provider, const char *shown_url,
                     llm_emit_fn emit, void *arg)
{
    memset(p, 0, sizeof *p);
    p->provider = provider;
    p->shown_url = shown_url;
    p->emit = emit;
    p->arg = arg;
}

static int fail(struct llm_parser *p, const char *fmt, const char *detail)
{
    char msg[512];

    snprintf(msg, sizeof msg, fmt, p->shown_url, detail);
    p->failed = true;
    p->emit(p->arg, LLM_FAIL, msg, strlen(msg), -1, -1);
    return -1;
}

static const char *think_tag(const struct llm_parser *p)
{
    return p->in_think ? "</think>" : "<think>";
}

/* Emits a run of text as visible text or reasoning, by where the splitter stands. */
static void emit_run(struct llm_parser *p, const char *s, size_t n)
{
    if (n)
        p->emit(p->arg, p->in_think ? LLM_REASONING : LLM_TEXT, s, n, -1, -1);
}

/* Emits text, routing what stands between <think> and </think> to reasoning. A tag may
 * be split across pieces: p->matched counts the characters of the tag seen so far (they
 * are the tag's first characters, so they need not be stored). */
static void split_think(struct llm_parser *p, const char *s, size_t n)
{
    size_t run = 0; /* start of the current run of plain text in s */

    for (size_t i = 0; i < n; i++) {
        const char *tag = think_tag(p);
        if (s[i] == tag[p->matched]) {
            if (p->matched == 0)
                emit_run(p, s + run, i - run);
            if (++p->matched == strlen(tag)) {
                p->in_think = !p->in_think;
                p->matched = 0;
            }
            run = i + 1;
            continue;
        }
        if (p->matched > 0) { /* what looked like a tag was text after all */
            emit_run(p, tag, p->matched);
            p->matched = 0;
            run = i;
            if (s[i] == tag[0]) {
                p->matched = 1;
                run = i + 1;
            }
        }
    }
    emit_run(p, s + run, n - run);
}

void llm_parser_flush(struct llm_parser *p)
{
    emit_run(p, think_tag(p), p->matched);
    p->matched = 0;
}

static void emit_string(struct llm_parser *p, enum llm_event_kind kind, const json_t *v)
{
    if (json_is_string(v) && json_string_length(v) > 0) {
        if (kind == LLM_TEXT)
            split_think(p, json_string_value(v), json_string_length(v));
        else
            p->emit(p->arg, kind, json_string_value(v), json_string_length(v), -1, -1);
    }
}

/* The message of an {"error": "..."} or {"error": {"message": "..."}} object, or NULL. */
static const char *error_message(const json_t *root)
{
    json_t *err = json_object_get(root, "error");

    return json_is_string(err) ? json_string_value(err)
                               : json_string_value(json_object_get(err, "message"));
}

int llm_error_text(const char *body, char *out, size_t size)
{
    json_t *root = body ? json_loads(body, 0, NULL) : NULL;
    const char *msg = error_message(root);

    if (msg)
        snprintf(out, size, "%s", msg);
    json_decref(root);
    return msg ? 0 : -1;
}

static int error_object(struct llm_parser *p, const json_t *root)
{
    const char *msg = error_message(root);

    if (!json_object_get(root, "error"))
        return 0;
    return fail(p, "LLM server at %s reported an error: %s", msg ? msg : "(no message)");
}

/* Emits the model the server names (OpenAI "model", Gemini "modelVersion"), once. */
static void emit_model(struct llm_parser *p, const json_t *v)
{
    if (p->model_told || !json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) > 128)
        return;
    p->model_told = true;
    p->emit(p->arg, LLM_MODEL, json_string_value(v), json_string_length(v), -1, -1);
}

static int openai_event(struct llm_parser *p, const json_t *root)
{
    json_t *choices = json_object_get(root, "choices");
    json_t *usage = json_object_get(root, "usage");

    emit_model(p, json_object_get(root, "model"));
    if (json_is_array(choices) && json_array_size(choices) > 0) {
        json_t *delta = json_object_get(json_array_get(choices, 0), "delta");
        emit_string(p, LLM_REASONING, json_object_get(delta, "reasoning_content"));
        emit_string(p, LLM_REASONING, json_object_get(delta, "reasoning"));
        emit_string(p, LLM_TEXT, json_object_get(delta, "content"));
    }
    if (json_is_object(usage))
        p->emit(p->arg, LLM_USAGE, NULL, 0,
                json_integer_value(json_object_get(usage, "prompt_tokens")),
                json_integer_value(json_object_get(usage, "completion_tokens")));
    return 0;
}

static int gemini_event(struct llm_parser *p, const json_t *root)
{
    json_t *candidates = json_object_get(root, "candidates");
    json_t *usage = json_object_get(root, "usageMetadata");
    json_t *feedback = json_object_get(root, "promptFeedback");
    const char *blocked = json_string_value(json_object_get(feedback, "blockReason"));

    emit_model(p, json_object_get(root, "modelVersion"));
    if (blocked && json_array_size(candidates) == 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "the model blocked the prompt (%s)", blocked);
        p->failed = true;
        p->emit(p->arg, LLM_FAIL, msg, strlen(msg), -1, -1);
        return -1;
    }
    if (json_array_size(candidates) > 0) {
        json_t *parts =
            json_object_get(json_object_get(json_array_get(candidates, 0), "content"), "parts");
        size_t i;
        json_t *part;
        json_array_foreach(parts, i, part)
        {
            if (json_is_true(json_object_get(part, "thought")))
                emit_string(p, LLM_REASONING, json_object_get(part, "text"));
            else
                emit_string(p, LLM_TEXT, json_object_get(part, "text"));
        }
    }
    if (json_is_object(usage))
        p->emit(p->arg, LLM_USAGE, NULL, 0,
                json_integer_value(json_object_get(usage, "promptTokenCount")),
                json_integer_value(json_object_get(usage, "candidatesTokenCount")));
    return 0;
}

int llm_parser_event(struct llm_parser *p, const char *data, size_t len)
{
    json_error_t err;
    json_t *root;
    int rc;

    if (p->failed)
        return -1;
    if (p->provider == LLM_OPENAI && len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        p->done = true;
        return 0;
    }
    /* "\u0000" is valid JSON: accept it (push_event drops the NUL) rather than end the
     * reply as a malformed stream */
    root = json_loadb(data, len, JSON_ALLOW_NUL, &err);
    if (!json_is_object(root)) {
        char detail[300];
        snprintf(detail, sizeof detail, "%s (line %d, column %d)",
                 root ? "an event that is not a JSON object" : err.text, err.line, err.column);
        json_decref(root);
        return fail(p, "LLM server at %s sent a malformed stream: %s", detail);
    }
    rc = error_object(p, root);
    if (rc == 0)
        rc = p->provider == LLM_GEMINI ? gemini_event(p, root) : openai_event(p, root);
    json_decref(root);
    return rc;
}
