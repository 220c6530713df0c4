/* term: terminal output of the interactive client on top of libedit's readline interface.
 * Not here: what the events mean (repl.c) or the commands (commands.c). */
#include "term.h"

#include <editline/readline.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static struct {
    bool colour;
    bool input_active;  /* a line handler is installed */
    bool input_visible; /* the prompt and typed text are on screen, cursor among them */
    bool streaming;
    bool at_stream_end; /* streaming, cursor right after the reply text, input hidden */
    bool in_read;       /* inside rl_callback_read_char: libedit redraws when it returns */
    void (*line_cb)(char *line);
    char *prompt;       /* owned, as given to libedit */
    int prompt_width;   /* columns the prompt takes on screen */
    char *stream_label; /* owned */
    char *stream_text;  /* owned: the reply so far, to redraw it after an interruption */
    size_t stream_len, stream_cap;
} T;

static const char *const styles[] = {
    [TERM_PLAIN] = "",        [TERM_DIM] = "\033[2m",      [TERM_BOLD] = "\033[1m",
    [TERM_RED] = "\033[31m",  [TERM_GREEN] = "\033[32m",   [TERM_YELLOW] = "\033[33m",
    [TERM_CYAN] = "\033[36m", [TERM_MAGENTA] = "\033[35m",
};

void term_init(bool colour)
{
    T.colour = colour;
}

bool term_colour(void)
{
    return T.colour;
}

const char *term_sty(enum term_style s)
{
    return T.colour ? styles[s] : "";
}

const char *term_reset(void)
{
    return T.colour ? "\033[0m" : "";
}

/* Columns of UTF-8 text (one per character; escape sequences and the readline ignore
 * markers \001...\002 take none). */
static int text_width(const char *s, size_t n)
{
    int w = 0;
    bool ignore = false;

    for (size_t i = 0; i < n && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\001')
            ignore = true;
        else if (c == '\002')
            ignore = false;
        else if (!ignore && (c & 0xC0) != 0x80 && c >= 0x20)
            w++;
    }
    return w;
}

