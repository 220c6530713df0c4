/* repl: interactive mode. Connects, creates or joins a session, turns typed lines into
 * chats and broker events into lines on screen; rejoins with `since` after a reconnect and
 * resends what was not acknowledged. Not here: the slash commands (commands.c), the screen
 * mechanics (term.c), the socket (wsconn.c). Loop thread only. */
#include "repl.h"

#include <editline/readline.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "term.h"
#include "who.h"

#define TYPING_PAUSE_MS   3000 /* typing_stop after this long without a keystroke */
#define TYPING_REFRESH_MS 5000 /* repeat typing_start (the broker expires it after 10 s) */
#define REPLAY_SHOWN      10   /* on the first join, the newest messages shown */

static volatile sig_atomic_t got_sigint;

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void on_sigint(int sig)
{
    (void)sig;
    got_sigint = 1;
}

/* ---------------------------------------------------------------- helpers */

static void short_id(const char *id, char out[9])
{
    snprintf(out, 9, "%.8s", id && *id ? id : "-");
}

/* A member named in an event: its name (who_shown), or "user 1a2b3c" from a service that
 * sends no names. */
static void member(const char *conn, const char *name, char *out, size_t size)
{
    char shown[WHO_SHOWN_LEN];

    if (name)
        snprintf(out, size, "%s", who_shown(name, shown));
    else
        snprintf(out, size, "user %.6s", conn ? conn : "?");
}

/* Who wrote a user message m: "you", its author's name, "rest" (added over REST without a
 * name), or "user 1a2b3c" (stored before names existed). */
static void author(const struct repl *r, const json_t *m, char *out, size_t size)
{
    const json_t *a = json_object_get(m, "author");
    const char *id = json_string_value(json_object_get(m, "connection_id"));
    const char *name = json_string_value(json_object_get(a, "name"));

    if (!id)
        id = json_string_value(json_object_get(a, "connection_id"));
    if (id && strcmp(id, r->connection_id) == 0)
        snprintf(out, size, "you");
    else if (!id && !name)
        snprintf(out, size, "rest");
    else
        member(id, name, out, size);
}

int repl_send(struct repl *r, const json_t *msg)
{
    if (wsc_send(r->ws, msg) == 0)
        return 0;
    term_line(TERM_YELLOW, "not connected (%s); /connect to connect",
              wsc_state_name(wsc_state(r->ws)));
    return -1;
}

static void send_quiet(struct repl *r, json_t *msg)
{
    if (msg)
        wsc_send(r->ws, msg);
    json_decref(msg);
}

void repl_update_prompt(struct repl *r)
{
    char prompt[256], sid[9];
    enum wsc_state st = wsc_state(r->ws);
    enum term_style sty = st == WSC_CONNECTED ? TERM_GREEN
                          : st == WSC_OFFLINE ? TERM_RED
                                              : TERM_YELLOW;
    bool c = term_colour();

    short_id(r->session, sid);
    snprintf(prompt, sizeof prompt, "[%s%s%s%s%s | %s%s%s%s%s] > ", c ? "\001" : "",
             term_sty(TERM_BOLD), c ? "\002" : "", r->session[0] ? sid : "no session",
             c ? "\001\033[0m\002" : "", c ? "\001" : "", term_sty(sty), c ? "\002" : "",
             wsc_state_name(st), c ? "\001\033[0m\002" : "");
    term_set_prompt(prompt);
}

int repl_rest(struct repl *r, const char *method, const char *path, const char *body,
              struct crest_reply *out)
{
    char err[512];

    if (crest_call(&r->rest, method, path, body, out, err, sizeof err)) {
        term_line(TERM_RED, "REST request failed: %s", err);
        return -1;
    }
    if (out->status >= 400 || !out->json) {
        term_line(TERM_RED, "%s %s: %s", method, path, crest_error_text(out));
        crest_reply_cleanup(out);
        return -1;
    }
    return 0;
}

int repl_join(struct repl *r, const char *sid, int64_t since)
{
    json_t *msg = json_pack("{s:s, s:s}", "type", "join_session", "session_id", sid);
    int ret;

    if (msg && since >= 0)
        json_object_set_new(msg, "since", json_integer(since));
    if (msg && r->name[0])
        json_object_set_new(msg, "name", json_string(r->name));
    ret = msg ? repl_send(r, msg) : -1;
    json_decref(msg);
    return ret;
}

int repl_create(struct repl *r, const char *title)
{
    json_t *msg = json_pack("{s:s}", "type", "create_session");
    int ret;

    if (msg && title && *title)
        json_object_set_new(msg, "title", json_string(title));
    if (msg && r->name[0])
        json_object_set_new(msg, "name", json_string(r->name));
    ret = msg ? repl_send(r, msg) : -1;
    json_decref(msg);
    return ret;
}

