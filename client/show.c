/* show: text layouts of sessions and messages. Not here: where the text goes (the caller's
 * emit function writes it to stdout or above the prompt). */
#include "show.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "who.h"

int64_t show_parse_iso(const char *iso)
{
    struct tm tm;
    int ms = 0;
    char *end;

    if (!iso)
        return -1;
    memset(&tm, 0, sizeof tm);
    end = strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return -1;
    if (*end == '.') {
        int digits = 0;
        for (end++; *end >= '0' && *end <= '9'; end++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*end - '0');
        for (; digits < 3; digits++)
            ms *= 10;
    }
    if (*end != 'Z')
        return -1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

void show_age(const char *iso, char *out, size_t size)
{
    int64_t t = show_parse_iso(iso), s;

    if (t < 0) {
        snprintf(out, size, "?");
        return;
    }
    s = (clock_now_ms() - t) / 1000;
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf(out, size, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(out, size, "%lldm", (long long)(s / 60));
    else if (s < 86400)
        snprintf(out, size, "%lldh", (long long)(s / 3600));
    else
        snprintf(out, size, "%lldd", (long long)(s / 86400));
}

void show_sessions(const json_t *body, const char *current,
                   void (*emit)(void *ud, const char *line), void *ud)
{
    const json_t *list = json_object_get(body, "sessions"), *s;
    char line[512], age[16];
    size_t i;

    snprintf(line, sizeof line, "  %-16s %8s %7s %5s  %s", "SESSION", "MESSAGES", "CLIENTS", "AGE",
             "TITLE");
    emit(ud, line);
    json_array_foreach(list, i, s)
    {
        const char *id = json_string_value(json_object_get(s, "session_id"));
        const char *title = json_string_value(json_object_get(s, "title"));
        bool cur = id && current && strcmp(id, current) == 0;
        show_age(json_string_value(json_object_get(s, "created_at")), age, sizeof age);
        snprintf(line, sizeof line, "%c %-16s %8lld %7lld %5s  %s", cur ? '*' : ' ', id ? id : "?",
                 (long long)json_integer_value(json_object_get(s, "message_count")),
                 (long long)json_integer_value(json_object_get(s, "clients")), age,
                 title ? title : "");
        for (size_t n = strlen(line); n > 0 && line[n - 1] == ' ';)
            line[--n] = '\0';
        emit(ud, line);
    }
    snprintf(line, sizeof line, "%lld session(s)",
             (long long)json_integer_value(json_object_get(body, "total")));
    emit(ud, line);
}

char *show_message(const json_t *msg)
{
    char *out;

    const char *role = json_string_value(json_object_get(msg, "role"));
    const char *content = json_string_value(json_object_get(msg, "content"));
    const char *at = json_string_value(json_object_get(msg, "created_at"));
    const char *name = json_string_value(json_object_get(json_object_get(msg, "author"), "name"));
    char shown[WHO_SHOWN_LEN];

    /* a user message with an author is shown by its author's name, as on the chat screen */
    if (name && role && strcmp(role, "user") == 0)
        role = who_shown(name, shown);
    if (asprintf(&out, "#%lld %s %s: %s", (long long)json_integer_value(json_object_get(msg, "id")),
                 at ? at : "?", role ? role : "?", content ? content : "") < 0)
        return NULL;
    return out;
}
