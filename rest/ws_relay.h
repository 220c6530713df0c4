/* ws_relay: GET /ws on parley-rest, relayed to the broker (SPEC 4).
 *
 * The libmicrohttpd front-end hands an upgrade request here; the relay opens a TCP
 * connection to the broker, sends the request on (same path and query, same headers,
 * X-Forwarded-For set to the client's address), suspends the MHD connection until the
 * broker answers, and gives that answer to the client: a 101 becomes MHD's upgrade, after
 * which one epoll thread of the relay's own moves the bytes both ways; a refusal
 * (401/403/429...) is passed on with its status and body. The broker does every check. */
#ifndef PARLEY_WS_RELAY_H
#define PARLEY_WS_RELAY_H

#include <microhttpd.h>
#include <stdbool.h>

#include "config.h"

struct wsrelay;
struct wsr_conn;

/* ---- lifetime (main thread) ---- */

/* Resolves the broker's address (--broker-url, or 127.0.0.1:--ws-port) and starts the
 * relay thread. cfg is borrowed for the relay's life. Returns a new relay (free with
 * wsrelay_free), or NULL after saying why. */
struct wsrelay *wsrelay_new(const struct cfg *cfg);
/* Closes every relayed connection and stops the thread; call before MHD_stop_daemon
 * (suspended connections are resumed with a 503). */
void wsrelay_stop(struct wsrelay *r);
/* After MHD_stop_daemon. Accepts NULL. */
void wsrelay_free(struct wsrelay *r);

/* ---- per request (MHD worker threads) ---- */

/* Whether the request is a WebSocket upgrade on /ws or /ws/...: GET, Upgrade with the
 * token websocket and Connection with the token upgrade (case-insensitive). */
bool wsrelay_is_upgrade(struct MHD_Connection *conn, const char *url, const char *method);
/* Whether url is /ws or /ws/...: the broker's paths, relayed. */
bool wsrelay_is_ws_path(const char *url);
/* Answers a request on a WebSocket path that is not an upgrade: 400 with the JSON error
 * body saying how to connect. */
enum MHD_Result wsrelay_not_upgrade(struct MHD_Connection *conn);
/* Answers an upgrade request; call on every access-handler call of the request. raw_uri
 * is the request target as sent (path and query). *slot holds the request's relay state
 * between calls (NULL at first); release it with wsrelay_release when the request ends. */
enum MHD_Result wsrelay_answer(struct wsrelay *r, struct MHD_Connection *conn, const char *raw_uri,
                               struct wsr_conn **slot);
/* The request is over (MHD_OPTION_NOTIFY_COMPLETED): drops its hold on c. Accepts NULL. */
void wsrelay_release(struct wsrelay *r, struct wsr_conn *c);

#endif
