#!/usr/bin/python3
"""schema/openapi.json against the running REST service.

- the file is JSON, OpenAPI 3.1.x, every $ref resolves, every path parameter is declared;
- every route of the router (GET / endpoints) is in the document and the reverse
  ({id} and {session_id} normalised to {});
- GET /openapi.json serves the file byte for byte;
- real answers of every JSON operation (successes and errors) have a status the document
  lists and a body its schema accepts (a small JSON Schema checker, standard library);
- with an API key stored, exactly the operations the document marks public
  (security: []) answer without the key; the others answer 401.
"""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def norm(path):
    return re.sub(r"\{[^}]*\}", "{}", path)


def resolve(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError("external $ref %r" % ref)
        cur = doc
        for part in ref[2:].split("/"):
            cur = cur[part.replace("~1", "/").replace("~0", "~")]
        node = cur
    return node


def all_refs(node, out):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            out.append(node["$ref"])
        for v in node.values():
            all_refs(v, out)
    elif isinstance(node, list):
        for v in node:
            all_refs(v, out)
    return out


def type_ok(value, t):
    if t == "integer":
        return type(value) is int
    if t == "number":
        return type(value) in (int, float)
    return isinstance(value, TYPES[t]) and not (t != "boolean" and type(value) is bool)


def check(doc, schema, value, where="$"):
    """Errors of value against a JSON Schema (the subset the document uses)."""
    s = resolve(doc, schema)
    errs = []
    if "const" in s and not parley.strict_equal(value, s["const"]):
        errs.append("%s: %r is not the const %r" % (where, value, s["const"]))
    if "enum" in s and not any(parley.strict_equal(value, e) for e in s["enum"]):
        errs.append("%s: %r not in %r" % (where, value, s["enum"]))
    if "type" in s:
        ts = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(type_ok(value, t) for t in ts):
            return errs + ["%s: %r is not of type %s" % (where, value, ts)]
    if isinstance(value, str):
        if "pattern" in s and not re.search(s["pattern"], value):
            errs.append("%s: %r does not match %s" % (where, value, s["pattern"]))
        if len(value) < s.get("minLength", 0):
            errs.append("%s: shorter than %d" % (where, s["minLength"]))
        if "maxLength" in s and len(value) > s["maxLength"]:
            errs.append("%s: longer than %d" % (where, s["maxLength"]))
    if type(value) in (int, float):
        if "minimum" in s and value < s["minimum"]:
            errs.append("%s: %r < %r" % (where, value, s["minimum"]))
        if "maximum" in s and value > s["maximum"]:
            errs.append("%s: %r > %r" % (where, value, s["maximum"]))
    if isinstance(value, dict):
        props = s.get("properties", {})
        for k in s.get("required", []):
            if k not in value:
                errs.append("%s: missing %r" % (where, k))
        for k, v in value.items():
            if k in props:
                errs += check(doc, props[k], v, "%s.%s" % (where, k))
            elif s.get("additionalProperties") is False:
                errs.append("%s: unexpected %r" % (where, k))
    if isinstance(value, list) and "items" in s:
        for i, v in enumerate(value):
            errs += check(doc, s["items"], v, "%s[%d]" % (where, i))
    return errs


def main(t):
    path = os.path.join(parley.ROOT, "schema", "openapi.json")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        t.fail("schema/openapi.json is valid JSON", str(e))
        return
    t.ok("schema/openapi.json is valid JSON", True)
    t.match("openapi is 3.1.x", doc.get("openapi"), r"^3\.1\.\d+$")
    t.eq("servers: same origin", doc.get("servers"), [{"url": "/", "description": "this service (same origin)"}])
    t.eq("the bearer security scheme",
         {k: v for k, v in doc["components"]["securitySchemes"]["bearerAuth"].items()
          if k in ("type", "scheme")}, {"type": "http", "scheme": "bearer"})
    t.eq("bearer is required by default", doc.get("security"), [{"bearerAuth": []}])

    bad_refs = []
    for ref in all_refs(doc, []):
        try:
            resolve(doc, {"$ref": ref})
        except (KeyError, ValueError, TypeError):
            bad_refs.append(ref)
    t.eq("every $ref resolves", bad_refs, [])

    ops = {}
    for p, item in doc["paths"].items():
        for m, op in item.items():
            if m in METHODS:
                ops[(m.upper(), norm(p))] = (p, op)
    undeclared = []
    for (m, _), (p, op) in ops.items():
        declared = {resolve(doc, x)["name"] for x in op.get("parameters", []) + item_params(doc, p)
                    if resolve(doc, x)["in"] == "path" and resolve(doc, x).get("required") is True}
        for name in re.findall(r"\{([^}]*)\}", p):
            if name not in declared:
                undeclared.append("%s %s: {%s}" % (m, p, name))
    t.eq("every path parameter is declared (required, in: path)", undeclared, [])
    no_id = [k for k, (_, op) in ops.items() if not op.get("operationId")]
    t.eq("every operation has an operationId", no_id, [])

    rest = parley.Rest(t, flags={"--www-dir": os.path.join(parley.ROOT, "www")})
    root = rest.get("/")
    t.eq("GET / status", root.status, 200)
    routes = set()
    for line in root.body["endpoints"]:
        m, _, p = line.partition(" ")
        routes.add((m, norm(p)))
    t.eq("every route of the router is in the document",
         sorted("%s %s" % r for r in routes - set(ops)), [])
    t.eq("every operation of the document is a route of the router",
         sorted("%s %s" % o for o in set(ops) - routes), [])

    served = rest.get("/openapi.json", decode=False)
    t.eq("GET /openapi.json status", served.status, 200)
    t.eq("GET /openapi.json Content-Type", served.headers.get("content-type"), "application/json")
    t.ok("GET /openapi.json is the file byte for byte", served.body == raw,
         "%d bytes served, %d in the file" % (len(served.body), len(raw)))

    # ---- real answers against the document
    def verify(name, method, tmpl, resp, ctype="application/json"):
        _, op = ops[(method, norm(tmpl))]
        codes = op["responses"]
        code = str(resp.status)
        if not t.ok("%s: status %s is documented" % (name, code), code in codes,
                    "documented: %s" % sorted(codes)):
            return
        r = resolve(doc, codes[code])
        content = r.get("content", {})
        if not t.ok("%s: %s is documented for %s" % (name, ctype, code), ctype in content,
                    "documented: %s" % sorted(content)):
            return
        if ctype == "application/json":
            errs = check(doc, content[ctype]["schema"], resp.body)
            t.eq("%s: the body matches the schema" % name, errs, [])

    verify("GET /", "GET", "/", root)
    verify("GET /health", "GET", "/health", rest.get("/health"))
    verify("GET /stats", "GET", "/stats", rest.get("/stats"))
    # with two brokers running: /health lists them (SPEC 8), /stats counts them
    brokers = [parley.Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, llm="none",
                             name="broker-docs-1", flags={"--node-id": "docs-1"}),
               parley.Broker(t, tmpdir=rest.tmpdir, llm="none", name="broker-docs-2",
                             flags={"--node-id": "docs-2", "--notify-socket":
                                    os.path.join(rest.tmpdir, "docs-2.sock")})]
    deadline = time.monotonic() + 20
    while (len(rest.get("/health").body.get("brokers") or []) < 2 and
           time.monotonic() < deadline):
        time.sleep(0.1)
    health = rest.get("/health")
    t.eq("GET /health with two brokers: both listed",
         [b.get("node_id") for b in health.body.get("brokers") or []], ["docs-1", "docs-2"])
    verify("GET /health with two brokers", "GET", "/health", health)
    verify("GET /stats with two brokers", "GET", "/stats", rest.get("/stats"))
    for b in brokers:
        b.stop()
    created = rest.post("/sessions/new", {"title": "openapi"})
    verify("POST /sessions/new", "POST", "/sessions/new", created)
    sid = created.body["session_id"]
    verify("POST /sessions/new null title", "POST", "/sessions/new", rest.post("/sessions/new", {"title": None}))
    verify("POST /sessions/new bad field", "POST", "/sessions/new", rest.post("/sessions/new", {"title": 5}))
    verify("POST /sessions/new bad JSON", "POST", "/sessions/new", rest.post("/sessions/new", raw=b"{"))
    verify("POST /sessions/new text/plain", "POST", "/sessions/new",
           rest.post("/sessions/new", raw=b"{}", headers={"Content-Type": "text/plain"}))
    verify("POST /sessions/new too large", "POST", "/sessions/new",
           rest.post("/sessions/new", raw=b"{\"title\": \"" + b"x" * 70000 + b"\"}"))
    sp = "/sessions/{session_id}"
    msg = rest.post("/sessions/%s/messages" % sid, {"content": "find this word", "reply": False})
    verify("POST messages", "POST", sp + "/messages", msg)
    verify("POST messages missing content", "POST", sp + "/messages", rest.post("/sessions/%s/messages" % sid, {}))
    verify("POST messages unknown session", "POST", sp + "/messages",
           rest.post("/sessions/0000000000000000/messages", {"content": "x"}))
    verify("GET /sessions", "GET", "/sessions", rest.get("/sessions"))
    verify("GET /sessions bad limit", "GET", "/sessions", rest.get("/sessions?limit=0"))
    verify("GET /sessions/{id}", "GET", sp, rest.get("/sessions/%s" % sid))
    verify("GET /sessions/{id} unknown", "GET", sp, rest.get("/sessions/nothex"))
    verify("GET /sessions/{id} bad before", "GET", sp, rest.get("/sessions/%s?before=x" % sid))
    verify("search", "GET", sp + "/messages", rest.get("/sessions/%s/messages?q=word" % sid))
    verify("search without q", "GET", sp + "/messages", rest.get("/sessions/%s/messages?limit=5" % sid))
    verify("search bad limit", "GET", sp + "/messages", rest.get("/sessions/%s/messages?limit=501" % sid))
    verify("search unknown session", "GET", sp + "/messages", rest.get("/sessions/0123456789abcdef/messages?q=a"))
    verify("export json", "GET", sp + "/export", rest.get("/sessions/%s/export?format=json" % sid))
    md = rest.get("/sessions/%s/export?format=markdown" % sid)
    verify("export markdown", "GET", sp + "/export", md, ctype="text/markdown")
    t.eq("export markdown Content-Type", md.headers.get("content-type"), "text/markdown; charset=utf-8")
    verify("export bad format", "GET", sp + "/export", rest.get("/sessions/%s/export?format=pdf" % sid))
    verify("GET /metrics", "GET", "/metrics", rest.get("/metrics"), ctype="text/plain")
    verify("GET /demo", "GET", "/demo", rest.get("/demo"), ctype="text/html")
    verify("GET /docs", "GET", "/docs", rest.get("/docs"), ctype="text/html")
    verify("GET /openapi.json", "GET", "/openapi.json", rest.get("/openapi.json"))
    verify("clear", "POST", sp + "/clear", rest.post("/sessions/%s/clear" % sid))
    verify("clear unknown", "POST", sp + "/clear", rest.post("/sessions/0000000000000000/clear"))
    verify("delete", "DELETE", sp, rest.delete("/sessions/%s" % sid))
    verify("delete again", "DELETE", sp, rest.delete("/sessions/%s" % sid))

    # ---- which operations are public: the document against the router
    code, out, _ = parley.run_cli("parley-rest", ["--db", rest.db, "--notify-socket",
                                                  rest.notify_socket, "keys", "add", "docs"])
    t.eq("keys add exits 0", code, 0)
    sid2 = "0123456789abcdef"
    wrong = []
    for (m, p), (tmpl, op) in sorted(ops.items()):
        public = op.get("security", doc["security"]) == []
        documented_401 = "401" in op["responses"]
        r = rest.request(m, tmpl.replace("{session_id}", sid2),
                         body={} if m == "POST" else None)
        if public == (r.status == 401) or public == documented_401:
            wrong.append("%s %s: public=%s, 401 documented=%s, answered %d" % (
                m, tmpl, public, documented_401, r.status))
        if r.status == 401:
            verify("%s %s without a key" % (m, tmpl), m, tmpl, r)
            t.eq("%s %s without a key: WWW-Authenticate" % (m, tmpl),
                 r.headers.get("www-authenticate"), "Bearer")
    t.eq("exactly the operations marked public (security: []) answer without a key, and "
         "only the others document 401", wrong, [])
    key = out.strip()
    r = rest.get("/sessions", headers={"Authorization": "Bearer %s" % key})
    t.eq("with the key: GET /sessions 200", r.status, 200)
    rest.stop()


def item_params(doc, p):
    return doc["paths"][p].get("parameters", [])


if __name__ == "__main__":
    parley.run(main)
