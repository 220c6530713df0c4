/* h_messages: reading a session's history: full-text search and export.
 * POST /sessions/{id}/messages (adding one) lives with the session in h_sessions.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rest.h"

#define SEARCH_MAX  500
#define EXPORT_PAGE 1000

static int session_exists(struct rt_ctx *c, struct db_session *s)
{
    enum perr e;

    if (!clock_is_hex(c->id, DB_ID_HEX)) {
        rt_db_error(c, PERR_SESSION_NOT_FOUND);
        return 0;
    }
    if ((e = db_session_get(c->db, c->id, s))) {
        rt_db_error(c, e);
        return 0;
    }
    return 1;
}

void h_message_search(struct rt_ctx *c)
{
    const char *q = rt_arg(c, "q");
    struct db_message_list l = {0};
    struct db_session s;
    int64_t limit, before;
    bool has_more = false, all;
    json_t *list;
    enum perr e;

    if (rt_need_db(c) || rt_arg_int(c, "limit", 1, SEARCH_MAX, 100, &limit) ||
        rt_arg_int(c, "before", 1, INT64_MAX, 0, &before) || rt_arg_bool(c, "all", false, &all) ||
        !session_exists(c, &s))
        return;
    db_session_cleanup(&s);
    if (q && strlen(q) > 500) {
        rt_error(c, PERR_INVALID_FIELD, "query parameter 'q' must be at most 500 characters");
        return;
    }
    if (q && q[strspn(q, " \t\n")])
        e = db_messages_search(c->db, c->id, q, (int)limit, before, &l);
    else /* no word: the newest messages */
        e = db_messages_page(c->db, c->id, (int)limit, before, all, &l, &has_more);
    if (e) {
        rt_db_error(c, e);
        return;
    }
    list = json_array();
    for (size_t i = 0; i < l.n; i++)
        if (rt_message_shown(&l.v[i], all)) /* a search finds every row: shown ones only */
            json_array_append_new(list, rt_history_json(&l.v[i], all));
    db_message_list_cleanup(&l);
    rt_json(c, 200,
            json_pack("{s:s, s:s?, s:o, s:I}", "session_id", c->id, "query", q, "messages", list,
                      "count", (json_int_t)json_array_size(list)));
}

/* Appends text to a growing buffer; returns -1 when out of memory. */
static int put(char **buf, size_t *len, size_t *cap, const char *text)
{
    size_t n = strlen(text);
    char *grown;

    if (*len + n + 1 > *cap) {
        size_t want = (*len + n + 1) * 2;
        if (!(grown = realloc(*buf, want)))
            return -1;
        *buf = grown;
        *cap = want;
    }
    memcpy(*buf + *len, text, n + 1);
    *len += n;
    return 0;
}

/* "### role · created_at", or "### name (role) · created_at" with an author. */
static int markdown_message(char **buf, size_t *len, size_t *cap, const struct db_message *m)
{
    char head[128];

    if (m->author_name && (put(buf, len, cap, "### ") || put(buf, len, cap, m->author_name) ||
                           put(buf, len, cap, " (")))
        return -1;
    snprintf(head, sizeof head, "%s%s%s · %s\n\n", m->author_name ? "" : "### ", m->role,
             m->author_name ? ")" : "", m->created_at);
    return put(buf, len, cap, head) || put(buf, len, cap, m->content) || put(buf, len, cap, "\n\n");
}

void h_session_export(struct rt_ctx *c)
{
    const char *format = rt_arg(c, "format");
    struct db_message_list l = {0};
    struct db_session s;
    bool markdown, all;
    json_t *doc = NULL, *list = NULL;
    char *md = NULL;
    size_t md_len = 0, md_cap = 0;
    int64_t after = 0; /* seq */
    enum perr e = PERR_OK;
    int failed = 0;

    if (rt_need_db(c) || rt_arg_bool(c, "all", false, &all))
        return;
    if (format && strcmp(format, "json") && strcmp(format, "markdown")) {
        rt_error(c, PERR_INVALID_FIELD, "query parameter 'format' must be json or markdown");
        return;
    }
    if (!session_exists(c, &s))
        return;
    markdown = format && strcmp(format, "markdown") == 0;
    if (markdown) {
        failed = put(&md, &md_len, &md_cap, "# ") ||
                 put(&md, &md_len, &md_cap, s.title ? s.title : "Parley conversation") ||
                 put(&md, &md_len, &md_cap, "\n\nSession `") || put(&md, &md_len, &md_cap, s.id) ||
                 put(&md, &md_len, &md_cap, "`, model ") ||
                 put(&md, &md_len, &md_cap, s.model ? s.model : "") ||
                 put(&md, &md_len, &md_cap, ", created ") ||
                 put(&md, &md_len, &md_cap, s.created_at) || put(&md, &md_len, &md_cap, "\n\n");
    } else {
        doc = rt_session_json(&s);
        list = json_array();
    }
    /* the whole history, a page at a time */
    while (!failed && (e = db_messages_after(c->db, c->id, after, EXPORT_PAGE, &l)) == PERR_OK &&
           l.n > 0) {
        for (size_t i = 0; i < l.n && !failed; i++) {
            if (!rt_message_shown(&l.v[i], all))
                continue;
            if (markdown)
                failed = markdown_message(&md, &md_len, &md_cap, &l.v[i]);
            else
                json_array_append_new(list, rt_history_json(&l.v[i], all));
        }
        after = l.v[l.n - 1].seq;
        db_message_list_cleanup(&l);
    }
    db_message_list_cleanup(&l);
    snprintf(c->res->disposition, sizeof c->res->disposition,
             "attachment; filename=\"parley-%s.%s\"", s.id, markdown ? "md" : "json");
    db_session_cleanup(&s);
    if (e || failed) {
        free(md);
        json_decref(doc);
        json_decref(list);
        c->res->disposition[0] = '\0';
        rt_db_error(c, e ? e : PERR_INTERNAL);
        return;
    }
    if (markdown) {
        free(c->res->body);
        c->res->body = md;
        c->res->body_len = md_len;
        c->res->status = 200;
        c->res->content_type = "text/markdown; charset=utf-8";
        return;
    }
    json_object_set_new(doc, "messages", list);
    rt_json(c, 200, doc);
}