static int cols(void)
{
    struct winsize ws;

    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

/* Erases the prompt and typed text (which may wrap over several rows). */
static void hide_input(void)
{
    int at, up;

    if (!T.input_visible)
        return;
    at = T.prompt_width + text_width(rl_line_buffer ? rl_line_buffer : "", (size_t)rl_point);
    up = at / cols();
    if (up > 0)
        printf("\033[%dA", up);
    printf("\r\033[J");
    fflush(stdout);
    T.input_visible = false;
}

static void reprint_stream(void);

static void show_input(void)
{
    if (T.input_visible || !T.input_active || T.at_stream_end || T.in_read)
        return;
    fflush(stdout);
    rl_forced_update_display();
    T.input_visible = true;
}

/* libedit leaves the terminal in cooked mode once a line is complete (it re-arms only on
 * the next read, which would then block for a whole line): installing the handler again
 * re-arms it at once, empties the line and draws the prompt. */
static void line_done(char *line)
{
    T.input_visible = false;
    T.line_cb(line);
    if (!T.input_active)
        return;
    if (T.streaming) { /* the line went in under the reply: show the reply below it again */
        if (!T.at_stream_end)
            reprint_stream();
        printf("\n");
        T.at_stream_end = false;
    }
    rl_callback_handler_install(T.prompt, line_done);
}

/* Screen column where the streamed reply (label and text) ends. */
static int stream_end_col(void)
{
    const char *t = T.stream_text ? T.stream_text : "";
    const char *nl = memrchr(t, '\n', T.stream_len);
    int w;

    if (nl)
        w = text_width(nl + 1, T.stream_len - (size_t)(nl + 1 - t));
    else
        w = text_width(T.stream_label, strlen(T.stream_label)) + text_width(t, T.stream_len);
    return w % cols();
}

/* Streaming with the input shown below the reply: erase the input and put the cursor
 * back at the end of the reply text. */
static void to_stream_end(void)
{
    if (T.at_stream_end)
        return;
    hide_input();
    printf("\033[A\033[%dG", stream_end_col() + 1);
    T.at_stream_end = true;
}

/* From the end of the reply text to a fresh row, with the input drawn there. */
static void below_stream(void)
{
    if (!T.at_stream_end)
        return;
    printf("\n");
    T.at_stream_end = false;
    show_input();
}

/* The reply so far, again (after something was printed in the middle of it). */
static void reprint_stream(void)
{
    printf("%s%s%s%.*s", term_sty(TERM_CYAN), T.stream_label, term_reset(), (int)T.stream_len,
           T.stream_text ? T.stream_text : "");
    T.at_stream_end = true;
}

void term_input_start(const char *prompt, void (*line_cb)(char *line))
{
    term_set_prompt(prompt);
    T.input_active = true;
    T.line_cb = line_cb;
    rl_callback_handler_install(T.prompt, line_done);
    T.input_visible = true;
}

void term_input_stop(void)
{
    if (!T.input_active)
        return;
    hide_input();
    rl_callback_handler_remove();
    T.input_active = false;
    free(T.prompt);
    free(T.stream_label);
    free(T.stream_text);
    T.prompt = T.stream_label = T.stream_text = NULL;
    T.stream_len = T.stream_cap = 0;
}

void term_input_read(void)
{
    /* Within the line callback the finished line stays on screen and the cursor is on
     * the next row; libedit draws the fresh prompt after the callback returns. */
    below_stream(); /* typing during a reply: the input goes below it */
    T.input_visible = false;
    T.in_read = true;
    rl_callback_read_char();
    T.in_read = false;
    if (T.input_active)
        T.input_visible = true;
}

void term_set_prompt(const char *prompt)
{
    char *p = strdup(prompt);

    if (!p)
        return;
    if (T.prompt && strcmp(T.prompt, p) == 0) {
        free(p);
        return;
    }
    free(T.prompt);
    T.prompt = p;
    T.prompt_width = text_width(p, strlen(p));
    if (!T.input_active)
        return;
    if (T.input_visible) {
        hide_input();
        rl_set_prompt(T.prompt);
        show_input();
    } else {
        rl_set_prompt(T.prompt);
    }
}

void term_input_discard(void)
{
    if (!T.input_active)
        return;
    hide_input();
    rl_replace_line("", 0);
    rl_point = rl_end = 0;
    show_input();
}

const char *term_input_text(void)
{
    return rl_line_buffer ? rl_line_buffer : "";
}

void term_line(enum term_style s, const char *fmt, ...)
{
    va_list ap;
    bool typing_below = T.streaming && !T.at_stream_end;

    hide_input();
    if (T.at_stream_end)
        printf("\n");
    T.at_stream_end = false;
    printf("%s", term_sty(s));
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("%s\n", s == TERM_PLAIN ? "" : term_reset());
    if (T.streaming) /* the reply goes on below the interruption, from its start */
        reprint_stream();
    if (typing_below || (T.streaming && rl_end > 0))
        below_stream();
    fflush(stdout);
    show_input();
}

void term_stream_begin(const char *label)
{
    if (T.streaming)
        term_stream_end();
    hide_input();
    free(T.stream_label);
    T.stream_label = strdup(label);
    T.stream_len = 0;
    T.streaming = true;
    printf("%s%s%s", term_sty(TERM_CYAN), label, term_reset());
    T.at_stream_end = true;
    if (T.input_active && rl_end > 0) /* something is being typed: keep it in view */
        below_stream();
    fflush(stdout);
}

void term_stream_text(const char *text)
{
    size_t n = strlen(text);

    if (!T.streaming)
        return;
    if (T.stream_len + n + 1 > T.stream_cap) {
        size_t cap = T.stream_cap ? T.stream_cap : 256;
        char *p;
        while (cap < T.stream_len + n + 1)
            cap *= 2;
        p = realloc(T.stream_text, cap);
        if (p) {
            T.stream_text = p;
            T.stream_cap = cap;
        }
    }
    if (T.stream_len + n + 1 <= T.stream_cap) {
        memcpy(T.stream_text + T.stream_len, text, n);
        T.stream_len += n;
    }
    if (T.at_stream_end) {
        fputs(text, stdout);
    } else {
        to_stream_end();
        fputs(text, stdout);
        below_stream();
    }
    fflush(stdout);
}

void term_stream_end(void)
{
    if (!T.streaming)
        return;
    T.streaming = false;
    if (T.at_stream_end) {
        printf("\n");
        T.at_stream_end = false;
    }
    fflush(stdout);
    show_input();
}

bool term_streaming(void)
{
    return T.streaming;
}

void term_clear_screen(void)
{
    hide_input();
    printf("\033[H\033[2J");
    fflush(stdout);
    show_input();
}