void repl_show_mode(const struct repl *r, const char *mode, bool changed)
{
    const char *what = strcmp(mode, "always") == 0 ? "the assistant answers every message"
                       : strcmp(mode, "mention") == 0
                           ? "the assistant answers only messages that mention @assistant"
                           : "the assistant answers no message (/regenerate still asks it)";

    if (strcmp(mode, "mention") == 0 && r->model[0] && strcmp(r->model, "?") != 0)
        term_line(TERM_YELLOW, "reply mode %s%s: %s (or @%s)", changed ? "is now " : "", mode, what,
                  r->model);
    else
        term_line(TERM_YELLOW, "reply mode %s%s: %s", changed ? "is now " : "", mode, what);
}

/* ---------------------------------------------------------------- chats and typing */

static void send_pending(struct repl *r, struct repl_pending *p)
{
    json_t *msg = json_pack("{s:s, s:s, s:s, s:s}", "type", "chat", "message", p->text,
                            "session_id", p->session, "client_msg_id", p->cmid);

    send_quiet(r, msg);
}

void repl_chat(struct repl *r, const char *text)
{
    struct repl_pending *p, **tail;

    if (!r->session[0]) {
        term_line(TERM_YELLOW, "no session: /new to create one, /join ID to join one");
        return;
    }
    p = calloc(1, sizeof *p);
    if (!p || !(p->text = strdup(text))) {
        free(p);
        return;
    }
    snprintf(p->session, sizeof p->session, "%s", r->session);
    snprintf(p->cmid, sizeof p->cmid, "%.12s-%u", r->connection_id[0] ? r->connection_id : "c",
             ++r->cmid_seq);
    {
        char rnd[9];
        if (clock_random_hex(rnd, 4) == 0)
            snprintf(p->cmid, sizeof p->cmid, "%s-%u", rnd, r->cmid_seq);
    }
    p->typed_ms = clock_mono_ms();
    for (tail = &r->pending; *tail; tail = &(*tail)->next)
        ;
    *tail = p;
    r->stats.messages_sent++;
    r->typing = false; /* a chat clears our typing indicator at the broker */
    wsc_timer_cancel(&r->typing_timer);
    if (wsc_state(r->ws) == WSC_CONNECTED)
        send_pending(r, p);
    else
        term_line(TERM_YELLOW, "(offline: the message is kept and sent when reconnected)");
}

/* Acknowledges the pending chat with this client_msg_id. Returns whether there was one. */
static bool ack_pending(struct repl *r, const char *cmid)
{
    struct repl_pending **pp, *p;

    if (!cmid)
        return false;
    for (pp = &r->pending; (p = *pp); pp = &p->next) {
        if (strcmp(p->cmid, cmid) != 0)
            continue;
        *pp = p->next;
        if (r->n_waiting < REPL_MAX_WAITING)
            r->waiting[r->n_waiting++] = p->typed_ms;
        free(p->text);
        free(p);
        return true;
    }
    return false;
}

/* Drops the pending chat with this client_msg_id, refused by the service (nothing was
 * stored: resending it would be refused again). Returns whether there was one. */
static bool forget_pending(struct repl *r, const char *cmid)
{
    struct repl_pending **pp, *p;

    if (!cmid)
        return false;
    for (pp = &r->pending; (p = *pp); pp = &p->next) {
        if (strcmp(p->cmid, cmid) != 0)
            continue;
        *pp = p->next;
        free(p->text);
        free(p);
        return true;
    }
    return false;
}

static void free_pending(struct repl *r)
{
    struct repl_pending *p, *next;

    for (p = r->pending; p; p = next) {
        next = p->next;
        free(p->text);
        free(p);
    }
    r->pending = NULL;
}

void repl_typing_stop(struct repl *r)
{
    json_t *msg;

    wsc_timer_cancel(&r->typing_timer);
    if (!r->typing)
        return;
    r->typing = false;
    if (!r->session[0])
        return;
    msg = json_pack("{s:s, s:s}", "type", "typing_stop", "session_id", r->session);
    send_quiet(r, msg);
}

static void typing_pause(void *ud)
{
    repl_typing_stop(ud);
}

/* After each keystroke: typing_start on the first one of a chat line (and again every few
 * seconds while it goes on), typing_stop after a pause. Command lines send nothing. */
