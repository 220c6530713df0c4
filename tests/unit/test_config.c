/* test_config: cfg_load's precedence (default < environment < flag), flag forms, value
 * parsing and errors, as one table of program runs; plus cfg_parse_size, cfg_parse_int and
 * cfg_model_name. Not a test of what the programs do with the values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"

extern char **environ;

#define MAX_ENV    4
#define MAX_ARGS   40
#define MAX_EXPECT 8

/* One run of cfg_load: the environment (every PARLEY_* and GENAI_MODEL_ID variable is unset
 * first), the flags after argv[0], the result, and what the fields read as afterwards.
 * expect rows are "field=text" as field_text() renders them; out and err, when set, must
 * occur in what cfg_load printed on stdout or stderr; no_out must not occur on stdout. */
struct cfg_case {
    const char *name;
    enum cfg_prog which;
    const char *env[MAX_ENV];
    const char *args[MAX_ARGS];
    enum cfg_result want;
    const char *expect[MAX_EXPECT];
    const char *out;
    const char *no_out;
    const char *err;
};

#define O17 "--allowed-origin", "o"
#define SIXTEEN_ORIGINS                                                                            \
    O17, O17, O17, O17, O17, O17, O17, O17, O17, O17, O17, O17, O17, O17, O17, O17

static const struct cfg_case cfg_cases[] = {
    /* defaults */
    {.name = "REST defaults",
     .which = CFG_REST,
     .want = CFG_OK,
     .expect = {"port=8000", "ws_port=8001", "bind=127.0.0.1", "db_path=var/parley.db", "llm=echo",
                "llm_model=(null)", "max_message_size=65536", "argc=0"}},
    {.name = "REST defaults, part two",
     .which = CFG_REST,
     .want = CFG_OK,
     .expect = {"require_auth=0", "log_level=1", "threads=0", "notify_socket=var/broker.sock",
                "www_dir=www", "tls_cert=(null)", "model_name=echo"}},
    {.name = "broker defaults",
     .which = CFG_BROKER,
     .want = CFG_OK,
     .expect = {"port=8001", "context_messages=20", "rate_limit=20", "rate_burst=40",
                "allowed_origin=", "llm_url=(null)", "idle_timeout_s=60"}},
    {.name = "client defaults",
     .which = CFG_CLIENT,
     .want = CFG_OK,
     .expect = {"url=ws://127.0.0.1:8001/ws", "rest_url=http://127.0.0.1:8000", "json=0",
                "db_path=(null)", "llm=(null)", "model_name=echo"}},

    /* precedence and flag forms */
    {.name = "REST: PARLEY_PORT beats the default",
     .which = CFG_REST,
     .env = {"PARLEY_PORT=9000"},
     .want = CFG_OK,
     .expect = {"port=9000"}},
    {.name = "REST: --port N beats PARLEY_PORT",
     .which = CFG_REST,
     .env = {"PARLEY_PORT=9000"},
     .args = {"--port", "9100"},
     .want = CFG_OK,
     .expect = {"port=9100", "argc=0"}},
    {.name = "REST: --port=N beats PARLEY_PORT",
     .which = CFG_REST,
     .env = {"PARLEY_PORT=9000"},
     .args = {"--port=9200"},
     .want = CFG_OK,
     .expect = {"port=9200"}},
    {.name = "REST: the last of two flags wins",
     .which = CFG_REST,
     .args = {"--port=1", "--port", "2"},
     .want = CFG_OK,
     .expect = {"port=2"}},
    {.name = "REST: PARLEY_WS_PORT is --ws-port, not --port",
     .which = CFG_REST,
     .env = {"PARLEY_WS_PORT=9300"},
     .want = CFG_OK,
     .expect = {"port=8000", "ws_port=9300"}},
    {.name = "broker: --port reads PARLEY_WS_PORT, not PARLEY_PORT",
     .which = CFG_BROKER,
     .env = {"PARLEY_PORT=9500", "PARLEY_WS_PORT=9400"},
     .want = CFG_OK,
     .expect = {"port=9400"}},
    {.name = "broker: PARLEY_PORT alone leaves the default",
     .which = CFG_BROKER,
     .env = {"PARLEY_PORT=9500"},
     .want = CFG_OK,
     .expect = {"port=8001"}},
    {.name = "broker: --port beats PARLEY_WS_PORT",
     .which = CFG_BROKER,
     .env = {"PARLEY_WS_PORT=9400"},
     .args = {"--port", "9600"},
     .want = CFG_OK,
     .expect = {"port=9600"}},
    {.name = "client: --url reads PARLEY_WS_URL",
     .which = CFG_CLIENT,
     .env = {"PARLEY_WS_URL=ws://h:1/ws"},
     .want = CFG_OK,
     .expect = {"url=ws://h:1/ws"}},
    {.name = "string from the environment: PARLEY_DB",
     .which = CFG_REST,
     .env = {"PARLEY_DB=/tmp/x.db"},
     .want = CFG_OK,
     .expect = {"db_path=/tmp/x.db"}},
    {.name = "an empty string flag value",
     .which = CFG_REST,
     .args = {"--bind="},
     .want = CFG_OK,
     .expect = {"bind="}},
    {.name = "a value may start with dashes after --flag",
     .which = CFG_BROKER,
     .args = {"--system-prompt", "--be brief"},
     .want = CFG_OK,
     .expect = {"system_prompt=--be brief", "argc=0"}},

    {.name = "broker: PARLEY_MAX_CONNS_PER_IP",
     .which = CFG_BROKER,
     .env = {"PARLEY_MAX_CONNS_PER_IP=7"},
     .want = CFG_OK,
     .expect = {"max_conns_per_ip=7"}},
    {.name = "client: --rest-url reads PARLEY_REST_URL",
     .which = CFG_CLIENT,
     .env = {"PARLEY_REST_URL=http://h:2"},
     .want = CFG_OK,
     .expect = {"rest_url=http://h:2"}},
    /* the model: GENAI_MODEL_ID as the second variable */
    {.name = "GENAI_MODEL_ID sets --llm-model when PARLEY_LLM_MODEL is unset",
     .which = CFG_REST,
     .env = {"GENAI_MODEL_ID=g-model"},
     .want = CFG_OK,
     .expect = {"llm_model=g-model"}},
    {.name = "PARLEY_LLM_MODEL wins over GENAI_MODEL_ID",
     .which = CFG_BROKER,
     .env = {"GENAI_MODEL_ID=g-model", "PARLEY_LLM_MODEL=p-model"},
     .want = CFG_OK,
     .expect = {"llm_model=p-model"}},
    {.name = "--llm-model wins over both variables",
     .which = CFG_BROKER,
     .env = {"GENAI_MODEL_ID=g-model", "PARLEY_LLM_MODEL=p-model"},
     .args = {"--llm-model=f-model"},
     .want = CFG_OK,
     .expect = {"llm_model=f-model"}},
    {.name = "an empty GENAI_MODEL_ID is stored as empty",
     .which = CFG_BROKER,
     .env = {"GENAI_MODEL_ID="},
     .want = CFG_OK,
     .expect = {"llm_model="}},

    /* booleans */
    {.name = "bool flag without a value is true",
     .which = CFG_REST,
     .args = {"--require-auth"},
     .want = CFG_OK,
     .expect = {"require_auth=1", "insecure_no_auth=0"}},
    {.name = "bool from the environment: yes",
     .which = CFG_REST,
     .env = {"PARLEY_REQUIRE_AUTH=yes"},
     .want = CFG_OK,
     .expect = {"require_auth=1"}},
    {.name = "bool --flag=false beats the environment's true",
     .which = CFG_REST,
     .env = {"PARLEY_REQUIRE_AUTH=1"},
     .args = {"--require-auth=false"},
     .want = CFG_OK,
     .expect = {"require_auth=0"}},
    {.name = "bool words: --json=ON",
     .which = CFG_CLIENT,
     .args = {"--json=ON"},
     .want = CFG_OK,
     .expect = {"json=1"}},
    {.name = "bool --flag takes no separate value: the next word is positional",
     .which = CFG_CLIENT,
     .args = {"--json", "false"},
     .want = CFG_OK,
     .expect = {"json=1", "argc=1", "argv=false"}},
    {.name = "bool --flag=maybe is an error",
     .which = CFG_REST,
     .args = {"--require-auth=maybe"},
     .want = CFG_ERROR,
     .err = "invalid value 'maybe' for --require-auth"},
    {.name = "bool PARLEY_JSON=2 is an error",
     .which = CFG_CLIENT,
     .env = {"PARLEY_JSON=2"},
     .want = CFG_ERROR,
     .err = "PARLEY_JSON in the environment"},

    /* lists */
    {.name = "--allowed-origin repeated",
     .which = CFG_BROKER,
     .args = {"--allowed-origin", "https://a.example", "--allowed-origin=https://b.example"},
     .want = CFG_OK,
     .expect = {"allowed_origin=https://a.example,https://b.example"}},
    {.name = "PARLEY_ALLOWED_ORIGIN is comma-separated",
     .which = CFG_BROKER,
     .env = {"PARLEY_ALLOWED_ORIGIN=https://x,https://y,*"},
     .want = CFG_OK,
     .expect = {"allowed_origin=https://x,https://y,*"}},
    {.name = "--allowed-origin replaces the environment's list",
     .which = CFG_BROKER,
     .env = {"PARLEY_ALLOWED_ORIGIN=https://x,https://y"},
     .args = {"--allowed-origin", "https://a", "--allowed-origin", "https://b"},
     .want = CFG_OK,
     .expect = {"allowed_origin=https://a,https://b"}},
    {.name = "--allowed-host repeated, with --public-url (REST)",
     .which = CFG_REST,
     .args = {"--allowed-host", "chat.example", "--allowed-host=[::2]:80", "--public-url",
              "https://pub.example"},
     .want = CFG_OK,
     .expect = {"allowed_host=chat.example,[::2]:80", "public_url=https://pub.example"}},
    {.name = "PARLEY_ALLOWED_HOST is comma-separated (FastCGI and broker)",
     .which = CFG_FCGI,
     .env = {"PARLEY_ALLOWED_HOST=a.example,b.example"},
     .want = CFG_OK,
     .expect = {"allowed_host=a.example,b.example", "public_url=(null)"}},
    {.name = "the broker reads --allowed-host",
     .which = CFG_BROKER,
     .args = {"--allowed-host", "x.example"},
     .want = CFG_OK,
     .expect = {"allowed_host=x.example"}},
    {.name = "the broker reads --public-url (its host is answered without keys)",
     .which = CFG_BROKER,
     .args = {"--public-url", "https://pub.example"},
     .want = CFG_OK,
     .expect = {"public_url=https://pub.example"}},
    {.name = "16 origins fit",
     .which = CFG_BROKER,
     .args = {SIXTEEN_ORIGINS},
     .want = CFG_OK,
     .expect = {"allowed_origin=o,o,o,o,o,o,o,o,o,o,o,o,o,o,o,o"}},
    {.name = "a 17th origin is an error",
     .which = CFG_BROKER,
     .args = {SIXTEEN_ORIGINS, O17},
     .want = CFG_ERROR,
     .err = "--allowed-origin"},
    {.name = "--allowed-origin is not a REST option",
     .which = CFG_REST,
     .args = {"--allowed-origin=x"},
     .want = CFG_ERROR,
     .err = "unknown option '--allowed-origin=x'"},

    /* sizes */
    {.name = "--max-message-size 64K",
     .which = CFG_REST,
     .args = {"--max-message-size", "64K"},
     .want = CFG_OK,
     .expect = {"max_message_size=65536"}},
    {.name = "--max-message-size=1M",
     .which = CFG_BROKER,
     .args = {"--max-message-size=1M"},
     .want = CFG_OK,
     .expect = {"max_message_size=1048576"}},
    {.name = "--max-message-size=16M, the largest",
     .which = CFG_BROKER,
     .args = {"--max-message-size=16M"},
     .want = CFG_OK,
     .expect = {"max_message_size=16777216"}},
    {.name = "PARLEY_MAX_MESSAGE_SIZE=2MiB",
     .which = CFG_REST,
     .env = {"PARLEY_MAX_MESSAGE_SIZE=2MiB"},
     .want = CFG_OK,
     .expect = {"max_message_size=2097152"}},
    {.name = "--max-message-size 12x is an error",
     .which = CFG_REST,
     .args = {"--max-message-size", "12x"},
     .want = CFG_ERROR,
     .err = "invalid value '12x' for --max-message-size"},
    {.name = "--max-message-size -1 is an error",
     .which = CFG_REST,
     .args = {"--max-message-size", "-1"},
     .want = CFG_ERROR,
     .err = "invalid value '-1' for --max-message-size"},
    {.name = "--max-message-size below 16 is an error",
     .which = CFG_REST,
     .args = {"--max-message-size=15"},
     .want = CFG_ERROR,
     .err = "--max-message-size"},
    {.name = "--max-message-size above 16M is an error",
     .which = CFG_REST,
     .args = {"--max-message-size=17M"},
     .want = CFG_ERROR,
     .err = "--max-message-size"},

    /* whole numbers and other values */
    {.name = "--port 65535, the largest",
     .which = CFG_REST,
     .args = {"--port", "65535"},
     .want = CFG_OK,
     .expect = {"port=65535"}},
    {.name = "--port 0 picks a free port",
     .which = CFG_REST,
     .args = {"--port=0"},
     .want = CFG_OK,
     .expect = {"port=0"}},
    {.name = "--port 65536 is an error",
     .which = CFG_REST,
     .args = {"--port", "65536"},
     .want = CFG_ERROR,
     .err = "invalid value '65536' for --port"},
    {.name = "--port -1 is an error",
     .which = CFG_REST,
     .args = {"--port=-1"},
     .want = CFG_ERROR,
     .err = "invalid value '-1' for --port"},
    {.name = "--port 80x is an error",
     .which = CFG_REST,
     .args = {"--port=80x"},
     .want = CFG_ERROR,
     .err = "--port"},
    {.name = "--port with an empty value is an error",
     .which = CFG_REST,
     .args = {"--port="},
     .want = CFG_ERROR,
     .err = "--port"},
    {.name = "PARLEY_PORT=70000 is an error naming the variable",
     .which = CFG_REST,
     .env = {"PARLEY_PORT=70000"},
     .want = CFG_ERROR,
     .err = "invalid value '70000' for PARLEY_PORT in the environment"},
    {.name = "--ws-port 0 is an error (its minimum is 1)",
     .which = CFG_REST,
     .args = {"--ws-port=0"},
     .want = CFG_ERROR,
     .err = "--ws-port"},
    {.name = "--threads 257 is an error",
     .which = CFG_REST,
     .args = {"--threads", "257"},
     .want = CFG_ERROR,
     .err = "--threads"},
    {.name = "--rate-limit 2.5",
     .which = CFG_BROKER,
     .args = {"--rate-limit=2.5"},
     .want = CFG_OK,
     .expect = {"rate_limit=2.5"}},
    {.name = "--rate-limit -1 is an error",
     .which = CFG_BROKER,
     .args = {"--rate-limit=-1"},
     .want = CFG_ERROR,
     .err = "--rate-limit"},
    {.name = "--log-level debug",
     .which = CFG_CLIENT,
     .args = {"--log-level", "debug"},
     .want = CFG_OK,
     .expect = {"log_level=0"}},
    {.name = "--log-level loud is an error",
     .which = CFG_REST,
     .args = {"--log-level=loud"},
     .want = CFG_ERROR,
     .err = "--log-level"},
    {.name = "a flag missing its value is an error",
     .which = CFG_REST,
     .args = {"--port"},
     .want = CFG_ERROR,
     .err = "option '--port' needs a value"},

    /* unknown options */
    {.name = "an unknown flag is an error",
     .which = CFG_REST,
     .args = {"--nope"},
     .want = CFG_ERROR,
     .err = "unknown option '--nope'"},
    {.name = "--llm-url is not a REST option",
     .which = CFG_REST,
     .args = {"--llm-url", "http://x"},
     .want = CFG_ERROR,
     .err = "unknown option '--llm-url'"},
    {.name = "--llm-url is a broker option",
     .which = CFG_BROKER,
     .args = {"--llm-url", "http://x"},
     .want = CFG_OK,
     .expect = {"llm_url=http://x"}},
    {.name = "PARLEY_LLM_URL is ignored by REST",
     .which = CFG_REST,
     .env = {"PARLEY_LLM_URL=http://x"},
     .want = CFG_OK,
     .expect = {"llm_url=(null)"}},
    {.name = "--llm is not a client option",
     .which = CFG_CLIENT,
     .args = {"--llm=echo"},
     .want = CFG_ERROR,
     .err = "unknown option '--llm=echo'"},
    {.name = "a flag name is matched whole (--por)",
     .which = CFG_REST,
     .args = {"--por=1"},
     .want = CFG_ERROR,
     .err = "unknown option '--por=1'"},

    /* --help and --version */
    {.name = "--help exits and lists the REST flags",
     .which = CFG_REST,
     .args = {"--help"},
     .want = CFG_EXIT,
     .out = "--port N",
     .no_out = "--llm-url"},
    {.name = "--help names each flag's variable",
     .which = CFG_BROKER,
     .args = {"--port=1", "--help"},
     .want = CFG_EXIT,
     .out = "env PARLEY_WS_PORT"},
    {.name = "--help shows the second variable",
     .which = CFG_BROKER,
     .args = {"--help"},
     .want = CFG_EXIT,
     .out = "env PARLEY_LLM_MODEL or GENAI_MODEL_ID"},
    {.name = "--version exits",
     .which = CFG_REST,
     .args = {"--version"},
     .want = CFG_EXIT,
     .out = "parley-test " PARLEY_VERSION "\n"},
    {.name = "an unknown flag before --help is still an error",
     .which = CFG_REST,
     .args = {"--nope", "--help"},
     .want = CFG_ERROR,
     .err = "unknown option"},

    /* positional arguments */
    {.name = "positional arguments are left in argc/argv",
     .which = CFG_CLIENT,
     .args = {"--json", "send", "hello there"},
     .want = CFG_OK,
     .expect = {"json=1", "argc=2", "argv=send|hello there"}},
    {.name = "flags stop at the first positional argument",
     .which = CFG_CLIENT,
     .args = {"send", "--json"},
     .want = CFG_OK,
     .expect = {"json=0", "argc=2", "argv=send|--json"}},
    {.name = "-- ends the flags",
     .which = CFG_CLIENT,
     .args = {"--json", "--", "--help"},
     .want = CFG_OK,
     .expect = {"json=1", "argc=1", "argv=--help"}},
    {.name = "a lone - is positional",
     .which = CFG_CLIENT,
     .args = {"-"},
     .want = CFG_OK,
     .expect = {"argc=1", "argv=-"}},

    /* the assistant */
    {.name = "--llm bogus is an error",
     .which = CFG_REST,
     .args = {"--llm", "bogus"},
     .want = CFG_ERROR,
     .err = "unknown assistant 'bogus'"},
    {.name = "PARLEY_LLM=bogus is an error",
     .which = CFG_BROKER,
     .env = {"PARLEY_LLM=bogus"},
     .want = CFG_ERROR,
     .err = "unknown assistant 'bogus'"},
    {.name = "--llm is case-sensitive",
     .which = CFG_BROKER,
     .args = {"--llm=Echo"},
     .want = CFG_ERROR,
     .err = "unknown assistant"},
    {.name = "model name: none",
     .which = CFG_BROKER,
     .args = {"--llm=none"},
     .want = CFG_OK,
     .expect = {"model_name=none"}},
    {.name = "model name: echo ignores --llm-model",
     .which = CFG_BROKER,
     .args = {"--llm-model=m"},
     .want = CFG_OK,
     .expect = {"model_name=echo"}},
    {.name = "model name: openai without a model",
     .which = CFG_BROKER,
     .args = {"--llm=openai"},
     .want = CFG_OK,
     .expect = {"model_name=default"}},
    {.name = "model name: openai with --llm-model",
     .which = CFG_BROKER,
     .args = {"--llm=openai", "--llm-model", "qwen3-8b"},
     .want = CFG_OK,
     .expect = {"model_name=qwen3-8b"}},
    {.name = "model name: gemini without a model",
     .which = CFG_REST,
     .args = {"--llm=gemini"},
     .want = CFG_OK,
     .expect = {"model_name=gemini-2.0-flash"}},
    {.name = "model name: gemini with GENAI_MODEL_ID",
     .which = CFG_REST,
     .env = {"PARLEY_LLM=gemini", "GENAI_MODEL_ID=gemini-2.5-pro"},
     .want = CFG_OK,
     .expect = {"model_name=gemini-2.5-pro"}},

    /* TLS */
    {.name = "--tls-cert without --tls-key is an error",
     .which = CFG_REST,
     .args = {"--tls-cert=c.pem"},
     .want = CFG_ERROR,
     .err = "--tls-cert and --tls-key go together"},
    {.name = "--tls-cert with --tls-key",
     .which = CFG_BROKER,
     .args = {"--tls-cert=c.pem", "--tls-key=k.pem"},
     .want = CFG_OK,
     .expect = {"tls_cert=c.pem", "tls_key=k.pem"}},
};

