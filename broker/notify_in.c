/* notify_in: what the REST service tells the broker through the notification socket
 * (see common/notify.h). Each event names a session; the broker reads what it needs from
 * the database and tells the live members. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assistant.h"
#include "broker.h"
#include "clock.h"
#include "dbq.h"
#include "log.h"

struct added_job {
    struct dbjob job;
    struct per_vhost_data__chat *vhd;
    int64_t message_id;
    bool reply;
    struct db_message m;
    struct db_session session;
};

static void added_run(struct dbjob *job, struct db *db)
{
    struct added_job *j = (struct added_job *)job;

    job->err = db_message_get(db, j->message_id, &j->m);
    if (job->err == PERR_OK)
        job->err = db_session_get(db, j->m.session_id, &j->session);
}

static void added_done(struct dbjob *job)
{
    struct added_job *j = (struct added_job *)job;
    struct live_session *s;

    if (job->err == PERR_OK && !j->vhd->stopping) {
        s = sess_get(j->vhd, j->session.id, j->session.model);
        if (s) {
            act_message_added(j->vhd, s, &j->m, j->session.message_count,
                              j->reply && j->vhd->driver, false, NULL);
            sess_release(j->vhd, s);
        }
    }
    db_message_cleanup(&j->m);
    db_session_cleanup(&j->session);
    free(j);
}

static void message_added(struct per_vhost_data__chat *vhd, const json_t *ev)
{
    json_t *id = json_object_get(ev, "message_id");
    struct added_job *j;

    if (!json_is_integer(id) || !(j = calloc(1, sizeof *j)))
        return;
    j->vhd = vhd;
    j->message_id = json_integer_value(id);
    j->reply = json_is_true(json_object_get(ev, "reply"));
    j->job.essential = true; /* REST stored it: the members must hear of it (bounded by
                              * the notification socket's read loop) */
    j->job.run = added_run;
    j->job.done = added_done;
    dbq_push(vhd->dbq, &j->job);
}

/* ---- session_changed (PATCH /sessions/{id}: reply_mode, title; SPEC 9) ---- */

struct changed_job {
    struct dbjob job;
    struct per_vhost_data__chat *vhd;
    char session_id[DB_ID_LEN];
    struct db_session session;
};

static void changed_run(struct dbjob *job, struct db *db)
{
    struct changed_job *j = (struct changed_job *)job;

    job->err = db_session_get(db, j->session_id, &j->session);
}

/* Tells the members here what the session is now (read after the change committed, so
 * two changes in a row end with the last one told). The broker keeps no copy of either
 * field: each chat reads its session's reply_mode when it is stored (actions.c). */
static void changed_done(struct dbjob *job)
{
    struct changed_job *j = (struct changed_job *)job;
    struct live_session *s;
    json_t *ev;

    if (job->err == PERR_OK && !j->vhd->stopping && (s = sess_find(j->vhd, j->session_id))) {
        ev = json_pack("{s:s, s:s, s:s, s:s, s:s?}", "type", "session_update", "session_id", s->id,
                       "update_type", "session_changed", "reply_mode", j->session.reply_mode,
                       "title", j->session.title);
        fanout_session(j->vhd, s, ev, NULL);
        json_decref(ev);
    }
    db_session_cleanup(&j->session);
    free(j);
}

static void session_changed(struct per_vhost_data__chat *vhd, const char *sid)
{
    struct changed_job *j;

    if (!sess_find(vhd, sid)) /* nobody here to tell */
        return;
    if (!(j = calloc(1, sizeof *j)))
        return;
    j->vhd = vhd;
    snprintf(j->session_id, sizeof j->session_id, "%s", sid);
    j->job.essential = true; /* as message_added: bounded by the notification read loop */
    j->job.run = changed_run;
    j->job.done = changed_done;
    dbq_push(vhd->dbq, &j->job);
}

static void session_gone(struct per_vhost_data__chat *vhd, struct live_session *s,
                         const char *update_type)
{
    json_t *ev = json_pack("{s:s, s:s, s:s}", "type", "session_update", "session_id", s->id,
                           "update_type", update_type);

    if (strcmp(update_type, "history_cleared") == 0) {
        s->message_count = 0;
        json_object_set_new(ev, "message_count", json_integer(0));
    }
    fanout_session(vhd, s, ev, NULL);
    json_decref(ev);
    asst_abort(vhd, s);
    if (strcmp(update_type, "session_deleted") == 0)
        sess_drop_members(vhd, s); /* frees s */
    else
        sess_release(vhd, s);
}

void notify_in_event(struct per_vhost_data__chat *vhd, const json_t *ev)
{
    const char *event = json_string_value(json_object_get(ev, "event"));
    const char *sid = json_string_value(json_object_get(ev, "session_id"));
    struct live_session *s;

    if (event && strcmp(event, "keys_changed") == 0) {
        access_reload_keys(vhd); /* parley-rest keys add/revoke: takes effect at once */
        return;
    }
    if (!event || !sid || !clock_is_hex(sid, DB_ID_HEX)) {
        log_warn("ignored a notification without a valid event and session_id");
        return;
    }
    log_debug("notification %s for session %s", event, sid);
    if (strcmp(event, "message_added") == 0) {
        message_added(vhd, ev);
    } else if (strcmp(event, "session_deleted") == 0 || strcmp(event, "history_cleared") == 0) {
        if (strcmp(event, "session_deleted") == 0)
            sess_mark_deleted(vhd, sid);
        if ((s = sess_find(vhd, sid)))
            session_gone(vhd, s, event);
    } else if (strcmp(event, "session_changed") == 0) {
        session_changed(vhd, sid);
    } else if (strcmp(event, "session_created") != 0) {
        log_warn("ignored an unknown notification '%s'", event);
    }
}
