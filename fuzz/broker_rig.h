/* broker_rig: the real broker (vhost state, database thread, a real SQLite file) without
 * sockets, for the in-process fuzzer (fuzz_inbound.c) and the unit test of the one door
 * (tests/unit/test_inbound.c). Connections are plain structs; what the broker queues for
 * them stays in their queues, where the caller reads it. Not part of any binary. */
#ifndef PARLEY_BROKER_RIG_H
#define PARLEY_BROKER_RIG_H

#include <jansson.h>

#include "broker.h"

/* Starts the broker on a new database in a temporary folder with --llm none and the rate
 * limit off, plus extra flags (NULL-terminated, may be NULL), and makes the room: the
 * session of channel "room". Exits the process when it cannot. */
void rig_init(const char *const *extra);
/* The room's session id. */
const char *rig_room(void);
/* A connection of dialect d (known: decided at the upgrade, else by its first message). */
void rig_attach(struct per_session_data__chat *pss, enum dialect d, bool known);
void rig_detach(struct per_session_data__chat *pss);
/* Sends a text (binary: a binary frame) from pss, "SID" replaced by the room's id. */
void rig_send(struct per_session_data__chat *pss, const char *text, size_t len, bool binary);
/* Runs every job pushed so far and their done callbacks. */
void rig_drain(void);
/* The frames queued for pss, in order, parsed (new reference: a JSON array), and the queue
 * emptied. A frame that is not valid UTF-8 or not a JSON object is reported on stderr and
 * ends the process with abort(). */
json_t *rig_take(struct per_session_data__chat *pss);
/* Forgets presence changes still waiting for their timer (the rig runs no loop). */
void rig_forget_presence(void);

#endif
