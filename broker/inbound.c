/* inbound: the one door every client frame goes through (SPEC 3.1, 3.3, 6).
 *
 *   frame -> rate limit -> parse -> dialect -> type -> auth gate -> table row
 *         -> field specs (invalid_field naming the field) -> handler
 *
 * The two tables below mirror the contract's tables: one row per message type, with the
 * handler (a leaf in flat.c or envelope.c) and the fields it takes. Handlers never call
 * each other; what both dialects do (store a message, join, answer ping) lives in
 * actions.c. This is also what the fuzzer calls (fuzz/fuzz_inbound.c).
 *
 * Not here: reassembly of fragments and the size limit (ws.c, which closes with 1009
 * before a message is complete). */
#include <string.h>

#include "broker.h"
#include "jsonx.h"
#include "log.h"
#include "utf8.h"

#define TYPE_MAX      64
#define ID_MAX        64
#define TITLE_MAX     200
#define MODEL_MAX     128
#define FIELD_MAX     128
#define WHOLE_MESSAGE (-1) /* a string's max: --max-message-size */

/* ---- flat dialect (SPEC 3.1) ---- */

static const struct msg_row flat_rows[] = {
    {.type = "create_session",
     .handler = flat_create,
     .fields = {{"model_id", F_STR, false, 1, MODEL_MAX},
                {"title", F_STR, false, 0, TITLE_MAX},
                {"name", F_NAME, false, 1, NAME_MAX_CHARS},
                {"reply_mode", F_STR, false, 1, POLICY_MODE_LEN}}},
    {.type = "join_session",
     .handler = flat_join,
     .fields = {{"session_id", F_STR, true, 1, ID_MAX},
                {"since", F_INT, false, 0, INT64_MAX},
                {"name", F_NAME, false, 1, NAME_MAX_CHARS}}},
    {.type = "leave_session",
     .handler = flat_leave,
     .fields = {{"session_id", F_STR, false, 1, ID_MAX}}},
    {.type = "chat",
     .handler = flat_chat,
     .fields = {{"message", F_STR, true, 1, WHOLE_MESSAGE},
                {"session_id", F_STR, false, 1, ID_MAX},
                {"client_msg_id", F_STR, false, 1, FIELD_MAX}}},
    {.type = "stop", .handler = flat_stop, .fields = {{"session_id", F_STR, false, 1, ID_MAX}}},
    {.type = "typing_start",
     .handler = flat_typing_start,
     .fields = {{"session_id", F_STR, false, 1, ID_MAX}}},
    {.type = "typing_stop",
     .handler = flat_typing_stop,
     .fields = {{"session_id", F_STR, false, 1, ID_MAX}}},
    {.type = "regenerate",
     .handler = flat_regenerate,
     .fields = {{"session_id", F_STR, false, 1, ID_MAX}}},
    {.type = "ping", .handler = act_ping_in},
};

/* ---- envelope dialect (SPEC 3.3); fields are read from data ---- */

static const struct msg_row envelope_rows[] = {
    {.type = "auth", .handler = env_auth}, /* api_key: anything but a valid key is auth_failure */
    {.type = "subscribe", .handler = env_subscribe},
    {.type = "unsubscribe", .handler = env_unsubscribe},
    {.type = "chat_message",
     .handler = env_chat_message,
     .fields = {{"content", F_STR, true, 1, WHOLE_MESSAGE},
                {"thread_id", F_STR, false, 1, FIELD_MAX}}},
    {.type = "task_update",
     .handler = env_event,
     .fields = {{"task_id", F_STR, true, 1, FIELD_MAX}, {"status", F_STR, true, 1, FIELD_MAX}}},
    {.type = "agent_status",
     .handler = env_event,
     .fields = {{"agent_id", F_STR, true, 1, FIELD_MAX}, {"status", F_STR, true, 1, FIELD_MAX}}},
    {.type = "llm_request",
     .handler = env_llm_request,
     .fields = {{"content", F_STR, true, 1, WHOLE_MESSAGE},
                {"template", F_STR, false, 1, FIELD_MAX},
                {"metadata", F_OBJ, false, 0, 0}}},
    {.type = "ping", .handler = act_ping_in},
};

#define N_ROWS(t) (sizeof t / sizeof t[0])

static const struct msg_row *find_row(enum dialect d, const char *type)
{
    const struct msg_row *rows = d == DIALECT_FLAT ? flat_rows : envelope_rows;
    size_t n = d == DIALECT_FLAT ? N_ROWS(flat_rows) : N_ROWS(envelope_rows);

    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].type, type) == 0)
            return &rows[i];
    return NULL;
}

/* Reads the row's fields from obj into in->v. Returns PERR_OK, or the error with a
 * message naming the field in why. */
static enum perr read_fields(struct inbound *in, const struct msg_row *row, const json_t *obj,
                             char *why)
{
    for (size_t i = 0; i < IN_MAX_FIELDS && row->fields[i].name; i++) {
        const struct field_spec *f = &row->fields[i];
        json_t *v = json_object_get(obj, f->name);
        int64_t max = f->max == WHOLE_MESSAGE ? in->vhd->cfg->max_message_size : f->max;
        enum perr e = PERR_OK;

        in->has[i] = v && !json_is_null(v);
        switch (f->kind) {
        case F_STR:
            e = jx_string(obj, f->name, f->required, (size_t)f->min, (size_t)max, &in->v[i].s, why);
            break;
        case F_NAME:
            e = jx_string(obj, f->name, f->required, (size_t)f->min, (size_t)max, &in->v[i].s, why);
            if (e == PERR_OK && in->has[i] && !name_valid(in->v[i].s, strlen(in->v[i].s))) {
                snprintf(why, JX_WHY_LEN,
                         "field '%s' must be 1 to %d characters, without control characters",
                         f->name, NAME_MAX_CHARS);
                e = PERR_INVALID_FIELD;
            }
            break;
        case F_INT:
            e = jx_int(obj, f->name, f->required, f->min, f->max, &in->v[i].i, why);
            break;
        case F_OBJ:
            if (in->has[i] && !json_is_object(v)) {
                snprintf(why, JX_WHY_LEN, "field '%s' must be an object", f->name);
                e = PERR_INVALID_FIELD;
            }
            in->v[i].o = in->has[i] ? v : NULL;
            break;
        }
        if (e)
            return e;
    }
    return PERR_OK;
}

