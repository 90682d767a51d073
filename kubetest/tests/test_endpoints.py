"""Endpoints and EndpointSlices kept by the endpoints / endpointslice controllers, following Pod readiness."""

from __future__ import annotations

import json
import re
import threading
import time

from conftest import deployment

SVC = "/api/v1/namespaces/{ns}/services"
EP = "/api/v1/namespaces/{ns}/endpoints"
EPS = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
DEP = "/apis/apps/v1/namespaces/{ns}/deployments"
PODS = "/api/v1/namespaces/{ns}/pods"


def service(name, selector, ports, labels=None):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, **({"labels": labels} if labels else {})},
            "spec": {"selector": selector, "ports": ports}}


def slices(kube, ns, svc):
    code, lst = kube.get(EPS.format(ns=ns), params={"labelSelector": f"kubernetes.io/service-name={svc}"})
    assert code == 200, lst
    return lst["items"]


def addrs(ep, key="addresses"):
    return sorted(a["ip"] for ss in ep.get("subsets") or [] for a in ss.get(key) or [])


def test_discovery_serves_endpoints_and_endpointslices(kube):
    code, core = kube.get("/api/v1")
    res = {r["name"]: r for r in core["resources"]}
    assert res["endpoints"] | {"storageVersionHash": None} == {
        "name": "endpoints", "singularName": "endpoints", "namespaced": True, "kind": "Endpoints",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        "shortNames": ["ep"], "storageVersionHash": None}
    code, apis = kube.get("/apis")
    assert "discovery.k8s.io" in [g["name"] for g in apis["groups"]]
    code, disc = kube.get("/apis/discovery.k8s.io/v1")
    assert code == 200
    res = {r["name"]: r for r in disc["resources"]}
    assert res["endpointslices"]["kind"] == "EndpointSlice" and res["endpointslices"]["namespaced"] is True


def test_endpoints_follow_pod_readiness(kube, ns):
    kube.config(deployment_delay=0.8)
    try:
        svc = service("web", {"app": "web"}, [{"name": "http", "port": 80, "targetPort": "http"},
                                              {"name": "metrics", "port": 9090, "targetPort": 9100}],
                      labels={"tier": "front"})
        code, s = kube.post(SVC.format(ns=ns), svc)
        assert code == 201, s
        # no pod yet: an Endpoints without subsets, a placeholder slice without endpoints
        ep = kube.wait(EP.format(ns=ns) + "/web", lambda c, o: c == 200, timeout=5)
        assert "subsets" not in ep and ep["metadata"]["labels"] == {"tier": "front"}
        placeholder = kube.wait(EPS.format(ns=ns), lambda c, o: len(o["items"]) == 1, timeout=5)["items"][0]
        assert placeholder["endpoints"] is None and placeholder["ports"] is None
        # the Deployment's pods: listed as not ready until the rollout completes
        d = deployment("web", replicas=2)
        d["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8080}]
        t0 = time.monotonic()
        assert kube.post(DEP.format(ns=ns), d)[0] == 201
        ep = kube.wait(EP.format(ns=ns) + "/web", lambda c, o: len(addrs(o, "notReadyAddresses")) == 2, timeout=5)
        assert time.monotonic() - t0 < 0.8
        assert addrs(ep) == []
        dep = kube.get(DEP.format(ns=ns) + "/web")[1]
        assert not dep["status"].get("availableReplicas")
        sl = kube.wait(EPS.format(ns=ns), lambda c, o: len(o["items"]) == 1 and o["items"][0]["endpoints"],
                       timeout=5)["items"][0]
        assert sl["metadata"]["name"] != placeholder["metadata"]["name"]  # the placeholder is replaced
        assert [e["conditions"] for e in sl["endpoints"]] == [
            {"ready": False, "serving": False, "terminating": False}] * 2
        # after the delay: ready addresses
        ep = kube.wait(EP.format(ns=ns) + "/web", lambda c, o: len(addrs(o)) == 2, timeout=5)
        assert time.monotonic() - t0 >= 0.7
        dep = kube.get(DEP.format(ns=ns) + "/web")[1]
        assert dep["status"]["availableReplicas"] == 2
        pods = kube.get(PODS.format(ns=ns), params={"labelSelector": "app=web"})[1]["items"]
        ips = sorted(p["status"]["podIP"] for p in pods)
        assert len(set(ips)) == 2 and all(re.fullmatch(r"10\.0\.\d+\.\d+", ip) for ip in ips)
        assert all(p["status"]["podIPs"] == [{"ip": p["status"]["podIP"]}] for p in pods)
        assert addrs(ep) == ips
        assert len(ep["subsets"]) == 1 and "notReadyAddresses" not in ep["subsets"][0]
        ss = ep["subsets"][0]
        assert ss["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"},
                               {"name": "metrics", "port": 9100, "protocol": "TCP"}]
        by_name = {p["metadata"]["name"]: p for p in pods}
        for a in ss["addresses"]:
            pod = by_name[a["targetRef"]["name"]]
            assert a["targetRef"] == {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"],
                                      "uid": pod["metadata"]["uid"]}
            assert a["ip"] == pod["status"]["podIP"] and a["nodeName"] == pod["spec"]["nodeName"]
        assert [m["manager"] for m in ep["metadata"]["managedFields"]] == ["endpoint-controller"]
        # the slice
        sl = kube.wait(EPS.format(ns=ns), lambda c, o: len(o["items"]) == 1 and all(
            e["conditions"]["ready"] for e in o["items"][0]["endpoints"] or [{"conditions": {"ready": False}}]),
            timeout=5)["items"][0]
        md = sl["metadata"]
        assert re.fullmatch(r"web-[a-z0-9]{5}", md["name"]) and md["generateName"] == "web-"
        assert md["labels"] == {"tier": "front", "kubernetes.io/service-name": "web",
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
        assert md["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                          "uid": s["metadata"]["uid"], "controller": True,
                                          "blockOwnerDeletion": True}]
        assert [m["manager"] for m in md["managedFields"]] == ["endpointslice-controller"]
        assert sl["addressType"] == "IPv4"
        assert sl["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080},
                               {"name": "metrics", "protocol": "TCP", "port": 9100}]
        assert sorted(a for e in sl["endpoints"] for a in e["addresses"]) == ips
        for e in sl["endpoints"]:
            assert e["conditions"] == {"ready": True, "serving": True, "terminating": False}
            pod = by_name[e["targetRef"]["name"]]
            assert e["targetRef"] == {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"],
                                      "uid": pod["metadata"]["uid"]}
            assert e["nodeName"] == pod["spec"]["nodeName"]
        # kubectl reads them
        r = kube.kubectl("get", "ep", "web", "-n", ns, "--no-headers")
        assert f"{ips[0]}:8080" in r.stdout, r.stdout
        r = kube.kubectl("get", "endpointslices", "-n", ns, "-o", "name")
        assert r.stdout.strip() == f"endpointslice.discovery.k8s.io/{md['name']}"
    finally:
        kube.config(deployment_delay=0.3)