static void join(char *out, size_t size, char *const *v, size_t n, char sep)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(out + used, used < size ? size - used : 0, "%s%s",
                                 i ? (char[]){sep, '\0'} : "", v[i]);
}

/* Renders the named field of cfg as text; "(null)" for a NULL string, "?" for a name this
 * test does not know. */
static void field_text(const struct cfg *c, const char *name, char *out, size_t size)
{
    static const struct {
        const char *name;
        size_t off;
    } strs[] = {
#define S(f) {#f, offsetof(struct cfg, f)}
        S(db_path),  S(bind),          S(notify_socket), S(www_dir),       S(tls_cert),
        S(tls_key),  S(llm),           S(llm_url),       S(llm_model),     S(url),
        S(rest_url), S(system_prompt), S(public_url),    S(public_ws_url),
#undef S
    };
    static const struct {
        const char *name;
        size_t off;
    } ints[] = {
#define I(f) {#f, offsetof(struct cfg, f)}
        I(port),       I(ws_port),        I(threads), I(context_messages),
        I(rate_burst), I(idle_timeout_s), I(argc),    I(max_conns_per_ip),
#undef I
    };

    for (size_t i = 0; i < UNIT_COUNT(strs); i++)
        if (strcmp(name, strs[i].name) == 0) {
            const char *s = *(char *const *)((const char *)c + strs[i].off);
            snprintf(out, size, "%s", s ? s : "(null)");
            return;
        }
    for (size_t i = 0; i < UNIT_COUNT(ints); i++)
        if (strcmp(name, ints[i].name) == 0) {
            snprintf(out, size, "%d", *(const int *)((const char *)c + ints[i].off));
            return;
        }
    if (strcmp(name, "max_message_size") == 0)
        snprintf(out, size, "%lld", (long long)c->max_message_size);
    else if (strcmp(name, "rate_limit") == 0)
        snprintf(out, size, "%g", c->rate_limit);
    else if (strcmp(name, "log_level") == 0)
        snprintf(out, size, "%d", (int)c->log_level);
    else if (strcmp(name, "require_auth") == 0)
        snprintf(out, size, "%d", c->require_auth);
    else if (strcmp(name, "insecure_no_auth") == 0)
        snprintf(out, size, "%d", c->insecure_no_auth);
    else if (strcmp(name, "json") == 0)
        snprintf(out, size, "%d", c->json);
    else if (strcmp(name, "allowed_origin") == 0)
        join(out, size, c->allowed_origin.v, c->allowed_origin.n, ',');
    else if (strcmp(name, "allowed_host") == 0)
        join(out, size, c->allowed_host.v, c->allowed_host.n, ',');
    else if (strcmp(name, "argv") == 0)
        join(out, size, c->argv, c->argc > 0 ? (size_t)c->argc : 0, '|');
    else if (strcmp(name, "model_name") == 0)
        snprintf(out, size, "%s", cfg_model_name(c));
    else
        snprintf(out, size, "?");
}

