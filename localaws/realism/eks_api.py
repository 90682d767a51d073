"""EKS operations moto 5.2.5 lacks (404) or answers wrongly, served by the layer.

Paths, request/response members and error types follow the EKS API model
(botocore's `eks` service model: restJson, timestamps as epoch seconds).
State lives on moto's Cluster objects, so it is per account and region,
goes away with the cluster and is cleared by `POST /moto-api/reset`.

Served: CreateAccessEntry, DescribeAccessEntry, ListAccessEntries,
UpdateAccessEntry, DeleteAccessEntry, AssociateAccessPolicy,
DisassociateAccessPolicy, ListAssociatedAccessPolicies, ListAccessPolicies,
UpdateClusterVersion, UpdateClusterConfig (moto's answers `{}` instead of an
`update`), ListUpdates, DescribeUpdate.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from typing import Any, Callable

from .config import CONFIG
from .lifecycle import now, reap_eks
from .ops import RequestInfo

Response = tuple[int, list[tuple[str, str]], bytes]

ACCESS_POLICIES = [
    "AmazonEKSAdminPolicy",
    "AmazonEKSAdminViewPolicy",
    "AmazonEKSAutoNodePolicy",
    "AmazonEKSBlockStoragePolicy",
    "AmazonEKSClusterAdminPolicy",
    "AmazonEKSComputePolicy",
    "AmazonEKSEditPolicy",
    "AmazonEKSHybridPolicy",
    "AmazonEKSLoadBalancingPolicy",
    "AmazonEKSNetworkingPolicy",
    "AmazonEKSViewPolicy",
]
POLICY_ARN = "arn:aws:eks::aws:cluster-access-policy/{}"
ACCESS_ENTRY_TYPES = ("STANDARD", "FARGATE_LINUX", "EC2_LINUX", "EC2_WINDOWS", "EC2", "HYBRID_LINUX", "HYPERPOD_LINUX")
_PRINCIPAL_RE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(role|user)/(?:.*/)?([^/]+)$")
_seq = itertools.count()


class EKSError(Exception):
    def __init__(self, status: int, etype: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status, self.etype, self.message, self.fields = status, etype, message, fields


def not_found(message: str, **f: Any) -> EKSError:
    return EKSError(404, "ResourceNotFoundException", message, **f)


def invalid_param(message: str, **f: Any) -> EKSError:
    return EKSError(400, "InvalidParameterException", message, **f)


def invalid_request(message: str, **f: Any) -> EKSError:
    return EKSError(400, "InvalidRequestException", message, **f)


def in_use(message: str, **f: Any) -> EKSError:
    return EKSError(409, "ResourceInUseException", message, **f)


def _json(status: int, obj: Any, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = [("Content-Type", "application/json"), ("x-amzn-RequestId", str(uuid.uuid4()))]
    return status, headers + (extra or []), json.dumps(obj).encode()


def error_response(e: EKSError) -> Response:
    body = {"message": e.message}
    body.update({k: v for k, v in e.fields.items() if v is not None})
    return _json(e.status, body, [("x-amzn-ErrorType", e.etype)])


def _wall(mono: float) -> float:
    """Epoch seconds of a monotonic instant."""
    return round(time.time() - (now() - mono), 3)


# ------------------------------------------------------------------ helpers --


def _backend(info: RequestInfo) -> Any:
    from moto.eks.models import eks_backends

    return eks_backends[info.account][info.region]


def _cluster(info: RequestInfo, name: str) -> Any:
    cluster = _backend(info).clusters.get(name)
    if cluster is None:
        raise not_found(f"No cluster found for name: {name}.", clusterName=name)
    return cluster


def _require_active(cluster: Any) -> None:
    status = cluster.status
    if status == "UPDATING":
        raise in_use(f"Cluster {cluster.name} currently has an update in progress", clusterName=cluster.name)
    if status != "ACTIVE":
        raise invalid_request(f"Cluster '{cluster.name}' is not in ACTIVE status", clusterName=cluster.name)


def _require_api_auth(cluster: Any) -> None:
    if cluster.access_config.get("authenticationMode") not in ("API", "API_AND_CONFIG_MAP"):
        raise invalid_request(
            "The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP] "
            "to perform this operation.",
            clusterName=cluster.name,
        )


def _body(info: RequestInfo) -> dict[str, Any]:
    if not info.body:
        return {}
    try:
        obj = json.loads(info.body)
    except ValueError:
        raise EKSError(400, "SerializationException", "Could not parse request body into json")
    return obj if isinstance(obj, dict) else {}


def _q(info: RequestInfo, key: str) -> str | None:
    v = info.query.get(key)
    return v[0] if v else None


def _paginate(items: list[Any], info: RequestInfo) -> tuple[list[Any], str | None]:
    try:
        max_results = int(_q(info, "maxResults") or 100)
        start = int(_q(info, "nextToken") or 0)
    except ValueError:
        raise invalid_param("The nextToken or maxResults parameter is not valid")
    if not 1 <= max_results <= 100:
        raise invalid_param("maxResults must be between 1 and 100")
    page = items[start : start + max_results]
    nxt = str(start + max_results) if start + max_results < len(items) else None
    return page, nxt


# ------------------------------------------------------------ access entries --


def _principal(arn: Any) -> re.Match[str]:
    m = _PRINCIPAL_RE.match(arn) if isinstance(arn, str) else None
    if m is None:
        raise invalid_param(f"The principalArn parameter format is not valid: {arn}")
    return m


def _default_username(etype: str, m: re.Match[str]) -> str:
    account, kind, name = m.group(1), m.group(2), m.group(3)
    if etype in ("EC2_LINUX", "EC2_WINDOWS", "EC2", "HYBRID_LINUX"):
        return "system:node:{{EC2PrivateDNSName}}"
    if etype == "FARGATE_LINUX":
        return "system:node:{{SessionName}}"
    if kind == "role":
        return f"arn:aws:sts::{account}:assumed-role/{name}/{{{{SessionName}}}}"
    return m.group(0)


def _new_entry(cluster: Any, account: str, region: str, principal: str, body: dict[str, Any]) -> dict[str, Any]:
    m = _principal(principal)
    etype = body.get("type") or "STANDARD"
    if etype not in ACCESS_ENTRY_TYPES:
        raise invalid_param(f"The type {etype} is not valid. Valid types: {', '.join(ACCESS_ENTRY_TYPES)}")
    groups = body.get("kubernetesGroups") or []
    if etype != "STANDARD" and groups:
        raise invalid_param(f"kubernetesGroups cannot be specified for access entries of type {etype}")
    ts = time.time()
    return {
        "clusterName": cluster.name,
        "principalArn": principal,
        "kubernetesGroups": list(groups),
        "accessEntryArn": f"arn:aws:eks:{region}:{account}:access-entry/{cluster.name}/{m.group(2)}/"
        f"{m.group(1)}/{m.group(3)}/{uuid.uuid4()}",
        "createdAt": ts,
        "modifiedAt": ts,
        "tags": dict(body.get("tags") or {}),
        "username": body.get("username") or _default_username(etype, m),
        "type": etype,
        "_policies": {},
    }


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith("_")}


def bootstrap_creator_entry(cluster: Any, account: str, region: str, headers: Any) -> None:
    """The cluster creator's admin access entry (bootstrapClusterCreatorAdminPermissions)."""
    ac = cluster.access_config
    if not ac.get("bootstrapClusterCreatorAdminPermissions", True):
        return
    if ac.get("authenticationMode") not in ("API", "API_AND_CONFIG_MAP"):
        return
    principal = _creator_arn(account, headers)
    if principal is None:
        return
    entry = _new_entry(cluster, account, region, principal, {})
    entry["_policies"][POLICY_ARN.format("AmazonEKSClusterAdminPolicy")] = {
        "policyArn": POLICY_ARN.format("AmazonEKSClusterAdminPolicy"),
        "accessScope": {"type": "cluster", "namespaces": []},
        "associatedAt": entry["createdAt"],
        "modifiedAt": entry["createdAt"],
    }
    cluster._rl_access_entries[principal] = entry


