"""The controllers slipway waits on: Deployment rollouts and the ALB ingress controller (with the local AWS)."""

from __future__ import annotations

import time

from conftest import deployment, elb_tags

DEP = "/apis/apps/v1/namespaces/{ns}/deployments"
ING = "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses"


def conds(d):
    return {c["type"]: c for c in (d.get("status") or {}).get("conditions") or []}


def test_deployment_status_progression(kube, ns):
    base = DEP.format(ns=ns)
    kube.config(deployment_delay=0.6)
    try:
        code, d = kube.post(base, deployment("web", replicas=3))
        assert code == 201
        mid = kube.wait(base + "/web", lambda c, o: (o.get("status") or {}).get("observedGeneration") == 1, timeout=5)
        st = mid["status"]
        if "availableReplicas" not in st:  # still rolling out
            assert st["updatedReplicas"] == 3 and st["replicas"] == 3
            assert conds(mid)["Progressing"]["reason"] == "ReplicaSetUpdated"
            assert conds(mid)["Available"]["status"] == "False"
        done = kube.wait(base + "/web", lambda c, o: conds(o).get("Progressing", {}).get("reason") == "NewReplicaSetAvailable",
                         timeout=5)
        st = done["status"]
        assert st["observedGeneration"] == 1
        assert st["replicas"] == st["updatedReplicas"] == st["readyReplicas"] == st["availableReplicas"] == 3
        assert conds(done)["Available"]["status"] == "True"
        assert conds(done)["Available"]["reason"] == "MinimumReplicasAvailable"
        assert conds(done)["Progressing"]["status"] == "True"
        assert conds(done)["Progressing"]["message"].startswith('ReplicaSet "web-')
        pods = kube.get(f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": "app=web"})[1]["items"]
        assert len(pods) == 3 and all(p["status"]["phase"] == "Running" for p in pods)
        # a new generation goes through the same progression
        code, d = kube.patch(base + "/web", {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "nginx:1.28"}]}}}}, ctype="application/strategic-merge-patch+json")
        assert d["metadata"]["generation"] == 2
        kube.wait(base + "/web", lambda c, o: o["status"].get("observedGeneration") == 2
                  and conds(o)["Progressing"]["reason"] == "NewReplicaSetAvailable", timeout=5)
        rs = kube.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")[1]["items"]
        assert sorted(r["spec"]["replicas"] for r in rs) == [0, 3]
    finally:
        kube.config(deployment_delay=0.3)


