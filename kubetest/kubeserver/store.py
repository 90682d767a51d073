"""The in-memory object store with the API server's write semantics."""

from __future__ import annotations

import collections
import copy
import datetime
import json
import random
import re
import string
import threading
import time
import uuid

from . import fields as F
from .resources import RT, builtin_types, crd_types


def now_ts() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict:
        b = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason}
        if self.details is not None:
            b["details"] = self.details
        b["code"] = self.code
        return b


def _details(rt: RT, name: str, **extra) -> dict:
    d = {"name": name} if name else {}  # metav1.StatusDetails fields are omitempty
    if rt.group:
        d["group"] = rt.group
    d["kind"] = rt.plural
    d.update(extra)
    return d


def not_found(rt: RT, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def ns_not_found(ns: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})


def already_exists(rt: RT, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name))


def conflict(rt: RT, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
                    _details(rt, name))


def bad_request(msg: str) -> ApiError:
    return ApiError(400, "BadRequest", msg)


def invalid(group_kind: str, group: str, kind: str, name: str, causes: list[tuple]) -> ApiError:
    """causes: (field, reason-type, detail message) with reason-type Required/Invalid/Forbidden..."""
    cs, parts = [], []
    for fld, typ, msg in causes:
        reason = {"Required": "FieldValueRequired", "Invalid": "FieldValueInvalid",
                  "Forbidden": "FieldValueForbidden", "Duplicate": "FieldValueDuplicate",
                  "NotSupported": "FieldValueNotSupported"}[typ]
        cs.append({"reason": reason, "message": msg, "field": fld})
        parts.append(f"{fld}: {msg}")
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    d = {"name": name} if name else {}
    if group:
        d["group"] = group
    d["kind"] = kind
    d["causes"] = cs
    return ApiError(422, "Invalid", f'{group_kind} "{name}" is invalid: {joined}', d)


# ------------------------------------------------------------------ names

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
             "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
               "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
               "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def name_problems(rt: RT, name: str) -> list[str]:
    if rt.plural in ("namespaces",):
        if len(name) > 63:
            return ["must be no more than 63 characters"]
        return [] if DNS1123_LABEL.match(name) else [LABEL_MSG]
    if rt.plural == "services":
        if len(name) > 63:
            return ["must be no more than 63 characters"]
        return [] if DNS1035_LABEL.match(name) else [DNS1035_MSG]
    if rt.group == "rbac.authorization.k8s.io":
        if name in (".", ".."):
            return [f"may not be '{name}'"]
        for ch in ("/", "%"):
            if ch in name:
                return [f"may not contain '{ch}'"]
        return []
    if len(name) > 253:
        return ["must be no more than 253 characters"]
    return [] if DNS1123_SUBDOMAIN.match(name) else [SUBDOMAIN_MSG]


def _rand(n: int) -> str:
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


# ------------------------------------------------------------------ selectors

def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [x.strip() for x in out if x.strip()]


def parse_label_selector(sel: str):
    reqs = []
    for term in _split_top(sel or ""):
        m = re.match(r"^([^\s!=()]+)\s+(in|notin)\s*\((.*)\)$", term)
        if m:
            vals = {v.strip() for v in m.group(3).split(",") if v.strip()}
            reqs.append((m.group(1), m.group(2), vals))
            continue
        m = re.match(r"^([^\s!=]+)\s*(==|=|!=)\s*(.*)$", term)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append((m.group(1), op, m.group(3).strip()))
            continue
        if term.startswith("!"):
            reqs.append((term[1:].strip(), "!exists", None))
            continue
        if re.match(r"^[^\s!=()]+$", term):
            reqs.append((term, "exists", None))
            continue
        raise bad_request(f"unable to parse requirement: {term}")
    return reqs


def label_match(labels: dict, reqs) -> bool:
    labels = labels or {}
    for k, op, v in reqs:
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
        if op == "in" and labels.get(k) not in v:
            return False
        if op == "notin" and k in labels and labels[k] in v:
            return False
        if op == "exists" and k not in labels:
            return False
        if op == "!exists" and k in labels:
            return False
    return True


def parse_field_selector(sel: str):
    reqs = []
    for term in _split_top(sel or ""):
        m = re.match(r"^([^\s!=]+)\s*(==|=|!=)\s*(.*)$", term)
        if not m:
            raise bad_request(f"invalid selector: '{sel}'; can't understand '{term}'")
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3).strip()))
    return reqs


def field_match(obj: dict, reqs) -> bool:
    for path, op, v in reqs:
        cur = obj
        for p in path.split("."):
            cur = cur.get(p) if isinstance(cur, dict) else None
        cur = "" if cur is None else str(cur) if not isinstance(cur, bool) else str(cur).lower()
        if (op == "=") != (cur == v):
            return False
    return True


