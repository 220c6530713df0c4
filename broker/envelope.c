/* envelope: client messages of the envelope dialect (SPEC 3.3):
 * {"type", "timestamp", "client_id", "channel", "data": {...}}.
 *
 * A channel is a session addressed by name, made on first subscribe; one connection may
 * hold many. chat_message, task_update and agent_status are stored (events with the role
 * "event") and go to the channel's subscribers, flat members included, each in its own
 * dialect; task_update and agent_status with a null channel go to every connection (they
 * are kept in the "_global" channel's history). llm_request asks the assistant; its reply
 * streams back as llm_chunk, ending with an empty chunk that has is_final: true. Without
 * a channel it runs in a private session of the connection. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "dbq.h"
#include "jsonx.h"
#include "log.h"
#include "map.h"

#define CHANNEL_MAX        64
#define FIELD_MAX          128
#define TEMPLATE_MAX_BYTES (64 * 1024)
#define GLOBAL_CHANNEL     "_global"

static bool valid_channel(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > CHANNEL_MAX)
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

/* Sends {type, data: fields} (fields stolen) to pss alone. */
static void reply(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                  const char *type, const char *channel, json_t *fields)
{
    json_t *ev = fields ? fields : json_object();

    json_object_set_new(ev, "type", json_string(type));
    json_object_set_new(ev, "connection_id", json_string(pss->id));
    json_object_set_new(ev, "channel", channel ? json_string(channel) : json_null());
    fanout_send(vhd, pss, ev);
    json_decref(ev);
}

/* Reads the channel the message is for: the envelope's "channel", or data.channel.
 * Returns 0 with *out NULL when there is none; -1 after answering invalid_field. */
static int channel_arg(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                       const json_t *msg, const json_t *data, const char *type, const char **out)
{
    json_t *v = json_object_get(data, "channel");

    if (!v || json_is_null(v))
        v = json_object_get(msg, "channel");
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
        !valid_channel(json_string_value(v))) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, type,
                     "field 'channel' must be 1 to %d of A-Z a-z 0-9 . _ : -", CHANNEL_MAX);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* ---- auth ---- */

static void on_auth(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                    const json_t *data)
{
    const char *key = json_string_value(json_object_get(data, "api_key"));

    if (pss->authed || (key && access_key_valid(vhd, key))) {
        pss->authed = true;
        reply(vhd, pss, "auth_success", NULL, NULL);
        return;
    }
    access_refused(vhd, pss->ip, "API key not valid", "envelope auth");
    reply(vhd, pss, "auth_failure", NULL,
          json_pack("{s:s}", "reason",
                    key ? "the API key is not valid (mistyped or revoked)"
                        : "field 'api_key' is required: the key an administrator gave you"));
    ws_close(pss, LWS_CLOSE_STATUS_POLICY_VIOLATION);
}

/* ---- subscribe / unsubscribe ---- */

struct subscribe_job {
    struct dbjob job;
    struct per_vhost_data__chat *vhd;
    char conn_id[BROKER_CONN_ID_HEX + 1];
    char channel[CHANNEL_MAX + 1];
    char *model;
    struct db_session session;
};

static void subscribe_run(struct dbjob *job, struct db *db)
{
    struct subscribe_job *j = (struct subscribe_job *)job;

    job->err = db_session_by_channel(db, j->channel, &j->session);
    if (job->err == PERR_SESSION_NOT_FOUND) /* subscribing to a new name makes it */
        job->err = db_session_create(db, j->model, j->channel, j->channel, &j->session);
}

static void subscribe_done(struct dbjob *job)
{
    struct subscribe_job *j = (struct subscribe_job *)job;
    struct per_vhost_data__chat *vhd = j->vhd;
    struct per_session_data__chat *pss = vhd->stopping ? NULL : ws_conn(vhd, j->conn_id);
    struct live_session *s;

    if (!pss)
        goto out;
    if (job->err) {
        fanout_error(vhd, pss, PERR_UNAVAILABLE, "subscribe",
                     "the database is not available; try again shortly");
        goto out;
    }
    s = sess_get(vhd, j->session.id, j->session.model);
    if (s && !s->channel)
        s->channel = strdup(j->channel);
    if (!s || sess_join(vhd, s, pss) < 0) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, "subscribe",
                     "this connection holds %d channels already; unsubscribe from one first",
                     BROKER_MAX_JOINED);
        sess_release(vhd, s);
        goto out;
    }
    s->message_count = j->session.message_count;
    reply(vhd, pss, "subscription_success", s->channel,
          json_pack("{s:s, s:s, s:I, s:I}", "channel", s->channel, "session_id", s->id,
                    "message_count", (json_int_t)s->message_count, "clients",
                    (json_int_t)s->n_members));
