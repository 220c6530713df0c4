/* h_sessions: the /sessions resource and its messages. Every change is committed first,
 * then the broker is told through the notification socket, then the client is answered.
 * A session's reply_mode (SPEC 9) is set here at creation and by PATCH; what it means for
 * a chat is the broker's (common/reply_policy.c). */
#include <string.h>

#include "jsonx.h"
#include "names.h"
#include "quota.h"
#include "reply_policy.h"
#include "rest.h"
#include "utf8.h"

#define TITLE_MAX 200
#define MODEL_MAX 128

/* Reads the optional reply_mode of body into *mode (left as it was when absent). On a bad
 * value answers 400 invalid_field naming the field and returns non-zero. */
static int read_reply_mode(struct rt_ctx *c, json_t *body, const char **mode)
{
    char why[JX_WHY_LEN], shown[UTF8_SHOWN_LEN];
    enum perr e;

    if ((e = jx_string(body, "reply_mode", false, 1, POLICY_MODE_LEN, mode, why))) {
        rt_error(c, e, "%s; it is one of " POLICY_MODES, why);
        return -1;
    }
    if (*mode && !policy_mode_valid(*mode)) {
        rt_error(c, PERR_INVALID_FIELD, "field 'reply_mode': '%s' is not a reply mode; use %s",
                 utf8_shown(shown, *mode), POLICY_MODES);
        return -1;
    }
    return 0;
}

/* Whether the {id} segment can name a session; other text is simply not found. */
static int valid_id(struct rt_ctx *c)
{
    if (clock_is_hex(c->id, DB_ID_HEX))
        return 1;
    rt_db_error(c, PERR_SESSION_NOT_FOUND);
    return 0;
}

void h_session_new(struct rt_ctx *c)
{
    const char *model = cfg_model_name(c->r->cfg), *title = NULL, *mode = NULL;
    char why[JX_WHY_LEN];
    struct db_session s;
    char shown[UTF8_SHOWN_LEN];
    json_t *body, *out;
    enum perr e;

    if (rt_need_db(c) || rt_body_object(c, &body))
        return;
    if ((e = jx_string(body, "model_id", false, 1, MODEL_MAX, &model, why)) ||
        (e = jx_string(body, "title", false, 0, TITLE_MAX, &title, why))) {
        rt_error(c, e, "%s", why);
        goto out;
    }
    if (read_reply_mode(c, body, &mode))
        goto out;
    if (model && !cfg_model_allowed(c->r->cfg, model)) {
        rt_error(c, PERR_INVALID_FIELD,
                 "field 'model_id': '%s' is not a model this service offers (--llm-models)",
                 utf8_shown(shown, model));
        goto out;
    }
    if ((e = db_session_create_mode(c->db, model, title, NULL, mode, &s))) {
        rt_db_error(c, e);
        goto out;
    }
    notify_session_event(c->r->notify, "session_created", s.id);
    out = json_pack("{s:s, s:s, s:s?, s:s, s:s}", "session_id", s.id, "model", s.model, "title",
                    s.title, "reply_mode", s.reply_mode, "created_at", s.created_at);
    db_session_cleanup(&s);
    rt_json(c, 201, out);
out:
    json_decref(body);
}

void h_session_list(struct rt_ctx *c)
{
    struct db_session *v = NULL;
    int64_t limit, offset, total;
    json_t *list;
    size_t n = 0;
    enum perr e;

    if (rt_need_db(c) || rt_arg_int(c, "limit", 1, 500, 50, &limit) ||
        rt_arg_int(c, "offset", 0, INT32_MAX, 0, &offset))
        return;
    if ((e = db_session_list(c->db, (int)limit, (int)offset, &v, &n, &total))) {
        rt_db_error(c, e);
        return;
    }
    list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, rt_session_json(&v[i]));
    db_session_list_free(v, n);
    rt_json(c, 200,
            json_pack("{s:o, s:I, s:I, s:I}", "sessions", list, "total", (json_int_t)total, "limit",
                      (json_int_t)limit, "offset", (json_int_t)offset));
}

