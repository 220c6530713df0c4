/* commands: the interactive client's slash commands, one function each, in one table that
 * also makes /help and the "did you mean" suggestion. Not here: the events they lead to
 * (repl.c handles the broker's answers). Loop thread only. */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "repl.h"
#include "show.h"
#include "term.h"
#include "utf8.h"
#include "who.h"

extern char **environ;

struct command {
    const char *name;
    const char *args;
    const char *help;
    void (*run)(struct repl *r, const char *arg);
};

static const struct command commands[];

/* ---------------------------------------------------------------- helpers */

static void send_simple(struct repl *r, const char *type, bool with_session)
{
    json_t *msg = with_session && r->session[0]
                      ? json_pack("{s:s, s:s}", "type", type, "session_id", r->session)
                      : json_pack("{s:s}", "type", type);

    if (msg)
        repl_send(r, msg);
    json_decref(msg);
}

static bool need_session(struct repl *r)
{
    if (r->session[0])
        return true;
    term_line(TERM_YELLOW, "no session: /new to create one, /join ID to join one");
    return false;
}

static void emit_line(void *ud, const char *line)
{
    (void)ud;
    term_line(TERM_PLAIN, "%s", line);
}

/* Opens url with xdg-open when there is a display; never waits for the browser. */
static void open_url(const char *what, const char *url)
{
    const char *x = getenv("DISPLAY"), *wl = getenv("WAYLAND_DISPLAY");
    char *argv[] = {"xdg-open", (char *)url, NULL};
    posix_spawn_file_actions_t fa;
    pid_t pid;

    term_line(TERM_PLAIN, "%s: %s", what, url);
    if ((!x || !*x) && (!wl || !*wl)) {
        term_line(TERM_DIM, "(no display: open it in a browser)");
        return;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid, "xdg-open", &fa, NULL, argv, environ) == 0)
        term_line(TERM_DIM, "(opened with xdg-open)");
    else
        term_line(TERM_YELLOW, "(xdg-open is not available: open it in a browser)");
    posix_spawn_file_actions_destroy(&fa);
}

static void fmt_duration(int64_t ms, char *out, size_t size)
{
    int64_t s = ms / 1000;

    if (s < 60)
        snprintf(out, size, "%.1f s", (double)ms / 1000.0);
    else if (s < 3600)
        snprintf(out, size, "%lldm %llds", (long long)(s / 60), (long long)(s % 60));
    else
        snprintf(out, size, "%lldh %lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
}

/* ---------------------------------------------------------------- the commands */

static void c_help(struct repl *r, const char *arg)
{
    char left[40];

    term_line(TERM_BOLD, "Commands:");
    for (const struct command *c = commands; c->name; c++) {
        snprintf(left, sizeof left, "/%s%s%s", c->name, c->args ? " " : "", c->args ? c->args : "");
        term_line(TERM_PLAIN, "  %-16s %s", left, c->help);
    }
    term_line(TERM_PLAIN, "Anything else is a chat message. Ctrl-C stops a reply or clears the "
                          "line; Ctrl-D quits.");
}

static void c_stats(struct repl *r, const char *arg)
{
    const struct repl_stats *s = &r->stats;
    struct wsc_stats ws = wsc_stats(r->ws);
    unsigned streams = s->streams_ok + s->streams_failed;
    char dur[32];

    fmt_duration(clock_mono_ms() - s->started_ms, dur, sizeof dur);
    term_line(TERM_BOLD, "Client statistics:");
    term_line(TERM_PLAIN, "  session duration:      %s", dur);
    term_line(TERM_PLAIN, "  messages sent:         %u", s->messages_sent);
    term_line(TERM_PLAIN, "  successful streams:    %u", s->streams_ok);
    term_line(TERM_PLAIN, "  failed streams:        %u", s->streams_failed);
    term_line(TERM_PLAIN, "  chunks received:       %lu", s->chunks);
    term_line(TERM_PLAIN, "  avg chunks per stream: %.1f",
              streams ? (double)s->chunks / streams : 0.0);
    term_line(TERM_PLAIN, "  connection attempts:   %u", ws.attempts);
    term_line(TERM_PLAIN, "  reconnections:         %u", ws.reconnections);
    term_line(TERM_PLAIN, "  sessions created:      %u", s->sessions_created);
    term_line(TERM_PLAIN, "  avg response time:     %.3f s",
              s->responses ? s->response_s_total / s->responses : 0.0);
    term_line(TERM_PLAIN, "  connection:            %s", wsc_state_name(wsc_state(r->ws)));
    if (r->session[0])
        term_line(TERM_PLAIN, "  current session:       %s (%lld messages)", r->session,
                  (long long)r->message_count);
    else
        term_line(TERM_PLAIN, "  current session:       none");
}

static void print_object(const json_t *obj, const char *indent)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)obj, key, v)
    {
        if (json_is_object(v)) {
            term_line(TERM_PLAIN, "%s%s:", indent, key);
            print_object(v, "    ");
            continue;
        }
        if (json_is_string(v)) {
            term_line(TERM_PLAIN, "%s%-24s %s", indent, key, json_string_value(v));
            continue;
        }
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
        term_line(TERM_PLAIN, "%s%-24s %s", indent, key, text ? text : "?");
        free(text);
    }
}

