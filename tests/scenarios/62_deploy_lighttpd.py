"""Deploy behind lighttpd: deploy/lighttpd/parley.conf (mod_fastcgi, mod_rewrite,
mod_proxy with the websocket upgrade) rendered for a temp dir and a free port,
parley-fcgi on a Unix socket, the broker; REST, static files, chat and an idle chat."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deploy  # noqa: E402
import parley  # noqa: E402


def headers(t, front, fcgi, web):
    r = front.get("/health")
    t.eq("lighttpd: parley-fcgi's X-Accel-Buffering: no reaches the client",
         r.headers.get("x-accel-buffering"), "no")
    t.eq("lighttpd: Cache-Control from parley-fcgi", r.headers.get("cache-control"), "no-cache")


parley.run(lambda t: deploy.run_proxied(t, "lighttpd", extra=headers))