def _creator_arn(account: str, headers: Any) -> str | None:
    """The IAM principal of the caller, as moto's STS GetCallerIdentity sees
    the request's access key (an assumed role becomes its role ARN, as EKS
    records it; unknown keys are moto's default user `moto`)."""
    auth = headers.get("Authorization", "") if headers is not None else ""
    m = re.search(r"Credential=([^/]+)/", auth)
    key = m.group(1) if m else ""
    try:
        from moto.sts.models import sts_backends

        _, arn, acct = sts_backends[account]["aws"].get_caller_identity(key, "us-east-1")
    except Exception:
        arn, acct = f"arn:aws:sts::{account}:user/moto", account
    if ":assumed-role/" in arn:
        return f"arn:aws:iam::{acct}:role/{arn.split(':assumed-role/', 1)[1].split('/')[0]}"
    if ":user/" in arn:
        return f"arn:aws:iam::{acct}:user/{arn.split(':user/', 1)[1]}"
    return None


def _entry(cluster: Any, principal: str) -> dict[str, Any]:
    entry = cluster._rl_access_entries.get(principal)
    if entry is None:
        raise not_found(
            f"The specified principalArn could not be found. You can view your available access entries with ListAccessEntries.",
            clusterName=cluster.name, principalArn=principal,
        )
    return entry