static void on_keystroke(struct repl *r)
{
    const char *text = term_input_text();
    int64_t now = clock_mono_ms();

    if (!*text || text[0] == '/' || !r->session[0] || wsc_state(r->ws) != WSC_CONNECTED) {
        if (text[0] == '/')
            repl_typing_stop(r);
        return;
    }
    if (!r->typing || now - r->typing_sent_ms >= TYPING_REFRESH_MS) {
        json_t *msg = json_pack("{s:s, s:s}", "type", "typing_start", "session_id", r->session);
        send_quiet(r, msg);
        r->typing = true;
        r->typing_sent_ms = now;
    }
    wsc_timer_set(r->ws, &r->typing_timer, TYPING_PAUSE_MS, typing_pause, r);
}

/* ---------------------------------------------------------------- session state */

static void set_session(struct repl *r, const char *sid)
{
    if (strcmp(r->session, sid ? sid : "") != 0) {
        r->last_msg_id = 0;
        r->n_typists = 0;
        r->n_waiting = 0;
        r->first_join = true;
        r->reply_mode[0] = '\0';
        r->title_known = false;
    }
    snprintf(r->session, sizeof r->session, "%s", sid ? sid : "");
    repl_update_prompt(r);
}

static void seen_id(struct repl *r, json_int_t id)
{
    if (id > r->last_msg_id)
        r->last_msg_id = id;
}

/* "alice is typing...", "alice and bob are typing...", "3 people are typing...". */
static void show_typists(const struct repl *r)
{
    char a[WHO_SHOWN_LEN + 16], b[WHO_SHOWN_LEN + 16];

    if (r->n_typists == 0)
        return;
    member(r->typists[0], r->typist_names[0][0] ? r->typist_names[0] : NULL, a, sizeof a);
    if (r->n_typists == 1) {
        term_line(TERM_DIM, "%s is typing...", a);
        return;
    }
    member(r->typists[1], r->typist_names[1][0] ? r->typist_names[1] : NULL, b, sizeof b);
    if (r->n_typists == 2)
        term_line(TERM_DIM, "%s and %s are typing...", a, b);
    else
        term_line(TERM_DIM, "%d people are typing...", r->n_typists);
}

/* Notes that conn (named name, may be NULL) started or stopped typing; a start is shown. */
static void typist_set(struct repl *r, const char *conn, const char *name, bool typing)
{
    int i;

    for (i = 0; i < r->n_typists; i++)
        if (strcmp(r->typists[i], conn) == 0)
            break;
    if (typing && i == r->n_typists && r->n_typists < REPL_MAX_TYPISTS) {
        snprintf(r->typists[r->n_typists], sizeof r->typists[0], "%s", conn);
        snprintf(r->typist_names[r->n_typists], sizeof r->typist_names[0], "%s", name ? name : "");
        r->n_typists++;
        if (!term_streaming())
            show_typists(r);
    } else if (!typing && i < r->n_typists) {
        memmove(r->typists[i], r->typists[i + 1],
                sizeof r->typists[0] * (size_t)(r->n_typists - i - 1));
        memmove(r->typist_names[i], r->typist_names[i + 1],
                sizeof r->typist_names[0] * (size_t)(r->n_typists - i - 1));
        r->n_typists--;
    }
}

/* A stored message shown as a line: "alice: hello", "you: hi", "assistant: hello". */
static void show_chat(struct repl *r, const json_t *m)
{
    char who[WHO_SHOWN_LEN + 16];
    const char *role = json_string_value(json_object_get(m, "role"));
    const char *content = json_string_value(json_object_get(m, "content"));

    if (role && strcmp(role, "assistant") == 0)
        snprintf(who, sizeof who, "assistant");
    else if (role && strcmp(role, "user") != 0)
        snprintf(who, sizeof who, "%s", role);
    else
        author(r, m, who, sizeof who);
    term_line(TERM_PLAIN, "%s%s:%s %s",
              term_sty(strcmp(who, "assistant") == 0 ? TERM_CYAN : TERM_MAGENTA), who, term_reset(),
              content ? content : "");
}

static void resend_pending(struct repl *r)
{
    for (struct repl_pending *p = r->pending; p; p = p->next)
        if (strcmp(p->session, r->session) == 0)
            send_pending(r, p);
}

/* The stream on screen ended without response_complete (error, lost connection). */
static void stream_failed(struct repl *r, const char *why)
{
    if (!r->stream_rid[0])
        return;
    r->stream_rid[0] = '\0';
    term_stream_end();
    r->stats.streams_failed++;
    term_line(TERM_RED, "(reply interrupted: %s)", why);
}

/* ---------------------------------------------------------------- broker events */

