"""Lifecycles that take time: small, documented patches of moto 5.2.5's models.

moto makes every resource ready at once. Each patch below replaces one status
attribute of one moto model class with a property computed lazily from
timestamps (time.monotonic), so reads see CREATING/pending/provisioning until
the (scaled) duration has passed, and DELETING/deleting/shutting-down after a
delete until it completes. moto's own code keeps assigning the attribute; the
setter stores that "raw" value, which the getter returns outside transitions.

Durations are taken from CONFIG when a transition starts
(`durations.<kind> * time_scale`); changing the config later does not move
the deadline of a transition already under way.
"""

from __future__ import annotations

import time
from typing import Any

from .config import CONFIG

now = time.monotonic


def _deadline(kind: str) -> float:
    return now() + CONFIG.duration(kind)


# --------------------------------------------------------------------- EKS ---


def _patch_eks() -> None:
    from moto.eks import models as m
    from moto.eks import responses as r
    from moto.eks.exceptions import EKSError, ResourceInUseException

    class ResourceLimitExceededException(EKSError):
        TYPE = "ResourceLimitExceededException"
        STATUS = 400

    Cluster, FargateProfile, EKSBackend = m.Cluster, m.FargateProfile, m.EKSBackend

    # Cluster: CREATING -> ACTIVE; UPDATING while an update is InProgress;
    # DELETING after DeleteCluster until reaped (then gone: 404).
    orig_cluster_init = Cluster.__init__

    def cluster_init(self: Any, *a: Any, **kw: Any) -> None:
        self._rl_updates = {}  # update id -> update record (see eks_api)
        self._rl_access_entries = {}  # principalArn -> entry (see eks_api)
        self._rl_delete_done = None
        orig_cluster_init(self, *a, **kw)
        self._rl_ready = _deadline("eks_cluster_create")
        self.access_config = {"authenticationMode": "CONFIG_MAP", "bootstrapClusterCreatorAdminPermissions": True}

    def cluster_updating(self: Any) -> bool:
        t = now()
        return any(u["_done"] > t for u in self.__dict__.get("_rl_updates", {}).values())

    def cluster_status_get(self: Any) -> str:
        d = self.__dict__
        if d.get("_rl_delete_done") is not None:
            return "DELETING"
        if now() < d.get("_rl_ready", 0.0):
            return "CREATING"
        if cluster_updating(self):
            return "UPDATING"
        return d.get("_rl_status", "ACTIVE")

    def cluster_status_set(self: Any, value: str) -> None:
        self.__dict__["_rl_status"] = value

    def cluster_version_get(self: Any) -> str:
        # A version update takes effect when it completes.
        version = self.__dict__.get("_rl_version")
        t = now()
        for u in sorted(self.__dict__.get("_rl_updates", {}).values(), key=lambda u: u["_seq"]):
            if u["type"] == "VersionUpdate" and u["_done"] <= t:
                version = u["_new_version"]
        return version

    def cluster_version_set(self: Any, value: str) -> None:
        self.__dict__["_rl_version"] = value

    # While CREATING, EKS has no API server endpoint and no CA data yet.
    def hidden_while_creating(attr: str, empty: Any) -> property:
        def get(self: Any) -> Any:
            if now() < self.__dict__.get("_rl_ready", 0.0):
                return empty() if callable(empty) else empty
            return self.__dict__.get(attr)

        def set_(self: Any, value: Any) -> None:
            self.__dict__[attr] = value

        return property(get, set_)

    Cluster.__init__ = cluster_init
    Cluster.status = property(cluster_status_get, cluster_status_set)
    Cluster.endpoint = hidden_while_creating("_rl_endpoint", None)
    Cluster.certificate_authority = hidden_while_creating("_rl_ca", dict)
    Cluster.version = property(cluster_version_get, cluster_version_set)
    Cluster.rl_updating = cluster_updating

    # Fargate profile: CREATING -> ACTIVE; DELETING until reaped.
    orig_fp_init = FargateProfile.__init__

    def fp_init(self: Any, *a: Any, **kw: Any) -> None:
        self._rl_delete_done = None
        orig_fp_init(self, *a, **kw)
        self._rl_ready = _deadline("eks_fargate_profile_create")

    def fp_status_get(self: Any) -> str:
        d = self.__dict__
        if d.get("_rl_delete_done") is not None:
            return "DELETING"
        if now() < d.get("_rl_ready", 0.0):
            return "CREATING"
        return d.get("_rl_status", "ACTIVE")

    def fp_status_set(self: Any, value: str) -> None:
        self.__dict__["_rl_status"] = value

    FargateProfile.__init__ = fp_init
    FargateProfile.status = property(fp_status_get, fp_status_set)

    def in_transition(cluster: Any) -> Any:
        for p in cluster.fargate_profiles.values():
            if p.status in ("CREATING", "DELETING"):
                return p
        return None

    # EKS allows one Fargate profile change at a time per cluster.
    orig_create_fp = EKSBackend.create_fargate_profile

    def create_fargate_profile(self: Any, fargate_profile_name: str, cluster_name: str, *a: Any, **kw: Any) -> Any:
        cluster = self.clusters.get(cluster_name)
        if cluster is not None and fargate_profile_name not in cluster.fargate_profiles:
            if cluster.status == "UPDATING":
                raise ResourceInUseException(
                    clusterName=cluster_name, fargateProfileName=fargate_profile_name,
                    message=f"Cannot create Fargate Profile {fargate_profile_name} because cluster "
                    f"{cluster_name} currently has an update in progress",
                )
            busy = in_transition(cluster) if cluster.is_active else None
            if busy is not None:
                raise ResourceInUseException(
                    clusterName=cluster_name, fargateProfileName=fargate_profile_name,
                    message=f"Cannot create Fargate Profile {fargate_profile_name} because cluster "
                    f"{cluster_name} currently has Fargate profile {busy.fargate_profile_name} in status {busy.status}",
                )
            quota = CONFIG.eks_fargate_profiles_per_cluster
            if len(cluster.fargate_profiles) >= quota:
                raise ResourceLimitExceededException(
                    clusterName=cluster_name,
                    message=f"Cannot create Fargate Profile {fargate_profile_name}: cluster {cluster_name} "
                    f"already has {len(cluster.fargate_profiles)} Fargate profiles, the limit is {quota}",
                )
        return orig_create_fp(self, fargate_profile_name, cluster_name, *a, **kw)

    orig_delete_fp = EKSBackend.delete_fargate_profile

    def delete_fargate_profile(self: Any, cluster_name: str, fargate_profile_name: str) -> Any:
        cluster = self.clusters.get(cluster_name)
        if cluster is None or fargate_profile_name not in cluster.fargate_profiles:
            return orig_delete_fp(self, cluster_name, fargate_profile_name)  # moto's 404s
        if cluster.status == "UPDATING":
            raise ResourceInUseException(
                clusterName=cluster_name, fargateProfileName=fargate_profile_name,
                message=f"Cannot Delete Fargate Profile {fargate_profile_name} because cluster "
                f"{cluster_name} currently has an update in progress",
            )
        busy = in_transition(cluster)
        if busy is not None:
            raise ResourceInUseException(
                clusterName=cluster_name, fargateProfileName=fargate_profile_name,
                message=f"Cannot Delete Fargate Profile {fargate_profile_name} because cluster "
                f"{cluster_name} currently has Fargate profile {busy.fargate_profile_name} in status {busy.status}",
            )
        profile = cluster.fargate_profiles[fargate_profile_name]
        profile._rl_delete_done = _deadline("eks_fargate_profile_delete")
        return profile

    orig_delete_cluster = EKSBackend.delete_cluster

    def delete_cluster(self: Any, name: str) -> Any:
        cluster = self.clusters.get(name)
        if cluster is None:
            return orig_delete_cluster(self, name)  # moto's 404
        if cluster._rl_delete_done is not None:
            return cluster  # already DELETING
        if cluster.fargate_profiles:
            raise ResourceInUseException(
                clusterName=name, message="Cluster has Fargate Profiles in ACTIVE/CREATING state"
            )
        m.validate_safe_to_delete(cluster)  # moto: "Cluster has nodegroups attached"
        if cluster.status == "UPDATING":
            raise ResourceInUseException(
                clusterName=name,
                message=f"Cannot delete because cluster {name} currently has an update in progress",
            )
        cluster._rl_delete_done = _deadline("eks_cluster_delete")
        return cluster

    EKSBackend.create_fargate_profile = create_fargate_profile
    EKSBackend.delete_fargate_profile = delete_fargate_profile
    EKSBackend.delete_cluster = delete_cluster

    # CreateCluster's accessConfig (moto ignores it): kept on the cluster and
    # returned by DescribeCluster; the cluster creator gets an admin access
    # entry when bootstrapClusterCreatorAdminPermissions (default true) and
    # the mode allows access entries, as EKS does.
    orig_resp_create_cluster = r.EKSResponse.create_cluster

    def resp_create_cluster(self: Any) -> Any:
        result = orig_resp_create_cluster(self)
        cluster = self.eks_backend.clusters.get(self._get_param("name"))
        ac = self._get_param("accessConfig") or {}
        if cluster is not None:
            cluster.access_config = {
                "authenticationMode": ac.get("authenticationMode", "CONFIG_MAP"),
                "bootstrapClusterCreatorAdminPermissions": ac.get("bootstrapClusterCreatorAdminPermissions", True),
            }
            from . import eks_api

            eks_api.bootstrap_creator_entry(cluster, self.current_account, self.region, self.headers)
        return result

    r.EKSResponse.create_cluster = resp_create_cluster


