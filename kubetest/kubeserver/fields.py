"""Field sets, managedFields (FieldsV1) and the patch flavours.

A field path is a tuple of FieldsV1 elements: 'f:<name>', 'k:<json keys>',
'v:<json value>' or 'i:<index>'. A field set is a Python set of such tuples.
List semantics follow the Kubernetes OpenAPI markers for the fields slipway
touches: associative lists keyed by their merge keys, metadata.finalizers as a
set, every other list atomic.
"""

from __future__ import annotations

import copy
import json

# field name -> merge keys (associative lists, as in the built-in types)
KEYED = {
    "containers": ["name"],
    "initContainers": ["name"],
    "ephemeralContainers": ["name"],
    "env": ["name"],
    "volumes": ["name"],
    "volumeMounts": ["mountPath"],
    "volumeDevices": ["devicePath"],
    "imagePullSecrets": ["name"],
    "conditions": ["type"],
    "ownerReferences": ["uid"],
    "hostAliases": ["ip"],
}
SETS = {"finalizers"}
# keys of the metadata that no manager owns
META_SKIP = {
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
}


def jdump(v) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _ports_keys(items) -> list[str] | None:
    if all(isinstance(i, dict) and "containerPort" in i for i in items):
        return ["containerPort", "protocol"]
    if all(isinstance(i, dict) and "port" in i for i in items):
        return ["port", "protocol"]
    return None


def list_keys(field: str | None, items: list, builtin: bool = True):
    """('keyed', keys) | ('set', None) | ('atomic', None) for a list under `field`."""
    if field in SETS:
        return "set", None
    if field == "ownerReferences":
        return "keyed", ["uid"]
    if not builtin:
        return "atomic", None
    keys = None
    if field == "ports":
        keys = _ports_keys(items)
    elif field in KEYED:
        keys = KEYED[field]
        if not all(isinstance(i, dict) and all(k in i for k in keys[:1]) for i in items):
            keys = None
    if keys:
        return "keyed", keys
    return "atomic", None


def item_key(item: dict, keys: list[str]) -> str:
    kv = {}
    for k in keys:
        if k in item:
            kv[k] = item[k]
        elif k == "protocol":
            kv[k] = "TCP"
    return "k:" + jdump(kv)


def fieldset(obj: dict, builtin: bool = True, part: str = "main", has_status_sub: bool = True) -> set:
    """Leaf paths (and keyed-list item members) of an object.

    part: 'main' (everything but status when the kind has a status subresource),
    'status' (only status), 'all'."""
    out: set = set()

    def walk(v, path, field):
        if isinstance(v, dict):
            if not v:
                out.add(path)
            for k, c in v.items():
                walk(c, path + ("f:" + k,), k)
        elif isinstance(v, list):
            if not v:
                out.add(path)
                return
            kind, keys = list_keys(field, v, builtin)
            if kind == "set":
                for it in v:
                    out.add(path + ("v:" + jdump(it),))
            elif kind == "keyed":
                for it in v:
                    p = path + (item_key(it, keys),)
                    out.add(p)
                    for k, c in it.items():
                        walk(c, p + ("f:" + k,), k)
            else:
                out.add(path)
        else:
            out.add(path)

    for k, v in obj.items():
        if k in ("apiVersion", "kind"):
            continue
        if k == "metadata":
            if part == "status":
                continue
            for mk, mv in (v or {}).items():
                if mk in META_SKIP:
                    continue
                walk(mv, ("f:metadata", "f:" + mk), mk)
            continue
        if k == "status" and has_status_sub:
            if part == "main":
                continue
        elif part == "status":
            continue
        walk(v, ("f:" + k,), k)
    return out


_MISSING = object()


def _find_item(lst: list, el: str):
    if el.startswith("k:"):
        want = json.loads(el[2:])
        for i, it in enumerate(lst):
            if isinstance(it, dict) and all(it.get(k, "TCP" if k == "protocol" else None) == v for k, v in want.items()):
                return i
    elif el.startswith("v:"):
        want = json.loads(el[2:])
        for i, it in enumerate(lst):
            if it == want:
                return i
    elif el.startswith("i:"):
        i = int(el[2:])
        if 0 <= i < len(lst):
            return i
    return None


def get_at(obj, path):
    cur = obj
    for el in path:
        if el.startswith("f:"):
            if not isinstance(cur, dict) or el[2:] not in cur:
                return _MISSING
            cur = cur[el[2:]]
        else:
            if not isinstance(cur, list):
                return _MISSING
            i = _find_item(cur, el)
            if i is None:
                return _MISSING
            cur = cur[i]
    return cur


def remove_at(obj, path) -> None:
    if not path:
        return
    parent = get_at(obj, path[:-1])
    el = path[-1]
    if parent is _MISSING:
        return
    if el.startswith("f:"):
        if isinstance(parent, dict):
            parent.pop(el[2:], None)
    elif isinstance(parent, list):
        i = _find_item(parent, el)
        if i is not None:
            del parent[i]


def is_member_path(path) -> bool:
    return bool(path) and path[-1].startswith("k:")


def path_string(path) -> str:
    s = ""
    for el in path:
        if el.startswith("f:"):
            s += "." + el[2:]
        elif el.startswith("k:"):
            kv = json.loads(el[2:])
            s += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(kv.items())) + "]"
        elif el.startswith("v:"):
            s += "[=" + el[2:] + "]"
        elif el.startswith("i:"):
            s += "[" + el[2:] + "]"
    return s


