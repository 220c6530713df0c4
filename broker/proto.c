/* proto: the two wire dialects. Every event is built once, in the flat form
 * {"type": ..., fields...}, and rendered here once per dialect that has receivers.
 *
 * flat:     the event as built.
 * envelope: {"type", "timestamp", "client_id", "channel", "data": {...}} where
 *   - a stored chat message (session_update/message_added) is a `chat_message`
 *     {message_id, session_id, role, content, created_at, thread_id?, author?}, and a stored event
 *     (role "event": task_update, agent_status) is its own type with its own fields;
 *   - a reply's `chunk` is an `llm_chunk` {chunk, is_final, response_id, chunk_number};
 *   - other session_update kinds take the update_type as their type;
 *   - everything else keeps its type, its other fields going into data.
 *   client_id is always a string (SPEC 3.3): the client_id of the client whose message
 *   caused the event (PROTO_CLIENT, set with proto_set_client: a sender, a typist, a
 *   joiner, an assistant reply's requester); for an answer to one connection (pong,
 *   errors, subscription_success), the receiver's; else the connection the event names
 *   (connection_id: a member listed by another broker, a message read back from the
 *   database); else "parley" (the service itself: REST, a summary of several joins).
 *   PROTO_CLIENT never reaches a flat client.
 * Parsing of client messages lives in handlers.c (flat) and envelope.c. */
#include <string.h>

#include "broker.h"
#include "clock.h"
#include "jsonx.h"

#define PROTO_CLIENT  "_client_id" /* internal: who caused the event */
#define PROTO_SERVICE "parley"     /* the client_id of what no client caused */

void proto_set_client(json_t *ev, const char *client_id)
{
    if (ev && client_id && client_id[0])
        json_object_set_new(ev, PROTO_CLIENT, json_string(client_id));
}

json_t *proto_event(const char *type)
{
    return json_pack("{s:s}", "type", type);
}

json_t *proto_message(const struct db_message *m)
{
    json_t *o = json_pack("{s:I, s:I, s:s, s:s, s:s, s:s?}", "id", (json_int_t)m->id, "seq",
                          (json_int_t)m->seq, "role", m->role, "content", m->content, "created_at",
                          m->created_at, "connection_id", m->connection_id);

    if (o && m->client_msg_id)
        json_object_set_new(o, "client_msg_id", json_string(m->client_msg_id));
    if (o && m->thread_id)
        json_object_set_new(o, "thread_id", json_string(m->thread_id));
    if (o && m->author_name) /* who said it (SPEC 9); none for replies */
        json_object_set_new(
            o, "author",
            json_pack("{s:s, s:s?}", "name", m->author_name, "connection_id", m->connection_id));
    return o;
}

json_t *proto_message_added(const char *session_id, const struct db_message *m,
                            int64_t message_count)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:o}", "type", "session_update", "session_id",
                     session_id, "update_type", "message_added", "message_count",
                     (json_int_t)message_count, "message", proto_message(m));
}

/* A stored message as envelope data: sets *type and returns new data. */
static json_t *message_data(const json_t *ev, const char **type)
{
    const json_t *m = json_object_get(ev, "message");
    const char *role = json_string_value(json_object_get(m, "role"));
    json_t *data;

    if (role && strcmp(role, "event") == 0) {
        /* content is the event as the client sent it: {"type":..., fields...} */
        const char *content = json_string_value(json_object_get(m, "content"));
        json_t *inner = content ? json_loads(content, 0, NULL) : NULL;
        const char *kind = json_string_value(json_object_get(inner, "type"));
        if (json_is_object(inner) && kind) {
            /* the two kinds envelope clients store (envelope.c) */
            *type = strcmp(kind, "agent_status") == 0 ? "agent_status" : "task_update";
            json_object_del(inner, "type");
            json_object_set(inner, "message_id", json_object_get(m, "id"));
            return inner;
        }
        json_decref(inner);
    }
    *type = "chat_message";
    data =
        json_pack("{s:O, s:O, s:O, s:O, s:O, s:O}", "message_id", json_object_get(m, "id"), "seq",
                  json_object_get(m, "seq"), "session_id", json_object_get(ev, "session_id"),
                  "role", json_object_get(m, "role"), "content", json_object_get(m, "content"),
                  "created_at", json_object_get(m, "created_at"));
    if (data && json_object_get(m, "thread_id"))
        json_object_set(data, "thread_id", json_object_get(m, "thread_id"));
    if (data && json_object_get(m, "author"))
        json_object_set(data, "author", json_object_get(m, "author"));
    return data;
}

static json_t *envelope(const json_t *ev, const char *channel, const char *receiver)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *update = json_string_value(json_object_get(ev, "update_type"));
    const char *client = json_string_value(json_object_get(ev, PROTO_CLIENT));
    const char *named = json_string_value(json_object_get(ev, "connection_id"));
    char now[CLOCK_ISO_LEN];
    json_t *data;

    if (!type)
        return NULL;
    if (update && strcmp(update, "message_added") == 0) {
        data = message_data(ev, &type);
        named = json_string_value(json_object_get(json_object_get(ev, "message"), "connection_id"));
    } else if (strcmp(type, "chunk") == 0) {
        type = "llm_chunk";
        data = json_pack("{s:O, s:O, s:O, s:O, s:O}", "chunk", json_object_get(ev, "text"),
                         "is_final", json_object_get(ev, "is_final"), "response_id",
                         json_object_get(ev, "response_id"), "chunk_number",
                         json_object_get(ev, "chunk_number"), "session_id",
                         json_object_get(ev, "session_id"));
    } else {
        if (update)
            type = update;
        data = json_deep_copy(ev);
        json_object_del(data, "type");
        json_object_del(data, "update_type");
        if (strcmp(type, "connected") != 0)         /* the greeting says which connection it is */
            json_object_del(data, "connection_id"); /* else it is the envelope's client_id */
        json_object_del(data, PROTO_CLIENT);
        if (json_is_null(json_object_get(data, "channel")))
            json_object_del(data, "channel");
    }
    clock_now_iso(now);
    if (json_is_string(json_object_get(ev, "channel")))
        channel = json_string_value(json_object_get(ev, "channel"));
    if (!client)
        client = receiver ? receiver : named ? named : PROTO_SERVICE;
    return json_pack("{s:s, s:s, s:s, s:s?, s:o}", "type", type, "timestamp", now, "client_id",
                     client, "channel", channel, "data", data ? data : json_object());
}

/* The flat form: the event as built, without what only the envelope shows. */
static char *flat(const json_t *ev, size_t *len)
{
    json_t *copy;
    char *text;

    if (!json_object_get(ev, PROTO_CLIENT))
        return jx_dump(ev, len);
    if (!(copy = json_copy((json_t *)ev))) /* shallow: the values are shared, not changed */
        return NULL;
    json_object_del(copy, PROTO_CLIENT);
    text = jx_dump(copy, len);
    json_decref(copy);
    return text;
}

char *proto_render(const json_t *ev, enum dialect d, const char *channel, const char *receiver,
                   size_t *len)
{
    json_t *env;
    char *text;

    if (d == DIALECT_FLAT)
        return flat(ev, len);
    env = envelope(ev, channel, receiver);
    text = env ? jx_dump(env, len) : NULL;
    json_decref(env);
    return text;
}
