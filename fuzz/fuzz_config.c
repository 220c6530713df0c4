/* fuzz_config: libFuzzer harness for the configuration parser (common/config.c): cfg_load
 * for each program with an argv and an environment built from the input, cfg_cleanup
 * after; cfg_parse_size and cfg_parse_int on every word; host_allowed on the result.
 *
 * Input: byte 0 picks the program (parley-rest, parley-fcgi, parley-broker, parley); then
 * lines, each a command-line word, except "E:NAME=value" lines, which go into the
 * environment for this run (PARLEY_* and GENAI_MODEL_ID are unset before each run).
 * What cfg_load prints (--help, errors) goes to /dev/null. Checks (a violation traps):
 * CFG_OK leaves argc/argv inside the argv given and the fields the programs rely on set;
 * parsed numbers are within the range asked for. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hostcheck.h"
#include "log.h"

#define MAX_WORDS 48
#define MAX_ENV   8

extern char **environ;

static FILE *devnull;
static const enum cfg_prog progs[] = {CFG_REST, CFG_FCGI, CFG_BROKER, CFG_CLIENT};
static const char *const names[] = {"parley-rest", "parley-fcgi", "parley-broker", "parley"};

/* Unsets every variable cfg_load might read. */
static void clear_env(void)
{
    for (char **e = environ; e && *e;) {
        if (strncmp(*e, "PARLEY_", 7) == 0 || strncmp(*e, "GENAI_MODEL_ID=", 15) == 0) {
            char name[256];
            size_t n = strcspn(*e, "=");
            if (n >= sizeof name)
                n = sizeof name - 1;
            memcpy(name, *e, n);
            name[n] = '\0';
            unsetenv(name);
            e = environ; /* environ changed: start over */
            continue;
        }
        e++;
    }
}

static void check_numbers(const char *s)
{
    int64_t v;

    if (cfg_parse_int(s, -5, 70000, &v) == 0 && (v < -5 || v > 70000))
        __builtin_trap();
    if (cfg_parse_size(s, &v) == 0 && v < 0)
        __builtin_trap();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init("fuzz_config", LOG_LEVEL_ERROR);
    if (!(devnull = fopen("/dev/null", "w")))
        abort();
    clear_env();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy, *words[MAX_WORDS + 2], *env[MAX_ENV], *save = NULL;
    int nw = 1, ne = 0;
    unsigned which;
    struct cfg cfg;
    enum cfg_result r;
    FILE *out = stdout, *err = stderr;

    if (size < 1 || !(copy = malloc(size)))
        return 0;
    which = data[0] % 4;
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';
    words[0] = (char *)names[which];
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        size_t name_len = strcspn(l, "=");
        if (strncmp(l, "E:", 2) == 0 && l[name_len] == '=' && name_len > 2 && name_len < 200 &&
            ne < MAX_ENV) {
            env[ne++] = l + 2;
            putenv(l + 2); /* borrowed until unsetenv below */
        } else if (nw < MAX_WORDS) {
            words[nw++] = l;
        }
        check_numbers(l);
    }
    words[nw] = NULL;

    stdout = devnull;
    stderr = devnull;
    r = cfg_load(&cfg, progs[which], names[which], nw, words);
    stdout = out;
    stderr = err;
    if (r == CFG_OK) {
        if (cfg.argc < 0 || cfg.argc > nw - 1 || cfg.argv + cfg.argc != words + nw)
            __builtin_trap();
        if ((progs[which] != CFG_CLIENT && (!cfg.db_path || !cfg.llm || !cfg.db_sync)) ||
            (progs[which] == CFG_CLIENT && (!cfg.url || !cfg.rest_url)))
            __builtin_trap();
        if (!cfg_model_name(&cfg))
            __builtin_trap();
        for (int i = 1; i < nw; i++)
            (void)host_allowed(&cfg, words[i]);
        if (cfg.bind)
            (void)cfg_is_loopback(cfg.bind);
    }
    cfg_cleanup(&cfg);
    for (int i = 0; i < ne; i++) {
        char name[256];
        size_t n = strcspn(env[i], "="); /* < 200: see above */
        memcpy(name, env[i], n);
        name[n] = '\0';
        unsetenv(name);
    }
    clear_env();
    free(copy);
    return 0;
}