/* Unsets every variable cfg_load might read. */
static void clear_env(void)
{
    char name[256];
    int again = 1;

    while (again) {
        again = 0;
        for (char **e = environ; *e; e++) {
            const char *eq = strchr(*e, '=');
            size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
            if ((strncmp(*e, "PARLEY_", 7) == 0 || strncmp(*e, "GENAI_MODEL_ID=", 15) == 0) &&
                n < sizeof name) {
                memcpy(name, *e, n);
                name[n] = '\0';
                unsetenv(name); /* environ changed: start over */
                again = 1;
                break;
            }
        }
    }
}

/* Points fd (1 or 2) at a fresh temporary file; returns the saved fd. */
static int capture_begin(int fd, FILE **tmp)
{
    int saved;

    fflush(stdout);
    fflush(stderr);
    *tmp = tmpfile();
    saved = dup(fd);
    if (*tmp && saved >= 0)
        dup2(fileno(*tmp), fd);
    return saved;
}

/* Restores fd and reads what was written into buf. */
static void capture_end(int fd, int saved, FILE *tmp, char *buf, size_t size)
{
    size_t n = 0;

    fflush(stdout);
    fflush(stderr);
    if (saved >= 0) {
        dup2(saved, fd);
        close(saved);
    }
    if (tmp) {
        rewind(tmp);
        n = fread(buf, 1, size - 1, tmp);
        fclose(tmp);
    }
    buf[n] = '\0';
}

