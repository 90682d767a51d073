"""The resource types the test server serves, and their discovery documents."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class RT:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list = field(default_factory=list)
    categories: list = field(default_factory=list)
    status_sub: bool = False
    generation: bool = True
    builtin: bool = True
    list_kind: str = ""

    def __post_init__(self):
        self.singular = self.singular or self.kind.lower()
        self.list_kind = self.list_kind or self.kind + "List"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def gp(self) -> tuple:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:  # "deployments.apps", "configmaps"
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:  # "Deployment.apps", "ConfigMap"
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def discovery(self) -> list[dict]:
        h = hashlib.sha256(f"{self.group}/{self.version}/{self.kind}".encode()).digest()
        import base64

        d = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(VERBS),
        }
        if self.short_names:
            d["shortNames"] = list(self.short_names)
        if self.categories:
            d["categories"] = list(self.categories)
        d["storageVersionHash"] = base64.b64encode(h[:8]).decode()
        out = [d]
        if self.status_sub:
            out.append({"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind, "verbs": ["get", "patch", "update"]})
        if self.builtin and self.gp in (("apps", "deployments"), ("apps", "replicasets")):
            out.append({"name": f"{self.plural}/scale", "singularName": "", "namespaced": True,
                        "group": "autoscaling", "version": "v1", "kind": "Scale",
                        "verbs": ["get", "patch", "update"]})
        if self.gp == ("", "pods"):
            out.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]})
        if self.plural == "namespaces":
            out.append({"name": "namespaces/finalize", "singularName": "", "namespaced": False,
                        "kind": "Namespace", "verbs": ["update"]})
        return out


def builtin_types() -> list[RT]:
    core = dict(group="", version="v1", generation=False)
    return [
        RT(plural="namespaces", kind="Namespace", namespaced=False, short_names=["ns"], status_sub=True, **core),
        RT(plural="services", kind="Service", namespaced=True, short_names=["svc"], categories=["all"], status_sub=True, **core),
        RT(plural="serviceaccounts", kind="ServiceAccount", namespaced=True, short_names=["sa"], **core),
        RT(plural="secrets", kind="Secret", namespaced=True, **core),
        RT(plural="configmaps", kind="ConfigMap", namespaced=True, short_names=["cm"], **core),
        RT(plural="pods", kind="Pod", namespaced=True, short_names=["po"], categories=["all"], status_sub=True, **core),
        RT(plural="events", kind="Event", namespaced=True, short_names=["ev"], **core),
        RT(plural="endpoints", kind="Endpoints", namespaced=True, short_names=["ep"], **core),
        RT("apps", "v1", "deployments", "Deployment", True, short_names=["deploy"], categories=["all"], status_sub=True),
        RT("apps", "v1", "replicasets", "ReplicaSet", True, short_names=["rs"], categories=["all"], status_sub=True),
        RT("networking.k8s.io", "v1", "ingresses", "Ingress", True, short_names=["ing"], status_sub=True),
        RT("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
        RT("rbac.authorization.k8s.io", "v1", "roles", "Role", True, generation=False),
        RT("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, generation=False),
        RT("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, generation=False),
        RT("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, generation=False),
        RT("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
           short_names=["crd", "crds"], status_sub=True),
        RT("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False),
        RT("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False),
        RT("coordination.k8s.io", "v1", "leases", "Lease", True, generation=False),
        RT("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    ]


def crd_types(crd: dict) -> list[RT]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        out.append(RT(
            group=spec.get("group", ""), version=v.get("name", ""), plural=names.get("plural", ""),
            kind=names.get("kind", ""), namespaced=spec.get("scope") == "Namespaced",
            singular=names.get("singular") or names.get("kind", "").lower(),
            short_names=list(names.get("shortNames") or []), categories=list(names.get("categories") or []),
            status_sub="status" in ((v.get("subresources") or {})), builtin=False,
            list_kind=names.get("listKind") or names.get("kind", "") + "List",
        ))
    return out
