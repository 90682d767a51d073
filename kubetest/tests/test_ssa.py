"""Server-side apply: create, managedFields, conflicts, force, field removal, Update managers."""

from __future__ import annotations

import json

import yaml

DEP = "/apis/apps/v1/namespaces/{ns}/deployments"
CM = "/api/v1/namespaces/{ns}/configmaps"


def dep_yaml(replicas=2, image="nginx:1.27", env=None, labels=None):
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "labels": labels or {"app": "web"}},
         "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "app", "image": image,
                                                        "ports": [{"containerPort": 8080}]}]}}}}
    if env:
        d["spec"]["template"]["spec"]["containers"][0]["env"] = env
    return yaml.safe_dump(d)


def managers(obj):
    return {(e["manager"], e["operation"]): e for e in obj["metadata"].get("managedFields", [])}


def test_apply_creates_and_tracks_fields(kube, ns):
    path = DEP.format(ns=ns) + "/web"
    code, out = kube.apply(path, dep_yaml(env=[{"name": "A", "value": "1"}]), "slipway")
    assert code == 201, out
    assert out["metadata"]["generation"] == 1 and out["spec"]["replicas"] == 2
    e = managers(out)[("slipway", "Apply")]
    assert e["apiVersion"] == "apps/v1" and e["fieldsType"] == "FieldsV1" and e["time"].endswith("Z")
    f = e["fieldsV1"]
    assert f["f:metadata"] == {"f:labels": {"f:app": {}}}
    c = f["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"app"}']
    assert c["."] == {} and c["f:image"] == {} and c["f:name"] == {}
    assert c["f:ports"] == {'k:{"containerPort":8080,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}}
    assert c["f:env"] == {'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}}
    assert "f:progressDeadlineSeconds" not in f["f:spec"]  # defaults are not owned by the applier
    assert out["spec"]["progressDeadlineSeconds"] == 600
    # re-applying the same configuration changes nothing
    code, again = kube.apply(path, dep_yaml(env=[{"name": "A", "value": "1"}]), "slipway")
    assert code == 200 and again["metadata"]["resourceVersion"] == out["metadata"]["resourceVersion"] or \
        again["metadata"]["generation"] == 1
    # JSON bodies are YAML too
    code, j = kube.apply(path, json.dumps(yaml.safe_load(dep_yaml(env=[{"name": "A", "value": "1"}]))), "slipway")
    assert code == 200 and j["metadata"]["generation"] == 1


def test_field_manager_is_required(kube, ns):
    code, out = kube.req("PATCH", CM.format(ns=ns) + "/x", "apiVersion: v1\nkind: ConfigMap\n",
                         ctype="application/apply-patch+yaml")
    assert code == 422
    assert out == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                   "reason": "Invalid", "details": {"group": "meta.k8s.io", "kind": "PatchOptions",
                                                    "causes": [{"reason": "FieldValueRequired",
                                                                "message": "Required value: is required for apply patch",
                                                                "field": "fieldManager"}]}, "code": 422}


def test_conflict_between_managers_and_force(kube, ns):
    path = DEP.format(ns=ns) + "/web"
    assert kube.apply(path, dep_yaml(replicas=2), "slipway")[0] == 201
    # another manager applying the same value shares ownership: no conflict
    same = yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                           "spec": {"replicas": 2}})
    code, out = kube.apply(path, same, "hpa")
    assert code == 200, out
    # a different value conflicts with the owner
    other = yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                            "spec": {"replicas": 5, "template": {"spec": {"containers": [
                                {"name": "app", "image": "nginx:9"}]}}}})
    code, out = kube.apply(path, other, "ops")
    assert code == 409, out
    assert out["reason"] == "Conflict" and out["status"] == "Failure" and out["code"] == 409
    # replicas is co-owned by slipway and hpa: both are named
    assert out["message"] == ('Apply failed with 3 conflicts: conflicts with "hpa":\n- .spec.replicas\n'
                              'conflicts with "slipway":\n- .spec.replicas\n'
                              '- .spec.template.spec.containers[name="app"].image')
    causes = sorted((c["field"], c["message"], c["reason"]) for c in out["details"]["causes"])
    assert causes == [
        (".spec.replicas", 'conflict with "hpa"', "FieldManagerConflict"),
        (".spec.replicas", 'conflict with "slipway"', "FieldManagerConflict"),
        ('.spec.template.spec.containers[name="app"].image', 'conflict with "slipway"', "FieldManagerConflict"),
    ]
    assert set(out["details"]) == {"causes"}
    assert kube.get(path)[1]["spec"]["replicas"] == 2
    # force moves ownership
    code, out = kube.apply(path, other, "ops", force=True)
    assert code == 200 and out["spec"]["replicas"] == 5
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:9"
    m = managers(out)
    assert "f:replicas" in m[("ops", "Apply")]["fieldsV1"]["f:spec"]
    assert "f:replicas" not in m[("slipway", "Apply")]["fieldsV1"]["f:spec"]
    # now slipway conflicts on those fields, with a single-conflict message
    code, out = kube.apply(path, dep_yaml(replicas=3, image="nginx:9"), "slipway")
    assert code == 409
    assert out["message"] == 'Apply failed with 1 conflict: conflict with "ops": .spec.replicas'
    # an Update manager conflicts too, named with its apiVersion
    code, _ = kube.patch(path, {"metadata": {"labels": {"team": "x"}}})
    lab = yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web",
                                                                                     "labels": {"team": "y"}}})
    code, out = kube.apply(path, lab, "labeller")
    assert code == 409 and out["details"]["causes"][0]["field"] == ".metadata.labels.team"
    assert out["details"]["causes"][0]["message"].startswith('conflict with "python-requests" using apps/v1')


