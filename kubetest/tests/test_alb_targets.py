"""The ALB controller's target groups, listener, TargetGroupBindings, target registration and pod readiness
gates, against the local AWS (its target health model: initial -> healthy / unhealthy, draining)."""

from __future__ import annotations

import re
import time

from conftest import (DEP, elb_tags, ROOT, TGB_CRD, TOKEN, Kube, aws_clients, deployment, realism, start, stop,
                      tagged_subnets)

ING = "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses"
SVC = "/api/v1/namespaces/{ns}/services"
PODS = "/api/v1/namespaces/{ns}/pods"
TGB = "/apis/elbv2.k8s.aws/v1beta1/namespaces/{ns}/targetgroupbindings"
GATE = "target-health.elbv2.k8s.aws/"


def ingress(name, paths, default=None, annotations=None):
    spec = {"ingressClassName": "alb", "rules": [{"http": {"paths": [
        {"path": p, "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": port}}}}
        for p, svc, port in paths]}}]}
    if default:
        spec["defaultBackend"] = {"service": {"name": default[0], "port": {"number": default[1]}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "annotations": {"alb.ingress.kubernetes.io/target-type": "ip",
                                                       **(annotations or {})}},
            "spec": spec}


def service(name, port=80, target=8080, selector=None):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector or {"app": name}, "ports": [{"port": port, "targetPort": target}]}}


def stack_tgs(elb, stack):
    """ingress.k8s.aws/resource -> (target group, tags) of the target groups tagged as the stack's."""
    tgs = {tg["TargetGroupArn"]: tg for tg in elb.describe_target_groups()["TargetGroups"]}
    out, arns = {}, list(tgs)
    for i in range(0, len(arns), 20):
        for td in elb_tags(elb, arns[i:i + 20]):
            tags = {t["Key"]: t["Value"] for t in td["Tags"]}
            if tags.get("ingress.k8s.aws/stack") == stack:
                out[tags["ingress.k8s.aws/resource"]] = (tgs[td["ResourceArn"]], tags)
    return out


def stack_lb(elb, stack):
    lbs = elb.describe_load_balancers()["LoadBalancers"]
    for i in range(0, len(lbs), 20):
        for td in elb_tags(elb, [lb["LoadBalancerArn"] for lb in lbs[i:i + 20]]):
            if {t["Key"]: t["Value"] for t in td["Tags"]}.get("ingress.k8s.aws/stack") == stack:
                return next(lb for lb in lbs if lb["LoadBalancerArn"] == td["ResourceArn"])
    return None


def health(elb, arn):
    return {d["Target"]["Id"]: d["TargetHealth"]["State"]
            for d in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]}


def pods(kube, ns, sel):
    return kube.get(PODS.format(ns=ns), params={"labelSelector": sel})[1]["items"]


def cond(obj, typ):
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == typ), {})


