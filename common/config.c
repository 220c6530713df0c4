/* config: the option table and its loader. To add a setting, add a field to struct cfg
 * and a row to cfg_options[]; parsing, the environment and --help follow from the row. */
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

enum cfg_type { T_STR, T_INT, T_I64, T_SIZE, T_DOUBLE, T_BOOL, T_LIST, T_LEVEL };

struct cfg_option {
    const char *flag;    /* without the leading dashes */
    const char *env;     /* NULL: PARLEY_ + FLAG in upper case, dashes as underscores */
    const char *alt_env; /* a second variable honoured when the first is unset */
    enum cfg_type type;
    size_t offset;
    const char *def; /* default as text, NULL for none */
    int64_t min, max;
    unsigned progs;
    const char *metavar;
    const char *help;
};

#define OFF(f) offsetof(struct cfg, f)
#define SRV    (CFG_REST | CFG_FCGI | CFG_BROKER)
#define HTTP   (CFG_REST | CFG_FCGI)
#define ALL    (SRV | CFG_CLIENT)

static const struct cfg_option cfg_options[] = {
    {"db", NULL, NULL, T_STR, OFF(db_path), "var/parley.db", 0, 0, SRV, "PATH|URI",
     "SQLite database file, or a PostgreSQL URI (postgres://...); migrated if needed"},
    {"db-sync", NULL, NULL, T_STR, OFF(db_sync), "normal", 0, 0, SRV, "MODE",
     "normal (survives kill -9) or full (an fsync per commit: survives power loss)"},
    {"bind", NULL, NULL, T_STR, OFF(bind), "127.0.0.1", 0, 0, CFG_REST | CFG_BROKER, "ADDR",
     "address to listen on"},
    {"port", "PARLEY_PORT", NULL, T_INT, OFF(port), "8000", 0, 65535, CFG_REST, "N",
     "HTTP port (0 picks a free one)"},
    {"port", "PARLEY_WS_PORT", NULL, T_INT, OFF(port), "8001", 0, 65535, CFG_BROKER, "N",
     "WebSocket port (0 picks a free one)"},
    {"ws-port", "PARLEY_WS_PORT", NULL, T_INT, OFF(ws_port), "8001", 1, 65535, HTTP, "N",
     "the broker's port, used to build ws_url"},
    {"broker-url", NULL, NULL, T_STR, OFF(broker_url), NULL, 0, 0, CFG_REST, "URL",
     "the broker GET /ws is relayed to: ws://HOST:PORT (default ws://127.0.0.1:--ws-port)"},
    {"ws-relay-max", NULL, NULL, T_INT, OFF(ws_relay_max), "1024", 1, 100000, CFG_REST, "N",
     "WebSocket connections relayed at once on GET /ws; beyond it, 503"},
    {"trusted-proxy", NULL, NULL, T_LIST, OFF(trusted_proxy), NULL, 0, 0, CFG_BROKER, "ADDR",
     "peer address whose X-Forwarded-For is believed (repeatable; default loopback only, as "
     "parley-rest's GET /ws relay)"},
    {"public-ws-url", NULL, NULL, T_STR, OFF(public_ws_url), NULL, 0, 0, SRV, "URL",
     "ws_url to announce (e.g. wss://chat.example.com/ws behind a proxy)"},
    {"public-url", NULL, NULL, T_STR, OFF(public_url), NULL, 0, 0, SRV, "URL",
     "the service's public URL (e.g. https://chat.example.com behind a proxy); its host is "
     "answered without API keys"},
    {"allowed-host", NULL, NULL, T_LIST, OFF(allowed_host), NULL, 0, 0, SRV, "HOST",
     "Host answered without API keys besides loopback and the public URLs (repeatable; '*' "
     "any)"},
    {"notify-socket", NULL, NULL, T_STR, OFF(notify_socket), "var/broker.sock", 0, 0, SRV, "PATH",
     "Unix socket on which the broker hears about REST changes"},
    {"redis", NULL, NULL, T_STR, OFF(redis_url), NULL, 0, 0, SRV, "URL",
     "redis://HOST:PORT[/DB]: brokers exchange session events through this Redis server, and "
     "REST notifies them there instead of the notification socket (many machines)"},
    {"node-id", NULL, NULL, T_STR, OFF(node_id), NULL, 0, 0, CFG_BROKER, "NAME",
     "this broker's name in logs, /health and /stats (default: HOSTNAME:PORT)"},
    {"www-dir", NULL, NULL, T_STR, OFF(www_dir), "www", 0, 0, HTTP, "DIR",
     "static files (demo page, API docs); an installed program's default is "
     "../share/parley/www beside its directory (make install)"},
    {"log-level", NULL, NULL, T_LEVEL, OFF(log_level), "info", 0, 0, ALL, "LEVEL",
     "debug, info, warn or error"},
    {"threads", NULL, NULL, T_INT, OFF(threads), "0", 0, 256, HTTP, "N",
     "worker threads (0: one per CPU core)"},
    {"max-connections", NULL, NULL, T_INT, OFF(max_connections), "1024", 1, 100000, CFG_REST, "N",
     "concurrent HTTP connections"},
    {"tls-cert", NULL, NULL, T_STR, OFF(tls_cert), NULL, 0, 0, CFG_REST | CFG_BROKER, "PATH",
     "PEM certificate: serve https:// or wss://"},
    {"tls-key", NULL, NULL, T_STR, OFF(tls_key), NULL, 0, 0, CFG_REST | CFG_BROKER, "PATH",
     "PEM private key for --tls-cert"},
    {"fcgi-socket", NULL, NULL, T_STR, OFF(fcgi_socket), NULL, 0, 0, CFG_FCGI, "PATH|HOST:PORT",
     "listen on this Unix socket or TCP address (default: the socket on fd 0 from the web "
     "server or spawn-fcgi)"},
    {"fcgi-socket-mode", NULL, NULL, T_STR, OFF(fcgi_socket_mode), "0660", 0, 0, CFG_FCGI, "MODE",
     "octal permissions of the Unix socket (the web server's user must be able to write it)"},
    {"mount-prefix", NULL, NULL, T_STR, OFF(mount_prefix), NULL, 0, 0, CFG_FCGI, "PATH",
     "URL prefix the API is mounted under: /api, or / (default: auto, from SCRIPT_NAME and "
     "PATH_INFO)"},
    {"llm", NULL, NULL, T_STR, OFF(llm), "echo", 0, 0, SRV, "PROVIDER",
     "assistant: echo, none, openai or gemini"},
    {"llm-url", NULL, NULL, T_STR, OFF(llm_url), NULL, 0, 0, CFG_BROKER, "URL",
     "LLM base URL (e.g. http://127.0.0.1:1234/v1)"},
    {"llm-model", NULL, "GENAI_MODEL_ID", T_STR, OFF(llm_model), NULL, 0, 0, SRV, "NAME",
     "model to ask for"},
    {"llm-api-key", NULL, NULL, T_STR, OFF(llm_api_key), NULL, 0, 0, CFG_BROKER, "KEY",
     "LLM API key"},
    {"llm-models", NULL, NULL, T_LIST, OFF(llm_models), NULL, 0, 0, SRV, "NAME",
     "a model clients may pick (repeatable; '*' any; default only --llm-model's)"},
    {"llm-max-concurrent", NULL, NULL, T_INT, OFF(llm_max_concurrent), "8", 1, 10000, CFG_BROKER,
     "N", "LLM requests at once; replies beyond it wait their turn"},
    {"system-prompt", NULL, NULL, T_STR, OFF(system_prompt), NULL, 0, 0, CFG_BROKER, "TEXT",
     "system prompt sent first"},
    {"context-messages", NULL, NULL, T_INT, OFF(context_messages), "20", 0, 10000, CFG_BROKER, "N",
     "stored messages sent as context"},
    {"llm-timeout-s", NULL, NULL, T_INT, OFF(llm_timeout_s), "120", 1, 86400, CFG_BROKER, "S",
     "longest a whole reply may take"},
    {"llm-idle-timeout-s", NULL, NULL, T_INT, OFF(llm_idle_timeout_s), "30", 1, 86400, CFG_BROKER,
     "S", "longest silence before the first token or between tokens"},
    {"templates-dir", NULL, NULL, T_STR, OFF(templates_dir), NULL, 0, 0, CFG_BROKER, "DIR",
     "prompt templates, one NAME.txt system prompt each"},
    {"max-message-size", NULL, NULL, T_SIZE, OFF(max_message_size), "64KiB", 16, 16777216, SRV,
     "BYTES", "largest WebSocket message and REST body"},
    {"max-conns-per-ip", NULL, NULL, T_INT, OFF(max_conns_per_ip), "256", 1, 1000000, CFG_BROKER,
     "N", "concurrent WebSocket connections from one address"},
    {"rate-limit", NULL, NULL, T_DOUBLE, OFF(rate_limit), "20", 0, 0, CFG_BROKER, "PER_S",
     "client messages per second per connection"},
    {"rate-burst", NULL, NULL, T_INT, OFF(rate_burst), "40", 1, 1000000, CFG_BROKER, "N",
     "burst allowed above --rate-limit"},
    {"allowed-origin", NULL, NULL, T_LIST, OFF(allowed_origin), NULL, 0, 0, CFG_BROKER, "ORIGIN",
     "allowed Origin (repeatable; '*' any; default REST and loopback origins)"},
    {"ping-interval", NULL, NULL, T_INT, OFF(ping_interval_s), "25", 1, 3600, CFG_BROKER, "S",
     "ping an idle connection this often"},
    {"idle-timeout", NULL, NULL, T_INT, OFF(idle_timeout_s), "60", 2, 86400, CFG_BROKER, "S",
     "close a connection silent this long"},
    {"quota-messages-per-day", NULL, NULL, T_I64, OFF(quota_messages_per_day), "0", 0, INT64_MAX,
     SRV, "N",
     "user messages an API key may send per UTC day (0: no quota). Only with API keys: "
     "without keys there is no quota. Give every process the same value"},
    {"quota-tokens-per-day", NULL, NULL, T_I64, OFF(quota_tokens_per_day), "0", 0, INT64_MAX, SRV,
     "N",
     "assistant tokens (prompt + completion) an API key may use per UTC day; its chats are "
     "refused once reached (0: no quota). Only with API keys; every process the same value"},
    {"test-clock-offset-s", NULL, NULL, T_I64, OFF(test_clock_offset_s), "0", -3153600000,
     3153600000, SRV, "S",
     "testing aid: seconds added to the clock that tells the quota day (UTC midnight)"},
    {"require-auth", NULL, NULL, T_BOOL, OFF(require_auth), "0", 0, 0, SRV, NULL,
     "require an API key even when none is stored"},
    {"insecure-no-auth", NULL, NULL, T_BOOL, OFF(insecure_no_auth), "0", 0, 0, SRV, NULL,
     "allow a non-loopback bind without API keys"},
    {"url", "PARLEY_WS_URL", NULL, T_STR, OFF(url), "ws://127.0.0.1:8001/ws", 0, 0, CFG_CLIENT,
     "URL", "broker WebSocket URL"},
    {"rest-url", NULL, NULL, T_STR, OFF(rest_url), "http://127.0.0.1:8000", 0, 0, CFG_CLIENT, "URL",
     "REST service URL"},
    {"api-key", NULL, NULL, T_STR, OFF(api_key), NULL, 0, 0, CFG_CLIENT, "KEY",
     "API key for the service"},
    {"session", NULL, NULL, T_STR, OFF(session), NULL, 0, 0, CFG_CLIENT, "ID",
     "join this session instead of creating one"},
    {"name", NULL, NULL, T_STR, OFF(name), NULL, 0, 0, CFG_CLIENT, "NAME",
     "your display name in sessions (1 to 64 characters; default: your login name)"},
    {"json", NULL, NULL, T_BOOL, OFF(json), "0", 0, 0, CFG_CLIENT, NULL, "machine-readable output"},
    {"timeout", NULL, NULL, T_INT, OFF(timeout_s), "120", 1, 86400, CFG_CLIENT, "S",
     "scripting: longest wait for the connection and the reply"},
    {"no-color", NULL, NULL, T_BOOL, OFF(no_color), "0", 0, 0, CFG_CLIENT, NULL,
     "no colours (also when NO_COLOR is set or output is not a terminal)"},
};