static void run_cfg_case(const struct cfg_case *k)
{
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    char out[16384], err[4096], got[512], want_field[64];
    FILE *tout, *terr;
    int saved_out, saved_err;
    struct cfg cfg;
    enum cfg_result r;

    clear_env();
    for (size_t i = 0; i < MAX_ENV && k->env[i]; i++) {
        const char *eq = strchr(k->env[i], '=');
        char name[64];

        snprintf(name, sizeof name, "%.*s", (int)(eq - k->env[i]), k->env[i]);
        setenv(name, eq + 1, 1);
    }
    argv[argc++] = "parley-test";
    for (size_t i = 0; i < MAX_ARGS && k->args[i]; i++)
        argv[argc++] = (char *)k->args[i];
    argv[argc] = NULL;

    saved_out = capture_begin(1, &tout);
    saved_err = capture_begin(2, &terr);
    r = cfg_load(&cfg, k->which, "parley-test", argc, argv);
    capture_end(2, saved_err, terr, err, sizeof err);
    capture_end(1, saved_out, tout, out, sizeof out);

    if (r != k->want)
        UNIT_FAIL("cfg_load returned %d, want %d (stderr: %.200s)", (int)r, (int)k->want, err);
    if (r == CFG_OK && k->want == CFG_OK) {
        for (size_t i = 0; i < MAX_EXPECT && k->expect[i]; i++) {
            const char *eq = strchr(k->expect[i], '=');
            snprintf(want_field, sizeof want_field, "%.*s", (int)(eq - k->expect[i]), k->expect[i]);
            field_text(&cfg, want_field, got, sizeof got);
            if (strcmp(got, eq + 1) != 0)
                UNIT_FAIL("%s is \"%.150s\", want \"%.150s\"", want_field, got, eq + 1);
        }
    }
    if (k->want == CFG_OK && err[0])
        UNIT_FAIL("printed on stderr: %.200s", err);
    if (k->want == CFG_ERROR && !strstr(err, "parley-test: "))
        UNIT_FAIL("stderr does not start with the program name: \"%.200s\"", err);
    if (k->err && !strstr(err, k->err))
        UNIT_FAIL("stderr lacks \"%s\": \"%.200s\"", k->err, err);
    if (k->out && !strstr(out, k->out))
        UNIT_FAIL("stdout lacks \"%s\": \"%.200s\"", k->out, out);
    if (k->no_out && strstr(out, k->no_out))
        UNIT_FAIL("stdout has \"%s\"", k->no_out);
    if (k->want != CFG_EXIT && out[0])
        UNIT_FAIL("printed on stdout: %.200s", out);
    cfg_cleanup(&cfg);
    clear_env();
}

