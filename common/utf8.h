/* utf8: the one place Parley checks, cuts and repairs text, so that every string it sends
 * is valid UTF-8 (SPEC 6) whatever a client or an LLM server sent.
 *
 * Valid means RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF. */
#ifndef PARLEY_UTF8_H
#define PARLEY_UTF8_H

#include <stdbool.h>
#include <stddef.h>

#define UTF8_SHOWN_CHARS 64 /* characters of a client's value quoted back in an error */
#define UTF8_SHOWN_LEN   (UTF8_SHOWN_CHARS * 4 + 4)

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 when s does not
 * start one. */
size_t utf8_seq(const unsigned char *s, size_t n);
/* Whether s (len bytes) is valid UTF-8 without NUL bytes. */
bool utf8_valid(const char *s, size_t len);
/* Code points in s (len bytes of valid UTF-8). */
size_t utf8_chars(const char *s, size_t len);
/* The largest length <= max that does not end inside a character of s (len bytes). */
size_t utf8_cut(const char *s, size_t len, size_t max);

/* Returns a new NUL-terminated copy of s (len bytes) in which every byte that does not
 * start a valid sequence is U+FFFD and NUL bytes are dropped; its length in *out_len
 * (may be NULL). Caller frees. NULL only when out of memory. */
char *utf8_repair(const char *s, size_t len, size_t *out_len);
/* Repairs s in place as utf8_repair would, except that an invalid byte becomes '?'
 * (so the text never grows). */
void utf8_repair_in_place(char *s);
/* Copies at most UTF8_SHOWN_CHARS characters of s, repaired, into buf (UTF8_SHOWN_LEN
 * bytes), with "…" when it was cut: for quoting a client's value back to it. Returns buf. */
const char *utf8_shown(char *buf, const char *s);

#endif
