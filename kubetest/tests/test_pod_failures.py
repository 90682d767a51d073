"""Pods failing as real ones do: crashing, unready and unschedulable ones (with unpullable images in
test_controllers.py), set through /_kubetest/config or the launcher's flags; and the rolling update keeping
the old Pods while the new ones are not ready."""

from __future__ import annotations

import re
import time

import requests

from conftest import DEP, ROOT, TOKEN, Kube, deployment, start, stop

PODS = "/api/v1/namespaces/{ns}/pods"


def conds(o):
    return {c["type"]: c for c in (o.get("status") or {}).get("conditions") or []}


def pods(kube, ns, sel="app=web"):
    return kube.get(PODS.format(ns=ns), params={"labelSelector": sel})[1]["items"]


def test_crashing_image_crash_loops_and_fails_the_rollout(kube, ns):
    kube.config(crashing_images=["registry.example/crash:*"])  # a prefix
    try:
        d = deployment("web", image="registry.example/crash:1", replicas=1)
        d["spec"]["progressDeadlineSeconds"] = 200  # x 0.005: 1 s
        assert kube.post(DEP.format(ns=ns), d)[0] == 201
        out = kube.wait(DEP.format(ns=ns) + "/web",
                        lambda c, o: conds(o).get("Progressing", {}).get("status") == "False", timeout=10)
        assert conds(out)["Progressing"]["reason"] == "ProgressDeadlineExceeded"
        p = pods(kube, ns)[0]
        cs = p["status"]["containerStatuses"][0]
        assert p["status"]["phase"] == "Running"
        assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert re.fullmatch(rf"back-off (10s|20s|40s|1m20s|2m40s|5m0s) restarting failed container=app "
                            rf"pod={p['metadata']['name']}_{ns}\({p['metadata']['uid']}\)",
                            cs["state"]["waiting"]["message"]), cs
        assert cs["ready"] is False and cs["started"] is False
        term = cs["lastState"]["terminated"]
        assert (term["exitCode"], term["reason"]) == (1, "Error")
        first = cs["restartCount"]
        assert first >= 1
        # the back-off (10 s, 20 s, ... x 0.005) restarts it again and again
        p = kube.wait(PODS.format(ns=ns) + "/" + p["metadata"]["name"],
                      lambda c, o: o["status"]["containerStatuses"][0]["restartCount"] > first, timeout=5)
        r = conds(p)["Ready"]
        assert (r["status"], r["reason"], r["message"]) == ("False", "ContainersNotReady",
                                                            "containers with unready status: [app]")
        assert conds(p)["ContainersReady"]["status"] == "False"
        ev = kube.get(f"/api/v1/namespaces/{ns}/events")[1]["items"]
        assert any(e["reason"] == "BackOff" and e["involvedObject"]["name"] == p["metadata"]["name"] for e in ev)
        r = kube.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=10s", check=False)
        assert r.returncode != 0 and "exceeded its progress deadline" in r.stderr
    finally:
        kube.config(crashing_images=[])


def test_unready_image_runs_without_becoming_ready(kube, ns):
    kube.config(unready_images=["*/unready@sha256:0123"])  # a suffix, as of an image pinned by digest
    try:
        assert kube.post(DEP.format(ns=ns), deployment("web", image="registry.example/unready@sha256:0123",
                                                      replicas=1))[0] == 201
        p = kube.wait(PODS.format(ns=ns), lambda c, o: o["items"] and o["items"][0]["status"].get("phase") == "Running",
                      timeout=5)["items"][0]
        cs = p["status"]["containerStatuses"][0]
        assert "running" in cs["state"] and cs["ready"] is False and cs["started"] is True
        assert p["status"]["podIP"]
        r = conds(p)["Ready"]
        assert (r["status"], r["reason"]) == ("False", "ContainersNotReady")
        ev = kube.wait(f"/api/v1/namespaces/{ns}/events", lambda c, o: o["items"], timeout=5)["items"]
        e = ev[0]
        assert (e["reason"], e["type"], e["message"]) == (
            "Unhealthy", "Warning", "Readiness probe failed: HTTP probe failed with statuscode: 503")
        assert e["involvedObject"]["kind"] == "Pod" and e["involvedObject"]["name"] == p["metadata"]["name"]
        assert e["involvedObject"]["fieldPath"] == "spec.containers{app}" and e["source"]["component"] == "kubelet"
        r = kube.kubectl("get", "events", "-n", ns)
        assert "Readiness probe failed" in r.stdout
        # the Endpoints list it as not ready; the Deployment does not count it
        d = kube.get(DEP.format(ns=ns) + "/web")[1]
        assert not d["status"].get("readyReplicas") and d["status"]["unavailableReplicas"] == 1
    finally:
        kube.config(unready_images=[])
    # the probe passes again: Ready, the rollout completes
    kube.wait(DEP.format(ns=ns) + "/web", lambda c, o: conds(o)["Progressing"]["reason"] == "NewReplicaSetAvailable",
              timeout=5)


