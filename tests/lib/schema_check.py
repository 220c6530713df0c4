"""A small JSON Schema (draft 2020-12) validator for the subset schema/ws/*.json uses:
type, properties, required, additionalProperties, enum, const, pattern, items, oneOf,
anyOf, $ref (to #/$defs/...), minimum, minLength, maxLength. Standard library only.

    errors = validate(instance, schema)        # [] when valid, else readable strings
    schema = load("flat-server.json")          # from schema/ws/
"""

import json
import os
import re

ROOT = os.environ.get("PARLEY_ROOT") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA_DIR = os.path.join(ROOT, "schema", "ws")

KNOWN = {"$schema", "$id", "$defs", "$ref", "title", "description", "type", "properties",
         "required", "additionalProperties", "enum", "const", "pattern", "items", "oneOf",
         "anyOf", "minimum", "minLength", "maxLength"}


def load(name):
    with open(os.path.join(SCHEMA_DIR, name), encoding="utf-8") as f:
        return json.load(f)


def _is_type(v, t):
    if t == "null":
        return v is None
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool) or (
            isinstance(v, float) and v.is_integer())
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "string":
        return isinstance(v, str)
    if t == "array":
        return isinstance(v, list)
    if t == "object":
        return isinstance(v, dict)
    raise ValueError("unknown type %r in schema" % t)


def _equal(a, b):
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _resolve(ref, root):
    if not ref.startswith("#/"):
        raise ValueError("only local $ref supported: %r" % ref)
    node = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def validate(instance, schema, root=None, path="$"):
    """A list of error strings (empty when instance is valid)."""
    root = schema if root is None else root
    if schema is True:
        return []
    if schema is False:
        return ["%s: not allowed" % path]
    unknown = set(schema) - KNOWN
    if unknown:
        raise ValueError("schema keywords not supported: %s" % sorted(unknown))
    errs = []
    if "$ref" in schema:
        errs += validate(instance, _resolve(schema["$ref"], root), root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(instance, t) for t in types):
            return errs + ["%s: %r is not of type %s" % (path, _short(instance), "/".join(types))]
    if "const" in schema and not _equal(instance, schema["const"]):
        errs.append("%s: %r is not %r" % (path, _short(instance), schema["const"]))
    if "enum" in schema and not any(_equal(instance, e) for e in schema["enum"]):
        errs.append("%s: %r is not one of %r" % (path, _short(instance), schema["enum"]))
    if isinstance(instance, str):
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errs.append("%s: shorter than %d" % (path, schema["minLength"]))
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errs.append("%s: longer than %d" % (path, schema["maxLength"]))
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errs.append("%s: %r does not match /%s/" % (path, _short(instance),
                                                         schema["pattern"]))
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errs.append("%s: %r is below %r" % (path, instance, schema["minimum"]))
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in instance:
                errs.append("%s: required property %r missing" % (path, k))
        for k, v in instance.items():
            if k in props:
                errs += validate(v, props[k], root, "%s.%s" % (path, k))
            elif "additionalProperties" in schema:
                ap = schema["additionalProperties"]
                if ap is False:
                    errs.append("%s: unexpected property %r" % (path, k))
                elif isinstance(ap, dict):
                    errs += validate(v, ap, root, "%s.%s" % (path, k))
    if isinstance(instance, list) and "items" in schema:
        for i, v in enumerate(instance):
            errs += validate(v, schema["items"], root, "%s[%d]" % (path, i))
    if "anyOf" in schema:
        sub = [validate(instance, s, root, path) for s in schema["anyOf"]]
        if all(sub):
            errs.append("%s: matches none of anyOf (%s)" % (path, _best(sub)))
    if "oneOf" in schema:
        sub = [validate(instance, s, root, path) for s in schema["oneOf"]]
        n = sum(1 for e in sub if not e)
        if n == 0:
            errs.append("%s: matches none of oneOf (%s)" % (path, _best(sub)))
        elif n > 1:
            errs.append("%s: matches %d branches of oneOf" % (path, n))
    return errs


def _best(sub):
    """The errors of the branch that came closest (fewest errors), for the message."""
    best = min(sub, key=len)
    return "; ".join(best[:3])


def _short(v, n=80):
    s = repr(v)
    return v if len(s) <= n else s[:n] + "..."
