"""crd_delay: a new CRD is Established (and its kinds served) only after the delay, like the real establishing
controller; an update of an established CRD keeps its kinds served."""

from __future__ import annotations

import time

from conftest import ROOT, TOKEN, Kube, start, stop

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": "the server could not find the requested resource", "reason": "NotFound",
             "details": {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
             "code": 404}


def crd(group, plural="gadgets", kind="Gadget"):
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]}}


def conds(o):
    return {c["type"]: c for c in (o.get("status") or {}).get("conditions") or []}


def test_crd_is_served_only_once_established(kube, ns):
    group = f"d{ns[-8:]}.example.com"
    path = f"/apis/{group}/v1/namespaces/{ns}/gadgets"
    kube.config(crd_delay=0.6)
    try:
        t0 = time.monotonic()
        code, out = kube.post(CRDS, crd(group))
        assert code == 201, out
        c = conds(out)
        assert c["NamesAccepted"]["status"] == "True" and c["NamesAccepted"]["reason"] == "NoConflicts"
        assert (c["Established"]["status"], c["Established"]["reason"], c["Established"]["message"]) == (
            "False", "Installing", "the initial names have been accepted")
        # not served yet: the 404 of an unknown resource, nothing in discovery
        assert kube.get(path) == (404, NOT_FOUND)
        assert kube.post(path, {"apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "g"}}) == (
            404, NOT_FOUND)
        assert kube.get(f"/apis/{group}/v1")[0] == 404
        assert group not in [g["name"] for g in kube.get("/apis")[1]["groups"]]
        # established after the delay
        est = kube.wait(f"{CRDS}/gadgets.{group}", lambda c, o: conds(o)["Established"]["status"] == "True",
                        timeout=5)
        assert time.monotonic() - t0 >= 0.5
        e = conds(est)["Established"]
        assert (e["reason"], e["message"]) == ("InitialNamesAccepted", "the initial names have been accepted")
        assert conds(est)["NamesAccepted"]["lastTransitionTime"] == c["NamesAccepted"]["lastTransitionTime"]
        assert any(m["manager"] == "kube-apiserver" and m.get("subresource") == "status"
                   for m in est["metadata"]["managedFields"])
        assert kube.get(path)[0] == 200
        assert group in [g["name"] for g in kube.get("/apis")[1]["groups"]]
        assert "gadgets" in [r["name"] for r in kube.get(f"/apis/{group}/v1")[1]["resources"]]
        code, g = kube.post(path, {"apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "g"}})
        assert code == 201, g
        # an update of the established CRD keeps it served and Established
        code, upd = kube.patch(f"{CRDS}/gadgets.{group}", {"spec": {"names": {"shortNames": ["gd"]}}})
        assert code == 200, upd
        assert conds(upd)["Established"] == e
        assert kube.get(path + "/g")[0] == 200
        assert kube.get(f"/apis/{group}/v1")[1]["resources"][0]["shortNames"] == ["gd"]
        # deleted: gone again
        assert kube.delete(f"{CRDS}/gadgets.{group}")[0] == 200
        assert kube.get(path)[0] == 404
    finally:
        kube.config(crd_delay=0)


def test_crd_delay_flag(tmp_path):
    kc, ca = str(tmp_path / "kc"), str(tmp_path / "ca.pem")
    p, url = start([str(ROOT / "kubetest" / "launch"), "--kubeconfig", kc, "--ca-file", ca, "--token", TOKEN,
                    "--crd-delay", "0.4"])
    try:
        k = Kube(url, ca, kc)
        assert k.get("/_kubetest/config")[1]["crd_delay"] == 0.4
        code, out = k.post(CRDS, crd("flag.example.com"))
        assert code == 201 and conds(out)["Established"]["status"] == "False"
        assert k.get("/apis/flag.example.com/v1/gadgets")[0] == 404
        k.wait(f"{CRDS}/gadgets.flag.example.com", lambda c, o: conds(o)["Established"]["status"] == "True", timeout=5)
        assert k.get("/apis/flag.example.com/v1/gadgets")[0] == 200
    finally:
        stop(p)


def test_crd_delay_zero_serves_at_once(kube):
    assert kube.get("/_kubetest/config")[1]["crd_delay"] == 0
    code, out = kube.post(CRDS, crd("now.example.com", "things", "Thing"))
    assert code == 201 and conds(out)["Established"]["status"] == "True"
    assert kube.get("/apis/now.example.com/v1/things")[0] == 200
    assert kube.delete(f"{CRDS}/things.now.example.com")[0] == 200
