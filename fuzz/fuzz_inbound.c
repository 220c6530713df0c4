/* fuzz_inbound: libFuzzer harness for the broker's one door (broker/inbound.c), the
 * function every client frame goes through, with both dialects, a live session and
 * members, over a real SQLite database and the real database thread (broker_rig.c).
 *
 * An input is frames separated by '\n'. A frame's first byte picks the connection: a flat
 * member of the room, an envelope member of it, or a connection whose dialect its first
 * message decides; bit 7 of the second byte sends it as a binary frame; the rest is the
 * message, in which "SID" stands for the room's session id. After the frames, every job
 * is run and every frame the broker queued for the three connections must be valid UTF-8
 * and one JSON object (rig_take aborts otherwise: a crash for libFuzzer).
 *
 * Not fuzzed here: the WebSocket framing and the size limit (libwebsockets and ws.c). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "broker_rig.h"

#define N_CONNS 3

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const extra[] = {"--max-message-size", "4096", NULL};

    (void)argc;
    (void)argv;
    rig_init(extra);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char subscribe[] = "{\"type\":\"subscribe\",\"data\":{\"channel\":\"room\"}}";
    static const char join[] = "{\"type\":\"join_session\",\"session_id\":\"SID\"}";
    struct per_session_data__chat conns[N_CONNS];
    size_t start = 0;

    rig_attach(&conns[0], DIALECT_FLAT, true);
    rig_attach(&conns[1], DIALECT_ENVELOPE, true);
    rig_attach(&conns[2], DIALECT_FLAT, false);
    rig_send(&conns[0], join, strlen(join), false);
    rig_send(&conns[1], subscribe, strlen(subscribe), false);
    rig_drain();
    while (start < size) {
        const uint8_t *end = memchr(data + start, '\n', size - start);
        size_t n = end ? (size_t)(end - (data + start)) : size - start;
        if (n >= 2) {
            const uint8_t *f = data + start;
            rig_send(&conns[f[0] % N_CONNS], (const char *)f + 2, n - 2, f[1] & 0x80);
        }
        start += n + 1;
    }
    rig_drain();
    for (int i = 0; i < N_CONNS; i++) {
        json_decref(rig_take(&conns[i]));
        rig_detach(&conns[i]);
    }
    rig_forget_presence();
    return 0;
}
