"""The real kubectl (1.32) against the server: apply (client- and server-side), kustomize, get, rollout, delete."""

from __future__ import annotations

import json
import textwrap

MANIFEST = textwrap.dedent("""\
    apiVersion: v1
    kind: Namespace
    metadata:
      name: {ns}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      namespace: {ns}
      labels: {{app: web}}
    spec:
      replicas: 2
      selector: {{matchLabels: {{app: web}}}}
      template:
        metadata: {{labels: {{app: web}}}}
        spec:
          containers:
          - name: web
            image: {image}
            ports: [{{containerPort: 80}}]
    ---
    apiVersion: v1
    kind: Service
    metadata:
      name: web
      namespace: {ns}
    spec:
      selector: {{app: web}}
      ports: [{{port: 80, targetPort: 80}}]
    """)


def test_server_side_apply_get_rollout_delete(kube, tmp_path):
    ns = "kubectl-ssa"
    f = tmp_path / "m.yaml"
    f.write_text(MANIFEST.format(ns=ns, image="nginx:1.27"))
    r = kube.kubectl("apply", "--server-side", "--field-manager", "slipway", "-f", str(f))
    assert "deployment.apps/web serverside-applied" in r.stdout
    kube.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=20s")
    r = kube.kubectl("get", "deploy", "web", "-n", ns, "-o", "json", "--show-managed-fields")
    d = json.loads(r.stdout)
    assert d["status"]["availableReplicas"] == 2
    assert [e["manager"] for e in d["metadata"]["managedFields"] if e["operation"] == "Apply"] == ["slipway"]
    r = kube.kubectl("get", "deploy,svc", "-n", ns)
    assert "deployment.apps/web" in r.stdout and "service/web" in r.stdout
    r = kube.kubectl("get", "ns", ns, "-o", "jsonpath={.status.phase}")
    assert r.stdout == "Active"
    # a second manager conflicting, then forcing
    f.write_text(MANIFEST.format(ns=ns, image="nginx:1.28"))
    r = kube.kubectl("apply", "--server-side", "--field-manager", "other", "-f", str(f), check=False)
    assert r.returncode != 0 and "conflict" in r.stderr.lower()
    kube.kubectl("apply", "--server-side", "--field-manager", "other", "--force-conflicts", "-f", str(f))
    kube.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=20s")
    r = kube.kubectl("get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    assert r.stdout == "nginx:1.28"
    r = kube.kubectl("delete", "-f", str(f), "--wait=true", "--timeout=20s")
    assert 'namespace "kubectl-ssa" deleted' in r.stdout
    r = kube.kubectl("get", "ns", ns, check=False)
    assert r.returncode != 0 and "NotFound" in r.stderr


def test_client_side_apply_and_kustomize(kube, tmp_path):
    ns = "kubectl-kust"
    base = tmp_path / "base"
    base.mkdir()
    (base / "m.yaml").write_text(MANIFEST.format(ns=ns, image="nginx:1.27"))
    (base / "kustomization.yaml").write_text(textwrap.dedent("""\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources: [m.yaml]
        commonLabels: {team: web}
        images:
        - name: nginx
          newTag: "1.29"
        configMapGenerator:
        - name: settings
          namespace: kubectl-kust
          literals: [MODE=test]
        """))
    r = kube.kubectl("apply", "-k", str(base))
    assert "deployment.apps/web created" in r.stdout and "namespace/kubectl-kust created" in r.stdout
    kube.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=20s")
    d = json.loads(kube.kubectl("get", "deploy", "web", "-n", ns, "-o", "json").stdout)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.29"
    assert d["metadata"]["labels"]["team"] == "web"
    assert "kubectl.kubernetes.io/last-applied-configuration" in d["metadata"]["annotations"]
    cms = kube.kubectl("get", "cm", "-n", ns, "-o", "name").stdout.split()
    assert any(c.startswith("configmap/settings-") for c in cms)
    # a client-side re-apply with a change goes through a strategic merge patch
    (base / "kustomization.yaml").write_text((base / "kustomization.yaml").read_text().replace('"1.29"', '"1.30"'))
    r = kube.kubectl("apply", "-k", str(base))
    assert "deployment.apps/web configured" in r.stdout
    kube.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=20s")
    d = json.loads(kube.kubectl("get", "deploy", "web", "-n", ns, "-o", "json").stdout)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.30"
    assert d["metadata"]["generation"] == 2 and len(d["spec"]["template"]["spec"]["containers"]) == 1
    r = kube.kubectl("delete", "-k", str(base), "--timeout=20s")
    assert r.returncode == 0


def test_scale_set_image_and_logs(kube, tmp_path):
    ns = "kubectl-scale"
    f = tmp_path / "m.yaml"
    f.write_text(MANIFEST.format(ns=ns, image="nginx:1.27"))
    kube.kubectl("apply", "-f", str(f))
    kube.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=20s")
    kube.kubectl("scale", "-n", ns, "deployment/web", "--replicas=3")
    kube.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=20s")
    r = kube.kubectl("get", "deploy", "web", "-n", ns)
    assert r.stdout.split("\n")[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert r.stdout.split("\n")[1].split()[1:4] == ["3/3", "3", "3"]
    code, sc = kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web/scale")
    assert sc["kind"] == "Scale" and sc["apiVersion"] == "autoscaling/v1" and sc["spec"] == {"replicas": 3}
    assert sc["status"]["selector"] == "app=web"
    r = kube.kubectl("logs", "-n", ns, "deployment/web")
    assert r.returncode == 0
    kube.config(unpullable_images=["nginx:broken"])
    try:
        kube.kubectl("set", "image", "-n", ns, "deployment/web", "web=nginx:broken")
        code, pods = kube.get(f"/api/v1/namespaces/{ns}/pods")
        import time
        deadline = time.monotonic() + 5
        bad = []
        while not bad and time.monotonic() < deadline:
            pods = kube.get(f"/api/v1/namespaces/{ns}/pods")[1]["items"]
            bad = [p for p in pods if p["spec"]["containers"][0]["image"] == "nginx:broken"]
            time.sleep(0.05)
        r = kube.kubectl("logs", "-n", ns, bad[0]["metadata"]["name"], check=False)
        assert r.returncode != 0 and "is waiting to start" in r.stderr
    finally:
        kube.config(unpullable_images=[])
    kube.kubectl("delete", "ns", ns, "--timeout=20s")


def test_client_side_to_server_side_migration(kube, tmp_path):
    """kubectl's CSA->SSA migration rewrites managedFields with a JSON patch; the server must honour it."""
    ns = "kubectl-migrate"
    f = tmp_path / "m.yaml"
    f.write_text(MANIFEST.format(ns=ns, image="nginx:1.27"))
    kube.kubectl("apply", "-f", str(f))
    f.write_text(MANIFEST.format(ns=ns, image="nginx:1.28"))
    # changed field still owned by the client-side applier: a conflict, as on a real cluster
    r = kube.kubectl("apply", "--server-side", "-f", str(f), check=False)
    assert r.returncode != 0 and 'conflict with "kubectl-client-side-apply" using apps/v1' in r.stderr
    # unchanged manifest: applies, then kubectl migrates the ownership to its "kubectl" Apply entry
    f.write_text(MANIFEST.format(ns=ns, image="nginx:1.27"))
    kube.kubectl("apply", "--server-side", "-f", str(f))
    d = json.loads(kube.kubectl("get", "deploy", "web", "-n", ns, "-o", "json", "--show-managed-fields").stdout)
    ops = {(e["manager"], e["operation"]) for e in d["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in ops and ("kubectl-client-side-apply", "Update") not in ops
    f.write_text(MANIFEST.format(ns=ns, image="nginx:1.28"))
    kube.kubectl("apply", "--server-side", "-f", str(f))
    r = kube.kubectl("get", "deploy", "web", "-n", ns, "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    assert r.stdout == "nginx:1.28"
    kube.kubectl("delete", "ns", ns, "--timeout=20s")