def create_access_entry(info: RequestInfo, p: dict[str, str]) -> Response:
    body = _body(info)
    cluster = _cluster(info, p["name"])
    principal = body.get("principalArn")
    if not principal:
        raise invalid_param("principalArn is required")
    _require_active(cluster)
    _require_api_auth(cluster)
    if principal in cluster._rl_access_entries:
        raise in_use("The specified access entry resource is already in use on this cluster.",
                     clusterName=cluster.name, principalArn=principal)
    entry = _new_entry(cluster, info.account, info.region, principal, body)
    cluster._rl_access_entries[principal] = entry
    return _json(200, {"accessEntry": _public(entry)})


def describe_access_entry(info: RequestInfo, p: dict[str, str]) -> Response:
    cluster = _cluster(info, p["name"])
    return _json(200, {"accessEntry": _public(_entry(cluster, p["principalArn"]))})


def list_access_entries(info: RequestInfo, p: dict[str, str]) -> Response:
    cluster = _cluster(info, p["name"])
    policy = _q(info, "associatedPolicyArn")
    arns = [a for a, e in cluster._rl_access_entries.items() if policy is None or policy in e["_policies"]]
    page, nxt = _paginate(sorted(arns), info)
    out: dict[str, Any] = {"accessEntries": page}
    if nxt:
        out["nextToken"] = nxt
    return _json(200, out)


def update_access_entry(info: RequestInfo, p: dict[str, str]) -> Response:
    body = _body(info)
    cluster = _cluster(info, p["name"])
    entry = _entry(cluster, p["principalArn"])
    if "kubernetesGroups" in body:
        if entry["type"] != "STANDARD" and body["kubernetesGroups"]:
            raise invalid_param(f"kubernetesGroups cannot be specified for access entries of type {entry['type']}")
        entry["kubernetesGroups"] = list(body["kubernetesGroups"] or [])
    if body.get("username"):
        entry["username"] = body["username"]
    entry["modifiedAt"] = time.time()
    return _json(200, {"accessEntry": _public(entry)})


def delete_access_entry(info: RequestInfo, p: dict[str, str]) -> Response:
    cluster = _cluster(info, p["name"])
    _entry(cluster, p["principalArn"])
    del cluster._rl_access_entries[p["principalArn"]]
    return _json(200, {})


def associate_access_policy(info: RequestInfo, p: dict[str, str]) -> Response:
    body = _body(info)
    cluster = _cluster(info, p["name"])
    entry = _entry(cluster, p["principalArn"])
    policy = body.get("policyArn")
    scope = body.get("accessScope")
    if policy not in {POLICY_ARN.format(n) for n in ACCESS_POLICIES}:
        raise invalid_param(f"The policyArn {policy} is not a valid access policy ARN. See ListAccessPolicies.")
    if not isinstance(scope, dict) or scope.get("type") not in ("cluster", "namespace"):
        raise invalid_param("accessScope.type must be one of [cluster, namespace]")
    namespaces = list(scope.get("namespaces") or [])
    if scope["type"] == "namespace" and not namespaces:
        raise invalid_param("At least one namespace must be specified for an access scope of type namespace")
    if scope["type"] == "cluster" and namespaces:
        raise invalid_param("Namespaces cannot be specified for an access scope of type cluster")
    ts = time.time()
    prev = entry["_policies"].get(policy)
    assoc = {
        "policyArn": policy,
        "accessScope": {"type": scope["type"], "namespaces": namespaces},
        "associatedAt": prev["associatedAt"] if prev else ts,
        "modifiedAt": ts,
    }
    entry["_policies"][policy] = assoc
    return _json(200, {"clusterName": cluster.name, "principalArn": entry["principalArn"], "associatedAccessPolicy": assoc})


