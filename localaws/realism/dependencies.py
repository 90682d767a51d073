"""EC2 deletes refused while the object is still in use, as AWS refuses them.

moto 5.2.5 deletes a subnet, a security group or a VPC whatever still uses
it, so an engine that deletes in the wrong order (a subnet before the EKS
cluster in it is gone, a security group before the instance using it is
terminated) would pass its tests and fail on AWS. These patches of moto's
EC2 backend answer `DependencyViolation` (400, EC2's XML error shape, via
moto's own `DependencyViolationError`) as AWS does:

* DeleteSubnet while an EKS cluster that is not gone (any status, DELETING
  included) lists the subnet in `resourcesVpcConfig.subnetIds`, an ELBv2
  load balancer is in it, an instance that is not `terminated` has a network
  interface in it, or a NAT gateway that is not `deleted` is in it:
  "The subnet 'subnet-…' has dependencies and cannot be deleted."
* DeleteSecurityGroup while an instance that is not `terminated`, an ELBv2
  load balancer or an EKS cluster that is not gone (`securityGroupIds`) uses
  it, or a rule of another security group references it:
  "resource sg-… has a dependent object".
* DeleteVpc while a security group other than the default one is in it or an
  internet gateway is attached to it (moto refuses subnets, non-main route
  tables and VPN gateways itself): "The vpc 'vpc-…' has dependencies and
  cannot be deleted."
* DetachInternetGateway while the VPC has mapped public addresses: a public
  NAT gateway that is not `deleted`, an instance that is not `terminated`
  with a public IP (auto-assigned or an Elastic IP; an auto-assigned one
  goes when the instance stops or starts terminating, as in moto), or an
  ELBv2 load balancer that is not internal: "Network vpc-… has some mapped
  public address(es). Please unmap those public address(es) before
  detaching the gateway." (moto already refuses DeleteInternetGateway while
  the gateway is attached.)

`dependency_violations: false` in the config turns all of them off (moto's
own checks stay). Statuses are the lifecycle layer's (an instance is
`shutting-down`, a NAT gateway `deleting` and an EKS cluster `DELETING` for
their durations, and block meanwhile).
"""

from __future__ import annotations

from typing import Any, Iterator

from .config import CONFIG
from .lifecycle import now


def _existing(backends: Any, account: str, region: str) -> Any:
    """The service backend of account/region if moto has made it (never creates one)."""
    per_account = dict.get(backends, account)
    if per_account is None:
        return None
    return dict.get(per_account, region)


def _clusters(account: str, region: str) -> Iterator[Any]:
    """EKS clusters that are not gone (a DELETING one past its deadline is gone)."""
    from moto.eks.models import eks_backends

    backend = _existing(eks_backends, account, region)
    if backend is None:
        return
    t = now()
    for cluster in list(backend.clusters.values()):
        done = cluster.__dict__.get("_rl_delete_done")
        if done is not None and t >= done:
            continue
        yield cluster


def _vpc_config(cluster: Any, key: str) -> list[str]:
    cfg = getattr(cluster, "resources_vpc_config", None) or {}
    return list(cfg.get(key) or [])


def _load_balancers(account: str, region: str) -> list[Any]:
    from moto.elbv2.models import elbv2_backends

    backend = _existing(elbv2_backends, account, region)
    return [] if backend is None else list(backend.load_balancers.values())


def _lb_subnets(lb: Any) -> set[str]:
    return {getattr(s, "id", s) for s in (lb.subnets or [])}


def _instances(ec2: Any) -> Iterator[Any]:
    """Instances that are not terminated (pending, running, stopping, stopped, shutting-down)."""
    for reservation in list(ec2.reservations.values()):
        for instance in list(reservation.instances):
            if instance.state != "terminated":
                yield instance


def _instance_subnets(instance: Any) -> set[str]:
    subnets = {instance.subnet_id} if instance.subnet_id else set()
    for nic in list(instance.nics.values()):
        subnet = getattr(nic, "subnet", None)
        if subnet is not None:
            subnets.add(subnet.id)
    return subnets


def _instance_groups(instance: Any) -> set[str]:
    """The groups of the instance's network interfaces. moto keeps the primary
    interface's groups on the instance (ModifyInstanceAttribute changes only
    those; the interface keeps its launch groups, e.g. the VPC's default
    group for an instance launched without any)."""
    nics = dict(instance.nics)
    primary = nics.pop(0, None)
    groups = {g.id for g in instance.security_groups or [] if hasattr(g, "id")}
    if not groups and primary is not None:
        groups = {g.id for g in primary._group_set}
    for nic in nics.values():
        groups |= {g.id for g in nic._group_set}
    return groups


def _subnet_in_use(ec2: Any, subnet_id: str) -> bool:
    account, region = ec2.account_id, ec2.region_name
    if any(subnet_id in _vpc_config(c, "subnetIds") for c in _clusters(account, region)):
        return True
    if any(subnet_id in _lb_subnets(lb) for lb in _load_balancers(account, region)):
        return True
    if any(subnet_id in _instance_subnets(i) for i in _instances(ec2)):
        return True
    return any(n.subnet_id == subnet_id and n.state != "deleted" for n in list(ec2.nat_gateways.values()))


def _group_in_use(ec2: Any, group_id: str) -> bool:
    account, region = ec2.account_id, ec2.region_name
    if any(group_id in _instance_groups(i) for i in _instances(ec2)):
        return True
    if any(group_id in (lb.security_groups or []) for lb in _load_balancers(account, region)):
        return True
    if any(group_id in _vpc_config(c, "securityGroupIds") for c in _clusters(account, region)):
        return True
    for groups in list(ec2.groups.values()):
        for other in list(groups.values()):
            if other.id == group_id:
                continue  # a group's rules referencing itself do not keep it
            for rule in list(other.ingress_rules) + list(other.egress_rules):
                if (rule.source_group or {}).get("GroupId") == group_id:
                    return True
    return False


