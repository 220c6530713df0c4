/* script: `parley send`, `parley sessions` and `parley history`. send speaks WebSocket
 * (so the reply streams to stdout as it is produced); the others are single REST calls.
 * Not here: anything interactive (repl.c). */
#include "script.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "crest.h"
#include "show.h"
#include "who.h"
#include "wsconn.h"

#define STDIN_MAX (16 * 1024 * 1024)

struct sender {
    const struct cfg *cfg;
    struct wsc *ws;
    const char *text;
    char name[NAME_LEN]; /* sent with the join (SPEC 9); "": the service's default */
    char cmid[40];
    char rid[17];
    bool no_assistant;
    bool acked;
    bool done;
    bool ended_newline; /* the last byte printed was '\n' */
    int status;
    struct wsc_timer deadline;
};

static void finish(struct sender *s, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void finish(struct sender *s, int status, const char *fmt, ...)
{
    va_list ap;

    if (s->done)
        return;
    s->done = true;
    s->status = status;
    if (fmt) {
        fprintf(stderr, "parley: ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\n");
    }
}

static void send_json(struct sender *s, json_t *msg)
{
    if (!msg || wsc_send(s->ws, msg))
        finish(s, 1, "cannot send to %s", s->cfg->url);
    json_decref(msg);
}

static void on_message(void *ud, json_t *m)
{
    struct sender *s = ud;
    const char *type = json_string_value(json_object_get(m, "type"));
    const char *rid = json_string_value(json_object_get(m, "response_id"));

    if (!type || s->done)
        return;
    if (strcmp(type, "connected") == 0) {
        const char *model =
            json_string_value(json_object_get(json_object_get(m, "server_info"), "model"));
        s->no_assistant = model && strcmp(model, "none") == 0;
        json_t *msg = s->cfg->session ? json_pack("{s:s, s:s}", "type", "join_session",
                                                  "session_id", s->cfg->session)
                                      : json_pack("{s:s}", "type", "create_session");
        if (msg && s->name[0])
            json_object_set_new(msg, "name", json_string(s->name));
        send_json(s, msg);
    } else if (strcmp(type, "session_created") == 0 || strcmp(type, "session_joined") == 0) {
        send_json(s, json_pack("{s:s, s:s, s:s}", "type", "chat", "message", s->text,
                               "client_msg_id", s->cmid));
    } else if (strcmp(type, "session_update") == 0) {
        json_t *msg = json_object_get(m, "message");
        const char *cmid = json_string_value(json_object_get(msg, "client_msg_id"));
        const char *kind = json_string_value(json_object_get(m, "update_type"));
        if (kind && strcmp(kind, "message_added") == 0 && cmid && strcmp(cmid, s->cmid) == 0) {
            s->acked = true;
            if (s->no_assistant)
                finish(s, 0, NULL);
        } else if (kind && (strcmp(kind, "session_deleted") == 0 ||
                            (strcmp(kind, "history_cleared") == 0 && s->acked))) {
            finish(s, 1, "the session was %s before the reply ended",
                   kind[0] == 's' ? "deleted" : "cleared");
        }
    } else if (strcmp(type, "response_start") == 0) {
        /* replies come one at a time in message order: the first to start after our
         * message was stored is ours */
        if (s->acked && !s->rid[0] && rid)
            snprintf(s->rid, sizeof s->rid, "%s", rid);
    } else if (strcmp(type, "chunk") == 0) {
        const char *text = json_string_value(json_object_get(m, "text"));
        if (s->rid[0] && rid && strcmp(rid, s->rid) == 0 && text && *text) {
            fputs(text, stdout);
            fflush(stdout);
            s->ended_newline = text[strlen(text) - 1] == '\n';
        }
    } else if (strcmp(type, "response_complete") == 0) {
        if (!s->rid[0] || !rid || strcmp(rid, s->rid) != 0)
            return;
        if (!s->ended_newline)
            fputs("\n", stdout);
        fflush(stdout);
        if (json_is_true(json_object_get(m, "stopped")))
            finish(s, 1, "the reply was stopped before it ended");
        else
            finish(s, 0, NULL);
    } else if (strcmp(type, "error") == 0) {
        const char *code = json_string_value(json_object_get(m, "code"));
        const char *text = json_string_value(json_object_get(m, "message"));
        if (s->rid[0])
            fputs("\n", stdout);
        finish(s, 1, "%s: %s", code ? code : "error", text ? text : "");
    }
}

static void on_close(void *ud, const char *why, bool was_open, int retry_ms)
{
    struct sender *s = ud;

    if (s->rid[0] && !s->done)
        fputs("\n", stdout);
    finish(s, 1, "%s %s: %s", was_open ? "connection closed by" : "cannot connect to", s->cfg->url,
           why);
}

static void on_deadline(void *ud)
{
    struct sender *s = ud;

    if (s->rid[0])
        fputs("\n", stdout);
    finish(s, 1, "no %s within %d s (--timeout)", s->rid[0] ? "complete reply" : "reply",
           s->cfg->timeout_s);
}

static const struct wsc_handler send_handler = {
    .on_message = on_message,
    .on_close = on_close,
};

/* Reads all of stdin into a new string (free with free); NULL on error or too much. */
static char *read_stdin(void)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap), *p;
    ssize_t n;

    if (!buf)
        return NULL;
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= STDIN_MAX)
                goto fail;
            p = realloc(buf, cap *= 2);
            if (!p)
                goto fail;
            buf = p;
        }
        n = read(STDIN_FILENO, buf + len, cap - len - 1);
        if (n < 0)
            goto fail;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
