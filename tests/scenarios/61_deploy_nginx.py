"""Deploy behind nginx: deploy/nginx/parley.conf rendered for a temp dir and a free
port, parley-fcgi on a Unix socket, the broker; REST, static files, chat, idle chat and
the API mounted under /api as well."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deploy  # noqa: E402
import parley  # noqa: E402


def under_api(t, front, fcgi, web):
    api = deploy.Front(web.port, prefix="/api")
    r = api.post("/sessions/new", {"title": "under /api"})
    t.eq("nginx /api: POST /api/sessions/new 201", r.status, 201)
    sid = r.body.get("session_id") if isinstance(r.body, dict) else None
    r = api.get("/sessions/%s" % sid)
    t.eq("nginx /api: GET /api/sessions/{id}",
         (r.status, r.body.get("title") if isinstance(r.body, dict) else r.body),
         (200, "under /api"))
    r = api.get("/")
    t.eq("nginx /api: GET /api/ is GET /", (r.status, r.body.get("name")
                                            if isinstance(r.body, dict) else r.body),
         (200, "parley"))
    parley.check_error(t, "nginx /api: unknown route", api.get("/nope"), 404, "not_found")
    r = api.get("/sessions?limit=2")
    t.eq("nginx /api: query", r.body.get("limit") if isinstance(r.body, dict) else r.body, 2)


parley.run(lambda t: deploy.run_proxied(t, "nginx", extra=under_api))