def disassociate_access_policy(info: RequestInfo, p: dict[str, str]) -> Response:
    cluster = _cluster(info, p["name"])
    entry = _entry(cluster, p["principalArn"])
    if p["policyArn"] not in entry["_policies"]:
        raise not_found(f"The specified policyArn {p['policyArn']} is not associated with this access entry.",
                        clusterName=cluster.name, principalArn=entry["principalArn"])
    del entry["_policies"][p["policyArn"]]
    return _json(200, {})


def list_associated_access_policies(info: RequestInfo, p: dict[str, str]) -> Response:
    cluster = _cluster(info, p["name"])
    entry = _entry(cluster, p["principalArn"])
    items = [entry["_policies"][k] for k in sorted(entry["_policies"])]
    page, nxt = _paginate(items, info)
    out: dict[str, Any] = {"clusterName": cluster.name, "principalArn": entry["principalArn"],
                           "associatedAccessPolicies": page}
    if nxt:
        out["nextToken"] = nxt
    return _json(200, out)


def list_access_policies(info: RequestInfo, p: dict[str, str]) -> Response:
    items = [{"name": n, "arn": POLICY_ARN.format(n)} for n in ACCESS_POLICIES]
    page, nxt = _paginate(items, info)
    out: dict[str, Any] = {"accessPolicies": page}
    if nxt:
        out["nextToken"] = nxt
    return _json(200, out)


# ------------------------------------------------------------------ updates --


def _new_update(cluster: Any, utype: str, params: list[dict[str, str]], kind: str, **extra: Any) -> dict[str, Any]:
    update = {
        "id": str(uuid.uuid4()),
        "type": utype,
        "params": params,
        "_created": now(),
        "_done": now() + CONFIG.duration(kind),
        "_seq": next(_seq),
        **extra,
    }
    cluster._rl_updates[update["id"]] = update
    return update


def _public_update(u: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": u["id"],
        "status": "InProgress" if now() < u["_done"] else "Successful",
        "type": u["type"],
        "params": u["params"],
        "createdAt": _wall(u["_created"]),
        "errors": [],
    }


def _minor(version: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"(\d+)\.(\d+)", str(version))
    return (int(m.group(1)), int(m.group(2))) if m else None


def update_cluster_version(info: RequestInfo, p: dict[str, str]) -> Response:
    body = _body(info)
    cluster = _cluster(info, p["name"])
    version = body.get("version")
    if not version:
        raise invalid_param("version is required")
    _require_active(cluster)
    cur, new = _minor(cluster.version), _minor(version)
    if cur is None or new is None or new[0] != cur[0] or new[1] != cur[1] + 1:
        raise invalid_param(f"Unsupported Kubernetes minor version update from {cluster.version} to {version}",
                            clusterName=cluster.name)
    update = _new_update(cluster, "VersionUpdate",
                         [{"type": "Version", "value": version}, {"type": "PlatformVersion", "value": "eks.1"}],
                         "eks_update_version", _new_version=version)
    return _json(200, {"update": _public_update(update)})


_AUTH_ORDER = {"CONFIG_MAP": 0, "API_AND_CONFIG_MAP": 1, "API": 2}


