/* llm: talking to real models (OpenAI-compatible servers and Google Gemini).
 *
 * llm_providers.c builds each provider's request (loop thread) and parses its stream
 * events into text, reasoning, usage, done or failure (HTTP thread). llm_http.c runs the
 * transfers on its own thread with curl's multi interface and hands events back to the
 * loop through a queue and lws_cancel_service(). asst_llm.c is the assistant driver that
 * joins them to a reply. */
#ifndef PARLEY_LLM_H
#define PARLEY_LLM_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "db.h"

enum llm_provider { LLM_OPENAI, LLM_GEMINI };

enum llm_event_kind { LLM_TEXT, LLM_REASONING, LLM_USAGE, LLM_DONE, LLM_FAIL, LLM_MODEL };

/* One thing that happened to a transfer, handed from the HTTP thread to the loop. */
struct llm_event {
    struct llm_event *next;
    uint64_t req_id;
    enum llm_event_kind kind;
    char *text; /* TEXT, REASONING: the piece; FAIL: what went wrong, for people; MODEL: the
                 * model the server says answered. Always valid UTF-8 without NUL. */
    size_t len;
    int64_t prompt_tokens; /* USAGE; -1 when unknown */
    int64_t completion_tokens;
};

/* A transfer to start. Built on the loop, owned by the HTTP thread once started. */
struct llm_request {
    uint64_t id;
    enum llm_provider provider;
    char *url;         /* full URL of the call */
    char *shown_url;   /* --llm-url, as people configured it: for error messages */
    char *body;        /* JSON */
    char *auth_header; /* "Authorization: Bearer ..." or "x-goog-api-key: ...", or NULL */
    int timeout_s;
    int idle_timeout_s;
};

/* ---- llm_providers.c ---- */
/* Builds the request for a reply: system prompt (may be NULL), then context (ascending,
 * ending with the user message answered), with the authors of llm_room.c (SPEC 9). Returns a new
 * request (free with llm_request_free), or NULL when out of memory. */
struct llm_request *llm_request_new(enum llm_provider provider, const struct cfg *cfg,
                                    const char *model, const char *system_prompt,
                                    const struct db_message_list *context);
void llm_request_free(struct llm_request *r);
/* The default base URL and model of a provider. */
const char *llm_default_url(enum llm_provider provider);
const char *llm_default_model(enum llm_provider provider);

/* ---- llm_room.c: who said what (SPEC 9) ---- */
/* Added to the system prompt when some user message of the context has an author: it
 * reads true for one person as for several. */
#define LLM_ROOM_PROMPT                                                                            \
    "This is a chat room: several people may talk with you here. Each user message begins "        \
    "with its author's name and a colon (\"Name: message\"). Do not begin your replies "           \
    "with a name."
/* m's author as the LLM is told it: its display name when m is a user message with a
 * valid one, else NULL. Borrowed from m. */
const char *llm_author(const struct db_message *m);
/* m's content as sent: "Name: content" when m has an author (llm_author) and the content
 * does not already begin so, else the content. Returns a new string (free); NULL only
 * when out of memory. */
char *llm_content(const struct db_message *m);
/* The system prompt to send: configured (NULL or "" for none), followed (after a blank
 * line) by LLM_ROOM_PROMPT when some message of context has an author. Returns a new
 * string, "" for none (free); NULL only when out of memory. */
char *llm_system_text(const char *configured, const struct db_message_list *context);

/* Called by the parser for each event; text is borrowed for the call. */
typedef void (*llm_emit_fn)(void *arg, enum llm_event_kind kind, const char *text, size_t len,
                            int64_t prompt_tokens, int64_t completion_tokens);

/* Parses one provider's stream events. */
struct llm_parser {
    enum llm_provider provider;
    const char *shown_url;
    llm_emit_fn emit;
    void *arg;
    bool done;       /* the stream said it is complete ([DONE] for openai) */
    bool failed;     /* a FAIL was emitted */
    bool in_think;   /* inside <think>...</think> */
    bool model_told; /* the server's model name was emitted (LLM_MODEL, once) */
    size_t matched;  /* characters of the next tag seen at the end of the last piece */
};

void llm_parser_init(struct llm_parser *p, enum llm_provider provider, const char *shown_url,
                     llm_emit_fn emit, void *arg);
/* Parses one SSE event's data. Returns 0, or -1 after emitting FAIL. */
int llm_parser_event(struct llm_parser *p, const char *data, size_t len);
/* The stream ended: emits what the <think> splitter still holds. */
void llm_parser_flush(struct llm_parser *p);

/* Copies the message of a provider's JSON error body ({"error": {"message": ...}}) into
 * out. Returns 0, or -1 when body is not such an object. */
int llm_error_text(const char *body, char *out, size_t size);

/* ---- llm_http.c ---- */
struct llm_http;
/* Starts the HTTP thread; events wake ctx's loop. Returns NULL on failure (logged). */
struct llm_http *llm_http_new(struct lws_context *ctx);
/* Aborts every transfer and stops the thread. NULL is fine. */
void llm_http_free(struct llm_http *h);
/* Starts req (stolen). Loop thread. */
void llm_http_start(struct llm_http *h, struct llm_request *req);
/* Aborts the transfer now (its server sees the connection close); no more events for it.
 * Loop thread. */
void llm_http_cancel(struct llm_http *h, uint64_t id);
/* Every event waiting, oldest first (free each with llm_event_free). Loop thread. */
struct llm_event *llm_http_take(struct llm_http *h);
void llm_event_free(struct llm_event *e);

#endif
