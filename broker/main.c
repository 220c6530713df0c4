/* main: parley-broker. Loads the configuration, opens the database (migrating it) and the
 * notification socket, and runs the lws event loop on libev (epoll: a loop pass costs
 * what is active, not what is open, so idle connections cost nothing). On SIGINT or
 * SIGTERM it closes every client with 1001, commits what is pending and exits 0.
 *
 * With an event library, lws_service() runs the loop until the context is destroyed, so
 * the stop is driven from inside the loop: a signal starts it, a timer finishes it.
 * lws's libev watches SIGINT and calls on_signal; SIGTERM is caught here and noticed by
 * a timer (signal handlers may not touch the loop). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "broker_main.h"
#include "clock.h"
#include "config.h"
#include "dbq.h"
#include "log.h"
#include "notify.h"
#include "redisc.h"

#define SHUTDOWN_GRACE_MS 2000
#define SHUTDOWN_STEP_US  (20 * LWS_US_PER_MS)
#define RX_BUFFER_SIZE    1024 /* pieces of larger messages are reassembled (ws.c) */

/* Loop thread only. */
static struct lws_context *the_context;
static struct broker_init init;
static lws_sorted_usec_list_t stop_sul, start_sul, sigterm_sul;
static int64_t stop_deadline;
static int exit_code;
static volatile sig_atomic_t sigterm_seen; /* set by the SIGTERM handler */

#define SIGTERM_POLL_US (100 * LWS_US_PER_MS)

/* Waits for the clients to go (up to SHUTDOWN_GRACE_MS), commits what is pending, then
 * destroys the context, which ends lws_service() in main. */
static void stop_step(lws_sorted_usec_list_t *sul)
{
    if (init.vhd && init.vhd->n_conns > 0 && clock_mono_ms() < stop_deadline) {
        lws_sul_schedule(the_context, 0, &stop_sul, stop_step, SHUTDOWN_STEP_US);
        return;
    }
    if (init.vhd) {
        dbq_stop(init.vhd->dbq); /* commits what is pending */
        init.vhd->dbq = NULL;
    }
    lws_context_destroy(the_context); /* first phase: the loop ends */
}

/* Starts the stop, on the loop: lws's libev signal watcher (SIGINT) or sigterm_watch. */
static void on_signal(void *handle, int signum)
{
    if (stop_deadline)
        return; /* already stopping */
    log_info("%s received, closing connections", signum == SIGINT ? "SIGINT" : "SIGTERM");
    stop_deadline = clock_mono_ms() + SHUTDOWN_GRACE_MS;
    if (init.vhd)
        ws_shutdown(init.vhd);
    stop_step(&stop_sul);
}

static void on_sigterm(int sig)
{
    sigterm_seen = 1;
}

static void sigterm_watch(lws_sorted_usec_list_t *sul)
{
    if (sigterm_seen)
        on_signal(NULL, SIGTERM);
    else
        lws_sul_schedule(the_context, 0, &sigterm_sul, sigterm_watch, SIGTERM_POLL_US);
}

/* Runs once the loop is going: lws has run PROTOCOL_INIT by then. */
static void started(lws_sorted_usec_list_t *sul)
{
    const struct cfg *cfg = init.cfg;
    bool v6 = strchr(cfg->bind, ':') != NULL;

    if (!init.vhd) {
        log_error("the broker could not initialise (see above); it is not serving");
        exit_code = 1;
        stop_deadline = clock_mono_ms();
        stop_step(&stop_sul);
        return;
    }
    char shown[512];

    log_info("node %s listening on %s://%s%s%s:%d/ws (database %s, assistant %s%s%s)",
             init.vhd->node_id, cfg->tls_cert ? "wss" : "ws", v6 ? "[" : "", cfg->bind,
             v6 ? "]" : "", init.vhd->port, db_path_shown(cfg->db_path, shown, sizeof shown),
             cfg->llm, cfg->redis_url ? ", brokers meet through Redis at " : "",
             cfg->redis_url ? cfg->redis_url : "");
}

static void lws_log(int level, const char *line)
{
    char msg[512];
    size_t n;

    snprintf(msg, sizeof msg, "%s", line);
    n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_write(level == LLL_ERR ? LOG_LEVEL_ERROR : LOG_LEVEL_WARN, "libwebsockets", "%s", msg);
}