static void c_server(struct repl *r, const char *arg)
{
    struct crest_reply rep;

    if (repl_rest(r, "GET", "/stats", NULL, &rep))
        return;
    term_line(TERM_BOLD, "Server statistics (%s/stats):", r->rest.base);
    print_object(rep.json, "  ");
    crest_reply_cleanup(&rep);
}

static void c_health(struct repl *r, const char *arg)
{
    struct crest_reply rep;
    json_t *b;

    if (repl_rest(r, "GET", "/health", NULL, &rep))
        return;
    b = json_object_get(rep.json, "broker");
    term_line(TERM_PLAIN, "status %s, database %s, broker %s (%lld connections), uptime %lld s",
              json_string_value(json_object_get(rep.json, "status")),
              json_string_value(json_object_get(rep.json, "database")),
              json_is_true(json_object_get(b, "up")) ? "up" : "down",
              (long long)json_integer_value(json_object_get(b, "connections")),
              (long long)json_integer_value(json_object_get(rep.json, "uptime_s")));
    crest_reply_cleanup(&rep);
}

static void c_docs(struct repl *r, const char *arg)
{
    char url[1024];

    crest_url(&r->rest, "/docs", url, sizeof url);
    open_url("API documentation", url);
}

static void c_demo(struct repl *r, const char *arg)
{
    char url[1024];

    crest_url(&r->rest, "/demo", url, sizeof url);
    open_url("Web demo", url);
}

static void c_clear(struct repl *r, const char *arg)
{
    char path[64];
    struct crest_reply rep;

    if (!*arg) {
        term_clear_screen();
        return;
    }
    if (strcmp(arg, "history") != 0) {
        term_line(TERM_YELLOW, "usage: /clear (the screen) or /clear history (the session's)");
        return;
    }
    if (!need_session(r))
        return;
    snprintf(path, sizeof path, "/sessions/%s/clear", r->session);
    if (repl_rest(r, "POST", path, NULL, &rep))
        return;
    term_line(TERM_PLAIN, "cleared %lld messages",
              (long long)json_integer_value(json_object_get(rep.json, "cleared")));
    crest_reply_cleanup(&rep);
}

static void c_quit(struct repl *r, const char *arg)
{
    r->quit = true;
}

static void c_connect(struct repl *r, const char *arg)
{
    if (wsc_state(r->ws) == WSC_CONNECTED) {
        term_line(TERM_PLAIN, "already connected to %s", r->cfg->url);
        return;
    }
    r->user_offline = false;
    term_line(TERM_PLAIN, "connecting to %s", r->cfg->url);
    wsc_connect(r->ws);
    repl_update_prompt(r);
}

static void c_disconnect(struct repl *r, const char *arg)
{
    if (wsc_state(r->ws) == WSC_OFFLINE) {
        term_line(TERM_PLAIN, "not connected");
        return;
    }
    r->user_offline = true;
    repl_typing_stop(r);
    wsc_disconnect(r->ws);
    repl_update_prompt(r);
}

static void c_ping(struct repl *r, const char *arg)
{
    repl_ping(r);
}

static void leave_current(struct repl *r)
{
    if (r->session[0] && wsc_state(r->ws) == WSC_CONNECTED)
        send_simple(r, "leave_session", true);
}

static void c_new(struct repl *r, const char *arg)
{
    if (wsc_state(r->ws) == WSC_CONNECTED)
        leave_current(r);
    repl_create(r, arg);
}

