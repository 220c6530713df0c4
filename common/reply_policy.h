/* reply_policy: when the assistant answers a chat (SPEC 9 "Reply policy").
 *
 * A session's reply_mode is one of "always" (the default: every chat), "mention" (only a
 * chat that mentions the assistant) or "off" (none). A chat mentions the assistant when it
 * holds "@assistant" or "@" + the session's model name, case-insensitive (ASCII letters),
 * at a word boundary: the "@" begins the text or follows a character that is not a letter,
 * digit or "_", and the name ends the text or is followed by such a character. So
 * "@Assistant, hi" and "hi @assistant" mention it; "email@assistant.com" and
 * "@assistants" do not. Characters beyond ASCII count as letters unless they are
 * punctuation, spaces or symbols (the Latin-1 punctuation, general punctuation, CJK
 * punctuation, arrows, dingbats, emoji, ...): "é@assistant" is no mention, "«@assistant»"
 * is one.
 *
 * Pure functions, safe from any thread. */
#ifndef PARLEY_REPLY_POLICY_H
#define PARLEY_REPLY_POLICY_H

#include <stdbool.h>

#define POLICY_MODE_LEN 8 /* the longest mode, "mention", and its NUL */
#define POLICY_DEFAULT  "always"
#define POLICY_MODES    "always, mention or off" /* for error messages */

/* Whether mode is one of the three reply modes (NULL is not). */
bool policy_mode_valid(const char *mode);
/* Whether text (NUL-terminated UTF-8) mentions "@" + name at a word boundary, as above.
 * An empty or NULL name is never mentioned. */
bool policy_mentions(const char *text, const char *name);
/* Whether a chat of text in a session of mode and model gets an assistant reply. An
 * unknown or NULL mode counts as "always" (what the database holds is always valid). */
bool policy_wants_reply(const char *mode, const char *text, const char *model);

#endif
