/* h_sessions: the /sessions resource and its messages. Every change is committed first,
 * then the broker is told through the notification socket, then the client is answered. */
#include <string.h>

#include "jsonx.h"
#include "rest.h"

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
    json_t *body, *out;
    enum perr e;

    if (rt_need_db(c) || rt_body_object(c, &body))
        return;
    if ((e = jx_string(body, "model_id", false, 1, MODEL_MAX, &model, why)) ||
        (e = jx_string(body, "title", false, 0, TITLE_MAX, &title, why))) {
        rt_error(c, e, "%s", why);
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

void h_session_get(struct rt_ctx *c)
{
    struct db_message_list msgs = {0};
    struct db_session s;
    int64_t limit, before;
    bool has_more = false;
    json_t *out, *list;
    enum perr e;

    if (rt_need_db(c) || !valid_id(c) || rt_arg_int(c, "limit", 1, 1000, 100, &limit) ||
        rt_arg_int(c, "before", 1, INT64_MAX, 0, &before))
        return;
    if ((e = db_session_get(c->db, c->id, &s))) {
        rt_db_error(c, e);
        return;
    }
    if ((e = db_messages_page(c->db, c->id, (int)limit, before, &msgs, &has_more))) {
        db_session_cleanup(&s);
        rt_db_error(c, e);
        return;
    }
    out = rt_session_json(&s);
    list = json_array();
    for (size_t i = 0; i < msgs.n; i++)
        json_array_append_new(list, rt_message_json(&msgs.v[i]));
    json_object_set_new(out, "messages", list);
    json_object_set_new(out, "has_more", json_boolean(has_more));
    db_message_list_cleanup(&msgs);
    db_session_cleanup(&s);
    rt_json(c, 200, out);
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
    struct db_message_in in = {
        .session_id = c->id, .role = "user", .content = content, .want_reply = reply};
    if ((e = db_message_add(c->db, &in, &m, NULL, NULL))) {
        rt_db_error(c, e);
        goto out;
    }
    notify_message_added(c->r->notify, c->id, m.id, reply);
    rt_json(c, 201,
            json_pack("{s:I, s:s, s:s, s:s, s:s}", "id", (json_int_t)m.id, "session_id",
                      m.session_id, "role", m.role, "content", m.content, "created_at",
                      m.created_at));
    db_message_cleanup(&m);
out:
    json_decref(body);
}
