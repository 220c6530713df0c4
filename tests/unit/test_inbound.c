/* test_inbound: the broker's one door (broker/inbound.c) and its tables, row by row: each
 * case sends one frame from a connection of a dialect (a member of the room or not) through
 * the real broker (fuzz/broker_rig.c: the vhost state and database thread over a real
 * SQLite file, no sockets) and checks the first answer: its type, and for errors the code,
 * request_type and a part of the message that names the field. */
#include <stdlib.h>
#include <string.h>

#include "broker_rig.h"
#include "unit.h"

enum who { FLAT_MEMBER, FLAT_ALONE, ENV_MEMBER, ENV_ALONE, UNDECIDED };

static const struct {
    const char *name;
    enum who who;
    const char *frame;
    bool binary;
    const char *type;         /* of the first answer */
    const char *code;         /* errors */
    const char *request_type; /* errors; "" for none */
    const char *mentions;     /* errors: a part of the message */
} cases[] = {
    /* the door: parse, type, table */
    {"invalid JSON", FLAT_MEMBER, "not json", false, "error", "bad_request", "", "invalid JSON"},
    {"a JSON array", FLAT_MEMBER, "[1]", false, "error", "bad_request", "", "object"},
    {"a binary frame", FLAT_MEMBER, "{\"type\":\"ping\"}", true, "error", "bad_request", "",
     "binary"},
    {"type a number", FLAT_MEMBER, "{\"type\":5}", false, "error", "invalid_field", "", "'type'"},
    {"unknown type", FLAT_MEMBER, "{\"type\":\"bogus\"}", false, "error", "unknown_type", "bogus",
     "'bogus'"},
    {"an envelope type in the flat dialect", FLAT_MEMBER, "{\"type\":\"chat_message\"}", false,
     "error", "unknown_type", "chat_message", NULL},
    {"a flat type in the envelope dialect", ENV_MEMBER, "{\"type\":\"chat\",\"data\":{}}", false,
     "error", "unknown_type", "chat", "envelope"},
    /* flat rows and their field specs */
    {"ping", FLAT_ALONE, "{\"type\":\"ping\"}", false, "pong", NULL, NULL, NULL},
    {"chat", FLAT_MEMBER, "{\"type\":\"chat\",\"message\":\"hi\"}", false, "session_update", NULL,
     NULL, NULL},
    {"chat without message", FLAT_MEMBER, "{\"type\":\"chat\"}", false, "error", "invalid_field",
     "chat", "'message' is required"},
    {"chat message a number", FLAT_MEMBER, "{\"type\":\"chat\",\"message\":5}", false, "error",
     "invalid_field", "chat", "'message' must be a string"},
    {"chat client_msg_id empty", FLAT_MEMBER,
     "{\"type\":\"chat\",\"message\":\"x\",\"client_msg_id\":\"\"}", false, "error",
     "invalid_field", "chat", "'client_msg_id'"},
    {"chat in an unknown session", FLAT_MEMBER,
     "{\"type\":\"chat\",\"message\":\"x\",\"session_id\":\"0123456789abcdef\"}", false, "error",
     "session_not_found", "chat", "0123456789abcdef"},
    {"chat with no session joined", FLAT_ALONE, "{\"type\":\"chat\",\"message\":\"x\"}", false,
     "error", "not_in_session", "chat", "join"},
    {"typing_start in the room, not joined", FLAT_ALONE,
     "{\"type\":\"typing_start\",\"session_id\":\"SID\"}", false, "error", "not_in_session",
     "typing_start", "SID"},
    {"join_session without session_id", FLAT_ALONE, "{\"type\":\"join_session\"}", false, "error",
     "invalid_field", "join_session", "'session_id'"},
    {"join_session since -1", FLAT_ALONE,
     "{\"type\":\"join_session\",\"session_id\":\"SID\",\"since\":-1}", false, "error",
     "invalid_field", "join_session", "'since'"},
    {"join_session since 0", FLAT_ALONE,
     "{\"type\":\"join_session\",\"session_id\":\"SID\",\"since\":0}", false, "session_joined",
     NULL, NULL, NULL},
    {"create_session title of 201", FLAT_ALONE,
     "{\"type\":\"create_session\",\"title\":\"tttttttttttttttttttttttttttttttttttttttttttttttttttt"
     "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt"
     "ttttttttttttttttttttttttttttttttttttttttttttttttttttttttt\"}",
     false, "error", "invalid_field", "create_session", "'title'"},
    {"create_session a model not offered", FLAT_ALONE,
     "{\"type\":\"create_session\",\"model_id\":\"gpt\"}", false, "error", "invalid_field",
     "create_session", "--llm-models"},
    {"leave_session of a foreign session", FLAT_ALONE,
     "{\"type\":\"leave_session\",\"session_id\":\"SID\"}", false, "error", "not_in_session",
     "leave_session", NULL},
    /* envelope rows: fields in data */
    {"envelope ping without data", ENV_ALONE, "{\"type\":\"ping\"}", false, "pong", NULL, NULL,
     NULL},
    {"envelope data not an object", ENV_ALONE, "{\"type\":\"ping\",\"data\":5}", false, "error",
     "invalid_field", "ping", "'data'"},
    {"chat_message without content", ENV_MEMBER,
     "{\"type\":\"chat_message\",\"channel\":\"room\",\"data\":{}}", false, "error",
     "invalid_field", "chat_message", "'content'"},
    {"chat_message without channel", ENV_MEMBER,
     "{\"type\":\"chat_message\",\"data\":{\"content\":\"x\"}}", false, "error", "invalid_field",
     "chat_message", "'channel'"},
    {"chat_message to the room", ENV_MEMBER,
     "{\"type\":\"chat_message\",\"channel\":\"room\",\"data\":{\"content\":\"x\"}}", false,
     "chat_message", NULL, NULL, NULL},
    {"task_update without status", ENV_MEMBER,
     "{\"type\":\"task_update\",\"data\":{\"task_id\":\"1\"}}", false, "error", "invalid_field",
     "task_update", "'status'"},
    {"agent_status without agent_id", ENV_MEMBER,
     "{\"type\":\"agent_status\",\"data\":{\"status\":\"x\"}}", false, "error", "invalid_field",
     "agent_status", "'agent_id'"},
    {"llm_request metadata not an object", ENV_MEMBER,
     "{\"type\":\"llm_request\",\"data\":{\"content\":\"x\",\"metadata\":5}}", false, "error",
     "invalid_field", "llm_request", "'metadata'"},
    {"llm_request without an assistant", ENV_MEMBER,
     "{\"type\":\"llm_request\",\"data\":{\"content\":\"x\"}}", false, "error", "llm_error",
     "llm_request", "--llm none"},
    {"subscribe to a bad name", ENV_ALONE,
     "{\"type\":\"subscribe\",\"data\":{\"channel\":\"bad name\"}}", false, "error",
     "invalid_field", "subscribe", "'channel'"},
    {"unsubscribe from a channel not held", ENV_ALONE,
     "{\"type\":\"unsubscribe\",\"data\":{\"channel\":\"nope\"}}", false, "error", "not_in_session",
     "unsubscribe", "'nope'"},
    {"auth with a number", ENV_ALONE, "{\"type\":\"auth\",\"data\":{\"api_key\":5}}", false,
     "auth_success", NULL, NULL, NULL}, /* no keys: every connection is authenticated */
    /* the dialect: decided by the first message */
    {"a first message with data speaks envelope", UNDECIDED, "{\"type\":\"ping\",\"data\":{}}",
     false, "pong", NULL, NULL, NULL},
};