out:
    db_session_cleanup(&j->session);
    free(j->model);
    free(j);
}

static void on_subscribe(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                         const json_t *msg, const json_t *data)
{
    struct subscribe_job *j;
    struct live_session *s;
    const char *channel;

    if (channel_arg(vhd, pss, msg, data, "subscribe", &channel) < 0)
        return;
    if (!channel) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, "subscribe", "field 'channel' is required");
        return;
    }
    if ((s = subscribed(pss, channel))) {
        reply(vhd, pss, "subscription_success", channel,
              json_pack("{s:s, s:s, s:I, s:I}", "channel", channel, "session_id", s->id,
                        "message_count", (json_int_t)s->message_count, "clients",
                        (json_int_t)s->n_members));
        return;
    }
    if (!(j = calloc(1, sizeof *j)))
        return;
    j->vhd = vhd;
    snprintf(j->conn_id, sizeof j->conn_id, "%s", pss->id);
    snprintf(j->channel, sizeof j->channel, "%s", channel);
    j->model = strdup(vhd->driver ? cfg_model_name(vhd->cfg) : "none");
    j->job.run = subscribe_run;
    j->job.done = subscribe_done;
    dbq_push(vhd->dbq, &j->job);
}

static void on_unsubscribe(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                           const json_t *msg, const json_t *data)
{
    char channel[CHANNEL_MAX + 1];
    struct live_session *s;
    const char *name;

    if (channel_arg(vhd, pss, msg, data, "unsubscribe", &name) < 0)
        return;
    if (!name || !(s = subscribed(pss, name))) {
        fanout_error(vhd, pss, PERR_NOT_IN_SESSION, "unsubscribe", "not subscribed to channel '%s'",
                     name ? name : "");
        return;
    }
    snprintf(channel, sizeof channel, "%s", name);
    sess_leave(vhd, s, pss, true); /* may free s */
    reply(vhd, pss, "unsubscription_success", channel, json_pack("{s:s}", "channel", channel));
}

/* ---- what is stored ---- */

/* The subscribed session a message addresses; NULL after answering. */
static struct live_session *target(struct per_vhost_data__chat *vhd,
                                   struct per_session_data__chat *pss, const char *channel,
                                   const char *type)
{
    struct live_session *s = subscribed(pss, channel);

    if (!s)
        fanout_error(vhd, pss, PERR_NOT_IN_SESSION, type, "subscribe to channel '%s' first",
                     channel);
    return s;
}

static void on_chat_message(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                            const json_t *msg, const json_t *data)
{
    const char *content = NULL, *thread = NULL, *channel;
    char why[JX_WHY_LEN];
    struct live_session *s;
    enum perr e;

    if ((e = jx_string(data, "content", true, 1, (size_t)vhd->cfg->max_message_size, &content,
                       why)) ||
        (e = jx_string(data, "thread_id", false, 1, FIELD_MAX, &thread, why))) {
        fanout_error(vhd, pss, e, "chat_message", "%s", why);
        return;
    }
    if (channel_arg(vhd, pss, msg, data, "chat_message", &channel) < 0)
        return;
    if (!channel) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, "chat_message",
                     "field 'channel' is required: the channel to send to");
        return;
    }
    if (!(s = target(vhd, pss, channel, "chat_message")))
        return;
    struct store_request in = {
        .role = "user", .content = (char *)content, .thread_id = (char *)thread};
    handle_store(vhd, pss, s, &in, "chat_message");
}

/* task_update {task_id, status} and agent_status {agent_id, status}. */
static void on_event(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                     const json_t *msg, const json_t *data, const char *type, const char *id_field)
{
    const char *id = NULL, *status = NULL, *channel;
    char why[JX_WHY_LEN];
    struct live_session *s = NULL;
    json_t *event;
    char *content;
    enum perr e;

    if ((e = jx_string(data, id_field, true, 1, FIELD_MAX, &id, why)) ||
        (e = jx_string(data, "status", true, 1, FIELD_MAX, &status, why))) {
        fanout_error(vhd, pss, e, type, "%s", why);
        return;
    }
    if (channel_arg(vhd, pss, msg, data, type, &channel) < 0)
        return;
    if (channel && !(s = target(vhd, pss, channel, type)))
        return;
    event = json_pack("{s:s, s:s, s:s}", "type", type, id_field, id, "status", status);
    content = event ? jx_dump(event, NULL) : NULL;
    json_decref(event);
    if (!content)
        return;
    struct store_request in = {.role = "event",
                               .content = content,
                               .channel = s ? NULL : GLOBAL_CHANNEL,
                               .broadcast_all = s == NULL};
    handle_store(vhd, pss, s, &in, type);
    free(content);
}

