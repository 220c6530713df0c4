/* who: display names on the client side (who.h). The rule of a valid name is the
 * service's (common/names.c); this file only picks a default and prints names safely. */
#include "who.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "utf8.h"

void who_default(char out[NAME_LEN])
{
    const char *login = getlogin();
    const struct passwd *pw;
    size_t len, n = 0, chars = 0;

    if (!login || !*login)
        login = getenv("USER");
    if ((!login || !*login) && (pw = getpwuid(getuid())))
        login = pw->pw_name;
    out[0] = '\0';
    if (!login)
        return;
    len = strlen(login);
    for (size_t i = 0; i < len && chars < NAME_MAX_CHARS;) {
        const unsigned char *p = (const unsigned char *)login + i;
        size_t k = utf8_seq(p, len - i);
        if (k == 0) { /* not UTF-8: dropped */
            i++;
            continue;
        }
        if (name_valid(login + i, k) && n + k < NAME_LEN) { /* control characters dropped */
            memcpy(out + n, login + i, k);
            n += k;
            chars++;
        }
        i += k;
    }
    out[n] = '\0';
}

bool who_check(const char *name, char *why, size_t whylen)
{
    size_t len = strlen(name), chars = 0;

    if (name_valid(name, len))
        return true;
    if (!utf8_valid(name, len)) {
        snprintf(why, whylen, "a name must be UTF-8 text");
        return false;
    }
    for (size_t i = 0; i < len; i++)
        chars += ((unsigned char)name[i] & 0xc0) != 0x80;
    if (chars == 0)
        snprintf(why, whylen, "a name is 1 to %d characters; this one is empty", NAME_MAX_CHARS);
    else if (chars > NAME_MAX_CHARS)
        snprintf(why, whylen, "a name is 1 to %d characters; this one has %zu", NAME_MAX_CHARS,
                 chars);
    else
        snprintf(why, whylen, "a name may not hold control characters (tabs, newlines, ...)");
    return false;
}

char *who_shown(const char *name, char *out)
{
    static const char *const labels[] = {"assistant", "you", "rest"};

    if (!name || !name_valid(name, strlen(name))) {
        snprintf(out, WHO_SHOWN_LEN, "?");
        return out;
    }
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++) {
        if (strcasecmp(name, labels[i]) == 0) {
            snprintf(out, WHO_SHOWN_LEN, "%s (user)", name);
            return out;
        }
    }
    snprintf(out, WHO_SHOWN_LEN, "%s", name);
    return out;
}