def test_unschedulable_namespace_keeps_pods_pending(kube, ns):
    kube.config(unschedulable_namespaces=[ns])
    try:
        assert kube.post(DEP.format(ns=ns), deployment("web", replicas=2))[0] == 201
        kube.wait(PODS.format(ns=ns), lambda c, o: len(o["items"]) == 2
                  and all(conds(p).get("PodScheduled") for p in o["items"]), timeout=5)
        time.sleep(0.5)
        for p in pods(kube, ns):
            st = p["status"]
            assert st["phase"] == "Pending" and "podIP" not in st and "nodeName" not in p["spec"]
            assert "containerStatuses" not in st
            sched = conds(p)["PodScheduled"]
            assert (sched["status"], sched["reason"], sched["message"]) == (
                "False", "Unschedulable", "0/0 nodes are available: no nodes available to schedule pods.")
        ep = kube.get(f"/api/v1/namespaces/{ns}/endpoints")[1]["items"]
        assert not ep
    finally:
        kube.config(unschedulable_namespaces=[])
    # nodes again: scheduled, then running
    kube.wait(DEP.format(ns=ns) + "/web", lambda c, o: (o["status"].get("availableReplicas") or 0) == 2, timeout=5)
    assert all(p["spec"].get("nodeName") and p["status"]["podIP"] for p in pods(kube, ns))


def test_a_rollout_keeps_the_old_pods_until_the_new_ones_are_ready(kube, ns):
    base = DEP.format(ns=ns)
    assert kube.post(f"/api/v1/namespaces/{ns}/services", {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})[0] == 201
    assert kube.post(base, deployment("web", replicas=2))[0] == 201
    kube.wait(base + "/web", lambda c, o: conds(o).get("Progressing", {}).get("reason") == "NewReplicaSetAvailable")
    old = {p["metadata"]["name"] for p in pods(kube, ns)}
    kube.config(unready_images=["nginx:1.28"])
    try:
        kube.patch(base + "/web", {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}}}},
                   ctype="application/strategic-merge-patch+json")
        d = kube.wait(base + "/web", lambda c, o: o["status"].get("updatedReplicas") == 2
                      and o["status"].get("observedGeneration") == 2, timeout=5)
        time.sleep(0.6)  # past deployment_delay: the new containers run, unready
        d = kube.get(base + "/web")[1]
        st = d["status"]
        assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"], st["availableReplicas"],
                st["unavailableReplicas"]) == (4, 2, 2, 2, 2)
        assert conds(d)["Available"]["status"] == "True"
        assert conds(d)["Progressing"]["reason"] == "ReplicaSetUpdated"
        now = pods(kube, ns)
        assert old <= {p["metadata"]["name"] for p in now} and len(now) == 4
        assert all(conds(p)["Ready"]["status"] == "True" for p in now if p["metadata"]["name"] in old)
        rs = kube.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")[1]["items"]
        assert sorted((r["spec"]["replicas"], r["status"].get("readyReplicas", 0)) for r in rs) == [(2, 0), (2, 2)]
        # the Service still serves the old pods; the new ones are not-ready addresses
        ep = kube.wait(f"/api/v1/namespaces/{ns}/endpoints/web", lambda c, o: c == 200 and len(
            [a for ss in o.get("subsets") or [] for a in ss.get("notReadyAddresses") or []]) == 2)
        ready = {a["targetRef"]["name"] for ss in ep["subsets"] for a in ss.get("addresses") or []}
        assert ready == old
    finally:
        kube.config(unready_images=[])
    d = kube.wait(base + "/web", lambda c, o: conds(o)["Progressing"]["reason"] == "NewReplicaSetAvailable", timeout=5)
    assert (d["status"]["replicas"], d["status"]["availableReplicas"]) == (2, 2)
    assert not ({p["metadata"]["name"] for p in pods(kube, ns)} & old)
    rs = kube.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")[1]["items"]
    assert sorted(r["spec"]["replicas"] for r in rs) == [0, 2]


def test_config_endpoint_checks_keys_types_and_authentication(kube):
    code, out = kube.post("/_kubetest/config", {"crashing_image": ["x"]})
    assert code == 400 and "unknown config keys" in out["message"]
    for bad in ({"crashing_images": "x"}, {"unready_images": [1]}, {"deployment_delay": "1"}, {"_ca_pem": "x"}):
        code, out = kube.post("/_kubetest/config", bad)
        assert code == 400, (bad, out)
    cfg = kube.get("/_kubetest/config")[1]
    assert cfg["crashing_images"] == cfg["unready_images"] == cfg["unschedulable_namespaces"] == []
    r = requests.post(kube.url + "/_kubetest/config", json={"crashing_images": ["x"]}, verify=kube.ca, timeout=10)
    assert r.status_code == 401
    assert kube.get("/_kubetest/config")[1]["crashing_images"] == []
    # kubectl can post it (slipway's tests do: kubectl create --raw)
    r = kube.kubectl("create", "--raw", "/_kubetest/config", "-f", "-", input='{"unschedulable_namespaces": ["zz"]}')
    assert '"unschedulable_namespaces":["zz"]' in r.stdout.replace(" ", "")
    kube.config(unschedulable_namespaces=[])


def test_failure_flags(tmp_path):
    p, url = start([str(ROOT / "kubetest" / "launch"), "--ca-file", str(tmp_path / "ca"), "--token", TOKEN,
                    "--crashing-image", "a:1", "--crashing-image", "b:*", "--unready-image", "c@sha256:1",
                    "--unschedulable-namespace", "pending", "--unpullable-image", "d"])
    try:
        cfg = Kube(url, str(tmp_path / "ca"), "").get("/_kubetest/config")[1]
        assert (cfg["crashing_images"], cfg["unready_images"], cfg["unschedulable_namespaces"],
                cfg["unpullable_images"]) == (["a:1", "b:*"], ["c@sha256:1"], ["pending"], ["d"])
    finally:
        stop(p)