def test_unpullable_image_fails_the_rollout(kube, ns):
    base = DEP.format(ns=ns)
    kube.config(unpullable_images=["registry.example/bad:1"])
    try:
        d = deployment("bad", image="registry.example/bad:1", replicas=1)
        d["spec"]["progressDeadlineSeconds"] = 120  # x time_scale 0.005 = 0.6 s
        assert kube.post(base, d)[0] == 201
        out = kube.wait(base + "/bad", lambda c, o: conds(o).get("Progressing", {}).get("status") == "False", timeout=8)
        p = conds(out)["Progressing"]
        assert p["reason"] == "ProgressDeadlineExceeded"
        assert p["message"].endswith("has timed out progressing.")
        assert conds(out)["Available"]["status"] == "False"
        assert not out["status"].get("availableReplicas")
        pods = kube.get(f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": "app=bad"})[1]["items"]
        assert len(pods) == 1
        waiting = pods[0]["status"]["containerStatuses"][0]["state"]["waiting"]
        assert waiting["reason"] in ("ImagePullBackOff", "ErrImagePull")
        r = kube.kubectl("rollout", "status", "-n", ns, "deployment/bad", "--timeout=10s", check=False)
        assert r.returncode != 0 and "exceeded its progress deadline" in r.stderr
    finally:
        kube.config(unpullable_images=[])


def _alb_for(elb, stack):
    lbs = elb.describe_load_balancers()["LoadBalancers"]
    if not lbs:
        return None
    for td in elb_tags(elb, [lb["LoadBalancerArn"] for lb in lbs]):
        tags = {t["Key"]: t["Value"] for t in td["Tags"]}
        if tags.get("ingress.k8s.aws/stack") == stack:
            lb = next(lb for lb in lbs if lb["LoadBalancerArn"] == td["ResourceArn"])
            return lb, tags
    return None


def test_alb_ingress(kube, ns, aws):
    base = ING.format(ns=ns)
    ing = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "web", "annotations": {"alb.ingress.kubernetes.io/scheme": "internet-facing"}},
           "spec": {"ingressClassName": "alb", "rules": [{"http": {"paths": [{
               "path": "/", "pathType": "Prefix",
               "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}
    assert kube.post(base, ing)[0] == 201
    out = kube.wait(base + "/web", lambda c, o: ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress"),
                    timeout=15)
    assert "ingress.k8s.aws/resources" in out["metadata"]["finalizers"]
    host = out["status"]["loadBalancer"]["ingress"][0]["hostname"]
    found = _alb_for(aws, f"{ns}/web")
    assert found, "no ALB with the controller's stack tag"
    lb, tags = found
    assert lb["DNSName"] == host and lb["Type"] == "application" and lb["Scheme"] == "internet-facing"
    assert tags["elbv2.k8s.aws/cluster"] == "smallcase"
    assert tags["ingress.k8s.aws/resource"] == "LoadBalancer"
    # a non-ALB ingress is left alone
    other = dict(ing, metadata={"name": "nginx"}, spec=dict(ing["spec"], ingressClassName="nginx"))
    assert kube.post(base, other)[0] == 201
    # delete: the ALB goes, then the finalizer, then the Ingress
    code, out = kube.delete(base + "/web")
    assert code == 200 and out["metadata"]["deletionTimestamp"]
    kube.wait(base + "/web", lambda c, o: c == 404, timeout=15)
    assert _alb_for(aws, f"{ns}/web") is None
    time.sleep(0.3)
    code, n = kube.get(base + "/nginx")
    assert not n["metadata"].get("finalizers") and not (n.get("status") or {}).get("loadBalancer", {}).get("ingress")


def test_alb_ingress_group_shares_one_alb(kube, ns, aws):
    base = ING.format(ns=ns)
    group = f"g{ns[-8:]}"

    def ing(name):
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": name, "annotations": {"alb.ingress.kubernetes.io/group.name": group}},
                "spec": {"ingressClassName": "alb", "defaultBackend": {
                    "service": {"name": name, "port": {"number": 80}}}}}

    def host(o):
        return ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress")

    for n in ("a", "b"):
        assert kube.post(base, ing(n))[0] == 201
    a = kube.wait(base + "/a", lambda c, o: host(o), timeout=15)
    b = kube.wait(base + "/b", lambda c, o: host(o), timeout=15)
    assert host(a) == host(b)
    lb, tags = _alb_for(aws, group)
    assert tags["ingress.k8s.aws/stack"] == group and lb["LoadBalancerName"].startswith(f"k8s-{group}-")
    kube.delete(base + "/a")
    kube.wait(base + "/a", lambda c, o: c == 404, timeout=15)
    assert _alb_for(aws, group) is not None  # b still uses it
    kube.delete(base + "/b")
    kube.wait(base + "/b", lambda c, o: c == 404, timeout=15)
    assert _alb_for(aws, group) is None


def test_without_the_controller_nothing_acts_on_ingresses(kube, ns, aws, controller):
    code, _ = kube.delete(controller)
    assert code == 200
    kube.wait(controller, lambda c, o: c == 404, timeout=10)
    base = ING.format(ns=ns)
    ing = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "idle"},
           "spec": {"ingressClassName": "alb", "defaultBackend": {"service": {"name": "idle", "port": {"number": 80}}}}}
    code, _ = kube.post(base, ing)
    assert code == 201
    time.sleep(1.5)
    code, got = kube.get(base + "/idle")
    assert "ingress.k8s.aws/resources" not in (got["metadata"].get("finalizers") or [])
    assert _alb_for(aws, f"{ns}/idle") is None
    # The controller comes back and catches up.
    code, _ = kube.post(DEP.format(ns="kube-system"), deployment("aws-load-balancer-controller", replicas=1))
    assert code == 201
    kube.wait(base + "/idle", lambda c, o: ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress"),
              timeout=15)
    assert _alb_for(aws, f"{ns}/idle") is not None
    kube.delete(base + "/idle")
    kube.wait(base + "/idle", lambda c, o: c == 404, timeout=15)
    assert _alb_for(aws, f"{ns}/idle") is None