static void on_llm_request(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                           const json_t *msg, const json_t *data)
{
    const char *content = NULL, *template = NULL, *prompt = NULL, *channel;
    json_t *metadata = json_object_get(data, "metadata");
    char why[JX_WHY_LEN];
    struct live_session *s = NULL;
    enum perr e;

    if ((e = jx_string(data, "content", true, 1, (size_t)vhd->cfg->max_message_size, &content,
                       why)) ||
        (e = jx_string(data, "template", false, 1, FIELD_MAX, &template, why))) {
        fanout_error(vhd, pss, e, "llm_request", "%s", why);
        return;
    }
    if (metadata && !json_is_object(metadata) && !json_is_null(metadata)) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, "llm_request",
                     "field 'metadata' must be an object");
        return;
    }
    if (template && !(prompt = vhd->templates ? map_get(vhd->templates, template) : NULL)) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, "llm_request",
                     "field 'template': no template named '%s'%s", template,
                     vhd->cfg->templates_dir ? " in --templates-dir" : " (no --templates-dir)");
        return;
    }
    if (!vhd->driver) {
        fanout_error(vhd, pss, PERR_LLM, "llm_request",
                     "this service runs without an assistant (--llm none)");
        return;
    }
    if (channel_arg(vhd, pss, msg, data, "llm_request", &channel) < 0)
        return;
    if (channel && !(s = target(vhd, pss, channel, "llm_request")))
        return;
    if (!channel && pss->private_session[0])
        s = sess_find(vhd, pss->private_session);
    struct store_request in = {
        .role = "user", .content = (char *)content, .want_reply = true, .system_prompt = prompt};
    handle_store(vhd, pss, s, &in, "llm_request");
}

/* ---- dispatch ---- */

void envelope_message(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                      const json_t *msg, const char *type)
{
    const json_t *data = json_object_get(msg, "data");

    if (strcmp(type, "auth") == 0)
        on_auth(vhd, pss, data);
    else if (strcmp(type, "subscribe") == 0)
        on_subscribe(vhd, pss, msg, data);
    else if (strcmp(type, "unsubscribe") == 0)
        on_unsubscribe(vhd, pss, msg, data);
    else if (strcmp(type, "chat_message") == 0)
        on_chat_message(vhd, pss, msg, data);
    else if (strcmp(type, "task_update") == 0)
        on_event(vhd, pss, msg, data, "task_update", "task_id");
    else if (strcmp(type, "agent_status") == 0)
        on_event(vhd, pss, msg, data, "agent_status", "agent_id");
    else if (strcmp(type, "llm_request") == 0)
        on_llm_request(vhd, pss, msg, data);
    else if (strcmp(type, "ping") == 0)
        handle_ping(vhd, pss);
    else
        fanout_error(vhd, pss, PERR_UNKNOWN_TYPE, type,
                     "unknown message type '%s'; see the envelope protocol in the API docs", type);
}

/* ---- prompt templates ---- */

static void free_template(void *value, void *arg)
{
    free(value); /* the name lives in the same allocation, after the text */
}

int envelope_load_templates(struct per_vhost_data__chat *vhd)
{
    const char *dir = vhd->cfg->templates_dir;
    struct dirent *de;
    DIR *d;

    if (!dir)
        return 0;
    if (!(d = opendir(dir))) {
        log_error("cannot read --templates-dir '%s'; check the path", dir);
        return -1;
    }
    vhd->templates = map_new();
    while (vhd->templates && (de = readdir(d))) {
        size_t n = strlen(de->d_name), got;
        char path[4096], *buf;
        FILE *f;
        if (n <= 4 || strcmp(de->d_name + n - 4, ".txt") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (!(f = fopen(path, "r")))
            continue;
        /* text, NUL, then the name (the file name without .txt), NUL */
        buf = malloc(TEMPLATE_MAX_BYTES + n + 2);
        got = buf ? fread(buf, 1, TEMPLATE_MAX_BYTES, f) : 0;
        fclose(f);
        if (!buf)
            continue;
        buf[got] = '\0';
        memcpy(buf + got + 1, de->d_name, n - 4);
        buf[got + 1 + n - 4] = '\0';
        if (map_put(vhd->templates, buf + got + 1, buf) < 0)
            free(buf);
    }
    closedir(d);
    log_info("loaded %zu prompt templates from %s", vhd->templates ? map_count(vhd->templates) : 0,
             dir);
    return vhd->templates ? 0 : -1;
}

void envelope_free_templates(struct per_vhost_data__chat *vhd)
{
    if (!vhd->templates)
        return;
    map_each(vhd->templates, free_template, NULL);
    map_free(vhd->templates);
    vhd->templates = NULL;
}