/* The answer being written, and whether it shows every reply (?all=true). */
struct history_out {
    struct jx_buf b;
    bool all;
};

/* Writes one message as {"id", "seq", "role", "content", "created_at", "author"?,
 * "status"?} (rt_message_json's fields), after a comma unless it is the first. */
static void write_message(void *arg, const struct db_message *m)
{
    struct history_out *h = arg;
    struct jx_buf *b = &h->b;

    jx_buf_cstr(b, b->p[b->len - 1] == '[' ? "{\"id\":" : ",{\"id\":");
    jx_buf_int(b, m->id);
    jx_buf_cstr(b, ",\"seq\":");
    jx_buf_int(b, m->seq);
    jx_buf_cstr(b, ",\"role\":");
    jx_buf_string(b, m->role);
    jx_buf_cstr(b, ",\"content\":");
    jx_buf_string(b, m->content);
    jx_buf_cstr(b, ",\"created_at\":");
    jx_buf_string(b, m->created_at);
    if (m->author_name) {
        jx_buf_cstr(b, ",\"author\":{\"name\":");
        jx_buf_string(b, m->author_name);
        jx_buf_cstr(b, ",\"connection_id\":");
        if (m->connection_id)
            jx_buf_string(b, m->connection_id);
        else
            jx_buf_cstr(b, "null");
        jx_buf_cstr(b, "}");
    }
    if (h->all && m->status) { /* assistant replies, with ?all=true */
        jx_buf_cstr(b, ",\"status\":");
        jx_buf_string(b, m->status);
    }
    jx_buf_cstr(b, "}");
}

/* The session with a page of its history. The busiest read of the API: the session's
 * fields come from jansson as everywhere else, but the messages are written straight
 * from the database's rows into the answer, with no copy and no JSON object per message. */
void h_session_get(struct rt_ctx *c)
{
    struct history_out h = {0};
    struct jx_buf *b = &h.b;
    struct db_session s;
    int64_t limit, before;
    bool has_more = false;
    json_t *fields;
    size_t len;
    char *head;
    enum perr e;

    if (rt_need_db(c) || !valid_id(c) || rt_arg_int(c, "limit", 1, 1000, 100, &limit) ||
        rt_arg_int(c, "before", 1, INT64_MAX, 0, &before) || rt_arg_bool(c, "all", false, &h.all))
        return;
    if ((e = db_session_get(c->db, c->id, &s))) {
        rt_db_error(c, e);
        return;
    }
    /* the session's fields, {"session_id":...}, without the closing brace; then the rest */
    fields = rt_session_json(&s);
    head = fields ? jx_dump(fields, &len) : NULL;
    json_decref(fields);
    db_session_cleanup(&s);
    if (!head) {
        rt_error(c, PERR_INTERNAL, "out of memory");
        return;
    }
    jx_buf_raw(b, head, len - 1);
    free(head);
    jx_buf_cstr(b, ",\"messages\":[");
    e = db_messages_page_each(c->db, c->id, (int)limit, before, h.all, &has_more, write_message,
                              &h);
    jx_buf_cstr(b, has_more ? "],\"has_more\":true}" : "],\"has_more\":false}");
    if (e || b->oom) {
        free(b->p);
        rt_db_error(c, e ? e : PERR_INTERNAL);
        return;
    }
    free(c->res->body);
    c->res->body = b->p;
    c->res->body_len = b->len;
    c->res->status = 200;
    c->res->content_type = "application/json";
}

/* PATCH /sessions/{id} {reply_mode?, title?}: at least one of them, no other field (a
 * misspelt field is an error, not silently nothing); title as at creation, or null for
 * none. Answers the session as it is then; members hear session_changed. */