fail:
    free(buf);
    return NULL;
}

/* The words joined with single spaces; a new string (free with free). */
static char *join_words(int argc, char **argv)
{
    size_t len = 1;
    char *out;

    for (int i = 0; i < argc; i++)
        len += strlen(argv[i]) + 1;
    out = calloc(1, len);
    if (!out)
        return NULL;
    for (int i = 0; i < argc; i++) {
        if (i)
            strcat(out, " ");
        strcat(out, argv[i]);
    }
    return out;
}

int script_send(const struct cfg *cfg, int argc, char **argv)
{
    struct sender s;
    char *text = NULL, rnd[17];
    size_t n;
    int ret = 1;

    memset(&s, 0, sizeof s);
    if (cfg->session && !clock_is_hex(cfg->session, 16)) {
        fprintf(stderr, "parley: --session wants a session id (16 hex characters), got '%s'\n",
                cfg->session);
        return 2;
    }
    text = argc > 0 ? join_words(argc, argv) : read_stdin();
    if (!text) {
        fprintf(stderr, "parley: cannot read the message from stdin\n");
        return 1;
    }
    for (n = strlen(text); n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r');)
        text[--n] = '\0';
    if (!*text) {
        fprintf(stderr, "parley: nothing to send: give TEXT or pipe it on stdin\n");
        free(text);
        return 2;
    }
    s.cfg = cfg;
    s.text = text;
    if (cfg->name) /* checked by main */
        snprintf(s.name, sizeof s.name, "%s", cfg->name);
    else
        who_default(s.name);
    s.ended_newline = true;
    if (clock_random_hex(rnd, 8)) {
        free(text);
        return 1;
    }
    snprintf(s.cmid, sizeof s.cmid, "cli-%s", rnd);
    s.ws = wsc_new(cfg->url, cfg->api_key, false, &send_handler, &s);
    if (!s.ws)
        goto out;
    wsc_timer_set(s.ws, &s.deadline, cfg->timeout_s * 1000, on_deadline, &s);
    wsc_connect(s.ws);
    while (!s.done)
        if (wsc_run(s.ws))
            finish(&s, 1, "the event loop failed");
    ret = s.status;
out:
    wsc_free(s.ws);
    free(text);
    return ret;
}

/* GET path: prints the JSON body as is (json) or hands it to the caller. Returns 0 with
 * *out set (caller cleans up), or 1 after printing why. */
static int get(const struct cfg *cfg, const char *path, struct crest_reply *out)
{
    struct crest c = {.base = cfg->rest_url, .api_key = cfg->api_key, .timeout_s = cfg->timeout_s};
    char err[512];

    if (crest_call(&c, "GET", path, NULL, out, err, sizeof err)) {
        fprintf(stderr, "parley: %s\n", err);
        return 1;
    }
    if (out->status >= 400 || !out->json) {
        fprintf(stderr, "parley: GET %s: %s\n", path, crest_error_text(out));
        crest_reply_cleanup(out);
        return 1;
    }
    return 0;
}

static void print_body(const struct crest_reply *r)
{
    fwrite(r->body, 1, r->len, stdout);
    if (r->len == 0 || r->body[r->len - 1] != '\n')
        fputs("\n", stdout);
}

static void emit_stdout(void *ud, const char *line)
{
    (void)ud;
    printf("%s\n", line);
}

int script_sessions(const struct cfg *cfg)
{
    struct crest_reply r;

    if (get(cfg, "/sessions?limit=500", &r))
        return 1;
    if (cfg->json)
        print_body(&r);
    else
        show_sessions(r.json, NULL, emit_stdout, NULL);
    crest_reply_cleanup(&r);
    return fflush(stdout) == 0 ? 0 : 1;
}

int script_history(const struct cfg *cfg, const char *id)
{
    struct crest_reply r;
    char path[64];
    json_t *m;
    size_t i;

    if (!clock_is_hex(id, 16)) {
        fprintf(stderr, "parley: history wants a session id (16 hex characters), got '%s'\n", id);
        return 2;
    }
    snprintf(path, sizeof path, "/sessions/%s?limit=1000", id);
    if (get(cfg, path, &r))
        return 1;
    if (cfg->json) {
        print_body(&r);
    } else {
        json_array_foreach(json_object_get(r.json, "messages"), i, m)
        {
            char *line = show_message(m);
            if (line)
                printf("%s\n", line);
            free(line);
        }
    }
    crest_reply_cleanup(&r);
    return fflush(stdout) == 0 ? 0 : 1;
}
