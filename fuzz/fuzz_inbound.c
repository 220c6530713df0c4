/* fuzz_inbound: libFuzzer harness for the broker's one door (broker/inbound.c), the
 * function every client frame goes through, with both dialects, a live session and
 * members, over a real SQLite database and the real database thread.
 *
 * An input is frames separated by '\n'. A frame's first byte picks the connection: a flat
 * member of the room, an envelope member of it, or a connection whose dialect its first
 * message decides; bit 7 of the second byte sends it as a binary frame; the rest is the
 * message, in which "SID" stands for the room's session id. After the frames, every job
 * is run and every frame the broker queued for the three connections is checked: valid
 * UTF-8 and one JSON object. Anything else aborts (a crash for libFuzzer).
 *
 * Not fuzzed here: the WebSocket framing and the size limit (libwebsockets and ws.c). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "broker_main.h"
#include "dbq.h"
#include "utf8.h"

#define N_CONNS 3

static struct lws_context *ctx;
static struct per_vhost_data__chat vhd;
static struct cfg cfg;
static struct broker_init init;
static char room_id[DB_ID_LEN];

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

/* Runs every job pushed so far and their done callbacks (jobs run in order). */
static void drain(void)
{
    for (int round = 0; round < 2; round++) { /* done callbacks may push more */
        struct marker m = {.job = {.run = marker_run, .done = marker_done}};
        dbq_push(vhd.dbq, &m.job);
        while (!m.done) {
            usleep(50);
            dbq_complete(vhd.dbq);
        }
    }
}

static const char subscribe_room[] = "{\"type\":\"subscribe\",\"data\":{\"channel\":\"room\"}}";

static void attach(struct per_session_data__chat *pss, enum dialect d, bool known)
{
    memset(pss, 0, sizeof *pss);
    snprintf(pss->ip, sizeof pss->ip, "127.0.0.1");
    pss->authed = true;
    pss->dialect = d;
    pss->dialect_known = known;
    if (ws_conn_attach(&vhd, pss) < 0)
        abort();
}

/* Every frame queued for pss is valid UTF-8 and a JSON object; then the queue is dropped. */
static void check_queue(struct per_session_data__chat *pss)
{
    struct outq *q = &pss->q;

    for (unsigned i = 0; i < q->len; i++) {
        const struct frame *f = q->v[(q->head + i) % q->cap].f;
        const char *text = (const char *)f->data + LWS_PRE;
        json_t *v;
        if (!utf8_valid(text, f->len)) {
            fprintf(stderr, "frame %u for %s is not valid UTF-8: %.*s\n", i, pss->id, (int)f->len,
                    text);
            abort();
        }
        v = json_loadb(text, f->len, 0, NULL);
        if (!json_is_object(v)) {
            fprintf(stderr, "frame %u for %s is not a JSON object: %.*s\n", i, pss->id, (int)f->len,
                    text);
            abort();
        }
        json_decref(v);
    }
    fanout_clear(q);
}

/* Sends text (len bytes) from pss, with "SID" replaced by the room's id. */
static void send_frame(struct per_session_data__chat *pss, const char *text, size_t len,
                       bool binary)
{
    char *buf = malloc(len * 6 + 1); /* "SID" (3) -> 16 hex at most */
    size_t o = 0;

    if (!buf)
        return;
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

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char dir[] = "/dev/shm/parley-fuzz-inbound-XXXXXX"; /* memory: faster */
    static char db_path[sizeof dir + 16];
    char *args[] = {"parley-broker", "--db",
                    db_path,         "--llm",
                    "none",          "--log-level",
                    "error",         "--rate-limit",
                    "1000000000",    "--rate-burst",
                    "1000000",       "--max-message-size",
                    "4096",          NULL};
    struct lws_context_creation_info info;
    struct per_session_data__chat pss;

    (void)argc;
    (void)argv;
    if (!mkdtemp(dir))
        abort();
    snprintf(db_path, sizeof db_path, "%s/parley.db", dir);
    if (cfg_load(&cfg, CFG_BROKER, "parley-broker", (int)(sizeof args / sizeof args[0]) - 1,
                 args) != CFG_OK) {
        fprintf(stderr, "fuzz_inbound: the configuration was refused\n");
        abort();
    }
    log_init("fuzz_inbound", LOG_LEVEL_ERROR);
    lws_set_log_level(LLL_ERR, NULL);
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    if (!(ctx = lws_create_context(&info))) {
        fprintf(stderr, "fuzz_inbound: cannot make an lws context\n");
        abort();
    }
    init.cfg = &cfg;
    if (!(init.db = db_open(db_path)) || ws_vhd_init(&vhd, ctx, &init) < 0) {
        fprintf(stderr, "fuzz_inbound: cannot set up the broker on %s\n", db_path);
        abort();
    }
    /* the room: a channel session, so that both dialects can be members of it */
    attach(&pss, DIALECT_ENVELOPE, true);
    send_frame(&pss, subscribe_room, strlen(subscribe_room), false);
    drain();
    if (pss.n_joined != 1) {
        fprintf(stderr, "fuzz_inbound: could not make the room\n");
        abort();
    }
    snprintf(room_id, sizeof room_id, "%s", pss.joined[0]->id);
    check_queue(&pss);
    ws_conn_detach(&vhd, &pss);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct per_session_data__chat conns[N_CONNS];
    char join[128];
    size_t start = 0;

    attach(&conns[0], DIALECT_FLAT, true);
    attach(&conns[1], DIALECT_ENVELOPE, true);
    attach(&conns[2], DIALECT_FLAT, false);
    snprintf(join, sizeof join, "{\"type\":\"join_session\",\"session_id\":\"%s\",\"since\":0}",
             room_id);
    inbound_frame(&vhd, &conns[0], join, strlen(join), false);
    send_frame(&conns[1], subscribe_room, strlen(subscribe_room), false);
    drain();
    while (start < size) {
        const uint8_t *end = memchr(data + start, '\n', size - start);
        size_t n = end ? (size_t)(end - (data + start)) : size - start;
        if (n >= 2) {
            const uint8_t *f = data + start;
            send_frame(&conns[f[0] % N_CONNS], (const char *)f + 2, n - 2, f[1] & 0x80);
        }
        start += n + 1;
    }
    drain();
    for (int i = 0; i < N_CONNS; i++) {
        check_queue(&conns[i]);
        ws_conn_detach(&vhd, &conns[i]);
    }
    sess_presence_cleanup(&vhd);
    return 0;
}
