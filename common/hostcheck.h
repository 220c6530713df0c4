/* hostcheck: which Host headers a server without API keys answers (DNS-rebinding
 * protection, SPEC 6). Pure: reads only the configuration, shared by REST and broker. */
#ifndef PARLEY_HOSTCHECK_H
#define PARLEY_HOSTCHECK_H

#include <stdbool.h>

#include "config.h"

/* Whether a request carrying this Host header value may be answered when no API key
 * protects the service: none (NULL or empty: HTTP/1.0), a loopback name or address
 * (localhost, 127.x.x.x, [::1]), the host of --public-url or --public-ws-url, or one of
 * --allowed-host ("*": any), each with or without a :port. Names compare without case.
 * host is borrowed. */
bool host_allowed(const struct cfg *cfg, const char *host);

#endif