def reap_eks(account: str, region: str) -> None:
    """Remove clusters and Fargate profiles whose deletion has completed."""
    from moto.eks.models import eks_backends

    try:
        backend = eks_backends[account][region]
    except Exception:
        return
    t = now()
    for name, cluster in list(backend.clusters.items()):
        done = cluster.__dict__.get("_rl_delete_done")
        if done is not None and t >= done:
            backend.clusters.pop(name, None)
            backend.cluster_count -= 1
            continue
        for pname, p in list(cluster.fargate_profiles.items()):
            pdone = p.__dict__.get("_rl_delete_done")
            if pdone is not None and t >= pdone:
                cluster.fargate_profiles.pop(pname, None)
                cluster.fargate_profile_count -= 1


# --------------------------------------------------------------------- EC2 ---


def _patch_ec2() -> None:
    from moto.ec2.models import instances as inst
    from moto.ec2.models import nat_gateways as nat

    Instance, InstanceState = inst.Instance, inst.InstanceState

    class TransientState(InstanceState):
        """The state shown during a transition (pending, stopping,
        shutting-down). Writes (moto assigning name/code) go to the raw state."""

        def __init__(self, name: str, code: int, raw: Any) -> None:
            self.__dict__.update(name=name, code=code, _raw=raw)

        def __setattr__(self, key: str, value: Any) -> None:
            setattr(self.__dict__["_raw"], key, value)

    # (phase, raw state reached at the end) -> state shown meanwhile
    transient = {
        ("start", "running"): ("pending", 0),
        ("stop", "stopped"): ("stopping", 64),
        ("terminate", "terminated"): ("shutting-down", 32),
    }

    def state_get(self: Any) -> Any:
        d = self.__dict__
        raw = d.get("_rl_raw_state")
        phase = d.get("_rl_phase")
        if phase and raw is not None and now() < d.get("_rl_until", 0.0):
            shown = transient.get((phase, raw.name))
            if shown:
                return TransientState(shown[0], shown[1], raw)
        return raw

    def state_set(self: Any, value: Any) -> None:
        self.__dict__["_rl_raw_state"] = value

    Instance._state = property(state_get, state_set)

    orig_init = Instance.__init__

    def init(self: Any, *a: Any, **kw: Any) -> None:
        orig_init(self, *a, **kw)
        self._rl_phase, self._rl_until = "start", _deadline("ec2_instance_start")

    Instance.__init__ = init

    def wrap(method: str, phase: str, kind: str, done_names: tuple[str, ...]) -> None:
        orig = getattr(Instance, method)

        def wrapped(self: Any, *a: Any, **kw: Any) -> Any:
            previous = orig(self, *a, **kw)
            # A no-op transition (terminating a terminated instance, ...)
            # does not start a new phase.
            if previous is None or previous.name not in done_names:
                self._rl_phase, self._rl_until = phase, _deadline(kind)
            return previous

        setattr(Instance, method, wrapped)

    wrap("start", "start", "ec2_instance_start", ("pending", "running"))
    wrap("stop", "stop", "ec2_instance_stop", ("stopping", "stopped"))
    wrap("terminate", "terminate", "ec2_instance_terminate", ("shutting-down", "terminated"))

    # NAT gateway: pending -> available; deleting -> deleted.
    NatGateway = nat.NatGateway
    orig_nat_init = NatGateway.__init__

    def nat_init(self: Any, *a: Any, **kw: Any) -> None:
        orig_nat_init(self, *a, **kw)
        self._rl_ready = _deadline("nat_gateway_create")

    def nat_state_get(self: Any) -> str:
        d = self.__dict__
        raw = d.get("_rl_state", "available")
        if raw == "available" and now() < d.get("_rl_ready", 0.0):
            return "pending"
        if raw == "deleted" and now() < d.get("_rl_deleted", 0.0):
            return "deleting"
        return raw

    def nat_state_set(self: Any, value: str) -> None:
        if value == "deleted" and self.__dict__.get("_rl_state") != "deleted":
            self.__dict__["_rl_deleted"] = _deadline("nat_gateway_delete")
        self.__dict__["_rl_state"] = value

    NatGateway.__init__ = nat_init
    NatGateway.state = property(nat_state_get, nat_state_set)


