"""Namespace termination, finalizers, propagationPolicy and garbage collection by ownerReferences."""

from __future__ import annotations

from conftest import deployment

CM = "/api/v1/namespaces/{ns}/configmaps"
DEP = "/apis/apps/v1/namespaces/{ns}/deployments"


def test_finalizer_blocks_delete_until_removed(kube, ns):
    base = CM.format(ns=ns)
    kube.post(base, {"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})
    code, out = kube.delete(base + "/f")
    assert code == 200 and out["kind"] == "ConfigMap" and out["metadata"]["deletionTimestamp"]
    code, out = kube.get(base + "/f")
    assert code == 200 and out["metadata"]["finalizers"] == ["example.com/hold"]
    # no new finalizers on an object being deleted
    code, bad = kube.patch(base + "/f", {"metadata": {"finalizers": ["example.com/hold", "x/y"]}})
    assert code == 422 and bad["details"]["causes"][0]["field"] == "metadata.finalizers"
    code, out = kube.patch(base + "/f", {"metadata": {"finalizers": None}})
    assert code == 200
    assert kube.get(base + "/f")[0] == 404


def test_namespace_termination_waits_for_finalizers(kube):
    ns = kube.namespace("term")
    base = CM.format(ns=ns)
    kube.post(base, {"metadata": {"name": "plain"}})
    kube.post(base, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    code, out = kube.delete(f"/api/v1/namespaces/{ns}")
    assert code == 200 and out["status"]["phase"] == "Terminating" and out["metadata"]["deletionTimestamp"]
    kube.wait(base + "/plain", lambda c, o: c == 404, timeout=5)
    code, held = kube.get(base + "/held")
    assert code == 200 and held["metadata"]["deletionTimestamp"]
    code, nso = kube.get(f"/api/v1/namespaces/{ns}")
    assert code == 200 and nso["status"]["phase"] == "Terminating"
    # nothing new may be created in it
    code, out = kube.post(base, {"metadata": {"name": "new"}})
    assert code == 403 and out["reason"] == "Forbidden"
    assert out["message"] == (f'configmaps "new" is forbidden: unable to create new content in namespace {ns} '
                              "because it is being terminated")
    # still there after a while
    import time
    time.sleep(0.5)
    assert kube.get(f"/api/v1/namespaces/{ns}")[0] == 200
    kube.patch(base + "/held", {"metadata": {"finalizers": []}})
    kube.wait(f"/api/v1/namespaces/{ns}", lambda c, o: c == 404, timeout=5)


def test_a_namespace_finalizer_holds_the_namespace_after_its_content_is_gone(kube):
    ns = kube.namespace("held-ns")
    code, _ = kube.patch(f"/api/v1/namespaces/{ns}", {"metadata": {"finalizers": ["example.com/hold"]}})
    assert code == 200
    kube.post(CM.format(ns=ns), {"metadata": {"name": "plain"}})
    code, _ = kube.delete(f"/api/v1/namespaces/{ns}")
    assert code == 200
    kube.wait(CM.format(ns=ns) + "/plain", lambda c, o: c == 404, timeout=5)
    import time
    time.sleep(0.5)
    code, nso = kube.get(f"/api/v1/namespaces/{ns}")
    assert code == 200 and nso["metadata"]["deletionTimestamp"] and nso["status"]["phase"] == "Terminating"
    kube.patch(f"/api/v1/namespaces/{ns}", {"metadata": {"finalizers": None}})
    kube.wait(f"/api/v1/namespaces/{ns}", lambda c, o: c == 404, timeout=5)


def _owned(kube, ns, plural, group="apps"):
    prefix = f"/apis/{group}/v1" if group else "/api/v1"
    return kube.get(f"{prefix}/namespaces/{ns}/{plural}")[1]["items"]


def test_propagation_policies(kube, ns):
    base = DEP.format(ns=ns)
    for name in ("bg", "fg", "orphan"):
        assert kube.post(base, deployment(name, replicas=1))[0] == 201
    for name in ("bg", "fg", "orphan"):
        kube.wait(base + "/" + name, lambda c, o: (o.get("status") or {}).get("availableReplicas") == 1)

    def rs_of(name):
        return [r for r in _owned(kube, ns, "replicasets") if r["metadata"]["name"].startswith(name + "-")]

    def pods_of(name):
        return [p for p in _owned(kube, ns, "pods", "") if p["metadata"]["name"].startswith(name + "-")]

    assert len(rs_of("bg")) == 1 and len(pods_of("bg")) == 1
    rs = rs_of("bg")[0]
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert pods_of("bg")[0]["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]

    import time

    # Background: gone at once, dependents collected afterwards
    code, out = kube.delete(base + "/bg", {"kind": "DeleteOptions", "apiVersion": "v1",
                                           "propagationPolicy": "Background"})
    assert code == 200 and out["status"] == "Success"
    deadline = time.monotonic() + 5
    while (rs_of("bg") or pods_of("bg")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not rs_of("bg") and not pods_of("bg")
    # Foreground: the owner stays (deletionTimestamp, finalizer) until its dependents are gone
    code, out = kube.delete(base + "/fg", params={"propagationPolicy": "Foreground"})
    assert code == 200 and out["metadata"]["deletionTimestamp"] and "foregroundDeletion" in out["metadata"]["finalizers"]
    kube.wait(base + "/fg", lambda c, o: c == 404, timeout=5)
    assert not rs_of("fg") and not pods_of("fg")
    # Orphan: dependents survive without the ownerReference
    code, out = kube.delete(base + "/orphan", {"propagationPolicy": "Orphan"})
    assert code == 200
    kube.wait(base + "/orphan", lambda c, o: c == 404, timeout=5)
    time.sleep(0.3)
    left = rs_of("orphan")
    assert len(left) == 1 and not left[0]["metadata"].get("ownerReferences")
    assert len(pods_of("orphan")) == 1