static void ev_connected(struct repl *r, json_t *m)
{
    const char *cid = json_string_value(json_object_get(m, "connection_id"));
    const char *model =
        json_string_value(json_object_get(json_object_get(m, "server_info"), "model"));

    snprintf(r->connection_id, sizeof r->connection_id, "%s", cid ? cid : "");
    snprintf(r->model, sizeof r->model, "%s", model ? model : "?");
    r->renaming[0] = '\0'; /* a /name not answered is in the rejoin below */
    repl_update_prompt(r);
    if (r->session[0] && !r->first_join) {
        term_line(TERM_GREEN, "reconnected to %s; rejoining session %s since message #%lld",
                  r->cfg->url, r->session, (long long)r->last_msg_id);
        repl_join(r, r->session, r->last_msg_id);
    } else if (r->session[0]) {
        term_line(TERM_GREEN, "connected to %s (assistant: %s)", r->cfg->url, r->model);
        repl_join(r, r->session, 0);
    } else if (r->stats.sessions_created == 0 && !r->disconnects) {
        term_line(TERM_GREEN, "connected to %s (assistant: %s)", r->cfg->url, r->model);
        repl_create(r, NULL);
    } else {
        term_line(TERM_GREEN, "connected to %s; no session (/new or /join ID)", r->cfg->url);
    }
}

static void ev_session_created(struct repl *r, json_t *m)
{
    const char *sid = json_string_value(json_object_get(m, "session_id"));
    const char *mode = json_string_value(json_object_get(m, "reply_mode"));
    const char *title = json_string_value(json_object_get(m, "title"));

    set_session(r, sid);
    r->first_join = false;
    r->message_count = 0;
    r->clients = 1;
    r->stats.sessions_created++;
    snprintf(r->reply_mode, sizeof r->reply_mode, "%s",
             mode && policy_mode_valid(mode) ? mode : "");
    snprintf(r->title, sizeof r->title, "%s", title ? title : "");
    r->title_known = true;
    term_line(TERM_GREEN, "created session %s; type a message, /help for commands", r->session);
    if (r->reply_mode[0] && strcmp(r->reply_mode, POLICY_DEFAULT) != 0)
        repl_show_mode(r, r->reply_mode, false);
}

#define MEMBERS_SHOWN 10 /* names listed on a join; the rest are counted */

/* "here: alice, bob (you), carol and 4 others" from session_joined's members. */
static void show_members(const struct repl *r, const json_t *members)
{
    char line[MEMBERS_SHOWN * (WHO_SHOWN_LEN + 8) + 64], who[WHO_SHOWN_LEN + 16];
    size_t i, n = json_array_size(members), len = 0;
    const json_t *x;

    if (n == 0)
        return;
    len = (size_t)snprintf(line, sizeof line, "here:");
    json_array_foreach(members, i, x)
    {
        const char *conn = json_string_value(json_object_get(x, "connection_id"));
        bool me = conn && strcmp(conn, r->connection_id) == 0;
        if (i == MEMBERS_SHOWN)
            break;
        member(conn, json_string_value(json_object_get(x, "name")), who, sizeof who);
        len += (size_t)snprintf(line + len, sizeof line - len, "%s %s%s", i ? "," : "", who,
                                me ? " (you)" : "");
        if (len >= sizeof line)
            break;
    }
    if (n > MEMBERS_SHOWN && len < sizeof line)
        snprintf(line + len, sizeof line - len, " and %zu other%s", n - MEMBERS_SHOWN,
                 n - MEMBERS_SHOWN == 1 ? "" : "s");
    term_line(TERM_DIM, "%s", line);
}

/* The answer to a /name (a join_session of the current session with the new name). */
static void renamed(struct repl *r)
{
    char shown[WHO_SHOWN_LEN];

    snprintf(r->name, sizeof r->name, "%s", r->renaming);
    r->renaming[0] = '\0';
    term_line(TERM_GREEN, "you are now %s (others see it on your next message)",
              who_shown(r->name, shown));
}

