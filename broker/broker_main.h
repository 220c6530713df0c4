/* broker_main: what main hands the vhost through the lws context's user pointer. */
#ifndef PARLEY_BROKER_MAIN_H
#define PARLEY_BROKER_MAIN_H

#include "broker.h"
#include "notify.h"

struct broker_init {
    const struct cfg *cfg;
    struct db *db;                  /* stolen by PROTOCOL_INIT for the database thread */
    struct notify_listener *notify; /* owned by main */
    struct auth_key *keys;          /* read at start; stolen by PROTOCOL_INIT */
    size_t n_keys;
    struct per_vhost_data__chat *vhd; /* set by PROTOCOL_INIT when it succeeds */
    bool failed;                      /* set by PROTOCOL_INIT when it fails */
};

#endif