static const struct lws_protocols protocols[] = {
    /* first: the protocol a client that names none gets */
    {"parley-chat", ws_callback_chat, sizeof(struct per_session_data__chat), RX_BUFFER_SIZE, 0,
     NULL, 0},
    {"parley-notify", ws_callback_notify, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}, /* terminator */
};

int main(int argc, char **argv)
{
    struct lws_context_creation_info info;
    struct cfg cfg;
    lws_retry_bo_t retry = {0};
    struct db *db = NULL;
    int64_t keys = 0;
    int rc = 1;

    if ((rc = cfg_main_load(&cfg, CFG_BROKER, "parley-broker", argc, argv)) >= 0)
        return rc;
    rc = 1; /* until it runs */
    db_use_full_sync(strcmp(cfg.db_sync, "full") == 0);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
    if (cfg.argc > 0) {
        log_error("unexpected argument '%s'; see 'parley-broker --help'", cfg.argv[0]);
        cfg_cleanup(&cfg);
        return 2;
    }
    if (cfg.node_id && !ws_node_id_valid(cfg.node_id)) {
        log_error("--node-id/PARLEY_NODE_ID '%s' is not a node id: use 1 to %d characters of "
                  "A-Z a-z 0-9 . _ : - (the default is HOSTNAME:PORT)",
                  cfg.node_id, DB_NODE_ID_MAX);
        cfg_cleanup(&cfg);
        return 2;
    }
    if (cfg.ping_interval_s >= cfg.idle_timeout_s) {
        log_error("--ping-interval (%d s) must be shorter than --idle-timeout (%d s)",
                  cfg.ping_interval_s, cfg.idle_timeout_s);
        cfg_cleanup(&cfg);
        return 2;
    }
    if (cfg.redis_url) {
        struct redisc_url url;
        char err[512];
        if (redisc_url_parse(cfg.redis_url, &url, err, sizeof err) < 0) {
            log_error("%s", err);
            cfg_cleanup(&cfg);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_sigterm);

    if (!(db = db_open(cfg.db_path)))
        goto out;
    if (db_keys_active(db, &keys) != PERR_OK || cfg_check_protected(&cfg, keys) < 0 ||
        db_key_hashes(db, &init.keys, &init.n_keys) != PERR_OK)
        goto out;
    if (!(init.notify = notify_listen(cfg.notify_socket)))
        goto out;
    init.cfg = &cfg;
    init.db = db; /* PROTOCOL_INIT hands it to the database thread */
    db = NULL;

    /* lws's own validity timers off (all zero): the broker pings and hangs up itself in
     * its once-a-second tick (ws.c, keepalive), since lws re-sorts a timer list on every
     * pong, which costs O(connections) each and most of a core at 19,000 idle ones. */

    memset(&info, 0, sizeof info);
    info.port = cfg.port;
    info.iface = cfg.bind;
    info.protocols = protocols;
    info.user = &init;
    info.retry_and_idle_policy = &retry;
    info.timeout_secs = 10; /* handshakes */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_LIBEV;
    /* Listen on exactly the --bind address: with IPv6 on, lws 4.1 opens a dual-stack
     * socket on every interface for an IPv4 address. */
    if (!strchr(cfg.bind, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    info.signal_cb = on_signal; /* lws's libev watches SIGINT for us */
    if (cfg.tls_cert) {         /* wss:// (cfg_load checked that the key came with it) */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg.tls_cert;
        info.ssl_private_key_filepath = cfg.tls_key;
    }
    the_context = lws_create_context(&info);
    if (!the_context) {
        log_error("cannot start the WebSocket server on %s port %d: is the port in use? "
                  "choose another with --port or PARLEY_WS_PORT%s",
                  cfg.bind, cfg.port,
                  cfg.tls_cert ? "; or are --tls-cert and --tls-key readable PEM files "
                                 "of one pair?"
                               : "");
        goto out;
    }
    lws_sul_schedule(the_context, 0, &start_sul, started, 1);
    lws_sul_schedule(the_context, 0, &sigterm_sul, sigterm_watch, SIGTERM_POLL_US);
    lws_service(the_context, 0); /* runs until stop_step destroys the context */
    rc = exit_code;
out:
    if (the_context)
        lws_context_destroy(the_context);
    notify_close(init.notify);
    free(init.keys); /* still ours if PROTOCOL_INIT never ran */
    db_close(db);
    db_close(init.db); /* still ours if PROTOCOL_INIT never ran */
    cfg_cleanup(&cfg);
    return rc;
}