static void ev_session_joined(struct repl *r, json_t *m)
{
    const char *sid = json_string_value(json_object_get(m, "session_id"));
    json_t *msgs = json_object_get(m, "messages"), *x, *streaming;
    bool first = r->first_join || r->paging_first || strcmp(r->session, sid ? sid : "") != 0;
    bool more = json_is_true(json_object_get(m, "has_more")); /* the replay goes on */
    json_int_t last_id = json_integer_value(json_object_get(m, "last_id"));
    size_t i, n = json_array_size(msgs), shown = 0, from = 0;
    const char *mode = json_string_value(json_object_get(m, "reply_mode"));

    if (r->renaming[0] && sid && strcmp(sid, r->session) == 0 && !json_object_get(m, "messages")) {
        r->clients = json_integer_value(json_object_get(m, "clients"));
        renamed(r);
        return;
    }
    set_session(r, sid);
    if (mode && policy_mode_valid(mode))
        snprintf(r->reply_mode, sizeof r->reply_mode, "%s", mode);
    r->message_count = json_integer_value(json_object_get(m, "message_count"));
    r->clients = json_integer_value(json_object_get(m, "clients"));
    if (first && !r->paging_first) {
        term_line(TERM_GREEN, "joined session %s (%lld messages, %lld here)", r->session,
                  (long long)r->message_count, (long long)r->clients);
        show_members(r, json_object_get(m, "members"));
        if (r->reply_mode[0] && strcmp(r->reply_mode, POLICY_DEFAULT) != 0)
            repl_show_mode(r, r->reply_mode, false);
    }
    if (first) {
        /* a long replay comes in pages: show the end of the last one */
        from = more ? n : n > REPLAY_SHOWN ? n - REPLAY_SHOWN : 0;
        r->paged_over = r->paging_first ? r->paged_over + (more ? n : from) : (more ? n : from);
        if (!more && r->paged_over)
            term_line(TERM_DIM, "... %zu earlier messages (/history to see them)", r->paged_over);
    }
    r->first_join = false;
    r->paging_first = first && more;
    json_array_foreach(msgs, i, x)
    {
        json_int_t id = json_integer_value(json_object_get(x, "id"));
        const char *cmid = json_string_value(json_object_get(x, "client_msg_id"));
        if (ack_pending(r, cmid) || i < from || (!first && id <= r->last_msg_id)) {
            seen_id(r, id);
            continue;
        }
        seen_id(r, id);
        show_chat(r, x);
        shown++;
    }
    if (more && last_id > 0) { /* ask for the next page */
        repl_join(r, r->session, last_id);
        return;
    }
    if (!first)
        term_line(TERM_GREEN, "rejoined session %s: %zu missed message%s, %lld here", r->session,
                  shown, shown == 1 ? "" : "s", (long long)r->clients);
    streaming = json_object_get(m, "streaming");
    if (json_is_object(streaming)) {
        const char *rid = json_string_value(json_object_get(streaming, "response_id"));
        const char *text = json_string_value(json_object_get(streaming, "text"));
        snprintf(r->stream_rid, sizeof r->stream_rid, "%s", rid ? rid : "");
        term_stream_begin("assistant: ");
        term_stream_text(text ? text : "");
    }
    resend_pending(r);
}

static void ev_response_start(struct repl *r, json_t *m)
{
    const char *rid = json_string_value(json_object_get(m, "response_id"));

    if (r->stream_rid[0])
        stream_failed(r, "a new reply started");
    snprintf(r->stream_rid, sizeof r->stream_rid, "%s", rid ? rid : "");
    term_stream_begin("assistant: ");
}

static void ev_chunk(struct repl *r, json_t *m)
{
    const char *rid = json_string_value(json_object_get(m, "response_id"));
    const char *text = json_string_value(json_object_get(m, "text"));

    r->stats.chunks++;
    if (!r->stream_rid[0] && rid) { /* joined mid-reply without a streaming field */
        snprintf(r->stream_rid, sizeof r->stream_rid, "%s", rid);
        term_stream_begin("assistant: ");
    }
    if (text)
        term_stream_text(text);
}

static void ev_response_complete(struct repl *r, json_t *m)
{
    bool stopped = json_is_true(json_object_get(m, "stopped"));

    seen_id(r, json_integer_value(json_object_get(m, "message_id")));
    r->message_count = json_integer_value(json_object_get(m, "message_count"));
    if (r->stream_rid[0]) {
        r->stream_rid[0] = '\0';
        term_stream_end();
    }
    if (stopped) {
        r->stats.streams_failed++;
        term_line(TERM_YELLOW, "(reply stopped)");
    } else {
        r->stats.streams_ok++;
    }
    if (r->n_waiting > 0) {
        r->stats.response_s_total += (double)(clock_mono_ms() - r->waiting[0]) / 1000.0;
        r->stats.responses++;
        memmove(r->waiting, r->waiting + 1, sizeof r->waiting[0] * (size_t)(--r->n_waiting));
    }
    if (r->n_typists > 0)
        term_line(TERM_DIM, r->n_typists == 1 ? "someone is typing..." : "%d people are typing...",
                  r->n_typists);
}

#define NAMES_LISTED 5 /* names of a presence burst listed; the rest are counted */

/* "alice, bob, carol and 2 others" for the connection ids of ids, named by names
 * {connection_id: name}; "" when ids is empty. */