def test_no_churn_watch_and_service_delete(kube, ns):
    rv0 = kube.get("/_kubetest/state")[1]["resourceVersion"]
    events = []

    def watcher():
        r = kube.s.get(kube.url + EP.format(ns=ns), params={"watch": "1", "resourceVersion": str(rv0),
                                                            "timeoutSeconds": "5"}, stream=True, timeout=10)
        for line in r.iter_lines():
            if line:
                ev = json.loads(line)
                events.append((ev["type"], ev["object"]["metadata"]["name"], len(addrs(ev["object"]))))
                if ev["type"] == "DELETED":
                    break
        r.close()

    t = threading.Thread(target=watcher)
    t.start()
    time.sleep(0.2)
    svc = service("api", {"app": "api"}, [{"port": 80, "targetPort": 8080}])
    code, s = kube.post(SVC.format(ns=ns), svc)
    assert code == 201
    assert kube.post(DEP.format(ns=ns), deployment("api", replicas=1))[0] == 201
    ep = kube.wait(EP.format(ns=ns) + "/api", lambda c, o: c == 200 and len(addrs(o)) == 1, timeout=5)
    assert ep["subsets"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]  # an unnamed port has no name
    sl = kube.wait(EPS.format(ns=ns), lambda c, o: len(o["items"]) == 1
                   and (o["items"][0]["endpoints"] or [{}])[0].get("conditions", {}).get("ready"), timeout=5)["items"][0]
    assert sl["ports"] == [{"name": "", "protocol": "TCP", "port": 8080}]
    # settled: nothing is written again
    time.sleep(0.5)
    assert kube.get(EP.format(ns=ns) + "/api")[1]["metadata"]["resourceVersion"] == ep["metadata"]["resourceVersion"]
    assert slices(kube, ns, "api")[0]["metadata"]["resourceVersion"] == sl["metadata"]["resourceVersion"]
    # deleting the Service deletes its Endpoints; its slices are garbage collected (ownerReference)
    assert kube.delete(SVC.format(ns=ns) + "/api")[0] == 200
    kube.wait(EP.format(ns=ns) + "/api", lambda c, o: c == 404, timeout=5)
    kube.wait(EPS.format(ns=ns), lambda c, o: o["items"] == [], timeout=5)
    t.join(timeout=10)
    assert events[0] == ("ADDED", "api", 0)
    assert ("MODIFIED", "api", 1) in events
    assert events[-1][0] == "DELETED"


def test_unresolvable_port_and_selectorless_service(kube, ns):
    assert kube.post(DEP.format(ns=ns), deployment("w", replicas=1))[0] == 201
    # a named targetPort no container declares: the pod is in no Endpoints subset, but in a slice without ports
    svc = service("w", {"app": "w"}, [{"name": "grpc", "port": 81, "targetPort": "grpc"}])
    assert kube.post(SVC.format(ns=ns), svc)[0] == 201
    sl = kube.wait(EPS.format(ns=ns), lambda c, o: len(o["items"]) == 1 and o["items"][0]["endpoints"]
                   and o["items"][0]["endpoints"][0]["conditions"]["ready"], timeout=5)["items"][0]
    assert sl["ports"] is None
    assert "subsets" not in kube.get(EP.format(ns=ns) + "/w")[1]
    # a Service without selector is left alone, and so are the Endpoints its user writes
    manual = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"}, "spec": {"ports": [{"port": 5432}]}}
    assert kube.post(SVC.format(ns=ns), manual)[0] == 201
    time.sleep(0.3)
    assert kube.get(EP.format(ns=ns) + "/ext")[0] == 404
    assert slices(kube, ns, "ext") == []
    code, ep = kube.post(EP.format(ns=ns), {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext"},
                                           "subsets": [{"addresses": [{"ip": "192.168.1.5"}],
                                                        "ports": [{"port": 5432}]}]})
    assert code == 201, ep
    time.sleep(0.3)
    assert kube.get(EP.format(ns=ns) + "/ext")[1]["metadata"]["resourceVersion"] == ep["metadata"]["resourceVersion"]
