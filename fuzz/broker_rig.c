/* broker_rig: see broker_rig.h. Runs on one thread (the "loop") beside the broker's own
 * database thread; the lws context exists only for the wake-ups that thread sends. */
#include "broker_rig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker_main.h"
#include "dbq.h"
#include "utf8.h"

#define MAX_ARGS 32

static struct lws_context *ctx;
static struct per_vhost_data__chat vhd;
static struct cfg cfg;
static struct broker_init init;
static char room_id[DB_ID_LEN];
static const char subscribe_room[] = "{\"type\":\"subscribe\",\"data\":{\"channel\":\"room\"}}";

static void die(const char *what)
{
    fprintf(stderr, "broker_rig: %s\n", what);
    abort();
}

struct marker {
    struct dbjob job;
    bool done;
};

static void marker_run(struct dbjob *job, struct db *db)
{
    (void)job;
    (void)db;
}

static void marker_done(struct dbjob *job)
{
    ((struct marker *)job)->done = true;
}

void rig_drain(void)
{
    for (int round = 0; round < 2; round++) { /* done callbacks may push more */
        struct marker m = {.job = {.run = marker_run, .done = marker_done, .essential = true}};
        dbq_push(vhd.dbq, &m.job);
        while (!m.done) {
            usleep(50);
            dbq_complete(vhd.dbq);
        }
    }
}

void rig_attach(struct per_session_data__chat *pss, enum dialect d, bool known)
{
    memset(pss, 0, sizeof *pss);
    snprintf(pss->ip, sizeof pss->ip, "127.0.0.1");
    pss->authed = true;
    pss->dialect = d;
    pss->dialect_known = known;
    if (ws_conn_attach(&vhd, pss) < 0)
        die("cannot attach a connection");
}

void rig_detach(struct per_session_data__chat *pss)
{
    ws_conn_detach(&vhd, pss);
}

void rig_send(struct per_session_data__chat *pss, const char *text, size_t len, bool binary)
{
    char *buf = malloc(len * 6 + 1); /* "SID" (3 bytes) becomes 16 */
    size_t o = 0;

    if (!buf)
        die("out of memory");
    for (size_t i = 0; i < len; i++) {
        if (i + 3 <= len && memcmp(text + i, "SID", 3) == 0) {
            memcpy(buf + o, room_id, DB_ID_HEX);
            o += DB_ID_HEX;
            i += 2;
        } else {
            buf[o++] = text[i];
        }
    }
    inbound_frame(&vhd, pss, buf, o, binary);
    free(buf);
}

json_t *rig_take(struct per_session_data__chat *pss)
{
    struct outq *q = &pss->q;
    json_t *all = json_array();

    for (unsigned i = 0; i < q->len; i++) {
        const struct frame *f = q->v[(q->head + i) % q->cap].f;
        const char *text = (const char *)f->data + LWS_PRE;
        json_t *v;
        if (!utf8_valid(text, f->len)) {
            fprintf(stderr, "broker_rig: frame %u for %s is not valid UTF-8: %.*s\n", i, pss->id,
                    (int)f->len, text);
            abort();
        }
        v = json_loadb(text, f->len, 0, NULL);
        if (!json_is_object(v)) {
            fprintf(stderr, "broker_rig: frame %u for %s is not a JSON object: %.*s\n", i, pss->id,
                    (int)f->len, text);
            abort();
        }
        json_array_append_new(all, v);
    }
    fanout_clear(q);
    return all;
}

void rig_forget_presence(void)
{
    sess_presence_cleanup(&vhd);
}

const char *rig_room(void)
{
    return room_id;
}

void rig_init(const char *const *extra)
{
    static char dir[] = "/dev/shm/parley-rig-XXXXXX"; /* memory: faster */
    static char db_path[sizeof dir + 16];
    char *args[MAX_ARGS] = {"parley-broker", "--db",         db_path,   "--llm",
                            "none",          "--log-level",  "error",   "--rate-limit",
                            "1000000000",    "--rate-burst", "1000000", NULL};
    int argc = 11;
    struct lws_context_creation_info info;
    struct per_session_data__chat pss;

    if (!mkdtemp(dir) && !mkdtemp(strcpy(dir, "/tmp/parley-rig-XXXXXX")))
        die("cannot make a temporary folder");
    snprintf(db_path, sizeof db_path, "%s/parley.db", dir);
    for (size_t i = 0; extra && extra[i] && argc < MAX_ARGS - 1; i++)
        args[argc++] = (char *)extra[i];
    args[argc] = NULL;
    if (cfg_load(&cfg, CFG_BROKER, "parley-broker", argc, args) != CFG_OK)
        die("the configuration was refused");
    log_init("broker_rig", LOG_LEVEL_ERROR);
    lws_set_log_level(LLL_ERR, NULL);
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    if (!(ctx = lws_create_context(&info)))
        die("cannot make an lws context");
    init.cfg = &cfg;
    if (!(init.db = db_open(db_path)) || ws_vhd_init(&vhd, ctx, &init) < 0)
        die("cannot set up the broker");
    rig_attach(&pss, DIALECT_ENVELOPE, true);
    rig_send(&pss, subscribe_room, strlen(subscribe_room), false);
    rig_drain();
    if (pss.n_joined != 1)
        die("cannot make the room");
    snprintf(room_id, sizeof room_id, "%s", pss.joined[0]->id);
    json_decref(rig_take(&pss));
    rig_detach(&pss);
}