def selector_matches(obj: dict, lsel, fsel) -> bool:
    return label_match((obj.get("metadata") or {}).get("labels"), lsel) and field_match(obj, fsel)


# ------------------------------------------------------------------ defaults

def _default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            img = str(c.get("image", ""))
            tag = img.rsplit("/", 1)[-1]
            latest = "@" not in img and (":" not in tag or tag.endswith(":latest"))
            c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")


def apply_defaults(rt: RT, obj: dict, ip_alloc=None) -> None:
    spec = obj.get("spec")
    if rt.gp == ("apps", "deployments") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        st = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if st.get("type", "RollingUpdate") == "RollingUpdate":
            st.setdefault("type", "RollingUpdate")
            st.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
    if rt.gp in (("apps", "deployments"), ("apps", "replicasets")) and isinstance(spec, dict):
        tpl = spec.get("template")
        if isinstance(tpl, dict) and isinstance(tpl.get("spec"), dict):
            _default_pod_spec(tpl["spec"])
    if rt.gp == ("", "pods") and isinstance(spec, dict):
        _default_pod_spec(spec)
    if rt.gp == ("", "services") and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
        if spec.get("type") != "ExternalName":
            if "clusterIP" not in spec and ip_alloc:
                spec["clusterIP"] = ip_alloc()
            if spec.get("clusterIP"):
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
    if rt.gp == ("", "namespaces"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"].get("name", "")
    if rt.gp == ("", "serviceaccounts"):
        pass


# ------------------------------------------------------------------ validation

def validate(rt: RT, obj: dict, old: dict | None) -> None:
    md = obj.get("metadata") or {}
    name = md.get("name") or ""
    causes = []
    if not name:
        causes.append(("metadata.name", "Required", "Required value: name or generateName is required"))
    else:
        for p in name_problems(rt, name):
            causes.append(("metadata.name", "Invalid", f'Invalid value: "{name}": {p}'))
    if rt.namespaced and not md.get("namespace"):
        causes.append(("metadata.namespace", "Required", "Required value"))
    for k, v in (md.get("labels") or {}).items():
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
            causes.append(("metadata.labels", "Invalid", f'Invalid value: "{v}": {LABEL_VALUE_MSG}'))
    if old is not None:
        fin_new = set(md.get("finalizers") or [])
        fin_old = set((old.get("metadata") or {}).get("finalizers") or [])
        if (old.get("metadata") or {}).get("deletionTimestamp") and fin_new - fin_old:
            causes.append(("metadata.finalizers", "Forbidden",
                           "Forbidden: no new finalizers can be added if the object is being deleted, "
                           f"found new finalizers {json.dumps(sorted(fin_new - fin_old))}"))
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if rt.gp in (("apps", "deployments"), ("apps", "replicasets")):
        sel = spec.get("selector")
        tpl = spec.get("template") or {}
        tlabels = (tpl.get("metadata") or {}).get("labels") or {}
        if not sel:
            causes.append(("spec.selector", "Required", "Required value"))
        else:
            ml = sel.get("matchLabels") or {}
            if not ml and not sel.get("matchExpressions"):
                causes.append(("spec.selector", "Invalid",
                               "Invalid value: \"null\": empty selector is invalid for deployment"))
            elif any(tlabels.get(k) != v for k, v in ml.items()):
                causes.append(("spec.template.metadata.labels", "Invalid",
                               f"Invalid value: map[string]string{_gomap(tlabels)}: `selector` does not match template `labels`"))
            if old is not None and ((old.get("spec") or {}).get("selector") != sel):
                causes.append(("spec.selector", "Invalid",
                               f"Invalid value: v1.LabelSelector{{MatchLabels:map[string]string{_gomap(ml)}, "
                               "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"))
        containers = (tpl.get("spec") or {}).get("containers")
        if not containers:
            causes.append(("spec.template.spec.containers", "Required", "Required value"))
        else:
            for i, c in enumerate(containers):
                if not c.get("name"):
                    causes.append((f"spec.template.spec.containers[{i}].name", "Required", "Required value"))
                if not c.get("image"):
                    causes.append((f"spec.template.spec.containers[{i}].image", "Required", "Required value"))
        r = spec.get("replicas")
        if isinstance(r, int) and r < 0:
            causes.append(("spec.replicas", "Invalid",
                           f"Invalid value: {r}: must be greater than or equal to 0"))
    if rt.gp == ("", "services"):
        for i, p in enumerate(spec.get("ports") or []):
            port = p.get("port")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                causes.append((f"spec.ports[{i}].port", "Invalid",
                               f"Invalid value: {json.dumps(port)}: must be between 1 and 65535, inclusive"))
    if rt.gp == ("apiextensions.k8s.io", "customresourcedefinitions"):
        g = spec.get("group", "")
        plural = (spec.get("names") or {}).get("plural", "")
        if name and name != f"{plural}.{g}":
            causes = [c for c in causes if c[0] != "metadata.name"]
            causes.append(("metadata.name", "Invalid",
                           f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
        if not (spec.get("names") or {}).get("kind"):
            causes.append(("spec.names.kind", "Required", "Required value"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(("spec.scope", "Unsupported" if False else "NotSupported",
                           f'Unsupported value: "{spec.get("scope", "")}": supported values: "Cluster", "Namespaced"'))
        if not spec.get("versions"):
            causes.append(("spec.versions", "Invalid", "Invalid value: []apiextensions.CustomResourceDefinitionVersion(nil): must have exactly one version marked as storage version"))
    if causes:
        raise invalid(rt.group_kind, rt.group, rt.kind, name, causes)


def _gomap(m: dict) -> str:
    if not m:
        return "(nil)"
    return "{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(m.items())) + "}"


def spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


# ------------------------------------------------------------------ the store

class Store:
    EVENT_LOG = 20000

    def __init__(self, config: dict | None = None):
        self.config = config if config is not None else {}  # the live settings (crd_delay)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 1
        self.objects: dict[tuple, dict[tuple, dict]] = collections.defaultdict(dict)
        self.events: collections.deque = collections.deque(maxlen=self.EVENT_LOG)
        self.types: dict[tuple, RT] = {}  # (group, version, plural) -> RT
        self.crd_owned: dict[str, list] = {}
        self.crd_established: set = set()  # uids of CRDs whose kinds are served
        self.crd_pending: dict[str, float] = {}  # uid -> monotonic time it becomes Established
        self.closed = False
        # Mutating admission: hook(rt, namespace, obj) may change an object being created (after defaulting,
        # before it is stored); the ALB controller's pod webhook injects readiness gates this way.
        self.admission: list = []
        self._ip = 10
        self._pod_ip = 0
        for rt in builtin_types():
            self.types[(rt.group, rt.version, rt.plural)] = rt
        with self.lock:
            self._seed()

    def _seed(self) -> None:
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._create_internal(self.rt("", "v1", "namespaces"), None, {"metadata": {"name": ns}})
        self._create_internal(self.rt("", "v1", "services"), "default", {
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 6443}], "clusterIP": "10.96.0.1"}})

    # -------------------------------------------------------------- types
    def rt(self, group: str, version: str, plural: str) -> RT | None:
        return self.types.get((group, version, plural))

    def rt_any(self, group: str, plural: str) -> RT | None:
        for (g, _v, p), rt in self.types.items():
            if g == group and p == plural:
                return rt
        return None

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for (g, v, _p) in self.types:
            vs = out.setdefault(g, [])
            if v not in vs:
                vs.append(v)
        return out

    def _alloc_ip(self) -> str:
        self._ip += 1
        return f"10.96.{self._ip // 250}.{self._ip % 250 + 2}"

    def alloc_pod_ip(self) -> str:
        """A pod IP, unique among the last 63 500 handed out: 10.0.2.1, 10.0.2.2, ... 10.0.251.254."""
        with self.lock:
            n = self._pod_ip % (250 * 254)
            self._pod_ip += 1
        return f"10.0.{2 + n // 254}.{1 + n % 254}"

    # -------------------------------------------------------------- low level
    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _emit(self, rt: RT, etype: str, obj: dict, old: dict | None = None) -> None:
        self.events.append((self.rv, rt.gp, etype, copy.deepcopy(obj), old))
        self.cond.notify_all()

    def _store(self, rt: RT, obj: dict, etype: str) -> dict:
        md = obj["metadata"]
        key = (md.get("namespace"), md["name"])
        old = self.objects[rt.gp].get(key)
        md["resourceVersion"] = self._bump()
        self.objects[rt.gp][key] = obj
        self._emit(rt, etype, obj, old if etype == "MODIFIED" else None)
        return obj

    def _remove(self, rt: RT, obj: dict) -> dict:
        md = obj["metadata"]
        self.objects[rt.gp].pop((md.get("namespace"), md["name"]), None)
        md["resourceVersion"] = self._bump()
        self._emit(rt, "DELETED", obj)
        if rt.gp == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._unregister_crd(obj)
        return obj

    def out(self, rt: RT, obj: dict) -> dict:
        """An object as returned for a request in rt's group/version."""
        o = copy.deepcopy(obj)
        res = {"kind": rt.kind, "apiVersion": rt.api_version}
        res.update({k: v for k, v in o.items() if k not in ("kind", "apiVersion")})
        return res

    def find(self, rt: RT, ns: str | None, name: str) -> dict | None:
        return self.objects[rt.gp].get((ns if rt.namespaced else None, name))

    def all_of(self, gp: tuple) -> list[dict]:
        return [self.objects[gp][k] for k in sorted(self.objects[gp], key=lambda k: (k[0] or "", k[1]))]

    def find_by_uid(self, uid: str):
        for gp, objs in self.objects.items():
            for o in objs.values():
                if o["metadata"].get("uid") == uid:
                    return gp, o
        return None

    def uids(self) -> set:
        return {o["metadata"].get("uid") for objs in self.objects.values() for o in objs.values()}

    def check_namespace(self, rt: RT, ns: str | None, name: str) -> None:
        if not rt.namespaced:
            return
        nso = self.objects[("", "namespaces")].get((None, ns))
        if nso is None:
            raise ns_not_found(ns)
        if nso["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden",
                           f'{rt.qualified} "{name}" is forbidden: unable to create new content in namespace '
                           f"{ns} because it is being terminated",
                           {"name": name, **({"group": rt.group} if rt.group else {}), "kind": rt.plural,
                            "causes": [{"reason": "NamespaceTerminating",
                                        "message": f"namespace {ns} is being terminated",
                                        "field": "metadata.namespace"}]})

    # -------------------------------------------------------------- managed fields
    @staticmethod
    def _entries(obj: dict) -> list[dict]:
        return list((obj.get("metadata") or {}).get("managedFields") or [])

    def _track_update(self, rt: RT, old: dict | None, new: dict, manager: str, subresource: str = "",
                      entries: list | None = None) -> None:
        part = "status" if subresource == "status" else ("main" if rt.status_sub else "all")
        if entries is None:
            entries = self._entries(old) if old is not None else []
        new_fs = F.fieldset(new, rt.builtin, part, rt.status_sub)
        old_fs = F.fieldset(old, rt.builtin, part, rt.status_sub) if old is not None else set()
        changed = F.changed_paths(old, new, new_fs)
        removed = old_fs - new_fs
        ts = now_ts()
        result, mine = [], None
        for e in entries:
            s = F.decode(e.get("fieldsV1") or {})
            is_mine = (e.get("manager") == manager and e.get("operation") == "Update"
                       and e.get("subresource", "") == subresource and e.get("apiVersion") == rt.api_version)
            if is_mine:
                s = (s | changed) - removed
                mine = dict(e, time=ts, fieldsV1=F.encode(s))
                if s:
                    result.append(mine)
                continue
            s2 = s - changed - removed
            if s2 != s:
                e = dict(e, fieldsV1=F.encode(s2))
            if s2:
                result.append(e)
        if mine is None and changed:
            e = {"manager": manager, "operation": "Update", "apiVersion": rt.api_version, "time": ts,
                 "fieldsType": "FieldsV1", "fieldsV1": F.encode(changed)}
            if subresource:
                e["subresource"] = subresource
            result.append(e)
        new["metadata"]["managedFields"] = result
        if not result:
            new["metadata"].pop("managedFields", None)

    # -------------------------------------------------------------- create
    def _create_internal(self, rt: RT, ns, body, manager: str = "kube-apiserver") -> dict:
        obj = copy.deepcopy(body)
        md = obj.setdefault("metadata", {})
        if rt.namespaced:
            md["namespace"] = ns
        apply_defaults(rt, obj, self._alloc_ip)
        self._admit(rt, ns, obj)
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_ts()
        if rt.generation:
            md["generation"] = 1
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        self._track_update(rt, None, obj, manager)
        stored = self._store(rt, obj, "ADDED")
        self._after_write(rt, None, stored)
        return stored

    def _admit(self, rt: RT, ns, obj: dict) -> None:
        for hook in self.admission:
            hook(rt, ns, obj)

    def create(self, rt: RT, ns, body: dict, manager: str, dry_run: bool = False, managed=None) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        with self.lock:
            obj = copy.deepcopy(body)
            md = obj.setdefault("metadata", {})
            if not isinstance(md, dict):
                raise bad_request("metadata must be an object")
            if rt.namespaced:
                if md.get("namespace") and md["namespace"] != ns:
                    raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
                md["namespace"] = ns
            else:
                md.pop("namespace", None)
            if md.get("resourceVersion"):
                raise bad_request("resourceVersion should not be set on objects to be created")
            if not md.get("name") and md.get("generateName"):
                md["name"] = md["generateName"] + _rand(5)
            name = md.get("name") or ""
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "generation", "selfLink"):
                md.pop(k, None)
            validate(rt, obj, None)
            self.check_namespace(rt, ns, name)
            if self.find(rt, ns, name) is not None:
                raise already_exists(rt, name)
            if rt.status_sub:
                obj.pop("status", None)
            apply_defaults(rt, obj, self._alloc_ip if not dry_run else (lambda: "10.96.255.254"))
            self._admit(rt, ns, obj)
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = now_ts()
            if rt.generation:
                md["generation"] = 1
            md.pop("managedFields", None)
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            if managed is not None:
                if managed:
                    md["managedFields"] = managed
            else:
                self._track_update(rt, None, obj, manager)
            is_crd = rt.gp == ("apiextensions.k8s.io", "customresourcedefinitions")
            crd_delay = float(self.config.get("crd_delay", 0) or 0) if is_crd else 0.0
            if is_crd:
                self._crd_status(obj, crd_delay <= 0)
            if dry_run:
                return self.out(rt, obj)
            if is_crd:
                if crd_delay <= 0:
                    self.crd_established.add(md["uid"])
                else:
                    self.crd_pending[md["uid"]] = time.monotonic() + crd_delay
            stored = self._store(rt, obj, "ADDED")
            self._after_write(rt, None, stored)
            return self.out(rt, stored)

    # -------------------------------------------------------------- update
    def update(self, rt: RT, ns, name: str, body: dict, manager: str, subresource: str = "",
               dry_run: bool = False, managed=None, old: dict | None = None, internal: bool = False) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        with self.lock:
            cur = self.find(rt, ns, name)
            if cur is None:
                raise not_found(rt, name)
            new = copy.deepcopy(body)
            md = new.setdefault("metadata", {})
            if md.get("name") and md["name"] != name:
                raise bad_request(f"the name of the object ({md['name']}) does not match the name on the URL ({name})")
            if rt.namespaced and md.get("namespace") and md["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            md["name"] = name
            if rt.namespaced:
                md["namespace"] = ns
            rv = md.get("resourceVersion")
            if rv and rv != cur["metadata"]["resourceVersion"]:
                raise conflict(rt, name, "the object has been modified; please apply your changes to the latest version and try again")
            cmd = cur["metadata"]
            if subresource == "status":
                st = new.get("status")
                new = copy.deepcopy(cur)
                if st is None:
                    new.pop("status", None)
                else:
                    new["status"] = st
            else:
                for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
                    if k in cmd:
                        md[k] = cmd[k]
                    else:
                        md.pop(k, None)
                if rt.status_sub:
                    if "status" in cur:
                        new["status"] = copy.deepcopy(cur["status"])
                    else:
                        new.pop("status", None)
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            apply_defaults(rt, new, self._alloc_ip)
            if rt.gp == ("", "services") and (cur.get("spec") or {}).get("clusterIP"):
                if not (body.get("spec") or {}).get("clusterIP"):
                    new.setdefault("spec", {})["clusterIP"] = cur["spec"]["clusterIP"]
                    new["spec"]["clusterIPs"] = cur["spec"].get("clusterIPs", [cur["spec"]["clusterIP"]])
            validate(rt, new, cur)
            if rt.generation:
                gen = cmd.get("generation", 1)
                if spec_part(new) != spec_part(cur) or (not rt.status_sub and new.get("status") != cur.get("status")):
                    gen += 1
                new["metadata"]["generation"] = gen
            # managed fields: server-owned
            client_mf = md.get("managedFields")
            new["metadata"]["managedFields"] = copy.deepcopy(cmd.get("managedFields") or [])
            if managed is not None:
                new["metadata"]["managedFields"] = managed
                if not managed:
                    new["metadata"].pop("managedFields", None)
            elif client_mf == [{}]:
                new["metadata"].pop("managedFields", None)  # the documented way to reset them
            elif client_mf and isinstance(client_mf, list) and subresource != "status":
                # a client that sends managedFields (e.g. kubectl's client-side -> server-side apply
                # migration) gets them, as from the real server; the update is tracked on top
                self._track_update(rt, cur, new, manager, subresource,
                                   entries=[e for e in client_mf if isinstance(e, dict) and e.get("manager")])
            else:
                self._track_update(rt, cur, new, manager, subresource)
            if rt.gp == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self._crd_status(new, cmd.get("uid") in self.crd_established)
            if dry_run:
                return self.out(rt, new)
            new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
            if self._same(cur, new):
                return self.out(rt, cur)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") \
                    and rt.gp != ("", "namespaces"):
                self._remove(rt, new)
                self._after_write(rt, cur, None)
                return self.out(rt, new)
            stored = self._store(rt, new, "MODIFIED")
            self._after_write(rt, cur, stored)
            return self.out(rt, stored)

    @staticmethod
    def _same(a: dict, b: dict) -> bool:
        def strip(o):
            o = copy.deepcopy(o)
            for e in o.get("metadata", {}).get("managedFields") or []:
                e.pop("time", None)
            return o
        return strip(a) == strip(b)

    # -------------------------------------------------------------- patch
    def patch(self, rt: RT, ns, name: str, ptype: str, patch, manager: str, subresource: str = "",
              dry_run: bool = False, force: bool = False) -> dict:
        with self.lock:
            cur = self.find(rt, ns, name)
            if ptype == "apply":
                return self._apply(rt, ns, name, cur, patch, manager, subresource, dry_run, force)
            if cur is None:
                raise not_found(rt, name)
            base = self.out(rt, cur)
            try:
                if ptype == "json":
                    new = F.json_patch(base, patch)
                elif ptype == "merge" or not rt.builtin:
                    if not isinstance(patch, dict):
                        raise bad_request("json: cannot unmarshal into Go value of type map[string]interface {}")
                    new = F.merge_patch(base, patch)
                else:
                    if not isinstance(patch, dict):
                        raise bad_request("json: cannot unmarshal into Go value of type map[string]interface {}")
                    new = F.strategic_merge_patch(base, patch)
            except F.JsonPatchError as e:
                raise ApiError(422, "Invalid", str(e)) from None
            if not isinstance(new, dict):
                raise bad_request("the patch produced an invalid object")
            if not (new.get("metadata") or {}).get("resourceVersion"):
                new.setdefault("metadata", {})["resourceVersion"] = cur["metadata"]["resourceVersion"]
            return self.update(rt, ns, name, new, manager, subresource, dry_run)

    def _apply(self, rt: RT, ns, name, cur, cfg, manager, subresource, dry_run, force) -> dict:
        if not isinstance(cfg, dict):
            raise bad_request("error decoding YAML: the applied configuration is not an object")
        if not cfg.get("apiVersion") or not cfg.get("kind"):
            raise bad_request(f"invalid object type: {rt.api_version}, Kind={cfg.get('kind', '')}")
        if cfg.get("kind") != rt.kind:
            raise bad_request(f"the kind of the applied configuration ({cfg.get('kind')}) does not match the kind "
                              f"of the resource ({rt.kind})")
        md = cfg.get("metadata") or {}
        if md.get("name") and md["name"] != name:
            raise bad_request(f"the name of the object ({md['name']}) does not match the name on the URL ({name})")
        if rt.namespaced and md.get("namespace") and md["namespace"] != ns:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        part = "status" if subresource == "status" else ("main" if rt.status_sub else "all")
        cfg = copy.deepcopy(cfg)
        cfg.setdefault("metadata", {})["name"] = name
        if rt.namespaced:
            cfg["metadata"]["namespace"] = ns
        cfg["metadata"].pop("managedFields", None)
        applied = F.fieldset(cfg, rt.builtin, part, rt.status_sub)
        if cur is None:
            if subresource:
                raise not_found(rt, name)
            obj = copy.deepcopy(cfg)
            obj["metadata"].pop("resourceVersion", None)
            validate(rt, obj, None)
            ent = {"manager": manager, "operation": "Apply", "apiVersion": rt.api_version, "time": now_ts(),
                   "fieldsType": "FieldsV1", "fieldsV1": F.encode(applied)}
            return self.create(rt, ns, obj, manager, dry_run, managed=[ent] if applied else [])
        live = self.out(rt, cur)
        rv = md.get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise conflict(rt, name, "the object has been modified; please apply your changes to the latest version and try again")
        cfg["metadata"].pop("resourceVersion", None)
        merged = F.merge_apply(live, cfg, None, rt.builtin)
        entries = self._entries(cur)
        prev = set()
        mine_idx = None
        for i, e in enumerate(entries):
            if e.get("manager") == manager and e.get("operation") == "Apply" and e.get("subresource", "") == subresource:
                prev = F.decode(e.get("fieldsV1") or {})
                mine_idx = i
        changed = F.changed_paths(live, merged, applied)
        conflicts = []
        others = []
        for i, e in enumerate(entries):
            if i == mine_idx:
                continue
            s = F.decode(e.get("fieldsV1") or {})
            # every other manager identity conflicts, including this name's own Update entries
            if True:
                for p in sorted(s & changed):
                    conflicts.append((e, p))
            others.append((i, e, s))
        if conflicts and not force:
            raise self._conflict_error(conflicts)
        if force:
            new_others = []
            for i, e, s in others:
                s2 = s - changed
                new_others.append((i, e, s2))
            others = new_others
        # drop fields this manager no longer applies and nobody else owns
        keep = set(applied)
        for _i, _e, s in others:
            keep |= s
        for p in sorted(prev - applied, key=len):
            if any(q[:len(p)] == p for q in keep):
                continue
            F.remove_at(merged, p)
        new_entries = []
        ts = now_ts()
        other_map = {i: (e, s) for i, e, s in others}
        for i, e in enumerate(entries):
            if i == mine_idx:
                continue
            e2, s2 = other_map[i]
            if s2:
                new_entries.append(dict(e2, fieldsV1=F.encode(s2)))
        mine = {"manager": manager, "operation": "Apply", "apiVersion": rt.api_version, "time": ts,
                "fieldsType": "FieldsV1", "fieldsV1": F.encode(applied)}
        if subresource:
            mine["subresource"] = subresource
        if mine_idx is not None:
            new_entries.insert(min(mine_idx, len(new_entries)), mine)
        elif applied:
            new_entries.append(mine)
        merged["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        return self.update(rt, ns, name, merged, manager, subresource, dry_run, managed=new_entries)

    @staticmethod
    def _conflict_error(conflicts) -> ApiError:
        def who(e):
            s = json.dumps(e.get("manager", ""))
            if e.get("subresource"):
                s += f' with subresource "{e["subresource"]}"'
            if e.get("operation") == "Update":
                s += f" using {e.get('apiVersion')}"
            return s
        causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {who(e)}",
                   "field": F.path_string(p)} for e, p in conflicts]
        if len(conflicts) == 1:
            e, p = conflicts[0]
            msg = f"Apply failed with 1 conflict: conflict with {who(e)}: {F.path_string(p)}"
        else:
            by: dict[str, list] = {}
            for e, p in conflicts:
                by.setdefault(who(e), []).append(F.path_string(p))
            lines = []
            for m in sorted(by):
                lines.append(f"conflicts with {m}:")
                lines += [f"- {p}" for p in by[m]]
            msg = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
        return ApiError(409, "Conflict", msg, {"causes": causes})

    # -------------------------------------------------------------- delete
    def delete(self, rt: RT, ns, name: str, opts: dict, dry_run: bool = False):
        """Returns (code, body)."""
        with self.lock:
            cur = self.find(rt, ns, name)
            if cur is None:
                raise not_found(rt, name)
            pre = (opts or {}).get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != cur["metadata"].get("uid"):
                raise conflict(rt, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                         f"UID in object meta: {cur['metadata'].get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"].get("resourceVersion"):
                raise conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: "
                                         f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                         f"{cur['metadata'].get('resourceVersion')}")
            policy = (opts or {}).get("propagationPolicy")
            if (opts or {}).get("orphanDependents") is True:
                policy = "Orphan"
            if policy not in (None, "Foreground", "Background", "Orphan"):
                raise invalid("DeleteOptions.meta.k8s.io", "meta.k8s.io", "DeleteOptions", "", [
                    ("propagationPolicy", "NotSupported",
                     f'Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"')])
            new = copy.deepcopy(cur)
            nmd = new["metadata"]
            fins = list(nmd.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in fins:
                fins.append("foregroundDeletion")
            if policy == "Orphan" and "orphan" not in fins:
                fins.append("orphan")
            if rt.gp == ("", "namespaces"):
                if not nmd.get("deletionTimestamp"):
                    nmd["deletionTimestamp"] = now_ts()
                    nmd["deletionGracePeriodSeconds"] = 0
                    new.setdefault("status", {})["phase"] = "Terminating"
                    if dry_run:
                        return 200, self.out(rt, new)
                    self._store(rt, new, "MODIFIED")
                    return 200, self.out(rt, new)
                # As the API server answers a namespace already terminating.
                raise conflict(rt, name, "The system is ensuring all content is removed from this namespace.  "
                                         "Upon completion, this namespace will automatically be purged by the system.")
            if fins:
                if nmd.get("deletionTimestamp"):
                    return 200, self.out(rt, cur)
                nmd["deletionTimestamp"] = now_ts()
                nmd["deletionGracePeriodSeconds"] = 0
                nmd["finalizers"] = fins
                if dry_run:
                    return 200, self.out(rt, new)
                self._store(rt, new, "MODIFIED")
                return 200, self.out(rt, new)
            if dry_run:
                return 200, self._success(rt, cur)
            self._remove(rt, new)
            self._after_write(rt, cur, None)
            if rt.gp == ("", "pods") or not rt.builtin:
                return 200, self.out(rt, new)
            return 200, self._success(rt, cur)

    @staticmethod
    def _success(rt: RT, obj: dict) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": _details(rt, obj["metadata"]["name"], uid=obj["metadata"].get("uid"))}

    def remove_finalizer(self, rt: RT, obj: dict, fin: str, manager: str) -> None:
        with self.lock:
            cur = self.find(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            if cur is None:
                return
            new = copy.deepcopy(cur)
            new["metadata"]["finalizers"] = [f for f in new["metadata"].get("finalizers") or [] if f != fin]
            if not new["metadata"]["finalizers"]:
                new["metadata"].pop("finalizers")
            self.update(rt, cur["metadata"].get("namespace"), cur["metadata"]["name"], new, manager, internal=True)

    def remove_now(self, rt: RT, obj: dict) -> None:
        with self.lock:
            cur = self.find(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            if cur is not None:
                self._remove(rt, copy.deepcopy(cur))
                self._after_write(rt, cur, None)

    # -------------------------------------------------------------- list / watch
    def list(self, rt: RT, ns, lsel, fsel) -> dict:
        with self.lock:
            items = []
            for o in self.all_of(rt.gp):
                if rt.namespaced and ns is not None and o["metadata"].get("namespace") != ns:
                    continue
                if not selector_matches(o, lsel, fsel):
                    continue
                item = self.out(rt, o)
                if rt.builtin:
                    item.pop("kind", None)
                    item.pop("apiVersion", None)
                items.append(item)
            return {"kind": rt.list_kind, "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(self.rv)}, "items": items}

    def oldest_event_rv(self) -> int:
        return self.events[0][0] if self.events else self.rv

    # -------------------------------------------------------------- hooks
    def _after_write(self, rt: RT, old, new) -> None:
        if rt.gp == ("apiextensions.k8s.io", "customresourcedefinitions") and new is not None:
            if new["metadata"].get("uid") in self.crd_established:
                self._register_crd(new)

    def _crd_status(self, crd: dict, established: bool) -> None:
        """The conditions the naming and establishing controllers give a CRD: NamesAccepted at once,
        Established False `Installing` until its kinds are served (crd_delay), then True."""
        spec = crd.get("spec") or {}
        names = dict(spec.get("names") or {})
        names.setdefault("singular", names.get("kind", "").lower())
        names.setdefault("listKind", names.get("kind", "") + "List")
        st = crd.setdefault("status", {})
        st["acceptedNames"] = names
        ts = now_ts()
        old = {c.get("type"): c for c in st.get("conditions") or [] if isinstance(c, dict)}

        def cond(typ, status, reason, message):
            o = old.get(typ) or {}
            t = o.get("lastTransitionTime") if o.get("status") == status and o.get("lastTransitionTime") else ts
            return {"type": typ, "status": status, "lastTransitionTime": t, "reason": reason, "message": message}

        st["conditions"] = [
            cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            cond("Established", "True", "InitialNamesAccepted", "the initial names have been accepted")
            if established else
            cond("Established", "False", "Installing", "the initial names have been accepted"),
        ]
        st["storedVersions"] = [v["name"] for v in spec.get("versions") or [] if v.get("storage")] or \
            [v["name"] for v in (spec.get("versions") or [])[:1]]

    def establish_crds(self) -> None:
        """The establishing controller: CRDs whose crd_delay has passed get Established True and are served."""
        with self.lock:
            now = time.monotonic()
            due = {uid for uid, t in self.crd_pending.items() if t <= now}
            if not due:
                return
            rt = self.rt_any("apiextensions.k8s.io", "customresourcedefinitions")
            for crd in list(self.all_of(rt.gp)):
                uid = crd["metadata"]["uid"]
                if uid not in due:
                    continue
                self.crd_pending.pop(uid, None)
                self.crd_established.add(uid)
                new = copy.deepcopy(crd)
                self._crd_status(new, True)
                self.update(rt, None, crd["metadata"]["name"], new, "kube-apiserver", "status", internal=True)
            for uid in due:  # CRDs deleted meanwhile
                self.crd_pending.pop(uid, None)

    def _register_crd(self, crd: dict) -> None:
        self._unregister_crd(crd, keep_objects=True)
        rts = crd_types(crd)
        for rt in rts:
            self.types[(rt.group, rt.version, rt.plural)] = rt
        self.crd_owned[crd["metadata"]["name"]] = [(rt.group, rt.version, rt.plural) for rt in rts]

    def _unregister_crd(self, crd: dict, keep_objects: bool = False) -> None:
        if not keep_objects:
            self.crd_established.discard(crd["metadata"].get("uid"))
            self.crd_pending.pop(crd["metadata"].get("uid"), None)
        for key in self.crd_owned.pop(crd["metadata"]["name"], []):
            rt = self.types.pop(key, None)
            if rt is not None and not keep_objects:
                for o in list(self.all_of(rt.gp)):
                    self._remove(rt, copy.deepcopy(o))
