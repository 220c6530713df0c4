/* notify: the notification socket from REST to the broker.
 *
 * A Unix-domain SOCK_SEQPACKET socket: the broker listens on it and reads it inside its
 * own event loop; each REST process keeps one connection, and each packet is one small
 * JSON object naming what changed, e.g.
 *   {"event":"message_added","session_id":"0123456789abcdef","message_id":42,"reply":true}
 *   {"event":"session_deleted","session_id":"..."}
 *   {"event":"history_cleared","session_id":"..."}
 *   {"event":"session_created","session_id":"..."}
 *   {"event":"session_changed","session_id":"..."}   (PATCH: reply_mode, title)
 * Events are hints: the database is the truth, so the broker reads what it needs from it,
 * and a broker that was down catches up from the database when it starts.
 * The sender never blocks: when the broker is absent or its queue is full the event is
 * dropped (logged) and the caller carries on. Packets, not datagrams: a datagram socket's
 * queue holds only net.unix.max_dgram_qlen (10) messages, far too few for a burst. */
#ifndef PARLEY_NOTIFY_H
#define PARLEY_NOTIFY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define NOTIFY_MAX_DATAGRAM 4096

/* ---- sender (REST): safe to share between threads ---- */
struct notify_sender;
/* Returns a new sender for the socket at path (which need not exist yet), or NULL when
 * the path is too long for a Unix socket (logged). Free with notify_sender_free. */
struct notify_sender *notify_sender_new(const char *path);
/* The sender a program's configuration asks for: through Redis with --redis (every
 * broker hears it, notify_redis.h), else to the socket at --notify-socket. */
struct cfg;
struct notify_sender *notify_sender_for(const struct cfg *cfg);
void notify_sender_free(struct notify_sender *s);
/* Sends event (borrowed). Returns 0 if the broker got it, -1 if it was dropped. */
int notify_send(struct notify_sender *s, const json_t *event);
int notify_message_added(struct notify_sender *s, const char *session_id, int64_t message_id,
                         bool reply);
int notify_session_event(struct notify_sender *s, const char *event, const char *session_id);

/* ---- receiver (broker): one thread ---- */
struct notify_listener;
/* Listens at path, replacing a stale socket file but refusing a live one or anything
 * else. Returns a new listener, or NULL (logged). Free with notify_close. */
struct notify_listener *notify_listen(const char *path);
/* A file descriptor that polls readable when notify_recv has work: add it to the loop. */
int notify_listener_fd(const struct notify_listener *l);
/* Accepts senders and reads one packet. Returns a new JSON object, or NULL when nothing
 * is waiting (*again set) or the packet was not a JSON object (logged, *again clear). */
json_t *notify_recv(struct notify_listener *l, bool *again);
/* Closes every connection and the socket, and removes the socket file. NULL is fine. */
void notify_close(struct notify_listener *l);

#endif
