/* main: the `parley` command-line client. Parses the options (common/config.c), picks
 * colours, and runs interactive mode (repl.c) or one scripting command (script.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "crest.h"
#include "log.h"
#include "repl.h"
#include "script.h"
#include "term.h"
#include "who.h"

static const char help_epilog[] =
    "Commands (default: interactive chat):\n"
    "  send [TEXT...]               send TEXT (or stdin) as a chat in a new session (or\n"
    "                               --session ID); print the reply as it streams; exit 0\n"
    "  sessions [--json]            list the sessions\n"
    "  history ID [--json]          print the messages of a session\n"
    "\n"
    "Interactive commands: /help /stats /server /health /docs /demo /clear /quit /connect\n"
    "/disconnect /ping /new /info /sessions /join ID /leave /history [N] /stop /name NEW\n"
    "/mode always|mention|off /regenerate.\n"
    "Your name in sessions: --name NAME (PARLEY_NAME), else your login name.\n"
    "Colours only on a terminal, and never when NO_COLOR is set.\n"
    "Exit status: 0 success, 1 failure (the reason on stderr), 2 wrong usage.\n";

/* Flags may follow the command (parley send --session ID TEXT): loads the options again
 * from the flags before the command plus everything after it. Returns the cfg_load result;
 * *merged (free with free) holds the argv the cfg borrows from. */
static enum cfg_result reload(struct cfg *cfg, int argc, char **argv, char ***merged)
{
    int before = argc - cfg->argc; /* argv[0] and the flags before the command */
    int after = cfg->argc - 1;
    char **cmd_args = cfg->argv + 1;
    char **v = calloc((size_t)(before + after + 1), sizeof *v);

    if (!v)
        return CFG_ERROR;
    memcpy(v, argv, sizeof *v * (size_t)before);
    memcpy(v + before, cmd_args, sizeof *v * (size_t)after);
    *merged = v;
    cfg_cleanup(cfg);
    return cfg_load(cfg, CFG_CLIENT, "parley", before + after, v);
}

/* Takes a --json left among the positional arguments (parley history ID --json). */
static void take_json_flag(struct cfg *cfg)
{
    for (int i = 0; i < cfg->argc; i++) {
        if (strcmp(cfg->argv[i], "--json") != 0)
            continue;
        cfg->json = true;
        memmove(cfg->argv + i, cfg->argv + i + 1, sizeof *cfg->argv * (size_t)(cfg->argc - i - 1));
        cfg->argc--;
        i--;
    }
}

int main(int argc, char **argv)
{
    struct cfg cfg;
    char **merged = NULL, *cmd = NULL;
    const char *no_color = getenv("NO_COLOR");
    const char *term = getenv("TERM");
    enum cfg_result res;
    int ret = 2;

    cfg_set_help_text(" [COMMAND [ARG]...]", help_epilog);
    res = cfg_load(&cfg, CFG_CLIENT, "parley", argc, argv);
    if (res == CFG_OK && cfg.argc > 0) {
        cmd = cfg.argv[0];
        res = reload(&cfg, argc, argv, &merged);
    }
    if (res != CFG_OK) {
        ret = res == CFG_EXIT ? 0 : 2;
        goto out;
    }
    if (cfg.name) {
        char why[128];
        if (!who_check(cfg.name, why, sizeof why)) {
            fprintf(stderr,
                    "parley: --name: %s; give a shorter name (or none for your login "
                    "name)\n",
                    why);
            ret = 2;
            goto out;
        }
    }
    log_init("parley", cfg.log_level);
    term_init(isatty(STDOUT_FILENO) && !cfg.no_color && !(no_color && *no_color) &&
              !(term && strcmp(term, "dumb") == 0));
    if (crest_global_init()) {
        fprintf(stderr, "parley: cannot initialise libcurl\n");
        ret = 1;
        goto out;
    }
    if (!cmd) {
        if (!isatty(STDIN_FILENO)) {
            fprintf(stderr, "parley: interactive mode needs a terminal; in scripts use "
                            "'parley send TEXT' (see parley --help)\n");
            ret = 2;
        } else {
            ret = repl_main(&cfg);
        }
    } else if (strcmp(cmd, "send") == 0) {
        ret = script_send(&cfg, cfg.argc, cfg.argv);
    } else if (strcmp(cmd, "sessions") == 0) {
        take_json_flag(&cfg);
        if (cfg.argc != 0)
            fprintf(stderr, "parley: usage: parley sessions [--json]\n");
        else
            ret = script_sessions(&cfg);
    } else if (strcmp(cmd, "history") == 0) {
        take_json_flag(&cfg);
        if (cfg.argc != 1)
            fprintf(stderr, "parley: usage: parley history ID [--json]\n");
        else
            ret = script_history(&cfg, cfg.argv[0]);
    } else {
        fprintf(stderr, "parley: unknown command '%s'; see 'parley --help'\n", cmd);
    }
    crest_global_cleanup();
out:
    cfg_cleanup(&cfg);
    free(merged);
    return ret;
}