static void cfg_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(cfg_cases); i++) {
        unit_begin();
        run_cfg_case(&cfg_cases[i]);
        unit_end("cfg_load: %s", cfg_cases[i].name);
    }
}

static const struct {
    const char *s;
    int rc;
    int64_t want;
} size_cases[] = {
    {"65536", 0, 65536},
    {"64K", 0, 65536},
    {"64k", 0, 65536},
    {"64KiB", 0, 65536},
    {"64KB", 0, 65536},
    {"1M", 0, 1048576},
    {"1MiB", 0, 1048576},
    {"2G", 0, 2147483648LL},
    {"0", 0, 0},
    {"9223372036854775807", 0, INT64_MAX},
    {"12x", -1, 0},
    {"-1", -1, 0},
    {"-64K", -1, 0},
    {"", -1, 0},
    {"K", -1, 0},
    {"64KiBs", -1, 0},
    {"64iB", -1, 0},
    {"64 K", -1, 0},
    {"1.5M", -1, 0},
    {"64Ki", -1, 0},
    {"9007199254740992K", -1, 0}, /* overflows int64 once multiplied */
    {"99999999999999999999", -1, 0},
};

static void size_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(size_cases); i++) {
        int64_t v = -12345;
        int rc;

        unit_begin();
        rc = cfg_parse_size(size_cases[i].s, &v);
        EQ_INT(rc, size_cases[i].rc);
        EQ_INT(v, size_cases[i].rc == 0 ? size_cases[i].want : -12345); /* untouched on error */
        unit_end("cfg_parse_size(\"%s\") is %s%lld", size_cases[i].s,
                 size_cases[i].rc ? "an error, " : "", (long long)size_cases[i].want);
    }
}

