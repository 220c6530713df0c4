/* keys_cmd: the "keys" subcommand of parley-rest. */
#ifndef PARLEY_KEYS_CMD_H
#define PARLEY_KEYS_CMD_H

#include "config.h"

/* Runs "keys add NAME", "keys list" or "keys revoke NAME" (argv[0] is "keys").
 * Returns the process exit status: 0, 1 on failure, 2 on bad usage. */
int keys_command(const struct cfg *cfg, int argc, char **argv);

#endif
