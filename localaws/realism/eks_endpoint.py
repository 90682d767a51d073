"""A real Kubernetes API server behind an EKS cluster's endpoint.

moto gives every cluster an invented endpoint
(`https://<random>.gr7.REGION.eks.amazonaws.com`) and 1400 random characters
as `certificateAuthority.data`; nothing answers there. The config key
`eks_api_servers` (config.py) maps a cluster name to a local API server
(`{"endpoint": "https://127.0.0.1:PORT", "ca_pem": "<PEM>"}`); for a cluster
of that name (in any account and region) every EKS response holding the
cluster (CreateCluster, DescribeCluster, DeleteCluster, ...) then reports
`endpoint` = that endpoint and `certificateAuthority.data` = the standard
base64 of the PEM text, as EKS encodes its CA.

Done with properties of moto's Cluster read when a response is serialized,
so the current config applies to clusters created before or after it was
set, and setting `eks_api_servers` to `{}` brings moto's values back. The
override applies only when an endpoint is shown at all: while a cluster is
CREATING it has no endpoint and no CA data (lifecycle.py), as on EKS.
"""

from __future__ import annotations

import base64
from typing import Any

from .config import CONFIG


def _server(cluster: Any) -> dict[str, str] | None:
    servers = CONFIG.eks_api_servers
    if not servers:
        return None
    name = cluster.__dict__.get("name")
    return servers.get(name) if isinstance(name, str) else None


def _base_property(cls: Any, attr: str) -> property:
    """The class's current property for `attr` (lifecycle.py's), or one
    plainly backed by the instance dict when there is none."""
    current = cls.__dict__.get(attr)
    if isinstance(current, property):
        return current
    key = f"_rl_plain_{attr}"

    def get(self: Any) -> Any:
        return self.__dict__.get(key)

    def set_(self: Any, value: Any) -> None:
        self.__dict__[key] = value

    return property(get, set_)


def _patch_cluster() -> None:
    from moto.eks.models import Cluster

    endpoint_prop = _base_property(Cluster, "endpoint")
    ca_prop = _base_property(Cluster, "certificate_authority")

    def endpoint_get(self: Any) -> Any:
        value = endpoint_prop.fget(self)
        if not value:
            return value  # CREATING: no endpoint yet
        server = _server(self)
        return server["endpoint"] if server is not None else value

    def ca_get(self: Any) -> Any:
        value = ca_prop.fget(self)
        if not value or not value.get("data"):
            return value  # CREATING: no CA data yet
        server = _server(self)
        if server is None:
            return value
        return {"data": base64.b64encode(server["ca_pem"].encode()).decode("ascii")}

    Cluster.endpoint = property(endpoint_get, endpoint_prop.fset)
    Cluster.certificate_authority = property(ca_get, ca_prop.fset)


_applied = False


def apply() -> None:
    """Patch moto's Cluster; call after lifecycle.apply()."""
    global _applied
    if not _applied:
        _patch_cluster()
        _applied = True