static const struct {
    const char *s;
    int64_t min, max;
    int rc;
    int64_t want;
} int_cases[] = {
    {"8000", 0, 65535, 0, 8000},   {"0", 0, 65535, 0, 0},
    {"65535", 0, 65535, 0, 65535}, {"-5", -10, 10, 0, -5},
    {"65536", 0, 65535, -1, 0},    {"-1", 0, 65535, -1, 0},
    {"12x", 0, 100, -1, 0},        {"", 0, 100, -1, 0},
    {"0x10", 0, 100, -1, 0},       {"1e3", 0, 10000, -1, 0},
    {"5 ", 0, 100, -1, 0},         {"9223372036854775808", 0, INT64_MAX, -1, 0},
};

static void int_table(void)
{
    for (size_t i = 0; i < UNIT_COUNT(int_cases); i++) {
        int64_t v = -12345;

        unit_begin();
        EQ_INT(cfg_parse_int(int_cases[i].s, int_cases[i].min, int_cases[i].max, &v),
               int_cases[i].rc);
        EQ_INT(v, int_cases[i].rc == 0 ? int_cases[i].want : -12345);
        unit_end("cfg_parse_int(\"%s\", %lld, %lld) is %s%lld", int_cases[i].s,
                 (long long)int_cases[i].min, (long long)int_cases[i].max,
                 int_cases[i].rc ? "an error, " : "", (long long)int_cases[i].want);
    }
}

