"""Discovery, CRDs, CRUD, Status error bodies, resourceVersion/generation, patches, dry-run, watch."""

from __future__ import annotations

import json
import threading
import time

import requests

from conftest import deployment

CM = "/api/v1/namespaces/{ns}/configmaps"
DEP = "/apis/apps/v1/namespaces/{ns}/deployments"


def test_discovery(kube):
    code, v = kube.get("/version")
    assert code == 200 and v["major"] == "1" and v["gitVersion"].startswith("v1.32")
    code, api = kube.get("/api")
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    code, core = kube.get("/api/v1")
    assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    res = {r["name"]: r for r in core["resources"]}
    assert res["namespaces"]["namespaced"] is False and res["namespaces"]["shortNames"] == ["ns"]
    assert res["configmaps"]["kind"] == "ConfigMap" and res["configmaps"]["singularName"] == "configmap"
    assert set(res["pods"]["verbs"]) >= {"create", "get", "list", "watch", "patch", "update", "delete"}
    for name in ("services", "serviceaccounts", "secrets", "events", "namespaces/status", "pods/status"):
        assert name in res
    code, apis = kube.get("/apis")
    assert apis["kind"] == "APIGroupList"
    groups = {g["name"]: g for g in apis["groups"]}
    for g in ("apps", "networking.k8s.io", "rbac.authorization.k8s.io", "apiextensions.k8s.io",
              "admissionregistration.k8s.io", "coordination.k8s.io"):
        assert groups[g]["preferredVersion"] == {"groupVersion": f"{g}/v1", "version": "v1"}
    code, apps = kube.get("/apis/apps/v1")
    res = {r["name"]: r for r in apps["resources"]}
    assert res["deployments"]["shortNames"] == ["deploy"] and res["deployments"]["namespaced"] is True
    assert res["deployments/status"]["verbs"] == ["get", "patch", "update"]
    code, net = kube.get("/apis/networking.k8s.io/v1")
    res = {r["name"]: r for r in net["resources"]}
    assert res["ingressclasses"]["namespaced"] is False and "ingresses/status" in res
    code, _ = kube.get("/apis/nope.example.com/v1")
    assert code == 404


def test_aggregated_discovery_request_gets_legacy_json(kube):
    accept = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")
    r = kube.s.get(kube.url + "/apis", headers={"Accept": accept}, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json()["kind"] == "APIGroupList"


def test_unauthorized(kube):
    s = requests.Session()
    s.trust_env = False
    r = s.get(kube.url + "/api/v1/namespaces", verify=kube.ca, timeout=10)
    assert r.status_code == 401
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def test_crd_makes_a_resource_servable(kube, ns):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}},
                                  "subresources": {"status": {}}}]}}
    code, _ = kube.get(f"/apis/example.com/v1/namespaces/{ns}/widgets")
    assert code == 404
    code, out = kube.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert code == 201, out
    assert {c["type"]: c["status"] for c in out["status"]["conditions"]}["Established"] == "True"
    code, apis = kube.get("/apis")
    assert "example.com" in [g["name"] for g in apis["groups"]]
    code, gv = kube.get("/apis/example.com/v1")
    res = {r["name"]: r for r in gv["resources"]}
    assert res["widgets"] | {"storageVersionHash": None} == {
        "name": "widgets", "singularName": "widget", "namespaced": True, "kind": "Widget",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        "shortNames": ["wd"], "storageVersionHash": None}
    assert "widgets/status" in res
    w = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}
    code, out = kube.post(f"/apis/example.com/v1/namespaces/{ns}/widgets", w)
    assert code == 201 and out["metadata"]["generation"] == 1 and out["spec"] == {"size": 3}
    code, lst = kube.get("/apis/example.com/v1/widgets")
    assert lst["kind"] == "WidgetList" and [i["metadata"]["name"] for i in lst["items"]] == ["w1"]
    r = kube.kubectl("get", "wd", "-n", ns, "-o", "name")
    assert r.stdout.strip() == "widget.example.com/w1"
    # a bad CRD name
    bad = json.loads(json.dumps(crd))
    bad["metadata"]["name"] = "gadgets.example.com"
    code, out = kube.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", bad)
    assert code == 422 and out["reason"] == "Invalid"
    # deleting the CRD removes the resource and its objects
    code, _ = kube.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    assert code == 200
    code, _ = kube.get(f"/apis/example.com/v1/namespaces/{ns}/widgets")
    assert code == 404