# ------------------------------------------------------------------- ELBv2 ---


def _patch_elbv2() -> None:
    from moto.elbv2 import models as m

    LB = m.FakeLoadBalancer
    orig_init = LB.__init__

    def init(self: Any, *a: Any, **kw: Any) -> None:
        orig_init(self, *a, **kw)
        self._rl_ready = _deadline("elbv2_load_balancer_create")

    def state_get(self: Any) -> str:
        d = self.__dict__
        raw = d.get("_rl_state", "active")
        if raw in ("provisioning", "active"):
            return "provisioning" if now() < d.get("_rl_ready", 0.0) else "active"
        return raw

    def state_set(self: Any, value: str) -> None:
        self.__dict__["_rl_state"] = value

    LB.__init__ = init
    LB.state = property(state_get, state_set)

    # Targets: moto reports every registered target `healthy` at once and
    # forgets a deregistered one. As on AWS, a registered target is
    # `initial` (Elb.RegistrationInProgress) until its first health checks
    # pass (durations.elbv2_target_healthy), then `healthy` -- or `unhealthy`
    # (Target.ResponseCodeMismatch) if it is in the config's
    # `unhealthy_targets`; a deregistered one is `draining`
    # (Target.DeregistrationInProgress) for the deregistration delay
    # (durations.elbv2_target_deregister), still listed by
    # DescribeTargetHealth without Targets, and then gone (`unused`,
    # Target.NotRegistered). Instance and ip target groups; the state is
    # computed at every read from the deadline fixed at (de)registration.
    TG, Health, Backend = m.FakeTargetGroup, m.FakeHealthStatus, m.ELBv2Backend

    def modelled(tg: Any) -> bool:
        return tg.target_type in ("ip", "instance")

    def draining(tg: Any) -> dict[str, Any]:
        """Target id -> (target, deadline) of the targets still draining; expired ones dropped."""
        d = tg.__dict__.setdefault("_rl_draining", {})
        t = now()
        for tid in [k for k, (_target, done) in d.items() if t >= done]:
            del d[tid]
        return d

    orig_register = TG.register

    def register(self: Any, targets: list[dict[str, Any]]) -> None:
        new = [t["Id"] for t in targets if t["Id"] not in self.targets]
        orig_register(self, targets)
        healthy_at = self.__dict__.setdefault("_rl_healthy_at", {})
        for tid in new:
            # (re-)registration, also of a draining target: health checks start over
            healthy_at[tid] = _deadline("elbv2_target_healthy")
            draining(self).pop(tid, None)

    orig_deregister = TG.deregister

    def deregister(self: Any, targets: list[dict[str, Any]]) -> None:
        d = draining(self)
        # a target already draining stays so (AWS accepts the call)
        todo = [t for t in targets if not (t["Id"] not in self.targets and t["Id"] in d)]
        orig_deregister(self, todo)  # moto's InvalidTargetError for unknown targets
        for t in todo:
            target = self.deregistered_targets.get(t["Id"]) or {"Id": t["Id"], "Port": t.get("Port", self.port)}
            d[t["Id"]] = (dict(target), _deadline("elbv2_target_deregister"))
            self.__dict__.get("_rl_healthy_at", {}).pop(t["Id"], None)

    orig_health_for = TG.health_for

    def health_for(self: Any, target: dict[str, Any], ec2_backend: Any) -> Any:
        if not modelled(self):
            return orig_health_for(self, target, ec2_backend)
        tid = target["Id"]
        if tid not in self.targets:
            d = draining(self)
            if tid in d:
                return Health(tid, d[tid][0]["Port"], self.health_check_port, "draining",
                              "Target.DeregistrationInProgress", "Target deregistration is in progress")
            if tid not in self.terminated_targets:
                # AWS: `unused` for any target not registered (moto: `unavailable` for IPs never registered)
                return Health(tid, target.get("Port", self.port), self.health_check_port, "unused",
                              "Target.NotRegistered", "Target is not registered to the target group")
        health = orig_health_for(self, target, ec2_backend)
        if health.status != "healthy":
            return health  # e.g. a stopped instance
        if now() < self.__dict__.get("_rl_healthy_at", {}).get(tid, 0.0):
            return Health(tid, health.port, self.health_check_port, "initial",
                          "Elb.RegistrationInProgress", "Target registration is in progress")
        if unhealthy(tid):
            return Health(tid, health.port, self.health_check_port, "unhealthy",
                          "Target.ResponseCodeMismatch", "Health checks failed with these codes: [503]")
        return health

    orig_describe_health = Backend.describe_target_health

    def describe_target_health(self: Any, target_group_arn: str, targets: list[dict[str, Any]]) -> Any:
        tg = self.target_groups.get(target_group_arn)
        if not targets and tg is not None and modelled(tg):
            # without Targets, AWS lists the registered targets and those still draining
            targets = list(tg.targets.values()) + [t for t, _done in draining(tg).values()]
        return orig_describe_health(self, target_group_arn, targets)

    TG.register = register
    TG.deregister = deregister
    TG.health_for = health_for
    Backend.describe_target_health = describe_target_health


def unhealthy(target_id: str) -> bool:
    """Whether `target_id` is in the config's `unhealthy_targets` (an id, or an IP in a CIDR block)."""
    import ipaddress

    for entry in CONFIG.unhealthy_targets:
        if entry == target_id:
            return True
        if "/" in entry:
            try:
                if ipaddress.ip_address(target_id) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


_applied = False


def apply() -> None:
    global _applied
    if not _applied:
        _patch_eks()
        _patch_ec2()
        _patch_elbv2()
        _applied = True
