/* envelope: the leaves of the envelope dialect (SPEC 3.3):
 * {"type", "timestamp", "client_id", "channel", "data": {...}}.
 *
 * inbound.c has read and checked each message's data fields (in the order of its row);
 * a leaf decides what the message means and calls the shared actions of actions.c.
 *
 * A channel is a session addressed by name, made on first subscribe; one connection may
 * hold many. chat_message, task_update and agent_status are stored (events with the role
 * "event") and go to the channel's subscribers, flat members included, each in its own
 * dialect; task_update and agent_status with a null channel go to every connection (they
 * are kept in the "_global" channel's history). llm_request asks the assistant; its reply
 * streams back as llm_chunk, ending with an empty chunk that has is_final: true. Without
 * a channel it runs in a private session of the connection. */
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "jsonx.h"
#include "utf8.h"

#define CHANNEL_MAX    64
#define GLOBAL_CHANNEL "_global"

static bool valid_channel(const char *name, size_t n)
{
    if (n == 0 || n > CHANNEL_MAX || strlen(name) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

/* The session pss holds for channel, or NULL. */
static struct live_session *subscribed(struct per_session_data__chat *pss, const char *channel)
{
    for (unsigned i = 0; i < pss->n_joined; i++)
        if (pss->joined[i]->channel && strcmp(pss->joined[i]->channel, channel) == 0)
            return pss->joined[i];
    return NULL;
}

/* Sends {type, data: fields} (fields stolen) to the sender alone. */
static void reply(struct inbound *in, const char *type, const char *channel, json_t *fields)
{
    json_t *ev = fields ? fields : json_object();

    json_object_set_new(ev, "type", json_string(type));
    json_object_set_new(ev, "connection_id", json_string(in->pss->id));
    json_object_set_new(ev, "channel", channel ? json_string(channel) : json_null());
    fanout_send(in->vhd, in->pss, ev);
    json_decref(ev);
}

/* Reads the channel the message is for: data.channel, or the envelope's "channel".
 * Returns 0 with *out NULL when there is none; -1 after answering invalid_field. */
static int channel_arg(struct inbound *in, const char **out)
{
    json_t *v = json_object_get(in->data, "channel");

    if (!v || json_is_null(v))
        v = json_object_get(in->msg, "channel");
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || !valid_channel(json_string_value(v), json_string_length(v))) {
        fanout_error(in->vhd, in->pss, PERR_INVALID_FIELD, in->row->type,
                     "field 'channel' must be 1 to %d of A-Z a-z 0-9 . _ : -", CHANNEL_MAX);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* The channel a message must name; NULL after answering. */
static const char *required_channel(struct inbound *in)
{
    const char *channel;

    if (channel_arg(in, &channel) < 0)
        return NULL;
    if (!channel)
        fanout_error(in->vhd, in->pss, PERR_INVALID_FIELD, in->row->type,
                     "field 'channel' is required: the channel to use");
    return channel;
}

/* The subscribed session a message addresses; NULL after answering. */
static struct live_session *target(struct inbound *in, const char *channel)
{
    struct live_session *s = subscribed(in->pss, channel);

    if (!s)
        fanout_error(in->vhd, in->pss, PERR_NOT_IN_SESSION, in->row->type,
                     "subscribe to channel '%s' first", channel);
    return s;
}

/* auth {api_key} */
void env_auth(struct inbound *in)
{
    const char *key = json_string_value(json_object_get(in->data, "api_key"));

    if (access_authenticate(in->vhd, in->pss, key)) {
        reply(in, "auth_success", NULL, NULL);
        return;
    }
    reply(in, "auth_failure", NULL,
          json_pack("{s:s}", "reason",
                    key ? "the API key is not valid (mistyped or revoked)"
                        : "field 'api_key' is required: the key an administrator gave you"));
    ws_close(in->pss, LWS_CLOSE_STATUS_POLICY_VIOLATION);
}

/* subscribe {channel} */
void env_subscribe(struct inbound *in)
{
    const char *channel = required_channel(in);
    struct join_request j = {.channel = channel, .since = -1};

    if (channel)
        act_join(in->vhd, in->pss, &j, "subscribe");
}

/* unsubscribe {channel} */
void env_unsubscribe(struct inbound *in)
{
    char channel[CHANNEL_MAX + 1];
    struct live_session *s;
    const char *name;

    if (channel_arg(in, &name) < 0)
        return;
    if (!name || !(s = subscribed(in->pss, name))) {
        fanout_error(in->vhd, in->pss, PERR_NOT_IN_SESSION, in->row->type,
                     "not subscribed to channel '%s'", name ? name : "");
        return;
    }
    snprintf(channel, sizeof channel, "%s", name);
    sess_leave(in->vhd, s, in->pss, true); /* may free s */
    reply(in, "unsubscription_success", channel, json_pack("{s:s}", "channel", channel));
}

/* chat_message {content, thread_id?} */
void env_chat_message(struct inbound *in)
{
    const char *channel = required_channel(in);
    struct live_session *s = channel ? target(in, channel) : NULL;
    struct store_request req = {
        .role = "user", .content = in->v[0].s, .thread_id = in->has[1] ? in->v[1].s : NULL};

    if (s)
        act_store(in->vhd, in->pss, s, &req, in->row->type);
}

/* task_update {task_id, status} and agent_status {agent_id, status}: stored as an event
 * whose content is the event itself. */
void env_event(struct inbound *in)
{
    const char *id_field = in->row->fields[0].name, *channel;
    struct live_session *s = NULL;
    json_t *event;
    char *content;

    if (channel_arg(in, &channel) < 0)
        return;
    if (channel && !(s = target(in, channel)))
        return;
    event = json_pack("{s:s, s:s, s:s}", "type", in->row->type, id_field, in->v[0].s, "status",
                      in->v[1].s);
    content = event ? jx_dump(event, NULL) : NULL;
    json_decref(event);
    if (!content)
        return;
    struct store_request req = {.role = "event",
                                .content = content,
                                .channel = s ? NULL : GLOBAL_CHANNEL,
                                .broadcast_all = s == NULL};
    act_store(in->vhd, in->pss, s, &req, in->row->type);
    free(content);
}

/* llm_request {content, template?, metadata?} */
void env_llm_request(struct inbound *in)
{
    const char *template = in->has[1] ? in->v[1].s : NULL, *prompt = NULL, *channel;
    char shown[UTF8_SHOWN_LEN];
    struct live_session *s = NULL;

    if (template && !(prompt = templates_get(in->vhd, template))) {
        fanout_error(in->vhd, in->pss, PERR_INVALID_FIELD, in->row->type,
                     "field 'template': no template named '%s'%s", utf8_shown(shown, template),
                     in->vhd->cfg->templates_dir ? " in --templates-dir" : " (no --templates-dir)");
        return;
    }
    if (!in->vhd->driver) {
        fanout_error(in->vhd, in->pss, PERR_LLM, in->row->type,
                     "this service runs without an assistant (--llm none)");
        return;
    }
    if (channel_arg(in, &channel) < 0)
        return;
    if (channel && !(s = target(in, channel)))
        return;
    if (!channel && in->pss->private_session[0])
        s = sess_find(in->vhd, in->pss->private_session);
    struct store_request req = {
        .role = "user", .content = in->v[0].s, .want_reply = true, .system_prompt = prompt};
    act_store(in->vhd, in->pss, s, &req, in->row->type);
}