#define N_OPTIONS (sizeof cfg_options / sizeof cfg_options[0])

static void env_name(const struct cfg_option *o, char *out, size_t size)
{
    size_t n;

    if (o->env) {
        snprintf(out, size, "%s", o->env);
        return;
    }
    n = (size_t)snprintf(out, size, "PARLEY_");
    for (const char *p = o->flag; *p && n + 1 < size; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

int cfg_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    long long v;

    if (!s || !*s)
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int cfg_parse_size(const char *s, int64_t *out)
{
    char *end;
    long long v;
    int64_t mult = 1;

    if (!s || !*s)
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || v < 0 || end == s)
        return -1;
    if (*end == 'K' || *end == 'k')
        mult = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mult = 1024 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mult = 1024 * 1024 * 1024, end++;
    if (mult > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
        end += strlen(end);
    if (*end || v > INT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off", ""};

    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (strcasecmp(s, yes[i]) == 0)
            return *out = true, 0;
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (strcasecmp(s, no[i]) == 0)
            return *out = false, 0;
    return -1;
}

/* Stores text into the option's field. Returns 0, or -1 when the text does not parse. */
static int set_value(struct cfg *cfg, const struct cfg_option *o, const char *text)
{
    void *field = (char *)cfg + o->offset;
    int64_t v;
    char *end;

    switch (o->type) {
    case T_STR:
        free(*(char **)field);
        *(char **)field = strdup(text);
        return 0;
    case T_INT:
        if (cfg_parse_int(text, o->min, o->max, &v))
            return -1;
        *(int *)field = (int)v;
        return 0;
    case T_I64:
        if (cfg_parse_int(text, o->min, o->max, &v))
            return -1;
        *(int64_t *)field = v;
        return 0;
    case T_SIZE:
        if (cfg_parse_size(text, &v) || v < o->min || v > o->max)
            return -1;
        *(int64_t *)field = v;
        return 0;
    case T_DOUBLE: {
        double d;
        errno = 0;
        d = strtod(text, &end);
        if (errno || end == text || *end || !isfinite(d) || d < 0)
            return -1;
        *(double *)field = d;
        return 0;
    }
    case T_BOOL:
        return parse_bool(text, (bool *)field);
    case T_LEVEL:
        return log_level_parse(text, (enum log_level *)field);
    case T_LIST: {
        struct cfg_list *l = field;
        if (l->n == CFG_MAX_LIST)
            return -1;
        l->v[l->n++] = strdup(text);
        return 0;
    }
    }
    return -1;
}

static const char *help_args = "";
static const char *help_epilog;

void cfg_set_help_text(const char *args, const char *epilog)
{
    help_args = args ? args : "";
    help_epilog = epilog;
}

static void print_help(enum cfg_prog which, const char *prog)
{
    char env[64], flag[64];

    printf("Usage: %s [OPTION]...%s\n\nOptions (each also read from the environment variable "
           "shown; a flag wins):\n",
           prog, help_args);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct cfg_option *o = &cfg_options[i];
        if (!(o->progs & which))
            continue;
        env_name(o, env, sizeof env);
        snprintf(flag, sizeof flag, "--%s%s%s", o->flag, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        printf("  %-28s %s", flag, o->help);
        if (o->def && o->type != T_BOOL)
            printf(" [%s]", o->def);
        printf("\n  %-28s env %s%s%s\n", "", env, o->alt_env ? " or " : "",
               o->alt_env ? o->alt_env : "");
    }
    printf("  %-28s %s\n  %-28s %s\n", "--help", "show this help and exit", "--version",
           "show the version and exit");
    if (help_epilog)
        printf("\n%s", help_epilog);
}

/* Writes text for a roff body line: backslashes and dashes escaped, a leading dot or
 * quote neutralised. */
static void roff_text(const char *text)
{
    if (*text == '.' || *text == '\'')
        fputs("\\&", stdout);
    for (const char *p = text; *p; p++) {
        if (*p == '\\')
            fputs("\\e", stdout);
        else if (*p == '-')
            fputs("\\-", stdout);
        else
            putchar(*p);
    }
}

/* --man (hidden): the OPTIONS section of the program's manual page, in roff, from the
 * same rows as --help; tools/render_man.sh puts it into man/PROG.N.in. */
static void print_man(enum cfg_prog which)
{
    char env[64];

    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct cfg_option *o = &cfg_options[i];
        if (!(o->progs & which))
            continue;
        env_name(o, env, sizeof env);
        fputs(".TP\n", stdout);
        if (o->metavar) {
            fputs(".BI \\-\\-", stdout);
            roff_text(o->flag);
            fputs(" \" ", stdout);
            roff_text(o->metavar);
            fputs("\"\n", stdout);
        } else {
            fputs(".B \\-\\-", stdout);
            roff_text(o->flag);
            putchar('\n');
        }
        roff_text(o->help);
        fputs(".\n", stdout);
        if (o->def && o->type != T_BOOL) {
            fputs("Default: \\fB\\%", stdout);
            roff_text(o->def);
            fputs("\\fR.\n", stdout);
        }
        fputs(".br\nEnvironment: \\fB\\%", stdout);
        roff_text(env);
        fputs("\\fR", stdout);
        if (o->alt_env) {
            fputs(" or \\fB\\%", stdout);
            roff_text(o->alt_env);
            fputs("\\fR", stdout);
        }
        fputs(".\n", stdout);
    }
    fputs(".TP\n.B \\-\\-help\nShow the options and exit.\n"
          ".TP\n.B \\-\\-version\nShow the version and exit.\n",
          stdout);
}

/* The default --www-dir of an installed program: DIR/../share/parley/www beside the
 * executable's directory DIR, when that directory exists (so a tree installed under any
 * PREFIX or DESTDIR, or unpacked from the package, finds its pages); NULL otherwise, and
 * the table's default (www, relative: the source tree) applies. Returns malloc'd. */
static char *installed_www_dir(void)
{
    char exe[4096], *slash, *out = NULL;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    struct stat st;

    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    if (asprintf(&out, "%s/../share/parley/www", exe) < 0)
        return NULL;
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
        char *real = realpath(out, NULL);
        if (real) {
            free(out);
            return real;
        }
        return out;
    }
    free(out);
    return NULL;
}

static const struct cfg_option *find_flag(enum cfg_prog which, const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct cfg_option *o = &cfg_options[i];
        if ((o->progs & which) && strlen(o->flag) == len && strncmp(o->flag, name, len) == 0)
            return o;
    }
    return NULL;
}