void h_session_patch(struct rt_ctx *c)
{
    const char *mode = NULL, *title = NULL, *key;
    char why[JX_WHY_LEN], shown[UTF8_SHOWN_LEN];
    bool set_title;
    struct db_session s;
    json_t *body, *v;
    enum perr e;

    if (rt_need_db(c) || !valid_id(c) || rt_body_object(c, &body))
        return;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "reply_mode") != 0 && strcmp(key, "title") != 0) {
            rt_error(c, PERR_INVALID_FIELD,
                     "field '%s' cannot be changed; PATCH takes reply_mode and title",
                     utf8_shown(shown, key));
            goto out;
        }
    }
    set_title = json_object_get(body, "title") != NULL;
    if (!set_title && !json_object_get(body, "reply_mode")) {
        rt_error(c, PERR_INVALID_FIELD,
                 "nothing to change: send reply_mode (" POLICY_MODES ") or title, or both");
        goto out;
    }
    if (json_is_null(json_object_get(body, "reply_mode"))) {
        rt_error(c, PERR_INVALID_FIELD, "field 'reply_mode' must be one of " POLICY_MODES);
        goto out;
    }
    if (read_reply_mode(c, body, &mode))
        goto out;
    if ((e = jx_string(body, "title", false, 0, TITLE_MAX, &title, why))) {
        rt_error(c, e, "%s", why);
        goto out;
    }
    if ((e = db_session_update(c->db, c->id, mode, set_title, title, &s))) {
        rt_db_error(c, e);
        goto out;
    }
    notify_session_event(c->r->notify, "session_changed", s.id);
    rt_json(c, 200, rt_session_json(&s));
    db_session_cleanup(&s);
out:
    json_decref(body);
}

void h_session_delete(struct rt_ctx *c)
{
    enum perr e;

    if (rt_need_db(c) || !valid_id(c))
        return;
    if ((e = db_session_delete(c->db, c->id))) {
        rt_db_error(c, e);
        return;
    }
    notify_session_event(c->r->notify, "session_deleted", c->id);
    rt_json(c, 200, json_pack("{s:b, s:s}", "deleted", 1, "session_id", c->id));
}

void h_session_clear(struct rt_ctx *c)
{
    int64_t cleared = 0;
    enum perr e;

    if (rt_need_db(c) || !valid_id(c))
        return;
    if ((e = db_session_clear(c->db, c->id, &cleared))) {
        rt_db_error(c, e);
        return;
    }
    notify_session_event(c->r->notify, "history_cleared", c->id);
    rt_json(c, 200, json_pack("{s:I, s:s}", "cleared", (json_int_t)cleared, "session_id", c->id));
}

void h_message_post(struct rt_ctx *c)
{
    const char *content = NULL, *name = NULL;
    char why[JX_WHY_LEN];
    struct db_message m;
    struct db_quota quota;
    bool reply = false;
    json_t *body;
    enum perr e;

    if (rt_need_db(c) || !valid_id(c) || rt_body_object(c, &body))
        return;
    if ((e = jx_string(body, "content", true, 1, (size_t)c->r->cfg->max_message_size, &content,
                       why)) ||
        (e = jx_bool(body, "reply", &reply, why)) ||
        (e = jx_string(body, "name", false, 1, NAME_MAX_CHARS, &name, why))) {
        rt_error(c, e, "%s", why);
        goto out;
    }
    if (name && !name_valid(name, strlen(name))) {
        rt_error(c, PERR_INVALID_FIELD,
                 "field 'name' must be 1 to %d characters, without control characters",
                 NAME_MAX_CHARS);
        goto out;
    }
    if (!name && c->key_name[0])
        name = c->key_name; /* the key's name, as a connection with that key is called */
    struct db_message_in in = {.session_id = c->id,
                               .role = "user",
                               .content = content,
                               .author_name = name,
                               .want_reply = reply,
                               .quota = quota_for(c->r->cfg, c->key_name, &quota)};
    if ((e = db_message_add(c->db, &in, &m, NULL, NULL))) {
        if (e == PERR_QUOTA_EXCEEDED)
            rt_quota_error(c, &quota);
        else
            rt_db_error(c, e);
        goto out;
    }
    notify_message_added(c->r->notify, c->id, m.id, reply);
    json_t *made = rt_message_json(&m);
    json_object_set_new(made, "session_id", json_string(m.session_id));
    rt_json(c, 201, made);
    db_message_cleanup(&m);
out:
    json_decref(body);
}
