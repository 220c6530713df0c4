/* proto: the two wire dialects. Every event is built once, in the flat form
 * {"type": ..., fields...}, and rendered here once per dialect that has receivers.
 *
 * flat:     the event as built.
 * envelope: {"type", "timestamp", "client_id", "channel", "data": {the other fields}}.
 * Parsing of client messages lives in handlers.c, which reads either form through the
 * same field accessors. */
#include <string.h>

#include "broker.h"
#include "clock.h"
#include "jsonx.h"

json_t *proto_event(const char *type)
{
    return json_pack("{s:s}", "type", type);
}

json_t *proto_message(const struct db_message *m)
{
    json_t *o =
        json_pack("{s:I, s:s, s:s, s:s, s:s?}", "id", (json_int_t)m->id, "role", m->role, "content",
                  m->content, "created_at", m->created_at, "connection_id", m->connection_id);

    if (o && m->client_msg_id)
        json_object_set_new(o, "client_msg_id", json_string(m->client_msg_id));
    if (o && m->thread_id)
        json_object_set_new(o, "thread_id", json_string(m->thread_id));
    return o;
}

static json_t *envelope(const json_t *ev)
{
    char now[CLOCK_ISO_LEN];
    json_t *data = json_deep_copy(ev), *env;
    json_t *client = json_object_get(ev, "connection_id");
    json_t *channel = json_object_get(ev, "channel");

    clock_now_iso(now);
    json_object_del(data, "type");
    json_object_del(data, "channel");
    env = json_pack("{s:O, s:s, s:O, s:O, s:o}", "type", json_object_get(ev, "type"), "timestamp",
                    now, "client_id", client ? client : json_null(), "channel",
                    channel ? channel : json_null(), "data", data);
    return env;
}

char *proto_render(const json_t *ev, enum dialect d, size_t *len)
{
    json_t *env;
    char *text;

    if (d == DIALECT_FLAT)
        return jx_dump(ev, len);
    env = envelope(ev);
    text = env ? jx_dump(env, len) : NULL;
    json_decref(env);
    return text;
}