static enum cfg_result bad(const char *prog, const char *what, const char *value,
                           const char *source)
{
    fprintf(stderr, "%s: invalid value '%s' for %s%s; see '%s --help'\n", prog, value, what, source,
            prog);
    return CFG_ERROR;
}

enum cfg_result cfg_load(struct cfg *cfg, enum cfg_prog which, const char *prog, int argc,
                         char **argv)
{
    char env[64];
    int i;

    memset(cfg, 0, sizeof *cfg);
    /* 1. defaults, 2. environment */
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const struct cfg_option *o = &cfg_options[k];
        const char *v;
        if (!(o->progs & which))
            continue;
        if (o->def && set_value(cfg, o, o->def))
            abort(); /* a bad default is a bug in the table */
        if (o->offset == OFF(www_dir)) {
            char *installed = installed_www_dir();
            if (installed) {
                free(cfg->www_dir);
                cfg->www_dir = installed;
            }
        }
        env_name(o, env, sizeof env);
        v = getenv(env);
        if (!v && o->alt_env) {
            v = getenv(o->alt_env);
            snprintf(env, sizeof env, "%s", o->alt_env);
        }
        if (!v)
            continue;
        if (o->type == T_LIST) {
            /* comma-separated in the environment */
            char *copy = strdup(v), *save = NULL;
            for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
                if (set_value(cfg, o, tok)) {
                    free(copy);
                    return bad(prog, env, v, " in the environment");
                }
            free(copy);
        } else if (set_value(cfg, o, v)) {
            return bad(prog, env, v, " in the environment");
        }
    }
    /* 3. flags; a list given by flag replaces the environment's */
    bool list_from_flag[N_OPTIONS] = {false};
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *name, *eq, *value;
        const struct cfg_option *o;
        size_t len;

        if (strcmp(arg, "--") == 0) {
            i++;
            break;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            break; /* first positional argument */
        if (strcmp(arg, "--help") == 0) {
            print_help(which, prog);
            return CFG_EXIT;
        }
        if (strcmp(arg, "--man") == 0) {
            print_man(which);
            return CFG_EXIT;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("%s %s\n", prog, PARLEY_VERSION);
            return CFG_EXIT;
        }
        name = arg + 2;
        eq = strchr(name, '=');
        len = eq ? (size_t)(eq - name) : strlen(name);
        o = find_flag(which, name, len);
        if (!o) {
            fprintf(stderr, "%s: unknown option '%s'; see '%s --help'\n", prog, arg, prog);
            return CFG_ERROR;
        }
        if (o->type == T_BOOL && !eq) {
            value = "1";
        } else if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "%s: option '%s' needs a value; see '%s --help'\n", prog, arg, prog);
            return CFG_ERROR;
        }
        if (o->type == T_LIST && !list_from_flag[o - cfg_options]) {
            struct cfg_list *l = (struct cfg_list *)((char *)cfg + o->offset);
            for (size_t k = 0; k < l->n; k++)
                free(l->v[k]);
            l->n = 0;
            list_from_flag[o - cfg_options] = true;
        }
        if (set_value(cfg, o, value)) {
            char what[80];
            snprintf(what, sizeof what, "--%s", o->flag);
            return bad(prog, what, value, "");
        }
    }
    cfg->argc = argc - i;
    cfg->argv = argv + i;
    if ((which & SRV) && strcmp(cfg->db_sync, "normal") && strcmp(cfg->db_sync, "full")) {
        fprintf(stderr, "%s: --db-sync must be normal or full, not '%s'\n", prog, cfg->db_sync);
        return CFG_ERROR;
    }
    if ((which & SRV) && strcmp(cfg->llm, "echo") && strcmp(cfg->llm, "none") &&
        strcmp(cfg->llm, "openai") && strcmp(cfg->llm, "gemini")) {
        fprintf(stderr,
                "%s: unknown assistant '%s' for --llm/PARLEY_LLM; use echo, none, "
                "openai or gemini\n",
                prog, cfg->llm);
        return CFG_ERROR;
    }
    if (!!cfg->tls_cert != !!cfg->tls_key && (which & (CFG_REST | CFG_BROKER))) {
        fprintf(stderr, "%s: --tls-cert and --tls-key go together; give both or neither\n", prog);
        return CFG_ERROR;
    }
    return CFG_OK;
}

