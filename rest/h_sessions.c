/* h_sessions: the /sessions resource and its messages. Every change is committed first,
 * then the broker is told through the notification socket, then the client is answered. */
#include <string.h>

#include "jsonx.h"
#include "quota.h"
#include "rest.h"
#include "utf8.h"

#define TITLE_MAX 200
#define MODEL_MAX 128

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
    const char *model = cfg_model_name(c->r->cfg), *title = NULL;
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
    if (model && !cfg_model_allowed(c->r->cfg, model)) {
        rt_error(c, PERR_INVALID_FIELD,
                 "field 'model_id': '%s' is not a model this service offers (--llm-models)",
                 utf8_shown(shown, model));
        goto out;
    }
    if ((e = db_session_create(c->db, model, title, NULL, &s))) {
        rt_db_error(c, e);
        goto out;
    }
    notify_session_event(c->r->notify, "session_created", s.id);
    out = json_pack("{s:s, s:s, s:s?, s:s}", "session_id", s.id, "model", s.model, "title", s.title,
                    "created_at", s.created_at);
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

/* Writes one message as {"id", "seq", "role", "content", "created_at"} (rt_message_json's
 * fields), after a comma unless it is the first. */
static void write_message(void *arg, const struct db_message *m)
{
    struct jx_buf *b = arg;

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
    jx_buf_cstr(b, "}");
}

/* The session with a page of its history. The busiest read of the API: the session's
 * fields come from jansson as everywhere else, but the messages are written straight
 * from the database's rows into the answer, with no copy and no JSON object per message. */
void h_session_get(struct rt_ctx *c)
{
    struct jx_buf b = {0};
    struct db_session s;
    int64_t limit, before;
    bool has_more = false;
    json_t *fields;
    size_t len;
    char *head;
    enum perr e;

    if (rt_need_db(c) || !valid_id(c) || rt_arg_int(c, "limit", 1, 1000, 100, &limit) ||
        rt_arg_int(c, "before", 1, INT64_MAX, 0, &before))
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
    jx_buf_raw(&b, head, len - 1);
    free(head);
    jx_buf_cstr(&b, ",\"messages\":[");
    e = db_messages_page_each(c->db, c->id, (int)limit, before, &has_more, write_message, &b);
    jx_buf_cstr(&b, has_more ? "],\"has_more\":true}" : "],\"has_more\":false}");
    if (e || b.oom) {
        free(b.p);
        rt_db_error(c, e ? e : PERR_INTERNAL);
        return;
    }
    free(c->res->body);
    c->res->body = b.p;
    c->res->body_len = b.len;
    c->res->status = 200;
    c->res->content_type = "application/json";
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
    const char *content = NULL;
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
        (e = jx_bool(body, "reply", &reply, why))) {
        rt_error(c, e, "%s", why);
        goto out;
    }
    struct db_message_in in = {.session_id = c->id,
                               .role = "user",
                               .content = content,
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
    rt_json(c, 201,
            json_pack("{s:I, s:I, s:s, s:s, s:s, s:s}", "id", (json_int_t)m.id, "seq",
                      (json_int_t)m.seq, "session_id", m.session_id, "role", m.role, "content",
                      m.content, "created_at", m.created_at));
    db_message_cleanup(&m);
out:
    json_decref(body);
}