/* The field of an answer, flat (top level) or envelope (in data). */
static const char *field(const json_t *m, const char *name)
{
    json_t *v = json_object_get(m, name);

    if (!v)
        v = json_object_get(json_object_get(m, "data"), name);
    return json_string_value(v);
}

/* Replaces "SID" in want by the room id, into buf. */
static const char *with_room(const char *want, char *buf, size_t size)
{
    const char *at = want ? strstr(want, "SID") : NULL;

    if (!at)
        return want;
    snprintf(buf, size, "%.*s%s%s", (int)(at - want), want, rig_room(), at + 3);
    return buf;
}

static void run_cases(void)
{
    for (size_t i = 0; i < UNIT_COUNT(cases); i++) {
        struct per_session_data__chat pss;
        bool envelope = cases[i].who == ENV_MEMBER || cases[i].who == ENV_ALONE;
        char join[128], want_msg[256];
        json_t *got, *first = NULL;
        size_t k;

        unit_begin();
        rig_attach(&pss, envelope ? DIALECT_ENVELOPE : DIALECT_FLAT, cases[i].who != UNDECIDED);
        if (cases[i].who == FLAT_MEMBER)
            snprintf(join, sizeof join, "{\"type\":\"join_session\",\"session_id\":\"SID\"}");
        else if (cases[i].who == ENV_MEMBER)
            snprintf(join, sizeof join, "{\"type\":\"subscribe\",\"data\":{\"channel\":\"room\"}}");
        else
            join[0] = '\0';
        if (join[0]) {
            rig_send(&pss, join, strlen(join), false);
            rig_drain();
            json_decref(rig_take(&pss)); /* connected, the join's answer */
        } else {
            json_decref(rig_take(&pss)); /* connected */
        }
        rig_send(&pss, cases[i].frame, strlen(cases[i].frame), cases[i].binary);
        rig_drain();
        got = rig_take(&pss);
        for (k = 0; k < json_array_size(got); k++) { /* skip presence about others */
            const char *ut = field(json_array_get(got, k), "update_type");
            if (!ut || strcmp(ut, "message_added") == 0) {
                first = json_array_get(got, k);
                break;
            }
        }
        if (!first) {
            UNIT_FAIL("no answer to %s", cases[i].frame);
        } else {
            EQ_STR(json_string_value(json_object_get(first, "type")), cases[i].type);
            if (cases[i].code) {
                const char *rt = field(first, "request_type");
                const char *msg = field(first, "message");
                const char *want = with_room(cases[i].mentions, want_msg, sizeof want_msg);
                EQ_STR(field(first, "code"), cases[i].code);
                EQ_STR(rt ? rt : "", cases[i].request_type);
                if (want && !(msg && strstr(msg, want)))
                    UNIT_FAIL("message \"%s\" does not mention \"%s\"", msg ? msg : "(none)", want);
            }
            if (cases[i].who == UNDECIDED)
                CHECK(json_is_object(json_object_get(first, "data"))); /* an envelope */
        }
        json_decref(got);
        rig_detach(&pss);
        rig_forget_presence();
        unit_end("%s: %s%s%s", cases[i].name, cases[i].type, cases[i].code ? " " : "",
                 cases[i].code ? cases[i].code : "");
    }
}

int main(void)
{
    static const struct unit_case all[] = {{NULL, run_cases}};

    rig_init(NULL);
    return unit_run(all, UNIT_COUNT(all));
}