static void c_info(struct repl *r, const char *arg)
{
    char path[64];
    struct crest_reply rep;

    term_line(TERM_PLAIN, "  broker:        %s (%s)", r->cfg->url,
              wsc_state_name(wsc_state(r->ws)));
    term_line(TERM_PLAIN, "  REST:          %s", r->rest.base);
    term_line(TERM_PLAIN, "  connection id: %s", r->connection_id[0] ? r->connection_id : "-");
    term_line(TERM_PLAIN, "  assistant:     %s", r->model[0] ? r->model : "-");
    if (!r->session[0]) {
        term_line(TERM_PLAIN, "  session:       none");
        return;
    }
    term_line(TERM_PLAIN, "  session:       %s", r->session);
    term_line(TERM_PLAIN, "  messages:      %lld", (long long)r->message_count);
    term_line(TERM_PLAIN, "  clients:       %lld", (long long)r->clients);
    snprintf(path, sizeof path, "/sessions/%s?limit=1", r->session);
    if (repl_rest(r, "GET", path, NULL, &rep))
        return;
    {
        const char *title = json_string_value(json_object_get(rep.json, "title"));
        const char *created = json_string_value(json_object_get(rep.json, "created_at"));
        char age[16];
        show_age(created, age, sizeof age);
        term_line(TERM_PLAIN, "  title:         %s", title ? title : "(none)");
        term_line(TERM_PLAIN, "  model:         %s",
                  json_string_value(json_object_get(rep.json, "model")));
        term_line(TERM_PLAIN, "  created:       %s (%s ago)", created ? created : "?", age);
    }
    crest_reply_cleanup(&rep);
}

static void c_sessions(struct repl *r, const char *arg)
{
    struct crest_reply rep;

    if (repl_rest(r, "GET", "/sessions?limit=100", NULL, &rep))
        return;
    show_sessions(rep.json, r->session, emit_line, NULL);
    crest_reply_cleanup(&rep);
}

static void c_join(struct repl *r, const char *arg)
{
    if (!clock_is_hex(arg, 16)) {
        term_line(TERM_YELLOW, "usage: /join ID (a session id: 16 hex characters, see /sessions)");
        return;
    }
    if (strcmp(arg, r->session) == 0) {
        term_line(TERM_PLAIN, "already in session %s", arg);
        return;
    }
    if (wsc_state(r->ws) != WSC_CONNECTED) {
        term_line(TERM_YELLOW, "not connected; /connect first");
        return;
    }
    leave_current(r);
    r->first_join = true;
    repl_join(r, arg, 0);
}

static void c_leave(struct repl *r, const char *arg)
{
    if (need_session(r))
        send_simple(r, "leave_session", true);
}

static void c_history(struct repl *r, const char *arg)
{
    char path[96];
    struct crest_reply rep;
    int64_t n = 20;
    json_t *msgs, *m;
    size_t i;

    if (*arg && cfg_parse_int(arg, 1, 1000, &n)) {
        term_line(TERM_YELLOW, "usage: /history [N] (N from 1 to 1000, default 20)");
        return;
    }
    if (!need_session(r))
        return;
    snprintf(path, sizeof path, "/sessions/%s?limit=%lld", r->session, (long long)n);
    if (repl_rest(r, "GET", path, NULL, &rep))
        return;
    msgs = json_object_get(rep.json, "messages");
    term_line(TERM_BOLD, "Last %zu message(s) of session %s:", json_array_size(msgs), r->session);
    json_array_foreach(msgs, i, m)
    {
        char *line = show_message(m);
        if (line)
            term_line(TERM_PLAIN, "%s", line);
        free(line);
    }
    crest_reply_cleanup(&rep);
}

static void c_stop(struct repl *r, const char *arg)
{
    if (need_session(r))
        send_simple(r, "stop", true);
}

/* The name is the connection's, given with join_session (SPEC 9): /name sends a
 * join_session of the current session with it, without since (no replay); the answer
 * confirms it (repl.c). Offline or without a session it is kept for the next join. */
static void c_name(struct repl *r, const char *arg)
{
    char why[128], shown[WHO_SHOWN_LEN];

    if (!*arg) {
        term_line(TERM_PLAIN, "your name: %s (/name NEW to change it)",
                  r->name[0] ? who_shown(r->name, shown) : "the service's default");
        return;
    }
    if (!who_check(arg, why, sizeof why)) {
        term_line(TERM_YELLOW, "cannot use that name: %s", why);
        return;
    }
    if (!r->session[0] || wsc_state(r->ws) != WSC_CONNECTED) {
        snprintf(r->name, sizeof r->name, "%s", arg);
        term_line(TERM_PLAIN, "your name will be %s from the next session you join",
                  who_shown(r->name, shown));
        return;
    }
    snprintf(r->renaming, sizeof r->renaming, "%s", arg);
    {
        json_t *msg = json_pack("{s:s, s:s, s:s}", "type", "join_session", "session_id", r->session,
                                "name", arg);
        if (!msg || repl_send(r, msg))
            r->renaming[0] = '\0';
        json_decref(msg);
    }
}

/* PATCH /sessions/{id} {reply_mode}; the answer is shown at once, so the session_changed
 * every member gets (this client too) finds nothing new here. */
