/* flat: the leaves of the flat dialect (SPEC 3.1), one per message type. inbound.c has
 * read and checked their fields (in the order of the row in its table); each leaf decides
 * what the message means and calls the shared actions of actions.c. Leaves never call
 * each other. */
#include <stdio.h>

#include "assistant.h"
#include "broker.h"

/* A name given with create_session or join_session is the connection's from now on. */
static void take_name(struct inbound *in, int field)
{
    if (!in->has[field])
        return;
    snprintf(in->pss->name, sizeof in->pss->name, "%s", in->v[field].s);
    in->pss->name_given = true;
}

/* create_session {model_id?, title?, name?, reply_mode?} */
void flat_create(struct inbound *in)
{
    const char *model = in->has[0] ? in->v[0].s : NULL;

    take_name(in, 2);
    act_create(in->vhd, in->pss, model, in->has[1] ? in->v[1].s : NULL,
               in->has[3] ? in->v[3].s : NULL);
}

/* join_session {session_id, since?, name?} */
void flat_join(struct inbound *in)
{
    struct join_request j = {.session_id = in->v[0].s, .since = in->has[1] ? in->v[1].i : -1};

    take_name(in, 2);
    act_join(in->vhd, in->pss, &j, "join_session");
}

/* leave_session {session_id?} */
void flat_leave(struct inbound *in)
{
    struct live_session *s =
        sess_resolve(in->vhd, in->pss, in->has[0] ? in->v[0].s : NULL, "leave_session");

    if (s)
        act_leave(in->vhd, in->pss, s);
}

/* chat {message, session_id?, client_msg_id?} */
void flat_chat(struct inbound *in)
{
    struct live_session *s = sess_resolve(in->vhd, in->pss, in->has[1] ? in->v[1].s : NULL, "chat");
    struct store_request req = {.role = "user",
                                .content = in->v[0].s,
                                .client_msg_id = in->has[2] ? in->v[2].s : NULL,
                                .want_reply = in->vhd->driver != NULL,
                                .by_policy = true};

    if (s)
        act_store(in->vhd, in->pss, s, &req, "chat");
}

/* stop {session_id?} */
void flat_stop(struct inbound *in)
{
    struct live_session *s = sess_resolve(in->vhd, in->pss, in->has[0] ? in->v[0].s : NULL, "stop");

    if (s)
        asst_stop(in->vhd, s);
}

static void typing(struct inbound *in, bool on)
{
    struct live_session *s =
        sess_resolve(in->vhd, in->pss, in->has[0] ? in->v[0].s : NULL, in->row->type);

    if (s)
        sess_typing(in->vhd, s, in->pss, on);
}

/* regenerate {session_id?} */
void flat_regenerate(struct inbound *in)
{
    struct live_session *s =
        sess_resolve(in->vhd, in->pss, in->has[0] ? in->v[0].s : NULL, "regenerate");

    if (s)
        act_regenerate(in->vhd, in->pss, s);
}

/* typing_start {session_id?} */
void flat_typing_start(struct inbound *in)
{
    typing(in, true);
}

/* typing_stop {session_id?} */
void flat_typing_stop(struct inbound *in)
{
    typing(in, false);
}
