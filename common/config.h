/* config: every setting of every Parley program, from one table.
 *
 * Precedence: built-in default < environment (PARLEY_*) < command-line flag. Each flag
 * --some-name reads PARLEY_SOME_NAME unless the table names another variable (the
 * broker's --port reads PARLEY_WS_PORT; the client's --url reads PARLEY_WS_URL).
 * --help is generated from the same table, so it can never disagree with the parser. */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

/* Which program is loading; an option applies to the programs in its mask. */
enum cfg_prog {
    CFG_REST = 1 << 0,   /* parley-rest */
    CFG_FCGI = 1 << 1,   /* parley-fcgi */
    CFG_BROKER = 1 << 2, /* parley-broker */
    CFG_CLIENT = 1 << 3, /* parley */
};

#define CFG_MAX_LIST 16

struct cfg_list {
    size_t n;
    char *v[CFG_MAX_LIST]; /* owned */
};

struct cfg {
    /* where and how to serve */
    char *db_path;
    char *db_sync; /* normal or full */
    char *bind;
    int port;
    int ws_port;                   /* REST: the broker's port, for ws_url */
    char *broker_url;              /* REST: where GET /ws is relayed; NULL: 127.0.0.1:ws_port */
    int ws_relay_max;              /* REST: WebSocket connections relayed at once */
    struct cfg_list trusted_proxy; /* broker: peers whose X-Forwarded-For counts; empty: loopback */
    char *public_ws_url;
    char *public_url;             /* REST: the service's public base URL */
    struct cfg_list allowed_host; /* Host names answered without API keys (hostcheck.h) */
    char *notify_socket;
    char *redis_url; /* NULL: one broker, the notification socket (SPEC 8) */
    char *node_id;   /* the broker's name; NULL: HOSTNAME:PORT */
    char *www_dir;
    enum log_level log_level;
    int threads;
    int max_connections;
    char *tls_cert;
    char *tls_key;
    char *fcgi_socket;      /* parley-fcgi: Unix path or HOST:PORT; NULL: fd 0 */
    char *fcgi_socket_mode; /* parley-fcgi: octal mode of a Unix socket it creates */
    char *mount_prefix;     /* parley-fcgi: path prefix the API is mounted under; NULL: auto */
    /* the assistant */
    char *llm;
    char *llm_url;
    char *llm_model;
    char *llm_api_key;
    struct cfg_list llm_models; /* models clients may pick; empty: only the configured one */
    int llm_max_concurrent;
    char *system_prompt;
    int context_messages;
    int llm_timeout_s;
    int llm_idle_timeout_s;
    char *templates_dir;
    /* limits */
    int64_t max_message_size;
    int max_conns_per_ip;
    double rate_limit;
    int rate_burst;
    struct cfg_list allowed_origin;
    int ping_interval_s;
    int idle_timeout_s;
    /* quotas per API key (SPEC 9; quota.h): 0 is none */
    int64_t quota_messages_per_day;
    int64_t quota_tokens_per_day;
    int64_t test_clock_offset_s; /* testing aid: added to the clock that tells the quota day */
    /* authentication */
    bool require_auth;
    bool insecure_no_auth;
    /* client */
    char *url;
    char *rest_url;
    char *api_key;
    char *session;
    char *name; /* display name in sessions (SPEC 9); NULL: the login name */
    bool json;
    int timeout_s; /* scripting: longest wait for a connection or a reply */
    bool no_color;
    /* positional arguments left after the flags (borrowed from argv) */
    int argc;
    char **argv;
};

/* Outcome of cfg_load. */
enum cfg_result {
    CFG_OK = 0,    /* run */
    CFG_EXIT = 1,  /* --help or --version was printed: exit 0 */
    CFG_ERROR = 2, /* a message was printed to stderr: exit 2 */
};

/* Loads defaults, then the environment, then argv (argv[0] is skipped) into cfg.
 * prog names the program for --help and --version. On CFG_ERROR the message says what is
 * wrong and how to see the valid flags. cfg owns its strings: free with cfg_cleanup. */
enum cfg_result cfg_load(struct cfg *cfg, enum cfg_prog which, const char *prog, int argc,
                         char **argv);
void cfg_cleanup(struct cfg *cfg);
/* What a program's main does first: cfg_load, then log_init with the chosen level.
 * Returns -1 to go on, or the status main should exit with (0 after --help or --version,
 * 2 after a bad option), cfg cleaned up already. */
int cfg_main_load(struct cfg *cfg, enum cfg_prog which, const char *prog, int argc, char **argv);

/* Extra --help text for a program with positional commands (the client): args follows
 * "Usage: PROG [OPTION]..." and epilog is printed after the options. Both borrowed (string
 * literals); call before cfg_load. */
void cfg_set_help_text(const char *args, const char *epilog);

/* The model name the assistant answers as: "echo", "none", or the LLM model. */
const char *cfg_model_name(const struct cfg *cfg);

/* Whether a client may pick model (create_session model_id, POST /sessions/new). */
bool cfg_model_allowed(const struct cfg *cfg, const char *model);

/* Whether a --bind address is loopback only (127.0.0.0/8, ::1, localhost). */
bool cfg_is_loopback(const char *bind);
/* Protected mode: a server bound beyond loopback with no API key refuses to start unless
 * --insecure-no-auth. Returns 0 to go on, or -1 after saying why and what to do. */
int cfg_check_protected(const struct cfg *cfg, int64_t active_keys);

/* Parses a byte size: "65536", "64K", "64KiB", "1M", "1MiB". Returns 0 or -1. */
int cfg_parse_size(const char *s, int64_t *out);
/* Parses a whole number in [min, max] with strtoll and an end check. Returns 0 or -1. */
int cfg_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);

#endif