def wait_for(fn, pred, timeout=15.0, interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if pred(last):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out; last: {last!r}")


def labelled_namespace(kube):
    ns = kube.namespace()
    code, out = kube.patch(f"/api/v1/namespaces/{ns}",
                           {"metadata": {"labels": {"elbv2.k8s.aws/pod-readiness-gate-inject": "enabled"}}})
    assert code == 200, out
    return ns


def bindings(kube, ns):
    code, out = kube.get(TGB.format(ns=ns))
    assert code == 200, out
    return out["items"]


def test_target_groups_listener_bindings_and_targets(kube, ns, aws, tgb_crd):
    elb = aws
    stack = f"{ns}/web"
    api = service("api", port=8080, target="http")
    assert kube.post(SVC.format(ns=ns), service("web"))[0] == 201
    assert kube.post(SVC.format(ns=ns), api)[0] == 201
    d = deployment("web", replicas=2)
    assert kube.post(DEP.format(ns=ns), d)[0] == 201
    a = deployment("api", replicas=1)
    a["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 9000}]
    assert kube.post(DEP.format(ns=ns), a)[0] == 201
    kube.wait(DEP.format(ns=ns) + "/api", lambda c, o: (o.get("status") or {}).get("availableReplicas") == 1)
    assert kube.post(ING.format(ns=ns), ingress("web", [("/", "web", 80), ("/api", "api", 8080)]))[0] == 201
    kube.wait(ING.format(ns=ns) + "/web", lambda c, o: ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress"))
    lb = stack_lb(elb, stack)
    assert lb is not None
    # one ip target group per backend, in the ALB's VPC, tagged as the controller tags them
    tgs = wait_for(lambda: stack_tgs(elb, stack), lambda t: len(t) == 2)
    assert set(tgs) == {f"{ns}/web-web:80", f"{ns}/web-api:8080"}
    web, tags = tgs[f"{ns}/web-web:80"]
    assert tags == {"elbv2.k8s.aws/cluster": "smallcase", "ingress.k8s.aws/stack": stack,
                    "ingress.k8s.aws/resource": f"{ns}/web-web:80"}
    assert (web["TargetType"], web["Protocol"], web["Port"], web["VpcId"]) == ("ip", "HTTP", 8080, lb["VpcId"])
    assert (web["HealthCheckPath"], web["HealthCheckIntervalSeconds"], web["HealthyThresholdCount"]) == ("/", 15, 2)
    assert re.fullmatch(rf"k8s-{ns.replace('-', '')[:8]}-web-[0-9a-f]{{10}}", web["TargetGroupName"])
    assert tgs[f"{ns}/web-api:8080"][0]["Port"] == 9000  # the named targetPort, resolved
    # a port-80 listener forwarding to the first target group
    listeners = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert [(x["Port"], x["Protocol"]) for x in listeners] == [(80, "HTTP")]
    assert listeners[0]["DefaultActions"][0]["Type"] == "forward"
    assert listeners[0]["DefaultActions"][0]["TargetGroupArn"] == web["TargetGroupArn"]
    # a TargetGroupBinding per target group, named like it
    tgb = wait_for(lambda: bindings(kube, ns), lambda b: len(b) == 2)
    by_arn = {b["spec"]["targetGroupARN"]: b for b in tgb}
    b = by_arn[web["TargetGroupArn"]]
    assert b["metadata"]["name"] == web["TargetGroupName"]
    assert b["spec"]["serviceRef"] == {"name": "web", "port": 80} and b["spec"]["targetType"] == "ip"
    assert b["metadata"]["labels"] == {"ingress.k8s.aws/stack-namespace": ns, "ingress.k8s.aws/stack-name": "web"}
    assert b["metadata"]["finalizers"] == ["elbv2.k8s.aws/resources"]
    b = kube.wait(TGB.format(ns=ns) + "/" + b["metadata"]["name"], lambda c, o: (o.get("status") or {}).get("observedGeneration") == 1)
    assert by_arn[tgs[f"{ns}/web-api:8080"][0]["TargetGroupArn"]]["spec"]["serviceRef"] == {"name": "api", "port": 8080}
    # the ready pods are registered by IP (with their container port) and turn healthy
    ips = sorted(p["status"]["podIP"] for p in pods(kube, ns, "app=web"))
    wait_for(lambda: health(elb, web["TargetGroupArn"]), lambda h: h == {ip: "healthy" for ip in ips})
    ports = {d["Target"]["Port"] for d in elb.describe_target_health(TargetGroupArn=web["TargetGroupArn"])["TargetHealthDescriptions"]}
    assert ports == {8080}
    api_tg = tgs[f"{ns}/web-api:8080"][0]["TargetGroupArn"]
    api_ip = pods(kube, ns, "app=api")[0]["status"]["podIP"]
    wait_for(lambda: elb.describe_target_health(TargetGroupArn=api_tg)["TargetHealthDescriptions"],
             lambda h: [(x["Target"]["Id"], x["Target"]["Port"]) for x in h] == [(api_ip, 9000)])
    # scaled down: the removed pod's IP is deregistered (draining, then gone)
    kube.patch(DEP.format(ns=ns) + "/web", {"spec": {"replicas": 1}})
    left = wait_for(lambda: pods(kube, ns, "app=web"), lambda p: len(p) == 1)[0]["status"]["podIP"]
    gone = next(ip for ip in ips if ip != left)
    wait_for(lambda: health(elb, web["TargetGroupArn"]), lambda h: h.get(gone) in ("draining", None) and h.get(left) == "healthy")
    wait_for(lambda: health(elb, web["TargetGroupArn"]), lambda h: h == {left: "healthy"})
    # idempotent: a binding deleted behind the controller's back comes back; nothing is duplicated
    code, _ = kube.delete(TGB.format(ns=ns) + "/" + b["metadata"]["name"])
    assert code == 200
    again = wait_for(lambda: bindings(kube, ns), lambda x: len(x) == 2 and all(not y["metadata"].get("deletionTimestamp") for y in x)
                     and web["TargetGroupArn"] in {y["spec"]["targetGroupARN"] for y in x})
    assert len(again) == 2
    time.sleep(0.5)
    assert len(stack_tgs(elb, stack)) == 2
    assert len(elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]) == 1
    # a backend dropped from the Ingress: its target group and binding go
    kube.put(ING.format(ns=ns) + "/web", dict(ingress("web", [("/", "web", 80)]),
                                             metadata=kube.get(ING.format(ns=ns) + "/web")[1]["metadata"]))
    wait_for(lambda: stack_tgs(elb, stack), lambda t: set(t) == {f"{ns}/web-web:80"})
    wait_for(lambda: bindings(kube, ns), lambda x: [y["spec"]["serviceRef"]["name"] for y in x] == ["web"])
    # deleted: listener, target groups, bindings, then the ALB
    kube.delete(ING.format(ns=ns) + "/web")
    kube.wait(ING.format(ns=ns) + "/web", lambda c, o: c == 404, timeout=15)
    assert stack_tgs(elb, stack) == {}
    assert stack_lb(elb, stack) is None
    wait_for(lambda: bindings(kube, ns), lambda x: x == [])


def test_readiness_gates_hold_the_rollout_until_targets_are_healthy(kube, localaws, aws, tgb_crd):
    elb = aws
    ns = labelled_namespace(kube)
    before = realism(localaws, {"durations": {"elbv2_target_healthy": 1200}})  # x 0.001: initial for 1.2 s
    try:
        assert kube.post(SVC.format(ns=ns), service("web"))[0] == 201
        assert kube.post(ING.format(ns=ns), ingress("web", [("/", "web", 80)]))[0] == 201
        tgb = wait_for(lambda: bindings(kube, ns), lambda b: len(b) == 1)[0]
        gate = GATE + tgb["metadata"]["name"]
        arn = tgb["spec"]["targetGroupARN"]
        # the webhook acts on every pod created: one the Service selects gets the gate, one that opts out
        # (label elbv2.k8s.aws/pod-readiness-gate-inject=disabled) or that the Service does not select does not
        def pod(name, labels):
            code, out = kube.post(PODS.format(ns=ns), {"metadata": {"name": name, "labels": labels},
                                                       "spec": {"containers": [{"name": "app", "image": "nginx"}]}})
            assert code == 201, out
            return out["spec"].get("readinessGates")

        assert pod("bare", {"app": "web", "role": "bare"}) == [{"conditionType": gate}]
        assert pod("optout", {"app": "web", "role": "bare", "elbv2.k8s.aws/pod-readiness-gate-inject": "disabled"}) is None
        assert pod("unselected", {"app": "nope"}) is None
        for name in ("bare", "optout", "unselected"):
            assert kube.delete(PODS.format(ns=ns) + "/" + name)[0] == 200
        other = deployment("other", replicas=1)
        assert kube.post(DEP.format(ns=ns), other)[0] == 201
        t0 = time.monotonic()
        assert kube.post(DEP.format(ns=ns), deployment("web", replicas=2))[0] == 201
        ps = wait_for(lambda: pods(kube, ns, "app=web"), lambda p: len(p) == 2)
        assert all(p["spec"]["readinessGates"] == [{"conditionType": gate}] for p in ps)
        assert "readinessGates" not in pods(kube, ns, "app=other")[0]["spec"]
        # containers ready, registered, target initial: the gate is False, so is Ready
        ps = wait_for(lambda: pods(kube, ns, "app=web"), lambda p: all(
            cond(x, gate).get("status") == "False" and "but False" in cond(x, "Ready").get("message", "") for x in p))
        for p in ps:
            assert cond(p, "ContainersReady")["status"] == "True"
            assert cond(p, gate)["reason"] == "Elb.RegistrationInProgress"
            assert cond(p, gate)["message"] == "Target registration is in progress"
            r = cond(p, "Ready")
            assert (r["status"], r["reason"]) == ("False", "ReadinessGatesNotReady")
            assert r["message"] == f'the status of pod readiness gate "{gate}" is not "True", but False'
        assert set(health(elb, arn).values()) == {"initial"}
        d = kube.get(DEP.format(ns=ns) + "/web")[1]
        assert not d["status"].get("availableReplicas") and cond(d, "Progressing")["reason"] == "ReplicaSetUpdated"
        ep = kube.get(f"/api/v1/namespaces/{ns}/endpoints/web")[1]
        assert not any(ss.get("addresses") for ss in ep.get("subsets") or [])
        # healthy: the gates turn True, the pods Ready, the rollout completes
        d = kube.wait(DEP.format(ns=ns) + "/web",
                      lambda c, o: cond(o, "Progressing").get("reason") == "NewReplicaSetAvailable", timeout=10)
        assert time.monotonic() - t0 >= 1.0
        assert d["status"]["availableReplicas"] == d["status"]["readyReplicas"] == 2
        assert set(health(elb, arn).values()) == {"healthy"}
        for p in pods(kube, ns, "app=web"):
            g = cond(p, gate)
            assert (g["status"], g["lastProbeTime"]) == ("True", None) and "reason" not in g
            assert cond(p, "Ready")["status"] == "True"
        r = kube.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=10s")
        assert "successfully rolled out" in r.stdout
    finally:
        realism(localaws, before)


def test_unhealthy_targets_fail_the_rollout_and_the_old_pods_keep_serving(kube, localaws, aws, tgb_crd):
    elb = aws
    ns = labelled_namespace(kube)
    assert kube.post(SVC.format(ns=ns), service("web"))[0] == 201
    assert kube.post(ING.format(ns=ns), ingress("web", [("/", "web", 80)]))[0] == 201
    tgb = wait_for(lambda: bindings(kube, ns), lambda b: len(b) == 1)[0]
    gate, arn = GATE + tgb["metadata"]["name"], tgb["spec"]["targetGroupARN"]
    d = deployment("web", replicas=2)
    d["spec"]["progressDeadlineSeconds"] = 600  # x 0.005: 3 s without progress
    assert kube.post(DEP.format(ns=ns), d)[0] == 201
    kube.wait(DEP.format(ns=ns) + "/web", lambda c, o: cond(o, "Progressing").get("reason") == "NewReplicaSetAvailable")
    old = sorted(p["status"]["podIP"] for p in pods(kube, ns, "app=web"))
    before = realism(localaws, {"durations": {"elbv2_target_healthy": 1000}})
    kube.config(deployment_delay=0.6)
    try:
        kube.patch(DEP.format(ns=ns) + "/web", {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "nginx:1.28"}]}}}}, ctype="application/strategic-merge-patch+json")
        new = wait_for(lambda: [p for p in pods(kube, ns, "app=web") if p["spec"]["containers"][0]["image"] == "nginx:1.28"
                                and (p.get("status") or {}).get("podIP")], lambda p: len(p) == 2)
        new_ips = sorted(p["status"]["podIP"] for p in new)
        realism(localaws, {"unhealthy_targets": new_ips})
        out = kube.wait(DEP.format(ns=ns) + "/web", lambda c, o: cond(o, "Progressing").get("status") == "False",
                        timeout=15)
        assert cond(out, "Progressing")["reason"] == "ProgressDeadlineExceeded"
        assert cond(out, "Available")["status"] == "True"  # the old pods
        st = out["status"]
        assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"], st["availableReplicas"]) == (4, 2, 2, 2)
        h = health(elb, arn)
        assert {ip: h[ip] for ip in old} == {ip: "healthy" for ip in old}
        assert {ip: h[ip] for ip in new_ips} == {ip: "unhealthy" for ip in new_ips}
        for p in pods(kube, ns, "app=web"):
            if p["status"]["podIP"] in new_ips:
                g = cond(p, gate)
                assert (g["status"], g["reason"], g["message"]) == (
                    "False", "Target.ResponseCodeMismatch", "Health checks failed with these codes: [503]")
                assert cond(p, "Ready")["status"] == "False" and cond(p, "ContainersReady")["status"] == "True"
            else:
                assert cond(p, "Ready")["status"] == "True"
        r = kube.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=10s", check=False)
        assert r.returncode != 0 and "exceeded its progress deadline" in r.stderr
        # healthy after all: the rollout finishes, the old pods go and their targets drain
        realism(localaws, {"unhealthy_targets": []})
        kube.wait(DEP.format(ns=ns) + "/web", lambda c, o: cond(o, "Progressing").get("reason") == "NewReplicaSetAvailable",
                  timeout=15)
        assert sorted(p["status"]["podIP"] for p in pods(kube, ns, "app=web")) == new_ips
        h = health(elb, arn)
        assert {ip: h[ip] for ip in new_ips} == {ip: "healthy" for ip in new_ips}
        assert all(h.get(ip) in ("draining", None) for ip in old)
    finally:
        realism(localaws, before)
        kube.config(deployment_delay=0.3)