static void name_list(const json_t *ids, const json_t *names, char *out, size_t size)
{
    size_t i, n = json_array_size(ids), len = 0;
    const json_t *x;
    char who[WHO_SHOWN_LEN + 16];

    out[0] = '\0';
    json_array_foreach(ids, i, x)
    {
        const char *conn = json_string_value(x);
        if (i == NAMES_LISTED || !conn)
            break;
        member(conn, json_string_value(json_object_get(names, conn)), who, sizeof who);
        len += (size_t)snprintf(out + len, size - len, "%s%s", i ? ", " : "", who);
        if (len >= size)
            return;
    }
    if (n > NAMES_LISTED)
        snprintf(out + len, size - len, " and %zu other%s", n - NAMES_LISTED,
                 n - NAMES_LISTED == 1 ? "" : "s");
}

/* session_changed (PATCH /sessions/{id}): what changed, as lines. An own /mode has set
 * reply_mode and title from the PATCH answer already, so it prints nothing twice. */
static void session_changed(struct repl *r, const json_t *m)
{
    const char *mode = json_string_value(json_object_get(m, "reply_mode"));
    const char *title = json_string_value(json_object_get(m, "title"));
    bool mode_changed = mode && policy_mode_valid(mode) && strcmp(mode, r->reply_mode) != 0;
    bool title_changed =
        r->title_known ? strcmp(title ? title : "", r->title) != 0 : !mode_changed && title;

    if (mode_changed) {
        snprintf(r->reply_mode, sizeof r->reply_mode, "%s", mode);
        repl_show_mode(r, mode, true);
    }
    if (title_changed && title)
        term_line(TERM_YELLOW, "the session's title is now \"%s\"", title);
    else if (title_changed)
        term_line(TERM_YELLOW, "the session's title was removed");
    snprintf(r->title, sizeof r->title, "%s", title ? title : "");
    r->title_known = true;
}

static void ev_session_update(struct repl *r, json_t *m)
{
    const char *kind = json_string_value(json_object_get(m, "update_type"));
    const char *sid = json_string_value(json_object_get(m, "session_id"));
    const char *conn = json_string_value(json_object_get(m, "connection_id"));
    const char *name = json_string_value(json_object_get(m, "name"));
    char who[WHO_SHOWN_LEN + 16];

    if (!kind || !sid || strcmp(sid, r->session) != 0)
        return;
    if (strcmp(kind, "message_added") == 0) {
        json_t *msg = json_object_get(m, "message");
        const char *cmid = json_string_value(json_object_get(msg, "client_msg_id"));
        const char *from = json_string_value(json_object_get(msg, "connection_id"));
        r->message_count = json_integer_value(json_object_get(m, "message_count"));
        seen_id(r, json_integer_value(json_object_get(msg, "id")));
        if (from)
            typist_set(r, from, NULL, false);
        if (ack_pending(r, cmid) || (from && strcmp(from, r->connection_id) == 0))
            return; /* ours: already on screen as typed */
        show_chat(r, msg);
    } else if (strcmp(kind, "user_typing") == 0 && conn) {
        typist_set(r, conn, name, json_is_true(json_object_get(m, "typing")));
    } else if (strcmp(kind, "user_joined") == 0 || strcmp(kind, "user_left") == 0) {
        bool joined = strcmp(kind, "user_joined") == 0;
        r->clients = json_integer_value(json_object_get(m, "clients"));
        if (!joined && conn)
            typist_set(r, conn, NULL, false);
        member(conn, name, who, sizeof who);
        term_line(TERM_DIM, "%s %s (%lld here)", who, joined ? "joined" : "left",
                  (long long)r->clients);
    } else if (strcmp(kind, "presence") == 0) { /* a burst of joins and leaves, told at once */
        size_t i;
        json_t *left = json_object_get(m, "left"), *x;
        char joined_s[256], left_s[256];
        r->clients = json_integer_value(json_object_get(m, "clients"));
        json_array_foreach(left, i, x)
        {
            if (json_is_string(x))
                typist_set(r, json_string_value(x), NULL, false);
        }
        name_list(json_object_get(m, "joined"), json_object_get(m, "names"), joined_s,
                  sizeof joined_s);
        name_list(left, json_object_get(m, "names"), left_s, sizeof left_s);
        if (joined_s[0] && left_s[0])
            term_line(TERM_DIM, "%s joined; %s left (%lld here)", joined_s, left_s,
                      (long long)r->clients);
        else if (joined_s[0] || left_s[0])
            term_line(TERM_DIM, "%s %s (%lld here)", joined_s[0] ? joined_s : left_s,
                      joined_s[0] ? "joined" : "left", (long long)r->clients);
    } else if (strcmp(kind, "session_changed") == 0) {
        session_changed(r, m);
    } else if (strcmp(kind, "message_superseded") == 0) {
        r->message_count = json_integer_value(json_object_get(m, "message_count"));
        term_line(TERM_DIM, "(reply #%lld superseded: regenerating)",
                  (long long)json_integer_value(json_object_get(m, "message_id")));
    } else if (strcmp(kind, "history_cleared") == 0) {
        stream_failed(r, "history cleared");
        r->message_count = 0;
        r->n_waiting = 0;
        term_line(TERM_YELLOW, "the history of this session was cleared");
    } else if (strcmp(kind, "session_deleted") == 0) {
        stream_failed(r, "session deleted");
        term_line(TERM_YELLOW, "session %s was deleted; /new or /join ID", r->session);
        set_session(r, "");
    }
}