def test_crud_and_status_bodies(kube, ns):
    base = CM.format(ns=ns)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "labels": {"tier": "a"}},
          "data": {"k": "v"}}
    code, out = kube.post(base, cm)
    assert code == 201
    md = out["metadata"]
    assert out["kind"] == "ConfigMap" and out["apiVersion"] == "v1"
    assert md["namespace"] == ns and md["uid"] and md["creationTimestamp"].endswith("Z") and md["resourceVersion"]
    code, out = kube.post(base, cm)
    assert code == 409
    assert out == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": 'configmaps "c1" already exists', "reason": "AlreadyExists",
                   "details": {"name": "c1", "kind": "configmaps"}, "code": 409}
    code, out = kube.get(base + "/nope")
    assert out == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": 'configmaps "nope" not found', "reason": "NotFound",
                   "details": {"name": "nope", "kind": "configmaps"}, "code": 404}
    code, out = kube.get(DEP.format(ns=ns) + "/nope")
    assert out["message"] == 'deployments.apps "nope" not found'
    assert out["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    # invalid names
    code, out = kube.post(base, {"metadata": {"name": "Bad_Name"}})
    assert code == 422 and out["reason"] == "Invalid"
    assert out["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                     "a lowercase RFC 1123 subdomain must consist of")
    assert out["details"]["causes"][0]["reason"] == "FieldValueInvalid"
    assert out["details"]["causes"][0]["field"] == "metadata.name"
    code, out = kube.post(base, {"metadata": {}})
    assert code == 422
    assert out["message"] == 'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required'
    assert out["details"] == {"kind": "ConfigMap", "causes": [
        {"reason": "FieldValueRequired", "message": "Required value: name or generateName is required",
         "field": "metadata.name"}]}
    code, out = kube.post("/api/v1/namespaces", {"metadata": {"name": "has.dot"}})
    assert code == 422 and "RFC 1123 label" in out["message"]
    code, out = kube.post("/api/v1/namespaces/" + ns + "/services",
                          {"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}})
    assert code == 422 and "DNS-1035 label" in out["message"]
    code, out = kube.post(DEP.format(ns=ns), deployment("Bad.Name"))
    assert code == 422 and out["message"].startswith('Deployment.apps "Bad.Name" is invalid: ')
    assert out["details"]["group"] == "apps" and out["details"]["kind"] == "Deployment"
    # the namespace must exist
    code, out = kube.post(CM.format(ns="missing-ns"), cm)
    assert out == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": 'namespaces "missing-ns" not found', "reason": "NotFound",
                   "details": {"name": "missing-ns", "kind": "namespaces"}, "code": 404}
    # generateName
    code, out = kube.post(base, {"metadata": {"generateName": "gen-"}})
    assert code == 201 and out["metadata"]["name"].startswith("gen-") and len(out["metadata"]["name"]) == 9
    # replace, then a stale resourceVersion
    code, cur = kube.get(base + "/c1")
    stale = cur["metadata"]["resourceVersion"]
    cur["data"]["k"] = "v2"
    code, out = kube.put(base + "/c1", cur)
    assert code == 200 and out["data"]["k"] == "v2" and int(out["metadata"]["resourceVersion"]) > int(stale)
    cur["data"]["k"] = "v3"
    code, out = kube.put(base + "/c1", cur)
    assert code == 409
    assert out == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": 'Operation cannot be fulfilled on configmaps "c1": the object has been modified; '
                              "please apply your changes to the latest version and try again",
                   "reason": "Conflict", "details": {"name": "c1", "kind": "configmaps"}, "code": 409}
    code, out = kube.put(base + "/nope", {"metadata": {"name": "nope"}})
    assert code == 404
    # delete
    code, out = kube.delete(base + "/c1")
    assert code == 200 and out["kind"] == "Status" and out["status"] == "Success"
    assert out["details"]["name"] == "c1"
    code, _ = kube.get(base + "/c1")
    assert code == 404
    code, out = kube.delete(base + "/c1")
    assert code == 404


def test_cluster_scoped(kube):
    path = "/apis/rbac.authorization.k8s.io/v1/clusterroles"
    cr = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "kt:reader"},
          "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    code, out = kube.post(path, cr)
    assert code == 201 and "namespace" not in out["metadata"]
    code, lst = kube.get(path)
    assert lst["kind"] == "ClusterRoleList" and "kt:reader" in [i["metadata"]["name"] for i in lst["items"]]
    code, _ = kube.get("/apis/rbac.authorization.k8s.io/v1/namespaces/default/clusterroles/kt:reader")
    assert code == 404
    code, _ = kube.delete(path + "/kt:reader")
    assert code == 200


def test_list_selectors_and_list_shape(kube, ns):
    base = CM.format(ns=ns)
    for name, labels in (("a", {"env": "blue", "tier": "web"}), ("b", {"env": "green", "tier": "web"}),
                         ("c", {"env": "blue"})):
        assert kube.post(base, {"metadata": {"name": name, "labels": labels}})[0] == 201

    def names(sel=None, fsel=None, path=base):
        params = {}
        if sel:
            params["labelSelector"] = sel
        if fsel:
            params["fieldSelector"] = fsel
        code, lst = kube.get(path, params=params)
        assert code == 200, lst
        return sorted(i["metadata"]["name"] for i in lst["items"] if i["metadata"]["namespace"] == ns
                      and i["metadata"]["name"] in "abc")

    assert names("env=blue") == ["a", "c"]
    assert names("env==blue,tier=web") == ["a"]
    assert names("env!=blue") == ["b"]
    assert names("env in (green, red)") == ["b"]
    assert names("env notin (green),tier") == ["a"]
    assert names("!tier") == ["c"]
    assert names(fsel="metadata.name=b") == ["b"]
    assert names(fsel=f"metadata.namespace={ns},metadata.name!=b", path="/api/v1/configmaps") == ["a", "c"]
    code, lst = kube.get("/api/v1/configmaps")
    assert lst["kind"] == "ConfigMapList" and lst["apiVersion"] == "v1"
    assert int(lst["metadata"]["resourceVersion"]) > 0
    assert {i["metadata"]["namespace"] for i in lst["items"]} >= {ns, "default"}
    code, lst = kube.get(DEP.format(ns=ns))
    assert lst["kind"] == "DeploymentList" and lst["apiVersion"] == "apps/v1" and lst["items"] == []


def test_generation_and_status_subresource(kube, ns):
    base = DEP.format(ns=ns)
    kube.config(deployment_delay=30)
    try:
        code, d = kube.post(base, deployment("gen", replicas=0))
        assert code == 201 and d["metadata"]["generation"] == 1
        assert d["spec"]["progressDeadlineSeconds"] == 600 and d["spec"]["strategy"]["type"] == "RollingUpdate"
        kube.wait(base + "/gen", lambda c, o: (o.get("status") or {}).get("observedGeneration") == 1)

        def put(mutate):
            for _ in range(20):  # the controller may write status in between: retry on 409 like a client
                code, cur = kube.get(base + "/gen")
                mutate(cur)
                code, out = kube.put(base + "/gen", cur)
                if code != 409:
                    assert code == 200, out
                    return out
            raise AssertionError("PUT kept conflicting")

        d = put(lambda o: o["metadata"]["labels"].update(extra="x"))
        assert d["metadata"]["generation"] == 1  # metadata only
        d = put(lambda o: o["spec"].update(replicas=1))
        assert d["metadata"]["generation"] == 2
        code, d = kube.patch(base + "/gen", {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "nginx:1.28"}]}}}}, ctype="application/strategic-merge-patch+json")
        assert d["metadata"]["generation"] == 3
        c = d["spec"]["template"]["spec"]["containers"]
        assert len(c) == 1 and c[0]["image"] == "nginx:1.28" and c[0]["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
        # status through the main resource is ignored; through /status it is taken, without a generation bump
        d2 = put(lambda o: o.__setitem__("status", {"replicas": 99}))
        assert (d2.get("status") or {}).get("replicas") != 99
        code, d3 = kube.patch(base + "/gen/status", {"status": {"replicas": 99}})
        assert code == 200 and d3["status"]["replicas"] == 99 and d3["metadata"]["generation"] == 3
        code, d4 = kube.patch(base + "/gen/status", {"spec": {"replicas": 7}})
        assert d4["spec"]["replicas"] == 1
    finally:
        kube.config(deployment_delay=0.3)


def test_patch_flavours(kube, ns):
    base = CM.format(ns=ns)
    kube.post(base, {"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}})
    code, out = kube.patch(base + "/p", {"metadata": {"labels": {"a": None, "c": "3"}}, "data": {"y": "2"}})
    assert out["metadata"]["labels"] == {"b": "2", "c": "3"} and out["data"] == {"x": "1", "y": "2"}
    code, out = kube.patch(base + "/p", [{"op": "replace", "path": "/data/x", "value": "9"},
                                         {"op": "remove", "path": "/metadata/labels/b"}],
                           ctype="application/json-patch+json")
    assert code == 200 and out["data"]["x"] == "9" and "b" not in out["metadata"]["labels"]
    code, out = kube.patch(base + "/p", [{"op": "test", "path": "/data/x", "value": "0"}],
                           ctype="application/json-patch+json")
    assert code == 422
    code, out = kube.patch(base + "/p", {"metadata": {"resourceVersion": "1"}, "data": {"z": "1"}})
    assert code == 409 and out["reason"] == "Conflict"
    code, out = kube.patch(base + "/none", {"data": {}})
    assert code == 404
    code, out = kube.patch(base + "/p", {"data": {}}, ctype="text/plain")
    assert code == 415
    mf = {e["manager"]: e for e in out.get("metadata", {}).get("managedFields", [])} if isinstance(out, dict) else {}
    _ = mf


def test_dry_run_stores_nothing(kube, ns):
    base = CM.format(ns=ns)
    dry = {"dryRun": "All"}
    code, out = kube.post(base, {"metadata": {"name": "d"}, "data": {"a": "1"}}, params=dry)
    assert code == 201 and out["metadata"]["name"] == "d" and out["metadata"]["uid"]
    assert kube.get(base + "/d")[0] == 404
    code, out = kube.apply(base + "/d", "apiVersion: v1\nkind: ConfigMap\ndata: {a: '1'}\n", "m", params=dry)
    assert code == 201 and kube.get(base + "/d")[0] == 404
    kube.post(base, {"metadata": {"name": "d"}, "data": {"a": "1"}})
    code, cur = kube.get(base + "/d")
    rv = cur["metadata"]["resourceVersion"]
    cur["data"]["a"] = "2"
    code, out = kube.put(base + "/d", cur, params=dry)
    assert code == 200 and out["data"]["a"] == "2"
    code, out = kube.patch(base + "/d", {"data": {"a": "3"}}, params=dry)
    assert code == 200 and out["data"]["a"] == "3"
    code, out = kube.apply(base + "/d", "apiVersion: v1\nkind: ConfigMap\ndata: {a: '4'}\n", "m", force=True,
                           params=dry)
    assert code == 200 and out["data"]["a"] == "4"
    code, out = kube.delete(base + "/d", params=dry)
    assert code == 200
    code, now = kube.get(base + "/d")
    assert code == 200 and now["data"] == {"a": "1"} and now["metadata"]["resourceVersion"] == rv


def test_watch(kube, ns):
    base = CM.format(ns=ns)
    code, first = kube.post(base, {"metadata": {"name": "w0"}})
    rv = first["metadata"]["resourceVersion"]
    events = []

    def watcher():
        r = kube.s.get(kube.url + base, params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "3"},
                       stream=True, timeout=10)
        assert r.status_code == 200
        for line in r.iter_lines():
            if line:
                events.append(json.loads(line))

    t = threading.Thread(target=watcher)
    t.start()
    time.sleep(0.3)
    kube.post(base, {"metadata": {"name": "w1"}})
    kube.patch(base + "/w1", {"data": {"a": "b"}})
    kube.delete(base + "/w1")
    t0 = time.monotonic()
    t.join(timeout=10)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 5  # the server ended the watch at timeoutSeconds
    got = [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["object"]["metadata"]["name"][0] == "w"]
    assert got == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    assert events[0]["object"]["kind"] == "ConfigMap" and events[0]["object"]["apiVersion"] == "v1"
    # without a resourceVersion: synthetic ADDED for what exists, then live events
    r = kube.s.get(kube.url + base, params={"watch": "true", "timeoutSeconds": "1"}, stream=True, timeout=10)
    lines = [json.loads(x) for x in r.iter_lines() if x]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines if e["object"]["metadata"]["name"].startswith("w")] == [("ADDED", "w0")]
    # watch with a field selector on a cluster-scoped kind
    r = kube.s.get(kube.url + "/api/v1/namespaces",
                   params={"watch": "1", "fieldSelector": f"metadata.name={ns}", "timeoutSeconds": "1"},
                   stream=True, timeout=10)
    lines = [json.loads(x) for x in r.iter_lines() if x]
    assert [e["object"]["metadata"]["name"] for e in lines] == [ns]


def test_watch_selector_transitions(kube, ns):
    base = CM.format(ns=ns)
    code, first = kube.post(base, {"metadata": {"name": "s1", "labels": {"sel": "no"}}})
    events = []

    def watcher():
        r = kube.s.get(kube.url + base, params={"watch": "1", "labelSelector": "sel=yes",
                                                "resourceVersion": first["metadata"]["resourceVersion"],
                                                "timeoutSeconds": "2"}, stream=True, timeout=10)
        for line in r.iter_lines():
            if line:
                events.append(json.loads(line))

    t = threading.Thread(target=watcher)
    t.start()
    time.sleep(0.3)
    kube.patch(base + "/s1", {"metadata": {"labels": {"sel": "yes"}}})
    kube.patch(base + "/s1", {"data": {"a": "1"}})
    kube.patch(base + "/s1", {"metadata": {"labels": {"sel": "no"}}})
    t.join(timeout=10)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


def test_watch_faults_refuse_or_end_watches_and_the_log_keeps_watches_apart(kube, ns):
    base = CM.format(ns=ns)
    kube.post(base, {"metadata": {"name": "f0"}})
    kube.delete("/_kubetest/requests")
    code, cfg = kube.post("/_kubetest/config", {"watch_faults": ["refuse"]})
    assert code == 200 and cfg["watch_faults"] == ["refuse"]
    try:
        r = kube.s.get(kube.url + base, params={"watch": "1", "timeoutSeconds": "5"}, timeout=10)
        assert r.status_code == 503 and r.json()["reason"] == "ServiceUnavailable"
        # lists are not affected
        code, _ = kube.get(base)
        assert code == 200
        code, _ = kube.post("/_kubetest/config", {"watch_faults": ["close"]})
        t0 = time.monotonic()
        r = kube.s.get(kube.url + base, params={"watch": "1", "labelSelector": "", "fieldSelector": "metadata.name=f0",
                                                "timeoutSeconds": "30"}, stream=True, timeout=10)
        lines = [json.loads(x) for x in r.iter_lines() if x]
        assert time.monotonic() - t0 < 5  # ended after its initial events, not at timeoutSeconds
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [("ADDED", "f0")]
        code, out = kube.post("/_kubetest/config", {"watch_faults": ["sometimes"]})
        assert code == 400 and "watch_faults" in out["message"]
    finally:
        kube.post("/_kubetest/config", {"watch_faults": []})
    code, log = kube.get("/_kubetest/requests", params={"log": "1"})
    assert [e["path"] for e in log["log"]] == [base]
    assert [(w["path"], w["fieldSelector"]) for w in log["watches"]] == [(base, ""), (base, "metadata.name=f0")]


def test_busy_requests_answer_503_a_given_number_of_times_with_retry_after(kube, ns):
    base = CM.format(ns=ns)
    kube.delete("/_kubetest/requests")
    code, cfg = kube.post("/_kubetest/config", {"busy_requests": 2, "busy_retry_after": 2.5})
    assert code == 200 and cfg["busy_requests"] == 2
    try:
        for _ in range(2):
            r = kube.s.get(kube.url + base, timeout=10)
            assert r.status_code == 503 and r.json()["reason"] == "ServiceUnavailable"
            assert r.headers["Retry-After"] == "3"
        code, _ = kube.get(base)  # counted down: served again
        assert code == 200
        code, cfg = kube.get("/_kubetest/config")
        assert cfg["busy_requests"] == 0
        code, out = kube.post("/_kubetest/config", {"busy_requests": -1})
        assert code == 400
    finally:
        kube.post("/_kubetest/config", {"busy_requests": 0, "busy_retry_after": 0})
    code, log = kube.get("/_kubetest/requests", params={"log": "1"})
    assert [(e["path"], e["status"]) for e in log["log"]] == [(base, 503), (base, 503), (base, 200)]
    assert log["by_method"] == {"GET": 1}  # turned-away requests are not counted


def test_request_log_counts_api_requests_by_method(kube, ns):
    code, _ = kube.delete("/_kubetest/requests")
    assert code == 200
    kube.get(f"/api/v1/namespaces/{ns}/configmaps")
    kube.post(f"/api/v1/namespaces/{ns}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "logged"}})
    kube.delete(f"/api/v1/namespaces/{ns}/configmaps/logged")
    code, log = kube.get("/_kubetest/requests")
    assert code == 200
    assert log["by_method"]["GET"] >= 1 and log["by_method"]["POST"] == 1 and log["by_method"]["DELETE"] == 1
    assert log["mutating"] == 2 and log["total"] == log["by_method"]["GET"] + 2
    code, _ = kube.post("/_kubetest/requests", {})
    assert code == 405
    code, cleared = kube.delete("/_kubetest/requests")
    assert cleared["mutating"] == 2
    code, log = kube.get("/_kubetest/requests")
    assert log["total"] == 0


def test_latency_delays_api_requests_and_the_log_times_them_without_it(kube, ns):
    kube.delete("/_kubetest/requests")
    code, _ = kube.post("/_kubetest/config", {"latency_ms": 150})
    assert code == 200
    try:
        started = time.monotonic()
        kube.get(f"/api/v1/namespaces/{ns}/configmaps")
        assert time.monotonic() - started >= 0.15
        started = time.monotonic()
        kube.get("/_kubetest/requests")
        assert time.monotonic() - started < 0.15
        code, log = kube.get("/_kubetest/requests?log=1")
    finally:
        kube.post("/_kubetest/config", {"latency_ms": 0})
    assert code == 200
    (entry,) = log["log"]
    assert (entry["method"], entry["path"]) == ("GET", f"/api/v1/namespaces/{ns}/configmaps")
    assert entry["answered"] - entry["arrived"] >= 0.15
    assert 0 <= entry["served_s"] < 0.15 and entry["answered"] <= log["now"]
    assert log["served_s"] == entry["served_s"]
    assert "log" not in kube.get("/_kubetest/requests")[1]
