"""Fixtures: a Kubernetes test server (kubetest/launch) with a local AWS (localaws/launch) behind it."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import pytest
import requests
import urllib3

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "kubetest-token-0123456789"


def start(cmd: list[str], timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Start a launcher, wait (bounded) for its `endpoint=` line, return (process, url)."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, cwd=ROOT)
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or p.poll() is not None:
            p.kill()
            raise RuntimeError(f"{cmd[0]} did not print its endpoint line (got {line!r})")
        r, _, _ = select.select([p.stdout], [], [], left)
        if r:
            ch = os.read(p.stdout.fileno(), 1)
            if not ch:
                time.sleep(0.05)
                continue
            line += ch
    assert line.startswith(b"endpoint="), line
    return p, line.decode().strip().split("=", 1)[1]


def stop(p: subprocess.Popen) -> None:
    try:
        p.stdin.close()
    except OSError:
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.terminate()
        p.wait(timeout=10)


class Kube:
    """A thin client: JSON in, (status, JSON) out, TLS verified with the server's CA."""

    def __init__(self, url: str, ca: str, kubeconfig: str, token: str = TOKEN):
        self.url, self.ca, self.kubeconfig = url, ca, kubeconfig
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {token}"
        self.s.verify = ca
        self.s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=

    def req(self, method: str, path: str, body=None, ctype: str = "application/json", params=None, **kw):
        data = None
        if body is not None:
            data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        r = self.s.request(method, self.url + path, data=data, params=params,
                           headers={"Content-Type": ctype, **kw.pop("headers", {})}, timeout=30, **kw)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.req("POST", path, body, **kw)

    def put(self, path, body, **kw):
        return self.req("PUT", path, body, **kw)

    def patch(self, path, body, ctype="application/merge-patch+json", **kw):
        return self.req("PATCH", path, body, ctype=ctype, **kw)

    def apply(self, path, body, manager, force=False, **kw):
        params = {"fieldManager": manager}
        if force:
            params["force"] = "true"
        params.update(kw.pop("params", {}))
        return self.req("PATCH", path, body, ctype="application/apply-patch+yaml", params=params, **kw)

    def delete(self, path, body=None, **kw):
        return self.req("DELETE", path, body, **kw)

    def config(self, **kw):
        code, out = self.post("/_kubetest/config", kw)
        assert code == 200, out
        return out

    def wait(self, path, pred, timeout=15.0, interval=0.05):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.get(path)
            if pred(*last):
                return last[1]
            time.sleep(interval)
        raise AssertionError(f"timed out waiting on {path}; last: {last}")

    def kubectl(self, *args, check=True, timeout=60, input=None):
        r = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, *args], capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def namespace(self, prefix="t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        code, out = self.post("/api/v1/namespaces", {"metadata": {"name": name}})
        assert code == 201, out
        return name


@pytest.fixture(scope="session")
def localaws():
    p, url = start([str(ROOT / "localaws" / "launch"), "--time-scale", "0.001"])
    yield url
    stop(p)


@pytest.fixture(scope="session")
def kube(localaws, tmp_path_factory):
    d = tmp_path_factory.mktemp("kube")
    kc, ca = str(d / "kubeconfig"), str(d / "ca.crt")
    p, url = start([str(ROOT / "kubetest" / "launch"), "--kubeconfig", kc, "--ca-file", ca, "--token", TOKEN,
                    "--aws-endpoint", localaws, "--deployment-delay", "0.3", "--ingress-delay", "0.2",
                    "--namespace-delay", "0.5",
                    "--time-scale", "0.005"])
    k = Kube(url, ca, kc)
    yield k
    stop(p)


@pytest.fixture()
def ns(kube):
    return kube.namespace()


DEP = "/apis/apps/v1/namespaces/{ns}/deployments"


@pytest.fixture()
def controller(kube):
    """The load balancer controller's Deployment, available: the simulated
    ALB controller acts only while it runs."""
    base = DEP.format(ns="kube-system")
    code, _ = kube.post(base, deployment("aws-load-balancer-controller", replicas=1))
    assert code in (201, 409)
    kube.wait(base + "/aws-load-balancer-controller",
              lambda c, o: ((o or {}).get("status") or {}).get("availableReplicas") == 1, timeout=10)
    return base + "/aws-load-balancer-controller"


def aws_clients(localaws):
    kw = dict(endpoint_url=localaws, region_name="ap-south-1", aws_access_key_id="testing",
              aws_secret_access_key="testing")
    return boto3.client("ec2", **kw), boto3.client("elbv2", **kw)


def tagged_subnets(ec2, cidr="10.42"):
    vpc = ec2.create_vpc(CidrBlock=f"{cidr}.0.0/16")["Vpc"]["VpcId"]
    for i, az in enumerate(("ap-south-1a", "ap-south-1b")):
        sn = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{cidr}.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
        ec2.create_tags(Resources=[sn], Tags=[{"Key": "kubernetes.io/role/elb", "Value": "1"}])
    return vpc


@pytest.fixture()
def aws(localaws, controller):
    ec2, elb = aws_clients(localaws)
    tagged_subnets(ec2)
    return elb


# The CRD slipway's platform installs for the controller (trimmed: no schema).
TGB_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "targetgroupbindings.elbv2.k8s.aws"},
    "spec": {"group": "elbv2.k8s.aws", "scope": "Namespaced",
             "names": {"plural": "targetgroupbindings", "singular": "targetgroupbinding",
                       "kind": "TargetGroupBinding", "listKind": "TargetGroupBindingList"},
             "versions": [{"name": n, "served": True, "storage": n == "v1beta1", "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}
                          for n in ("v1alpha1", "v1beta1")]}}


@pytest.fixture()
def tgb_crd(kube):
    code, out = kube.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", TGB_CRD)
    assert code in (201, 409), out
    kube.wait("/apis/elbv2.k8s.aws/v1beta1", lambda c, o: c == 200, timeout=10)


def realism(localaws, patch):
    """Merge `patch` into the local AWS's runtime config; returns the config before."""
    before = requests.get(f"{localaws}/_realism/config", timeout=10).json()
    r = requests.post(f"{localaws}/_realism/config", json=patch, timeout=10)
    assert r.status_code == 200, r.text
    return before


def deployment(name, image="nginx:1.27", replicas=2, labels=None):
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": dict(labels)},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": [{"name": "app", "image": image,
                                                           "ports": [{"containerPort": 8080}]}]}}}}


urllib3.disable_warnings()
_ = os


def elb_tags(elb, arns):
    """DescribeTags of `arns`, one at a time when the batch names one that was
    deleted since it was listed (ELBv2 then fails the whole call)."""
    try:
        return elb.describe_tags(ResourceArns=arns)["TagDescriptions"]
    except elb.exceptions.TargetGroupNotFoundException:
        pass
    except elb.exceptions.LoadBalancerNotFoundException:
        pass
    out = []
    for arn in arns:
        try:
            out += elb.describe_tags(ResourceArns=[arn])["TagDescriptions"]
        except (elb.exceptions.TargetGroupNotFoundException, elb.exceptions.LoadBalancerNotFoundException):
            continue
    return out