def update_cluster_config(info: RequestInfo, p: dict[str, str]) -> Response:
    body = _body(info)
    cluster = _cluster(info, p["name"])
    _require_active(cluster)
    kinds: list[tuple[str, list[dict[str, str]], Callable[[], None]]] = []

    if body.get("logging") is not None:
        logging = body["logging"]
        kinds.append(("LoggingUpdate", [{"type": "ClusterLogging", "value": json.dumps(logging)}],
                      lambda: setattr(cluster, "logging", logging)))
    vpc = body.get("resourcesVpcConfig")
    if vpc:
        endpoint = {k: vpc[k] for k in ("endpointPublicAccess", "endpointPrivateAccess", "publicAccessCidrs") if k in vpc}
        network = {k: vpc[k] for k in ("subnetIds", "securityGroupIds") if k in vpc}
        names = {"endpointPublicAccess": "EndpointPublicAccess", "endpointPrivateAccess": "EndpointPrivateAccess",
                 "publicAccessCidrs": "PublicAccessCidrs", "subnetIds": "Subnets", "securityGroupIds": "SecurityGroups"}

        def apply_vpc(part: dict[str, Any]) -> Callable[[], None]:
            return lambda: cluster.resources_vpc_config.update(part)

        if endpoint:
            kinds.append(("EndpointAccessUpdate", [{"type": names[k], "value": json.dumps(v) if not isinstance(v, str) else v}
                                                   for k, v in endpoint.items()], apply_vpc(endpoint)))
        if network:
            kinds.append(("VpcConfigUpdate", [{"type": names[k], "value": json.dumps(v)} for k, v in network.items()],
                          apply_vpc(network)))
    ac = body.get("accessConfig")
    if ac and ac.get("authenticationMode"):
        mode = ac["authenticationMode"]
        cur = cluster.access_config.get("authenticationMode", "CONFIG_MAP")
        if mode not in _AUTH_ORDER:
            raise invalid_param(f"Unsupported authentication mode {mode}")
        if _AUTH_ORDER[mode] < _AUTH_ORDER[cur]:
            raise invalid_param(f"Unsupported authentication mode update from {cur} to {mode}")
        if mode != cur:
            kinds.append(("AccessConfigUpdate", [{"type": "AuthenticationMode", "value": mode}],
                          lambda: cluster.access_config.update(authenticationMode=mode)))
    if len(kinds) > 1:
        raise invalid_param("Only one type of update can be allowed.", clusterName=cluster.name)
    if not kinds:
        raise invalid_param("No changes needed for the configuration provided", clusterName=cluster.name)
    utype, params, apply = kinds[0]
    apply()  # DescribeCluster shows the new configuration; the update runs its course
    update = _new_update(cluster, utype, params, "eks_update_config")
    return _json(200, {"update": _public_update(update)})


def list_updates(info: RequestInfo, p: dict[str, str]) -> Response:
    cluster = _cluster(info, p["name"])
    if _q(info, "nodegroupName") or _q(info, "addonName") or _q(info, "capabilityName"):
        ids: list[str] = []
    else:
        ids = [u["id"] for u in sorted(cluster._rl_updates.values(), key=lambda u: u["_seq"])]
    page, nxt = _paginate(ids, info)
    out: dict[str, Any] = {"updateIds": page}
    if nxt:
        out["nextToken"] = nxt
    return _json(200, out)


def describe_update(info: RequestInfo, p: dict[str, str]) -> Response:
    cluster = _cluster(info, p["name"])
    update = cluster._rl_updates.get(p["updateId"])
    if update is None or _q(info, "nodegroupName") or _q(info, "addonName"):
        raise not_found(f"No update found for ID: {p['updateId']}.", clusterName=cluster.name)
    return _json(200, {"update": _public_update(update)})


HANDLERS: dict[str, Callable[[RequestInfo, dict[str, str]], Response]] = {
    "CreateAccessEntry": create_access_entry,
    "DescribeAccessEntry": describe_access_entry,
    "ListAccessEntries": list_access_entries,
    "UpdateAccessEntry": update_access_entry,
    "DeleteAccessEntry": delete_access_entry,
    "AssociateAccessPolicy": associate_access_policy,
    "DisassociateAccessPolicy": disassociate_access_policy,
    "ListAssociatedAccessPolicies": list_associated_access_policies,
    "ListAccessPolicies": list_access_policies,
    "UpdateClusterVersion": update_cluster_version,
    "UpdateClusterConfig": update_cluster_config,
    "ListUpdates": list_updates,
    "DescribeUpdate": describe_update,
}


def handle(info: RequestInfo) -> Response | None:
    """Serve `info` if it is one of ours; None lets moto answer."""
    handler = HANDLERS.get(info.operation)
    if handler is None:
        return None
    from .ops import rest_labels

    reap_eks(info.account, info.region)
    try:
        return handler(info, rest_labels("eks", info.operation, info.path_segments))
    except EKSError as e:
        return error_response(e)