void cfg_cleanup(struct cfg *cfg)
{
    if (!cfg)
        return;
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const struct cfg_option *o = &cfg_options[k];
        void *field = (char *)cfg + o->offset;
        if (o->type == T_STR) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (o->type == T_LIST) {
            struct cfg_list *l = field;
            for (size_t i = 0; i < l->n; i++)
                free(l->v[i]);
            l->n = 0;
        }
    }
}

const char *cfg_model_name(const struct cfg *cfg)
{
    if (cfg->llm && (strcmp(cfg->llm, "openai") == 0 || strcmp(cfg->llm, "gemini") == 0)) {
        if (cfg->llm_model)
            return cfg->llm_model;
        return strcmp(cfg->llm, "gemini") == 0 ? "gemini-2.0-flash" : "default";
    }
    return cfg->llm ? cfg->llm : "echo";
}

bool cfg_model_allowed(const struct cfg *cfg, const char *model)
{
    for (size_t i = 0; i < cfg->llm_models.n; i++)
        if (strcmp(cfg->llm_models.v[i], "*") == 0 || strcmp(cfg->llm_models.v[i], model) == 0)
            return true;
    return strcmp(model, cfg_model_name(cfg)) == 0;
}

bool cfg_is_loopback(const char *bind)
{
    return strncmp(bind, "127.", 4) == 0 || strcmp(bind, "::1") == 0 ||
           strcmp(bind, "localhost") == 0;
}