/* The service refused our name (invalid_field naming 'name') in a create_session or
 * join_session: a /name keeps the old one; a name given at start is dropped (the service's
 * default applies) and the request is sent again without it. */
static void name_refused(struct repl *r, const char *req, const char *why)
{
    char shown[WHO_SHOWN_LEN];

    if (r->renaming[0]) {
        term_line(TERM_RED, "the server refused the name: %s", why);
        term_line(TERM_YELLOW, "your name stays %s; /name NEW (1 to %d characters) to try another",
                  r->name[0] ? who_shown(r->name, shown) : "the service's default", NAME_MAX_CHARS);
        r->renaming[0] = '\0';
        return;
    }
    term_line(TERM_RED, "the server refused your name: %s", why);
    term_line(TERM_YELLOW,
              "going on with the service's default name; /name NEW (1 to %d "
              "characters) to choose one, or start with --name NAME",
              NAME_MAX_CHARS);
    r->name[0] = '\0';
    if (strcmp(req, "create_session") == 0 && !r->session[0])
        repl_create(r, NULL);
    else if (strcmp(req, "join_session") == 0 && r->session[0])
        repl_join(r, r->session, r->first_join ? 0 : r->last_msg_id);
}

static void ev_error(struct repl *r, json_t *m)
{
    const char *code = json_string_value(json_object_get(m, "code"));
    const char *text = json_string_value(json_object_get(m, "message"));
    const char *req = json_string_value(json_object_get(m, "request_type"));
    const char *cmid = json_string_value(json_object_get(m, "client_msg_id"));
    bool joining = req && (strcmp(req, "join_session") == 0 || strcmp(req, "create_session") == 0);

    if (code && strcmp(code, "llm_error") == 0)
        stream_failed(r, "assistant error");
    if (code && strcmp(code, "invalid_field") == 0 && joining && text && strstr(text, "'name'")) {
        name_refused(r, req, text);
        return;
    }
    if (code && strcmp(code, "quota_exceeded") == 0)
        term_line(TERM_RED, "quota exceeded: %s", text ? text : "");
    else
        term_line(TERM_RED, "error %s: %s", code ? code : "?", text ? text : "");
    if (forget_pending(r, cmid))
        term_line(TERM_DIM, "(that message was not stored)");
    if (code && strcmp(code, "session_not_found") == 0 && req && strcmp(req, "join_session") == 0 &&
        r->first_join)
        set_session(r, "");
}

static void on_message(void *ud, json_t *m)
{
    struct repl *r = ud;
    const char *type = json_string_value(json_object_get(m, "type"));

    const char *sid = json_string_value(json_object_get(m, "session_id"));
    bool here = sid && strcmp(sid, r->session) == 0;

    if (!type)
        return;
    /* a connection may still be a member of sessions it switched away from */
    if (!here && (strcmp(type, "response_start") == 0 || strcmp(type, "chunk") == 0 ||
                  strcmp(type, "response_complete") == 0 || strcmp(type, "status") == 0))
        return;
    if (strcmp(type, "connected") == 0) {
        ev_connected(r, m);
    } else if (strcmp(type, "session_created") == 0) {
        ev_session_created(r, m);
    } else if (strcmp(type, "session_joined") == 0) {
        ev_session_joined(r, m);
    } else if (strcmp(type, "session_left") == 0) {
        term_line(TERM_DIM, "left session %s", sid ? sid : "?");
        if (here)
            set_session(r, "");
    } else if (strcmp(type, "response_start") == 0) {
        ev_response_start(r, m);
    } else if (strcmp(type, "chunk") == 0) {
        ev_chunk(r, m);
    } else if (strcmp(type, "response_complete") == 0) {
        ev_response_complete(r, m);
    } else if (strcmp(type, "session_update") == 0) {
        ev_session_update(r, m);
    } else if (strcmp(type, "pong") == 0 && r->ping_sent_us) {
        term_line(TERM_PLAIN, "pong: round trip %.2f ms",
                  (double)(mono_us() - r->ping_sent_us) / 1000.0);
        r->ping_sent_us = 0;
    } else if (strcmp(type, "error") == 0) {
        ev_error(r, m);
    }
}

