"""Deploy behind Apache httpd: deploy/apache/parley.conf (mod_proxy_fcgi,
mod_proxy_wstunnel, mod_rewrite) rendered for a temp dir and a free port; parley-fcgi
started by spawn-fcgi, so it serves the listening socket it inherits as fd 0; the
broker; REST, static files, chat and an idle chat."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deploy  # noqa: E402
import parley  # noqa: E402


def checks(t, front, fcgi, web):
    r = front.get("/health")
    t.eq("apache: Cache-Control from parley-fcgi", r.headers.get("cache-control"), "no-cache")
    # Apache derives PATH_INFO from the files it finds; the config drops it, so a path
    # below a name that is not a file still reaches the router whole.
    parley.check_error(t, "apache: a deep unknown path is the router's 404", front.get(
        "/sessions/0123456789abcdef/messages/extra"), 404, "not_found")
    r = front.get("/sessions/0123456789abcdef")
    parley.check_error(t, "apache: a session path reaches the router whole", r, 404,
                       "session_not_found", mentions="0123456789abcdef")


parley.run(lambda t: deploy.run_proxied(t, "apache", extra=checks))