/* Spends a rate-limit token; false when the message must be dropped. */
static bool within_rate(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss)
{
    switch (access_rate(vhd, pss)) {
    case RATE_OK:
        return true;
    case RATE_REFUSE:
        if (pss->flood == 1 || pss->flood % 10 == 0) /* not one error per message */
            fanout_error(vhd, pss, PERR_RATE_LIMITED, NULL,
                         "slow down: at most %g messages a second (bursts of %d); messages "
                         "over it are dropped, and a flood closes the connection",
                         vhd->cfg->rate_limit, vhd->cfg->rate_burst);
        return false;
    case RATE_CLOSE:
        ws_close(pss, LWS_CLOSE_STATUS_POLICY_VIOLATION);
        return false;
    }
    return false;
}

/* An envelope message's client_id (SPEC 3.3) becomes the connection's: it names the
 * client in the events its messages cause. A client that gave no name is called by it
 * too (when that is a valid name). Missing or null: nothing changes. Returns false, having
 * answered invalid_field, when it is not 1 to 64 of A-Z a-z 0-9 . _ : - */
static bool learn_client_id(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                            const json_t *msg, const char *type)
{
    const json_t *v = json_object_get(msg, "client_id");

    if (pss->dialect != DIALECT_ENVELOPE || !v || json_is_null(v))
        return true;
    if (!json_is_string(v) || !ws_client_id_valid(json_string_value(v), json_string_length(v))) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, type,
                     "field 'client_id' must be a string of 1 to %d of A-Z a-z 0-9 . _ : - (or "
                     "null)",
                     BROKER_CLIENT_ID_MAX);
        return false;
    }
    snprintf(pss->client_id, sizeof pss->client_id, "%s", json_string_value(v));
    if (!pss->name_given && name_valid(json_string_value(v), json_string_length(v)))
        snprintf(pss->name, sizeof pss->name, "%s", json_string_value(v));
    return true;
}

/* Decides the connection's dialect from its first message, unless the upgrade did. */
static void learn_dialect(struct per_session_data__chat *pss, const json_t *msg)
{
    if (pss->dialect_known)
        return;
    pss->dialect_known = true;
    pss->dialect = json_is_object(json_object_get(msg, "data")) ? DIALECT_ENVELOPE : DIALECT_FLAT;
}

void inbound_frame(struct per_vhost_data__chat *vhd, struct per_session_data__chat *pss,
                   const char *text, size_t len, bool binary)
{
    struct inbound in = {.vhd = vhd, .pss = pss};
    char why[JX_WHY_LEN], shown[UTF8_SHOWN_LEN];
    const struct msg_row *row;
    json_t *msg = NULL, *no_data = NULL;
    enum perr e;

    if (!within_rate(vhd, pss))
        return;
    if (binary) {
        fanout_error(vhd, pss, PERR_BAD_REQUEST, NULL,
                     "binary frames are not accepted; send each message as a JSON text frame");
        return;
    }
    if ((e = jx_parse_object(text, len, &msg, why))) {
        fanout_error(vhd, pss, e, NULL, "%s", why);
        return;
    }
    learn_dialect(pss, msg);
    in.msg = msg;
    in.data = pss->dialect == DIALECT_ENVELOPE ? json_object_get(msg, "data") : msg;
    if (!in.data || json_is_null(in.data))
        in.data = no_data = json_object(); /* an envelope without data: no fields */
    if ((e = jx_string(msg, "type", true, 1, TYPE_MAX, &in.type, why))) {
        fanout_error(vhd, pss, e, NULL, "%s", why);
        goto out;
    }
    if (!learn_client_id(vhd, pss, msg, in.type))
        goto out;
    if (!json_is_object(in.data)) {
        fanout_error(vhd, pss, PERR_INVALID_FIELD, in.type,
                     "field 'data' must be an object: this connection speaks the envelope "
                     "dialect");
        goto out;
    }
    if (!pss->authed && !(pss->dialect == DIALECT_ENVELOPE && strcmp(in.type, "auth") == 0)) {
        /* nothing is served before authentication */
        fanout_error(vhd, pss, PERR_UNAUTHORIZED, in.type,
                     "authenticate first: send the API key as ?api_key= or 'Authorization: "
                     "Bearer KEY' when connecting, or an envelope auth message");
        ws_close(pss, LWS_CLOSE_STATUS_POLICY_VIOLATION);
        goto out;
    }
    if (!(row = find_row(pss->dialect, in.type))) {
        fanout_error(vhd, pss, PERR_UNKNOWN_TYPE, in.type,
                     "unknown message type '%s'; see the %sprotocol in the API docs",
                     utf8_shown(shown, in.type),
                     pss->dialect == DIALECT_ENVELOPE ? "envelope " : "");
        goto out;
    }
    in.row = row;
    if ((e = read_fields(&in, row, in.data, why))) {
        fanout_error(vhd, pss, e, in.type, "%s", why);
        goto out;
    }
    row->handler(&in);
out:
    json_decref(no_data);
    json_decref(msg);
}