int cfg_check_protected(const struct cfg *cfg, int64_t active_keys)
{
    if (cfg_is_loopback(cfg->bind) || active_keys > 0)
        return 0;
    if (cfg->insecure_no_auth) {
        if (!cfg->allowed_host.n && !cfg->public_url && !cfg->public_ws_url)
            log_warn("listening on %s with no API key: requests are answered only when their "
                     "Host is a loopback name or address (DNS-rebinding protection); name the "
                     "hosts clients use with --allowed-host HOST, or --allowed-host '*'",
                     cfg->bind);
        return 0;
    }
    log_error("refusing to listen on %s with no API key: anyone who can reach this address "
              "could read and write every session. Add a key with 'parley-rest keys add NAME' "
              "(clients then send it), bind to 127.0.0.1, or, on a trusted network only, pass "
              "--insecure-no-auth (PARLEY_INSECURE_NO_AUTH=1)",
              cfg->bind);
    return -1;
}

int cfg_main_load(struct cfg *cfg, enum cfg_prog which, const char *prog, int argc, char **argv)
{
    switch (cfg_load(cfg, which, prog, argc, argv)) {
    case CFG_OK:
        log_init(prog, cfg->log_level);
        return -1;
    case CFG_EXIT:
        cfg_cleanup(cfg);
        return 0;
    case CFG_ERROR:
        break;
    }
    cfg_cleanup(cfg);
    return 2;
}