static void on_open(void *ud)
{
    repl_update_prompt(ud);
}

static void on_close(void *ud, const char *why, bool was_open, int retry_ms)
{
    struct repl *r = ud;

    stream_failed(r, "connection lost");
    r->typing = false;
    r->n_typists = 0;
    r->ping_sent_us = 0;
    if (was_open)
        r->disconnects++;
    if (r->user_offline && retry_ms < 0)
        term_line(TERM_YELLOW, "disconnected");
    else if (retry_ms >= 0)
        term_line(TERM_YELLOW, "%s %s (%s); reconnecting in %.1f s",
                  was_open ? "connection to" : "cannot connect to", r->cfg->url, why,
                  retry_ms / 1000.0);
    else
        term_line(TERM_RED, "connection to %s closed (%s)", r->cfg->url, why);
    repl_update_prompt(r);
}

/* ---------------------------------------------------------------- input */

static struct repl *the_repl; /* for the libedit line callback, which has no user data */

static void on_line(char *line)
{
    struct repl *r = the_repl;
    char *s = line, *e;

    if (!line) { /* Ctrl-D */
        r->quit = true;
        return;
    }
    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        *--e = '\0';
    if (*s) {
        add_history(s);
        if (s[0] == '/') {
            repl_typing_stop(r);
            cmd_run(r, s);
        } else {
            repl_chat(r, s);
        }
    }
    free(line);
}

static void on_stdin(void *ud)
{
    struct repl *r = ud;
    int avail = 0;

    if (ioctl(STDIN_FILENO, FIONREAD, &avail) == 0 && avail == 0) {
        r->quit = true; /* readable with nothing to read: end of input */
        return;
    }
    term_input_read();
    if (!r->quit)
        on_keystroke(r);
}

static const struct wsc_handler handler = {
    .on_open = on_open,
    .on_message = on_message,
    .on_close = on_close,
    .on_stdin = on_stdin,
};

void repl_ping(struct repl *r)
{
    json_t *msg = json_pack("{s:s}", "type", "ping");

    if (msg && repl_send(r, msg) == 0)
        r->ping_sent_us = mono_us();
    json_decref(msg);
}

int repl_main(struct cfg *cfg)
{
    struct repl r;
    struct sigaction sa;
    int ret = 1;

    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.rest.base = cfg->rest_url;
    r.rest.api_key = cfg->api_key;
    r.rest.timeout_s = 10;
    r.first_join = true;
    r.stats.started_ms = clock_mono_ms();
    if (cfg->session) {
        if (!clock_is_hex(cfg->session, 16)) {
            fprintf(stderr, "parley: --session wants a session id (16 hex characters), got '%s'\n",
                    cfg->session);
            return 2;
        }
        snprintf(r.session, sizeof r.session, "%s", cfg->session);
    }
    if (cfg->name) /* checked by main */
        snprintf(r.name, sizeof r.name, "%s", cfg->name);
    else
        who_default(r.name);
    the_repl = &r;
    r.ws = wsc_new(cfg->url, cfg->api_key, true, &handler, &r);
    if (!r.ws)
        goto out;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    rl_catch_signals = 0;
    printf("%sParley %s%s: /help lists the commands, Ctrl-D or /quit leaves\n", term_sty(TERM_BOLD),
           PARLEY_VERSION, term_reset());
    term_input_start("> ", on_line);
    repl_update_prompt(&r);
    if (wsc_watch_stdin(r.ws)) {
        term_input_stop();
        fprintf(stderr, "parley: cannot watch the terminal for input\n");
        goto out;
    }
    wsc_connect(r.ws);
    repl_update_prompt(&r);
    while (!r.quit) {
        if (wsc_run(r.ws))
            break;
        if (got_sigint) {
            got_sigint = 0;
            if (r.stream_rid[0] && r.session[0]) {
                json_t *msg = json_pack("{s:s, s:s}", "type", "stop", "session_id", r.session);
                send_quiet(&r, msg);
            } else {
                term_input_discard();
            }
        }
    }
    repl_typing_stop(&r);
    term_input_stop();
    printf("bye\n");
    ret = 0;
out:
    free_pending(&r);
    wsc_free(r.ws);
    the_repl = NULL;
    return ret;
}
