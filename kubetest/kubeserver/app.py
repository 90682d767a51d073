"""The WSGI application: routing, discovery, CRUD, patch, watch, control endpoints."""

from __future__ import annotations

import copy
import json
import math
import threading
import sys
import time

import yaml
from werkzeug.wrappers import Request, Response

from .auth import Authenticator
from .store import ApiError, Store, bad_request, now_ts, parse_field_selector, parse_label_selector, selector_matches

VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-kubetest", "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3", "compiler": "gc",
    "platform": "linux/amd64",
}


def jresp(body, code: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=code, content_type="application/json")


def err(e: ApiError) -> Response:
    return jresp(e.body(), e.code)


# `watch_faults`: "refuse" answers every watch 503; "close" ends every watch
# right after its initial events, as API servers end watches now and then.
WATCH_FAULTS = {"refuse", "close"}


def busy() -> Response:
    """What an API server that cannot serve now answers (an aggregated API
    down, a server starting, priority and fairness shedding load)."""
    return jresp({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": "the server is currently unable to handle the request (kubetest's busy_requests)",
                  "reason": "ServiceUnavailable", "code": 503}, 503)


def truthy(v) -> bool:
    return str(v).lower() in ("1", "true", "yes")


class App:
    def __init__(self, store: Store, token: str, config: dict, host_port: str = "", verbose: bool = False,
                 on_config=None, authenticator: Authenticator | None = None):
        self.store, self.token, self.config, self.host_port = store, token, config, host_port
        self.verbose = verbose
        self.on_config = on_config
        self.authn = authenticator or Authenticator(token, verbose=verbose)
        # The request log: API requests by method, for proving a client
        # read-only, and each one's times, for benchmarks
        # (`GET /_kubetest/requests`).
        self._requests_lock = threading.Lock()
        self._requests: dict[str, int] = {}
        self._served = 0.0
        self._log: list[dict] = []
        # Watches are timed by their events, not their answers: kept apart.
        self._watches: list[dict] = []

    def _log_request(self, req: Request) -> None:
        if req.path.startswith("/_kubetest"):
            return
        with self._requests_lock:
            self._requests[req.method] = self._requests.get(req.method, 0) + 1

    def _time_request(self, req: Request, arrived: float, answered: float, latency_s: float, status: int) -> None:
        served = max(0.0, answered - arrived - latency_s)
        with self._requests_lock:
            self._served += served
            self._log.append({"method": req.method, "path": req.path, "arrived": arrived,
                              "answered": answered, "served_s": served, "status": status})
            if len(self._log) > 200_000:
                del self._log[: len(self._log) - 200_000]

    def requests_report(self, log: bool = False) -> dict:
        with self._requests_lock:
            by = dict(self._requests)
            out = {"by_method": by, "total": sum(by.values()),
                   "mutating": sum(n for m, n in by.items() if m in ("POST", "PUT", "PATCH", "DELETE")),
                   "served_s": self._served}
            if log:
                out["log"] = [dict(e) for e in self._log]
                out["watches"] = [dict(e) for e in self._watches]
                out["now"] = time.monotonic()
        return out

    def __call__(self, environ, start_response):
        req = Request(environ)
        api = not req.path.startswith("/_kubetest")
        watch = truthy(req.args.get("watch", ""))
        arrived = time.monotonic()
        latency = float(self.config.get("latency_ms") or 0) / 1000.0 if api else 0.0
        if latency:
            time.sleep(latency)
        try:
            resp = self.handle(req)
        except ApiError as e:
            resp = err(e)
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc(file=sys.stderr)
            resp = err(ApiError(500, "InternalError", f"Internal error occurred: {e}",
                                {"causes": [{"message": str(e)}]}))
        if api and not watch:
            # A watch is timed by its events, not its answer: left out.
            self._time_request(req, arrived, time.monotonic(), latency, resp.status_code)
        elif api:
            with self._requests_lock:
                self._watches.append({"path": req.path, "arrived": arrived,
                                      "labelSelector": req.args.get("labelSelector", ""),
                                      "fieldSelector": req.args.get("fieldSelector", "")})
                if len(self._watches) > 200_000:
                    del self._watches[: len(self._watches) - 200_000]
        if self.verbose:
            print(f"kubetest: {req.method} {req.full_path} -> {resp.status_code}", file=sys.stderr, flush=True)
        return resp(environ, start_response)

    def busy(self) -> Response | None:
        """`busy_requests`: the next N authenticated API requests (watches
        too) are answered 503, with `Retry-After: busy_retry_after` (whole
        seconds, rounded up) when that is not 0."""
        with self._requests_lock:
            left = int(self.config.get("busy_requests") or 0)
            if left <= 0:
                return None
            self.config["busy_requests"] = left - 1
            after = math.ceil(float(self.config.get("busy_retry_after") or 0))
        resp = busy()
        if after:
            resp.headers["Retry-After"] = str(after)
        return resp

    # ------------------------------------------------------------------ routing
    def handle(self, req: Request) -> Response:
        if self.authn.authenticate(req.headers.get("Authorization", "")) is None:
            self._log_request(req)
            return jresp({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": "Unauthorized", "reason": "Unauthorized", "code": 401}, 401)
        if not req.path.startswith("/_kubetest"):
            resp = self.busy()
            if resp is not None:
                return resp  # turned away: not counted as a request (nor as a write)
        self._log_request(req)
        path = req.path
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/livez", "/readyz"):
            return Response("ok", content_type="text/plain")
        if path == "/version":
            return jresp(VERSION)
        if parts[:1] == ["_kubetest"]:
            return self.control(req, parts[1:])
        if parts[:2] == ["openapi", "v3"]:
            return self.openapi_v3(parts[2:])
        if parts[:1] == ["openapi"]:
            return self.not_found_raw()
        if not parts or parts[0] not in ("api", "apis"):
            if not parts:
                paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]
                paths += [f"/apis/{g}/{v}" for g, vs in self.store.groups().items() if g for v in vs]
                return jresp({"paths": sorted(paths)})
            return self.not_found_raw()
        if parts[0] == "api":
            group = ""
            if len(parts) == 1:
                return jresp({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.host_port}]})
            version, rest = parts[1], parts[2:]
        else:
            if len(parts) == 1:
                return jresp(self.group_list())
            group = parts[1]
            if len(parts) == 2:
                g = self.group_doc(group)
                if g is None:
                    return self.not_found_raw()
                return jresp(dict(kind="APIGroup", apiVersion="v1", **g))
            version, rest = parts[2], parts[3:]
        if not rest:
            return self.resource_list(group, version)
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            if not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
                ns, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if len(rest) > 3:
            return self.not_found_raw()
        rt = self.store.rt(group, version, plural)
        if rt is None:
            return self.not_found_raw()
        if ns is not None and not rt.namespaced:
            return self.not_found_raw()
        if sub == "scale" and rt.builtin and rt.gp in (("apps", "deployments"), ("apps", "replicasets")) and name:
            return self.scale(req, rt, ns, name)
        if sub == "log" and rt.gp == ("", "pods") and name and req.method == "GET":
            return self.pod_log(rt, ns, name, req.args.get("container"))
        if sub and not ((sub == "status" and rt.status_sub) or (sub == "finalize" and plural == "namespaces")):
            return self.not_found_raw()
        if sub == "finalize":
            sub = ""
        return self.resource(req, rt, ns, name, sub)

    @staticmethod
    def not_found_raw() -> Response:
        return jresp({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": "the server could not find the requested resource", "reason": "NotFound",
                      "details": {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
                      "code": 404}, 404)

    # ------------------------------------------------------------------ discovery
    def group_doc(self, group: str):
        vs = self.store.groups().get(group)
        if not vs:
            return None
        vs = sorted(vs, key=_version_key, reverse=True)
        return {"name": group, "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in vs],
                "preferredVersion": {"groupVersion": f"{group}/{vs[0]}", "version": vs[0]}}

    def group_list(self) -> dict:
        with self.store.lock:
            order = ["apps", "networking.k8s.io", "rbac.authorization.k8s.io", "apiextensions.k8s.io",
                     "admissionregistration.k8s.io", "coordination.k8s.io", "discovery.k8s.io"]
            groups = [g for g in self.store.groups() if g]
            groups.sort(key=lambda g: (order.index(g) if g in order else len(order), g))
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self.group_doc(g) for g in groups]}

    def resource_list(self, group: str, version: str) -> Response:
        with self.store.lock:
            rts = [rt for (g, v, _p), rt in self.store.types.items() if g == group and v == version]
        if not rts:
            return self.not_found_raw()
        res = []
        for rt in sorted(rts, key=lambda r: r.plural):
            res += rt.discovery()
        return jresp({"kind": "APIResourceList", "apiVersion": "v1",
                      "groupVersion": f"{group}/{version}" if group else version, "resources": res})

    # ------------------------------------------------------------------ openapi v3
    def _gv_doc(self, group: str, version: str) -> dict | None:
        with self.store.lock:
            rts = [rt for (g, v, _p), rt in self.store.types.items() if g == group and v == version]
        if not rts:
            return None
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                  for n in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")]
        paths = {}
        for rt in rts:
            gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
            item = f"{prefix}/namespaces/{{namespace}}/{rt.plural}/{{name}}" if rt.namespaced \
                else f"{prefix}/{rt.plural}/{{name}}"
            ref = {"$ref": f"#/components/schemas/{rt.kind}"}
            paths[item] = {
                "get": {"operationId": f"read{rt.kind}", "x-kubernetes-action": "get",
                        "x-kubernetes-group-version-kind": gvk,
                        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}},
                "put": {"operationId": f"replace{rt.kind}", "x-kubernetes-action": "put",
                        "x-kubernetes-group-version-kind": gvk, "parameters": params,
                        "requestBody": {"content": {"*/*": {"schema": ref}}, "required": True},
                        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}},
                "patch": {"operationId": f"patch{rt.kind}", "x-kubernetes-action": "patch",
                          "x-kubernetes-group-version-kind": gvk, "parameters": params,
                          "requestBody": {"content": {
                              "application/apply-patch+yaml": {"schema": {"type": "object"}},
                              "application/json-patch+json": {"schema": {"type": "object"}},
                              "application/merge-patch+json": {"schema": {"type": "object"}}}, "required": True},
                          "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}},
                "delete": {"operationId": f"delete{rt.kind}", "x-kubernetes-action": "delete",
                           "x-kubernetes-group-version-kind": gvk, "parameters": params[:1],
                           "responses": {"200": {"description": "OK"}}},
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
                + ([{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}]
                   if rt.namespaced else []),
            }
        schemas = {rt.kind: {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                             "x-kubernetes-group-version-kind": [{"group": rt.group, "version": rt.version,
                                                                  "kind": rt.kind}]} for rt in rts}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
                "paths": paths, "components": {"schemas": schemas}}

    def openapi_v3(self, rest) -> Response:
        import hashlib

        if not rest:
            out = {}
            for g, vs in self.store.groups().items():
                for v in vs:
                    key = f"apis/{g}/{v}" if g else f"api/{v}"
                    doc = self._gv_doc(g, v)
                    h = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()
                    out[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={h}"}
            return jresp({"paths": out})
        if rest[0] == "api" and len(rest) == 2:
            doc = self._gv_doc("", rest[1])
        elif rest[0] == "apis" and len(rest) == 3:
            doc = self._gv_doc(rest[1], rest[2])
        else:
            doc = None
        if doc is None:
            return self.not_found_raw()
        return jresp(doc)

    # ------------------------------------------------------------------ resources
    def manager(self, req: Request) -> str:
        fm = req.args.get("fieldManager")
        if fm:
            return fm
        ua = req.headers.get("User-Agent", "unknown")
        return ua.split("/")[0] or "unknown"

    def body(self, req: Request, allow_yaml: bool = False):
        ct = (req.headers.get("Content-Type") or "").split(";")[0].strip()
        if ct and "protobuf" in ct or "cbor" in ct:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"application/json, application/yaml (kubetest does not decode {ct})")
        raw = req.get_data()
        if not raw:
            raise bad_request("the body of the request was empty")
        if ct in ("application/yaml",):
            allow_yaml = True
        try:
            if allow_yaml:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"the body of the request could not be decoded: {e}") from None

    def resource(self, req: Request, rt, ns, name, sub) -> Response:
        s = self.store
        dry = req.args.get("dryRun") == "All"
        if req.args.get("dryRun") and not dry:
            raise ApiError(400, "BadRequest", f"Invalid dryRun value: {req.args.get('dryRun')}")
        m = req.method
        if rt.namespaced and ns is None and name is not None:
            return self.not_found_raw()
        if m == "GET":
            lsel = parse_label_selector(req.args.get("labelSelector", ""))
            fsel = parse_field_selector(req.args.get("fieldSelector", ""))
            if name is None:
                if truthy(req.args.get("watch", "")):
                    return self.watch(req, rt, ns, lsel, fsel)
                lst = s.list(rt, ns, lsel, fsel)
                if "as=Table" in req.headers.get("Accept", ""):
                    return jresp(self.table(rt, lst, req.args.get("includeObject", "PartialObjectMetadata")))
                return jresp(lst)
            with s.lock:
                o = s.find(rt, ns, name)
                if o is None:
                    from .store import not_found
                    raise not_found(rt, name)
                out = s.out(rt, o)
            if "as=Table" in req.headers.get("Accept", ""):
                return jresp(self.table(rt, {"items": [out], "metadata": {"resourceVersion": out["metadata"]["resourceVersion"]}},
                                        req.args.get("includeObject", "PartialObjectMetadata")))
            return jresp(out)
        if m == "POST":
            if name is not None:
                return self.method_not_allowed(m)
            if rt.namespaced and ns is None:
                return self.method_not_allowed(m)
            out = s.create(rt, ns, self.body(req), self.manager(req), dry)
            return jresp(out, 201)
        if m == "PUT":
            if name is None:
                return self.method_not_allowed(m)
            return jresp(s.update(rt, ns, name, self.body(req), self.manager(req), sub, dry))
        if m == "PATCH":
            if name is None:
                return self.method_not_allowed(m)
            ct = (req.headers.get("Content-Type") or "").split(";")[0].strip()
            ptype = {"application/apply-patch+yaml": "apply", "application/apply-patch+cbor": "unsupported",
                     "application/merge-patch+json": "merge", "application/strategic-merge-patch+json": "strategic",
                     "application/json-patch+json": "json"}.get(ct)
            if ptype in (None, "unsupported"):
                return jresp({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": f"the body of the request was in an unknown format - accepted media types "
                                         f"include: application/json-patch+json, application/merge-patch+json, "
                                         f"application/apply-patch+yaml", "reason": "UnsupportedMediaType",
                              "code": 415}, 415)
            force = truthy(req.args.get("force", ""))
            if ptype == "apply":
                if not req.args.get("fieldManager"):
                    from .store import invalid
                    raise invalid("PatchOptions.meta.k8s.io", "meta.k8s.io", "PatchOptions", "", [
                        ("fieldManager", "Required", "Required value: is required for apply patch")])
            elif "force" in req.args:
                from .store import invalid
                raise invalid("PatchOptions.meta.k8s.io", "meta.k8s.io", "PatchOptions", "", [
                    ("force", "Forbidden", "Forbidden: may not be specified for non-apply patch")])
            body = self.body(req, allow_yaml=(ptype == "apply"))
            with s.lock:
                existed = s.find(rt, ns, name) is not None
                out = s.patch(rt, ns, name, ptype, body, self.manager(req), sub, dry, force)
            code = 200 if existed else 201
            return jresp(out, code)
        if m == "DELETE":
            opts = {}
            raw = req.get_data()
            if raw:
                try:
                    opts = json.loads(raw)
                except ValueError:
                    raise bad_request("the body of the request could not be decoded") from None
            if req.args.get("propagationPolicy"):
                opts["propagationPolicy"] = req.args["propagationPolicy"]
            if req.args.get("orphanDependents"):
                opts["orphanDependents"] = truthy(req.args["orphanDependents"])
            if (opts.get("dryRun") or []) == ["All"]:
                dry = True
            if name is None:
                lsel = parse_label_selector(req.args.get("labelSelector", ""))
                fsel = parse_field_selector(req.args.get("fieldSelector", ""))
                lst = s.list(rt, ns, lsel, fsel)
                items = []
                for it in lst["items"]:
                    try:
                        _code, o = s.delete(rt, it["metadata"].get("namespace"), it["metadata"]["name"], opts, dry)
                    except ApiError:
                        continue
                    items.append(it)
                lst["items"] = items
                return jresp(lst)
            code, out = s.delete(rt, ns, name, opts, dry)
            return jresp(out, code)
        return self.method_not_allowed(m)

    def scale(self, req: Request, rt, ns, name) -> Response:
        from .store import not_found
        from . import fields as F

        s = self.store

        def to_scale(o):
            md = o["metadata"]
            sel = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                                 if k in md},
                    "spec": {"replicas": (o.get("spec") or {}).get("replicas", 1)},
                    "status": {"replicas": (o.get("status") or {}).get("replicas", 0),
                               "selector": ",".join(f"{k}={v}" for k, v in sorted(sel.items()))}}

        with s.lock:
            cur = s.find(rt, ns, name)
            if cur is None:
                raise not_found(rt, name)
            if req.method == "GET":
                return jresp(to_scale(cur))
            if req.method not in ("PUT", "PATCH"):
                return self.method_not_allowed(req.method)
            base = to_scale(cur)
            body = self.body(req, allow_yaml=True)
            if req.method == "PUT":
                new = body
            else:
                ct = (req.headers.get("Content-Type") or "").split(";")[0].strip()
                new = F.json_patch(base, body) if ct == "application/json-patch+json" else F.merge_patch(base, body)
            rv = ((new or {}).get("metadata") or {}).get("resourceVersion")
            replicas = ((new or {}).get("spec") or {}).get("replicas")
            if not isinstance(replicas, int):
                raise bad_request("spec.replicas must be an integer")
            obj = copy.deepcopy(cur)
            obj["spec"]["replicas"] = replicas
            if rv:
                obj["metadata"]["resourceVersion"] = rv
            dry = req.args.get("dryRun") == "All"
            out = s.update(rt, ns, name, s.out(rt, obj), self.manager(req), "", dry)
            return jresp(to_scale(out))

    def pod_log(self, rt, ns, name, container) -> Response:
        from .store import not_found

        with self.store.lock:
            pod = self.store.find(rt, ns, name)
            if pod is None:
                raise not_found(rt, name)
            containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
            if container is None:
                if len(containers) > 1:
                    raise bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                      f"[{' '.join(containers)}]")
                container = containers[0] if containers else ""
            elif container not in containers:
                raise bad_request(f"container {container} is not valid for pod {name}")
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                w = (cs.get("state") or {}).get("waiting")
                if cs.get("name") == container and w:
                    reason = w.get("reason", "ContainerCreating")
                    msg = (f'container "{container}" in pod "{name}" is waiting to start: '
                           + ("trying and failing to pull image" if "Image" in reason else reason))
                    raise bad_request(msg)
        return Response("", content_type="text/plain")

    @staticmethod
    def method_not_allowed(m: str) -> Response:
        return jresp({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": f"the server does not allow this method on the requested resource",
                      "reason": "MethodNotAllowed", "details": {}, "code": 405}, 405)

    def table(self, rt, lst: dict, include: str) -> dict:
        spec = PRINTERS.get(rt.gp)
        if spec is not None:
            cols = [{"name": n, "type": t, "format": "name" if n == "Name" else "", "description": n, "priority": pr}
                    for n, t, pr, _f in spec]
            rows = []
            for it in lst["items"]:
                row = {"cells": [f(it) for _n, _t, _p, f in spec]}
                if include == "Object":
                    o = dict(it)
                    o.setdefault("kind", rt.kind)
                    o.setdefault("apiVersion", rt.api_version)
                    row["object"] = o
                elif include != "None":
                    row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                     "metadata": it["metadata"]}
                rows.append(row)
            return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": lst["metadata"].get("resourceVersion", "")},
                    "columnDefinitions": cols, "rows": rows}
        cols = [
            {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names", "priority": 0},
            {"name": "Created At", "type": "date", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata", "priority": 0},
        ]
        rows = []
        for it in lst["items"]:
            row = {"cells": [it["metadata"]["name"], it["metadata"].get("creationTimestamp")]}
            if include == "Object":
                o = dict(it)
                o.setdefault("kind", rt.kind)
                o.setdefault("apiVersion", rt.api_version)
                row["object"] = o
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": it["metadata"]}
            rows.append(row)
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": lst["metadata"].get("resourceVersion", "")},
                "columnDefinitions": cols, "rows": rows}

    # ------------------------------------------------------------------ watch
    def watch(self, req: Request, rt, ns, lsel, fsel) -> Response:
        s = self.store
        faults = self.config.get("watch_faults") or []
        if "refuse" in faults:
            raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request "
                           "(watch refused by kubetest's watch_faults)")
        try:
            timeout = float(req.args.get("timeoutSeconds", "1800"))
        except ValueError:
            raise bad_request("invalid timeoutSeconds") from None
        rv_param = req.args.get("resourceVersion", "")
        initial = truthy(req.args.get("sendInitialEvents", ""))
        bookmarks = truthy(req.args.get("allowWatchBookmarks", ""))

        def matches(o):
            if rt.namespaced and ns is not None and o["metadata"].get("namespace") != ns:
                return False
            return selector_matches(o, lsel, fsel)

        def line(t, o):
            return (json.dumps({"type": t, "object": o}, separators=(",", ":")) + "\n").encode()

        with s.lock:
            start_rv = s.rv
            first = []
            if rv_param in ("", "0") or initial:
                for o in s.all_of(rt.gp):
                    if matches(o):
                        first.append(line("ADDED", s.out(rt, o)))
                if initial:
                    first.append(line("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {
                        "resourceVersion": str(start_rv),
                        "annotations": {"k8s.io/initial-events-end": "true"}}}))
            else:
                try:
                    start_rv = int(rv_param)
                except ValueError:
                    raise bad_request(f"invalid resource version: {rv_param}") from None
                if start_rv < s.oldest_event_rv() - 1 and start_rv < s.rv:
                    gone = ApiError(410, "Expired", f"too old resource version: {start_rv} ({s.rv})")
                    first.append(line("ERROR", gone.body()))
                    timeout = 0

        if "close" in faults:
            timeout = 0
        deadline = time.monotonic() + max(0.0, timeout)

        def gen():
            pos = start_rv
            yield b""  # sends the headers at once, as the real server does
            for b in first:
                yield b
            last_bm = time.monotonic()
            while True:
                out = []
                with s.lock:
                    while True:
                        evs = [e for e in s.events if e[0] > pos and e[1] == rt.gp]
                        if evs or s.closed:
                            break
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        s.cond.wait(min(left, 1.0))
                        if bookmarks and time.monotonic() - last_bm > 10:
                            break
                    newpos = s.rv
                    for (_erv, _gp, t, o, old) in evs:
                        now_in = matches(o)
                        if t == "MODIFIED" and old is not None:
                            was_in = matches(old)
                            if was_in and not now_in:
                                t, now_in = "DELETED", True  # it left the selection
                            elif now_in and not was_in:
                                t = "ADDED"  # it entered the selection
                        if now_in:
                            out.append(line(t, s.out(rt, o)))
                    pos = newpos
                for b in out:
                    yield b
                if bookmarks and time.monotonic() - last_bm > 10:
                    last_bm = time.monotonic()
                    yield line("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                            "metadata": {"resourceVersion": str(pos)}})
                if s.closed or time.monotonic() >= deadline:
                    return

        return Response(gen(), content_type="application/json", direct_passthrough=True)

    # ------------------------------------------------------------------ control
    def control(self, req: Request, parts) -> Response:
        if parts == ["config"]:
            if req.method == "POST":
                try:
                    upd = json.loads(req.get_data() or b"{}")
                except ValueError:
                    raise bad_request("config must be JSON") from None
                if not isinstance(upd, dict):
                    raise bad_request("config must be a JSON object")
                unknown = {k for k in upd if k not in self.config or k.startswith("_")}
                if unknown:
                    raise bad_request(f"unknown config keys: {sorted(unknown)}")
                for k, v in upd.items():
                    if isinstance(self.config[k], list):
                        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                            raise bad_request(f"config key {k} must be a list of strings")
                        if k == "watch_faults" and not set(v) <= WATCH_FAULTS:
                            raise bad_request(f"config key {k} takes only {sorted(WATCH_FAULTS)}")
                    elif isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                        raise bad_request(f"config key {k} must be a non-negative number")
                with self._requests_lock:  # beside busy()'s countdown
                    self.config.update(upd)
                if self.on_config:
                    self.on_config()
            return jresp(self.config)
        if parts == ["auth"]:
            if req.method == "DELETE":
                self.authn.reset()
            elif req.method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{req.method} is not allowed on /_kubetest/auth")
            return jresp(self.authn.report())
        if parts == ["requests"]:
            if req.method == "DELETE":
                report = self.requests_report()
                with self._requests_lock:
                    self._requests.clear()
                    self._served = 0.0
                    self._log.clear()
                    self._watches.clear()
                return jresp(report)
            if req.method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{req.method} is not allowed on /_kubetest/requests")
            return jresp(self.requests_report(truthy(req.args.get("log", ""))))
        if parts == ["state"]:
            with self.store.lock:
                return jresp({"resourceVersion": self.store.rv, "time": now_ts(),
                              "types": sorted(f"{g}/{v}/{p}" for (g, v, p) in self.store.types)})
        return self.not_found_raw()


def _version_key(v: str):
    import re

    m = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", v)
    if not m:
        return (0, 0, 0, v)
    stab = {"alpha": 1, "beta": 2, None: 3}[m.group(2)]
    return (stab, int(m.group(1)), int(m.group(3) or 0), v)


_ = copy


# ---------------------------------------------------------------------- printer columns

def human_age(ts: str | None) -> str:
    import datetime as _dt

    if not ts:
        return "<unknown>"
    try:
        t = _dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return "<unknown>"
    sec = int((_dt.datetime.now(_dt.timezone.utc) - t).total_seconds())
    if sec < 0:
        sec = 0
    if sec < 120:
        return f"{sec}s"
    m = sec // 60
    if m < 10:
        return f"{m}m{sec % 60}s" if sec % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def _age(o):
    return human_age(o["metadata"].get("creationTimestamp"))


def _st(o):
    return o.get("status") or {}


def _sp(o):
    return o.get("spec") or {}


def _pod_ready(o):
    cs = _st(o).get("containerStatuses") or []
    n = len(_sp(o).get("containers") or [])
    return f"{sum(1 for c in cs if c.get('ready'))}/{n}"


def _pod_status(o):
    if o["metadata"].get("deletionTimestamp"):
        return "Terminating"
    for c in _st(o).get("containerStatuses") or []:
        w = (c.get("state") or {}).get("waiting")
        if w and w.get("reason"):
            return w["reason"]
    return _st(o).get("phase", "Pending")


def _svc_ports(o):
    ps = [f"{p.get('port')}/{p.get('protocol', 'TCP')}" if not p.get("nodePort")
          else f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}" for p in _sp(o).get("ports") or []]
    return ",".join(ps) or "<none>"


def _ing_address(o):
    lbs = (_st(o).get("loadBalancer") or {}).get("ingress") or []
    return ",".join(x.get("hostname") or x.get("ip") or "" for x in lbs)


def _ing_hosts(o):
    hs = [r.get("host") for r in _sp(o).get("rules") or [] if r.get("host")]
    return ",".join(hs) or "*"


def _more(lst, count, unset="<unset>"):
    ret = ",".join(lst[:3])
    if count > 3:
        return f"{ret} + {count - 3} more..."
    return ret or unset


def _ep_endpoints(o):
    """kubectl's ENDPOINTS column: ready ip:port pairs, three at most."""
    subsets = o.get("subsets") or []
    if not subsets:
        return "<none>"
    lst, count = [], 0
    for ss in subsets:
        addrs = [a.get("ip", "") for a in ss.get("addresses") or []]
        if not ss.get("ports"):
            count += len(addrs)
            lst += addrs
            continue
        for p in ss["ports"]:
            count += len(addrs)
            lst += [f"{ip}:{p.get('port')}" for ip in addrs]
    return _more(lst, count, "")


def _eps_ports(o):
    ps = [str(p["port"]) if p.get("port") is not None else (p.get("name") or "*") for p in o.get("ports") or []]
    return _more(ps, len(ps))


def _eps_endpoints(o):
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    return _more(addrs, len(addrs))


NAME = ("Name", "string", 0, lambda o: o["metadata"]["name"])
AGE = ("Age", "string", 0, _age)
PRINTERS = {
    ("apps", "deployments"): [
        NAME,
        ("Ready", "string", 0, lambda o: f"{_st(o).get('readyReplicas', 0)}/{_sp(o).get('replicas', 1)}"),
        ("Up-to-date", "integer", 0, lambda o: _st(o).get("updatedReplicas", 0)),
        ("Available", "integer", 0, lambda o: _st(o).get("availableReplicas", 0)),
        AGE,
        ("Containers", "string", 1, lambda o: ",".join(c.get("name", "") for c in (_sp(o).get("template") or {}).get("spec", {}).get("containers") or [])),
        ("Images", "string", 1, lambda o: ",".join(c.get("image", "") for c in (_sp(o).get("template") or {}).get("spec", {}).get("containers") or [])),
    ],
    ("apps", "replicasets"): [
        NAME,
        ("Desired", "integer", 0, lambda o: _sp(o).get("replicas", 1)),
        ("Current", "integer", 0, lambda o: _st(o).get("replicas", 0)),
        ("Ready", "integer", 0, lambda o: _st(o).get("readyReplicas", 0)),
        AGE,
    ],
    ("", "pods"): [
        NAME, ("Ready", "string", 0, _pod_ready), ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, lambda o: str(sum(c.get("restartCount", 0) for c in _st(o).get("containerStatuses") or []))),
        AGE,
        ("IP", "string", 1, lambda o: _st(o).get("podIP", "<none>")),
        ("Node", "string", 1, lambda o: _sp(o).get("nodeName", "<none>")),
    ],
    ("", "namespaces"): [NAME, ("Status", "string", 0, lambda o: _st(o).get("phase", "")), AGE],
    ("", "services"): [
        NAME, ("Type", "string", 0, lambda o: _sp(o).get("type", "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o: _sp(o).get("clusterIP", "<none>")),
        ("External-IP", "string", 0, lambda o: ",".join(x.get("hostname") or x.get("ip") or "" for x in (_st(o).get("loadBalancer") or {}).get("ingress") or []) or "<none>"),
        ("Port(s)", "string", 0, _svc_ports), AGE,
    ],
    ("networking.k8s.io", "ingresses"): [
        NAME, ("Class", "string", 0, lambda o: _sp(o).get("ingressClassName") or "<none>"),
        ("Hosts", "string", 0, _ing_hosts), ("Address", "string", 0, _ing_address),
        ("Ports", "string", 0, lambda o: "80, 443" if _sp(o).get("tls") else "80"), AGE,
    ],
    ("", "endpoints"): [NAME, ("Endpoints", "string", 0, _ep_endpoints), AGE],
    ("discovery.k8s.io", "endpointslices"): [
        NAME, ("AddressType", "string", 0, lambda o: o.get("addressType", "")),
        ("Ports", "string", 0, _eps_ports), ("Endpoints", "string", 0, _eps_endpoints), AGE,
    ],
    ("", "configmaps"): [NAME, ("Data", "integer", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})), AGE],
    ("", "secrets"): [NAME, ("Type", "string", 0, lambda o: o.get("type", "Opaque")),
                      ("Data", "integer", 0, lambda o: len(o.get("data") or {})), AGE],
    ("", "serviceaccounts"): [NAME, ("Secrets", "integer", 0, lambda o: len(o.get("secrets") or [])), AGE],
    ("", "events"): [
        ("Last Seen", "string", 0, lambda o: human_age(o.get("lastTimestamp") or o["metadata"].get("creationTimestamp"))),
        ("Type", "string", 0, lambda o: o.get("type", "")), ("Reason", "string", 0, lambda o: o.get("reason", "")),
        ("Object", "string", 0, lambda o: f"{(o.get('involvedObject') or {}).get('kind', '').lower()}/"
                                          f"{(o.get('involvedObject') or {}).get('name', '')}"),
        ("Message", "string", 0, lambda o: o.get("message", "")),
    ],
}
