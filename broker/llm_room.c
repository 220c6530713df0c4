/* llm_room: what the model is told about the people in a room (SPEC 9 "The assistant sees
 * who said what"). Each user message with an author is sent as "Name: content" (and, for
 * OpenAI-compatible servers, with name_llm(Name) as the message's name, by
 * llm_providers.c), and the system prompt gains LLM_ROOM_PROMPT saying so. Only the request
 * changes: stored messages stay as their authors wrote them, so a request rebuilt for a
 * retry, a regeneration or a restart prefixes each message once. Loop thread; no state. */
#include "llm.h"

#include <stdlib.h>
#include <string.h>

#include "names.h"

const char *llm_author(const struct db_message *m)
{
    const char *name = m->author_name;

    if (strcmp(m->role, "user") != 0 || !name || !name_valid(name, strlen(name)))
        return NULL; /* a reply, a REST message without a name, a row from before names */
    return name;
}

char *llm_content(const struct db_message *m)
{
    const char *name = llm_author(m), *content = m->content ? m->content : "";
    size_t nlen, clen = strlen(content);
    char *out;

    if (!name)
        return strdup(content);
    nlen = strlen(name);
    if (strncmp(content, name, nlen) == 0 && content[nlen] == ':' && content[nlen + 1] == ' ')
        return strdup(content); /* the client wrote the prefix itself: not twice */
    if (!(out = malloc(nlen + 2 + clen + 1)))
        return NULL;
    memcpy(out, name, nlen);
    memcpy(out + nlen, ": ", 2);
    memcpy(out + nlen + 2, content, clen + 1);
    return out; /* valid UTF-8: both parts are, and ": " is ASCII */
}

char *llm_system_text(const char *configured, const struct db_message_list *context)
{
    bool authors = false;
    size_t clen = configured ? strlen(configured) : 0;
    char *out;

    for (size_t i = 0; i < context->n && !authors; i++)
        authors = llm_author(&context->v[i]) != NULL;
    if (!authors)
        return strdup(configured ? configured : "");
    if (!clen)
        return strdup(LLM_ROOM_PROMPT);
    if (!(out = malloc(clen + 2 + sizeof LLM_ROOM_PROMPT)))
        return NULL;
    memcpy(out, configured, clen);
    memcpy(out + clen, "\n\n", 2);
    memcpy(out + clen + 2, LLM_ROOM_PROMPT, sizeof LLM_ROOM_PROMPT);
    return out;
}
