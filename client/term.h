/* term: the interactive client's screen: colours, the prompt, lines printed above the line
 * being typed, and assistant replies streamed in place.
 *
 * The line being typed is libedit's (readline callback interface). Printing an event
 * erases the prompt and the typed text, prints, then redraws them exactly as they were.
 * While a reply streams the cursor follows its text; on the first keystroke the prompt
 * comes back on the row below, and later pieces of the reply are written above it. Loop
 * thread only. */
#ifndef PARLEY_CLIENT_TERM_H
#define PARLEY_CLIENT_TERM_H

#include <stdbool.h>

enum term_style {
    TERM_PLAIN,
    TERM_DIM, /* notices: joins, typing, state changes */
    TERM_BOLD,
    TERM_RED,     /* errors */
    TERM_GREEN,   /* the connection is up */
    TERM_YELLOW,  /* warnings, reconnecting */
    TERM_CYAN,    /* the assistant */
    TERM_MAGENTA, /* other people */
};

/* ---- setup ---- */
/* colour: whether escape sequences may be written (a terminal, no NO_COLOR, no --no-color). */
void term_init(bool colour);
bool term_colour(void);
/* The escape sequence of a style, "" without colour; borrowed (static). */
const char *term_sty(enum term_style s);
const char *term_reset(void);

/* ---- the input line ---- */
/* Installs the line handler and draws the prompt; line_cb gets each line (NULL at end of
 * input), as a new string the callback frees with free(). */
void term_input_start(const char *prompt, void (*line_cb)(char *line));
void term_input_stop(void);
/* Feeds libedit the next byte of stdin. */
void term_input_read(void);
/* Replaces the prompt (plain text plus term_sty sequences); redrawn if visible. */
void term_set_prompt(const char *prompt);
/* Discards the line being typed (Ctrl-C). */
void term_input_discard(void);
/* The text typed so far; borrowed (libedit's buffer, valid until the next keystroke). */
const char *term_input_text(void);

/* ---- output ---- */
/* Prints one line (no newline needed) above the input, in style s. */
void term_line(enum term_style s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A reply streams: label is printed once (e.g. "assistant: "), then each text piece as it
 * comes, then term_stream_end finishes the line and brings the prompt back. */
void term_stream_begin(const char *label);
void term_stream_text(const char *text);
void term_stream_end(void);
bool term_streaming(void);
/* Clears the screen; the prompt comes back at the top. */
void term_clear_screen(void);

#endif