def encode(paths: set) -> dict:
    root: dict = {}
    for p in paths:
        node = root
        for el in p:
            node = node.setdefault(el, {})
    for p in paths:
        if not p:
            continue
        node = root
        for el in p:
            node = node[el]
        if node and "." not in node:
            node["."] = {}

    def srt(d):
        return {k: srt(d[k]) for k in sorted(d)}

    return srt(root)


def decode(d: dict, prefix=()) -> set:
    out: set = set()
    for k, v in (d or {}).items():
        if k == ".":
            out.add(prefix)
            continue
        p = prefix + (k,)
        if not v:
            out.add(p)
        else:
            out |= decode(v, p)
    return out


# ---------------------------------------------------------------- merging

def merge_apply(live, cfg, field=None, builtin=True):
    """Server-side-apply merge of an applied configuration onto the live value."""
    if isinstance(cfg, dict) and isinstance(live, dict):
        out = copy.deepcopy(live)
        for k, v in cfg.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge_apply(live.get(k), v, k, builtin)
        return out
    if isinstance(cfg, list) and isinstance(live, list):
        kind, keys = list_keys(field, cfg, builtin)
        if kind == "set":
            out = list(live)
            for it in cfg:
                if it not in out:
                    out.append(it)
            return out
        if kind == "keyed" and all(isinstance(i, dict) for i in live):
            out = copy.deepcopy(live)
            for it in cfg:
                el = item_key(it, keys)
                i = _find_item(out, el)
                if i is None:
                    out.append(copy.deepcopy(it))
                else:
                    out[i] = merge_apply(out[i], it, None, builtin)
            return out
    return copy.deepcopy(cfg)


def changed_paths(old, new, paths) -> set:
    """Those of `paths` (taken from `new`) whose value differs in `old`."""
    out = set()
    for p in paths:
        nv = get_at(new, p)
        ov = get_at(old, p) if old is not None else _MISSING
        if is_member_path(p):
            if ov is _MISSING:
                out.add(p)
        elif ov is _MISSING or ov != nv:
            out.add(p)
    return out


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target, patch, field=None):
    """Strategic merge patch for the built-in types (merge keys as in KEYED)."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        out = copy.deepcopy(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if k.startswith("$setElementOrder/") or k in ("$retainKeys", "$patch"):
                continue
            if k.startswith("$deleteFromPrimitiveList/"):
                name = k.split("/", 1)[1]
                if isinstance(out.get(name), list):
                    out[name] = [x for x in out[name] if x not in v]
                continue
            if v is None:
                out.pop(k, None)
            else:
                out[k] = strategic_merge_patch(out.get(k), v, k)
        return out
    if isinstance(patch, list):
        kind, keys = list_keys(field, [p for p in patch if isinstance(p, dict) and p.get("$patch") != "delete"] or patch)
        if field in KEYED or field == "ports":
            keys = keys or KEYED.get(field) or _ports_keys(patch) or None
        if keys and isinstance(target, list) and all(isinstance(p, dict) for p in patch):
            out = copy.deepcopy(target)
            for it in patch:
                el = item_key(it, keys)
                i = _find_item(out, el)
                if it.get("$patch") == "delete":
                    if i is not None:
                        del out[i]
                    continue
                if i is None:
                    out.append({k: v for k, v in it.items() if not k.startswith("$")})
                else:
                    out[i] = strategic_merge_patch(out[i], it, None)
            return out
        if field in SETS and isinstance(target, list):
            out = list(target)
            for it in patch:
                if it not in out:
                    out.append(it)
            return out
        return copy.deepcopy(patch)
    return copy.deepcopy(patch)


class JsonPatchError(Exception):
    pass


def _ptr(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops):
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise JsonPatchError("a JSON patch must be a list of operations")

    def parent_of(toks):
        cur = doc
        for t in toks[:-1]:
            if isinstance(cur, list):
                cur = cur[int(t)]
            elif isinstance(cur, dict) and t in cur:
                cur = cur[t]
            else:
                raise JsonPatchError(f"doc is missing path: {'/' + '/'.join(toks)}")
        return cur

    def get(toks):
        cur = doc
        for t in toks:
            try:
                cur = cur[int(t)] if isinstance(cur, list) else cur[t]
            except (KeyError, IndexError, ValueError, TypeError):
                raise JsonPatchError(f"doc is missing path: {'/' + '/'.join(toks)}") from None
        return cur

    def add(toks, val):
        nonlocal doc
        if not toks:
            doc = val
            return
        par = parent_of(toks)
        last = toks[-1]
        if isinstance(par, list):
            if last == "-":
                par.append(val)
            else:
                par.insert(int(last), val)
        elif isinstance(par, dict):
            par[last] = val
        else:
            raise JsonPatchError("cannot add to a scalar")

    def remove(toks):
        par = parent_of(toks)
        last = toks[-1]
        try:
            if isinstance(par, list):
                del par[int(last)]
            else:
                del par[last]
        except (KeyError, IndexError, ValueError):
            raise JsonPatchError(f"unable to remove nonexistent key: {last}: missing value") from None

    for op in ops:
        o = op.get("op")
        toks = _ptr(op.get("path", ""))
        if o == "add":
            add(toks, copy.deepcopy(op.get("value")))
        elif o == "remove":
            remove(toks)
        elif o == "replace":
            get(toks)
            remove(toks) if toks else None
            add(toks, copy.deepcopy(op.get("value")))
        elif o == "test":
            if get(toks) != op.get("value"):
                raise JsonPatchError(f"testing value {op.get('path')} failed: test failed")
        elif o in ("move", "copy"):
            frm = _ptr(op.get("from", ""))
            val = copy.deepcopy(get(frm))
            if o == "move":
                remove(frm)
            add(toks, val)
        else:
            raise JsonPatchError(f"Unexpected kind: {o}")
    return doc