def _public_addresses_in(ec2: Any, vpc_id: str) -> bool:
    account, region = ec2.account_id, ec2.region_name
    for nat in list(ec2.nat_gateways.values()):
        if nat.vpc_id == vpc_id and nat.state != "deleted" and nat.connectivity_type != "private":
            return True
    for instance in _instances(ec2):
        if instance.vpc_id == vpc_id and instance.public_ip:
            return True
    return any(lb.vpc_id == vpc_id and lb.scheme != "internal" for lb in _load_balancers(account, region))


def _find_group(ec2: Any, name: str | None, group_id: str | None) -> Any:
    if group_id:
        return ec2.get_security_group_from_id(group_id)
    if name:
        return ec2.get_security_group_by_name_or_id(name)
    return None


def _patch_ec2() -> None:
    from moto.ec2.exceptions import DependencyViolationError
    from moto.ec2.exceptions import InvalidSubnetIdError
    from moto.ec2.models import EC2Backend

    orig_delete_subnet = EC2Backend.delete_subnet

    def delete_subnet(self: Any, subnet_id: str) -> Any:
        if CONFIG.dependency_violations:
            try:
                self.get_subnet(subnet_id)
            except InvalidSubnetIdError:
                return orig_delete_subnet(self, subnet_id)  # moto's NotFound
            if _subnet_in_use(self, subnet_id):
                raise DependencyViolationError(f"The subnet '{subnet_id}' has dependencies and cannot be deleted.")
        return orig_delete_subnet(self, subnet_id)

    orig_delete_group = EC2Backend.delete_security_group

    def delete_security_group(self: Any, name: str | None = None, group_id: str | None = None) -> Any:
        if CONFIG.dependency_violations:
            group = _find_group(self, name, group_id)
            if group is not None and _group_in_use(self, group.id):
                raise DependencyViolationError(f"resource {group.id} has a dependent object")
        return orig_delete_group(self, name=name, group_id=group_id)

    orig_delete_vpc = EC2Backend.delete_vpc

    def delete_vpc(self: Any, vpc_id: str) -> Any:
        if CONFIG.dependency_violations and vpc_id in self.vpcs:
            groups = list(self.groups.get(vpc_id, {}).values())
            attached = any(igw.vpc is not None and igw.vpc.id == vpc_id
                           for igw in list(self.internet_gateways.values()))
            if attached or any(not (g.is_default or g.name == "default") for g in groups):
                raise DependencyViolationError(f"The vpc '{vpc_id}' has dependencies and cannot be deleted.")
            # moto's delete_vpc goes on to delete the default group (after the
            # route tables): refuse before anything is deleted if that would fail.
            if not self.describe_subnets(filters={"vpc-id": vpc_id}):
                if any(_group_in_use(self, g.id) for g in groups):
                    raise DependencyViolationError(f"The vpc '{vpc_id}' has dependencies and cannot be deleted.")
        return orig_delete_vpc(self, vpc_id)

    orig_detach = EC2Backend.detach_internet_gateway

    def detach_internet_gateway(self: Any, internet_gateway_id: str, vpc_id: str) -> Any:
        if CONFIG.dependency_violations:
            igw = self.get_internet_gateway(internet_gateway_id)  # moto's NotFound
            if igw.vpc is not None and igw.vpc.id == vpc_id and _public_addresses_in(self, vpc_id):
                raise DependencyViolationError(
                    f"Network {vpc_id} has some mapped public address(es). "
                    "Please unmap those public address(es) before detaching the gateway."
                )
        return orig_detach(self, internet_gateway_id, vpc_id)

    # A revoked rule, or the rules of a deleted group, are gone with their
    # tags on EC2: DescribeTags no longer lists them (moto keeps the tags).
    def _rule_ids(group: Any) -> set[str]:
        return {r.id for r in list(group.ingress_rules) + list(group.egress_rules)}

    def _forgetting_rules(orig: Any) -> Any:
        def wrapped(self: Any, group_name_or_id: str, *args: Any, **kwargs: Any) -> Any:
            group = self.get_security_group_by_name_or_id(group_name_or_id, kwargs.get("vpc_id"))
            before = _rule_ids(group) if group is not None else set()
            out = orig(self, group_name_or_id, *args, **kwargs)
            if group is not None:
                for gone in before - _rule_ids(group):
                    self.tags.pop(gone, None)
            return out
        return wrapped

    EC2Backend.revoke_security_group_ingress = _forgetting_rules(EC2Backend.revoke_security_group_ingress)
    EC2Backend.revoke_security_group_egress = _forgetting_rules(EC2Backend.revoke_security_group_egress)

    def delete_security_group_and_rules(self: Any, name: str | None = None, group_id: str | None = None) -> Any:
        group = _find_group(self, name, group_id)
        rules = _rule_ids(group) if group is not None else set()
        out = delete_security_group(self, name=name, group_id=group_id)
        for gone in rules:
            self.tags.pop(gone, None)
        return out

    EC2Backend.delete_subnet = delete_subnet
    EC2Backend.delete_security_group = delete_security_group_and_rules
    EC2Backend.delete_vpc = delete_vpc
    EC2Backend.detach_internet_gateway = detach_internet_gateway


_applied = False


def apply() -> None:
    global _applied
    if not _applied:
        _patch_ec2()
        _applied = True
