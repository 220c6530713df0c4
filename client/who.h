/* who: the client's display name (SPEC 9 "Names"): the default taken from the login name,
 * the check of a name the user gives (the service's own rule, common/names.c), and names
 * received from the network made safe to print. */
#ifndef PARLEY_CLIENT_WHO_H
#define PARLEY_CLIENT_WHO_H

#include <stdbool.h>
#include <stddef.h>

#include "names.h"

/* ---- our name ---- */
/* The default name into out (NAME_LEN bytes): the login name (getlogin(), else $USER, else
 * the password entry), control characters dropped and cut to NAME_MAX_CHARS characters on
 * a character boundary. "" when there is none: the service's default applies then. */
void who_default(char out[NAME_LEN]);
/* Whether name is one the service accepts; if not, a readable reason into why. */
bool who_check(const char *name, char *why, size_t whylen);

/* ---- names received ---- */
/* name (may be NULL) as it may be printed, into out (NAME_LEN + 8 bytes): a name that is
 * not valid (a service never sends one) becomes "?", and a user named like a label the
 * client prints itself ("assistant", "you", "rest", case-insensitive) gets " (user)" so
 * nobody can pass for the assistant. Returns out. */
char *who_shown(const char *name, char *out);
#define WHO_SHOWN_LEN (NAME_LEN + 8)

#endif