static void c_mode(struct repl *r, const char *arg)
{
    char path[64], body[64], old[POLICY_MODE_LEN];
    struct crest_reply rep;
    const char *mode, *title;

    if (!*arg) {
        if (!need_session(r))
            return;
        if (r->reply_mode[0])
            repl_show_mode(r, r->reply_mode, false);
        term_line(TERM_PLAIN, "/mode always|mention|off changes it for everyone in the session");
        return;
    }
    if (!policy_mode_valid(arg)) {
        char shown[UTF8_SHOWN_LEN];
        term_line(TERM_YELLOW,
                  "unknown reply mode '%s'; use /mode always (every message is "
                  "answered), /mode mention (only messages with @assistant) or "
                  "/mode off (none)",
                  utf8_shown(shown, arg));
        return;
    }
    if (!need_session(r))
        return;
    snprintf(path, sizeof path, "/sessions/%s", r->session);
    snprintf(body, sizeof body, "{\"reply_mode\":\"%s\"}", arg);
    if (repl_rest(r, "PATCH", path, body, &rep))
        return;
    mode = json_string_value(json_object_get(rep.json, "reply_mode"));
    title = json_string_value(json_object_get(rep.json, "title"));
    snprintf(old, sizeof old, "%s", r->reply_mode);
    if (mode && policy_mode_valid(mode)) {
        snprintf(r->reply_mode, sizeof r->reply_mode, "%s", mode);
        if (strcmp(old, mode) == 0)
            term_line(TERM_PLAIN, "the reply mode is %s already", mode);
        else
            repl_show_mode(r, mode, true);
    }
    snprintf(r->title, sizeof r->title, "%s", title ? title : "");
    r->title_known = true;
    crest_reply_cleanup(&rep);
}

static void c_regenerate(struct repl *r, const char *arg)
{
    if (need_session(r))
        send_simple(r, "regenerate", true);
}

static const struct command commands[] = {
    {"help", NULL, "this list", c_help},
    {"stats", NULL, "client statistics", c_stats},
    {"server", NULL, "server statistics (REST /stats)", c_server},
    {"health", NULL, "service health (REST /health)", c_health},
    {"docs", NULL, "the API documentation URL (opened when there is a display)", c_docs},
    {"demo", NULL, "the web demo URL (opened when there is a display)", c_demo},
    {"clear", "[history]", "clear the screen (or the session's history)", c_clear},
    {"quit", NULL, "leave the client", c_quit},
    {"connect", NULL, "connect to the broker", c_connect},
    {"disconnect", NULL, "disconnect (no automatic reconnection)", c_disconnect},
    {"ping", NULL, "round-trip time to the broker", c_ping},
    {"new", "[TITLE]", "create a session and switch to it", c_new},
    {"info", NULL, "the connection and the current session", c_info},
    {"sessions", NULL, "all sessions (* marks the current one)", c_sessions},
    {"join", "ID", "join a session", c_join},
    {"leave", NULL, "leave the current session", c_leave},
    {"history", "[N]", "the last N messages (20)", c_history},
    {"stop", NULL, "stop the reply being generated", c_stop},
    {"name", "[NEW]", "your name in the session (show or change it)", c_name},
    {"mode", "[MODE]", "when the assistant answers: always, mention (@assistant) or off", c_mode},
    {"regenerate", NULL, "have the assistant answer the last message again", c_regenerate},
    {NULL, NULL, NULL, NULL},
};

int cmd_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int row[64], prev, tmp;

    if (lb >= sizeof row / sizeof row[0])
        return (int)(la > lb ? la : lb);
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int best = prev + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            tmp = row[j];
            row[j] = best;
            prev = tmp;
        }
    }
    return row[lb];
}

const char *cmd_suggest(const char *name)
{
    const char *best = NULL;
    int best_d = 1 << 30;

    for (const struct command *c = commands; c->name; c++) {
        int d = cmd_edit_distance(name, c->name);
        if (d < best_d) {
            best_d = d;
            best = c->name;
        }
    }
    /* close enough to be a typo: at most 2 edits, and fewer than half the letters */
    if (best && best_d <= 2 && (size_t)best_d * 2 < strlen(best) + 1)
        return best;
    return NULL;
}

void cmd_run(struct repl *r, const char *line)
{
    char name[32];
    const char *arg;
    size_t n;

    line++; /* past '/' */
    n = strcspn(line, " \t");
    arg = line + n;
    while (*arg == ' ' || *arg == '\t')
        arg++;
    snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), line);
    for (const struct command *c = commands; c->name; c++) {
        if (strcmp(c->name, name) == 0) {
            c->run(r, arg);
            return;
        }
    }
    if (strcmp(name, "exit") == 0) {
        c_quit(r, arg);
        return;
    }
    {
        const char *near = cmd_suggest(name);
        if (near)
            term_line(TERM_YELLOW, "unknown command /%s; did you mean /%s?", name, near);
        else
            term_line(TERM_YELLOW, "unknown command /%s; /help lists the commands", name);
    }
}