/* cfg_model_name on hand-made structs, with no cfg_load. */
static void model_name_direct(void)
{
    struct cfg c;

    memset(&c, 0, sizeof c);
    EQ_STR(cfg_model_name(&c), "echo");
    c.llm = "none";
    EQ_STR(cfg_model_name(&c), "none");
    c.llm = "openai";
    EQ_STR(cfg_model_name(&c), "default");
    c.llm_model = "m1";
    EQ_STR(cfg_model_name(&c), "m1");
    c.llm = "gemini";
    EQ_STR(cfg_model_name(&c), "m1");
    c.llm_model = NULL;
    EQ_STR(cfg_model_name(&c), "gemini-2.0-flash");
}

/* Loading twice with cleanup in between gives the same result: nothing is kept. */
static void load_twice(void)
{
    char *argv[] = {"p", "--allowed-origin=a", "--llm-model=m", NULL};
    struct cfg c;

    clear_env();
    for (int round = 0; round < 2; round++) {
        EQ_INT(cfg_load(&c, CFG_BROKER, "p", 3, argv), CFG_OK);
        EQ_INT(c.allowed_origin.n, 1);
        EQ_STR(c.llm_model, "m");
        cfg_cleanup(&c);
        EQ_INT(c.allowed_origin.n, 0);
        CHECK(c.llm_model == NULL && c.db_path == NULL);
    }
    cfg_cleanup(NULL);
}

static const struct unit_case cases[] = {
    {NULL, cfg_table},
    {NULL, size_table},
    {NULL, int_table},
    {"cfg_model_name on a bare struct", model_name_direct},
    {"cfg_load twice with cfg_cleanup between", load_twice},
};

int main(void)
{
    return unit_run(cases, UNIT_COUNT(cases));
}