def test_fields_no_longer_applied_are_removed(kube, ns):
    path = DEP.format(ns=ns) + "/web"
    env = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    code, out = kube.apply(path, dep_yaml(env=env, labels={"app": "web", "extra": "1"}), "slipway")
    assert code == 201
    code, out = kube.apply(path, dep_yaml(env=env[:1]), "slipway")
    assert code == 200, out
    assert out["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    assert out["metadata"]["labels"] == {"app": "web"}
    # a field another manager also owns stays
    kube.apply(path, yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "web", "annotations": {"owner": "both"}}}), "other")
    kube.apply(path, dep_yaml(env=env[:1]).replace("labels:\n    app: web\n",
                                                  "annotations:\n    owner: both\n  labels:\n    app: web\n", 1),
               "slipway")
    code, out = kube.apply(path, dep_yaml(env=env[:1]), "slipway")
    assert out["metadata"]["annotations"] == {"owner": "both"}


def test_update_operations_record_managers(kube, ns):
    base = CM.format(ns=ns)
    code, out = kube.post(base, {"metadata": {"name": "u"}, "data": {"a": "1"}}, params={"fieldManager": "creator"})
    e = managers(out)[("creator", "Update")]
    assert e["fieldsV1"] == {"f:data": {".": {}, "f:a": {}}} or e["fieldsV1"] == {"f:data": {"f:a": {}}}
    code, out = kube.patch(base + "/u", {"data": {"b": "2"}}, params={"fieldManager": "patcher"})
    m = managers(out)
    assert m[("patcher", "Update")]["fieldsV1"]["f:data"] == {"f:b": {}}
    # kubectl-style: an applier then takes over with force
    code, out = kube.apply(base + "/u", "apiVersion: v1\nkind: ConfigMap\ndata: {a: '9'}\n", "slipway", force=True)
    m = managers(out)
    assert out["data"] == {"a": "9", "b": "2"}
    assert ("creator", "Update") not in m and m[("slipway", "Apply")]["fieldsV1"] == {"f:data": {"f:a": {}}}


def test_same_name_update_entry_is_another_manager(kube, ns):
    base = CM.format(ns=ns)
    kube.post(base, {"metadata": {"name": "same"}, "data": {"a": "1"}}, params={"fieldManager": "slipway"})
    code, out = kube.apply(base + "/same", "apiVersion: v1\nkind: ConfigMap\ndata: {a: '2'}\n", "slipway")
    assert code == 409
    assert out["message"] == 'Apply failed with 1 conflict: conflict with "slipway" using v1: .data.a'
    code, out = kube.apply(base + "/same", "apiVersion: v1\nkind: ConfigMap\ndata: {a: '2'}\n", "slipway", force=True)
    assert code == 200 and out["data"] == {"a": "2"}
    assert [(e["manager"], e["operation"]) for e in out["metadata"]["managedFields"]] == [("slipway", "Apply")]