def test_without_the_crd_the_aws_objects_are_made_and_a_restart_finds_them(localaws, tmp_path):
    """A server of its own (no TargetGroupBinding CRD): target groups and listener without bindings; the CRD
    installed later gets them; a second server against the same AWS adopts the ALB and target groups."""
    ec2, elb = aws_clients(localaws)
    tagged_subnets(ec2, "10.43")

    def server(n):
        p, url = start([str(ROOT / "kubetest" / "launch"), "--ca-file", str(tmp_path / f"ca{n}"), "--token", TOKEN,
                        "--aws-endpoint", localaws, "--cluster-name", "restart", "--deployment-delay", "0.2",
                        "--ingress-delay", "0.1", "--namespace-delay", "0.2"])
        k = Kube(url, str(tmp_path / f"ca{n}"), "")
        assert k.post(DEP.format(ns="kube-system"), deployment("aws-load-balancer-controller", replicas=1))[0] == 201
        assert k.post("/api/v1/namespaces", {"metadata": {"name": "app"}})[0] == 201
        assert k.post(SVC.format(ns="app"), service("web"))[0] == 201
        assert k.post(ING.format(ns="app"), ingress("web", [("/", "web", 80)]))[0] == 201
        k.wait(ING.format(ns="app") + "/web",
               lambda c, o: ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress"), timeout=15)
        return p, k

    p, k = server(1)
    try:
        lb = stack_lb(elb, "app/web")
        tgs = wait_for(lambda: stack_tgs(elb, "app/web"), lambda t: len(t) == 1)
        assert k.get(TGB.format(ns="app"))[0] == 404
        assert len(elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]) == 1
        assert k.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", TGB_CRD)[0] == 201
        b = wait_for(lambda: (k.get(TGB.format(ns="app"))[1] or {}).get("items") or [], lambda x: len(x) == 1)
        assert b[0]["spec"]["targetGroupARN"] == tgs["app/web-web:80"][0]["TargetGroupArn"]
    finally:
        stop(p)
    p, k = server(2)
    try:
        time.sleep(0.5)
        assert stack_lb(elb, "app/web")["LoadBalancerArn"] == lb["LoadBalancerArn"]
        again = stack_tgs(elb, "app/web")
        assert {r: t["TargetGroupArn"] for r, (t, _) in again.items()} == {r: t["TargetGroupArn"] for r, (t, _) in tgs.items()}
        assert len(elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]) == 1
        k.delete(ING.format(ns="app") + "/web")
        k.wait(ING.format(ns="app") + "/web", lambda c, o: c == 404, timeout=15)
        assert stack_lb(elb, "app/web") is None and stack_tgs(elb, "app/web") == {}
    finally:
        stop(p)


def test_namespace_deletion_waits_for_the_bindings(kube, aws, tgb_crd):
    """A namespace with an ALB Ingress: its bindings (finalizer elbv2.k8s.aws/resources) and the Ingress are
    cleaned up by the controller before the namespace goes."""
    ns = kube.namespace()
    assert kube.post(SVC.format(ns=ns), service("web"))[0] == 201
    assert kube.post(ING.format(ns=ns), ingress("web", [("/", "web", 80)]))[0] == 201
    wait_for(lambda: bindings(kube, ns), lambda b: len(b) == 1)
    assert kube.delete(f"/api/v1/namespaces/{ns}")[0] == 200
    kube.wait(f"/api/v1/namespaces/{ns}", lambda c, o: c == 404, timeout=15)
    assert stack_lb(aws, f"{ns}/web") is None and stack_tgs(aws, f"{ns}/web") == {}
