"""Fixes where moto 5.2.5 answers differently from AWS in ways slipway can see.

Each patch is small and names the AWS behaviour it restores.
"""

from __future__ import annotations

from typing import Any


def _patch_security_group_rule_description() -> None:
    """DescribeSecurityGroupRules reports the description of a rule whose
    source is another security group (AWS keeps it on the group pair); moto
    only looks at the CIDR range's description."""
    from moto.ec2.models.security_groups import SecurityGroupRule

    def description(self: Any) -> str | None:
        return self.ip_range.get("Description") or (self.source_group or {}).get("Description")

    SecurityGroupRule.description = property(description)


def _patch_eks_tagging() -> None:
    """EKS TagResource / UntagResource / ListTagsForResource accept the ARNs
    of Fargate profiles and access entries, not only of clusters; moto only
    knows clusters (access entries are the layer's own, see eks_api.py)."""
    from moto.eks.models import EKSBackend

    def tagged(backend: Any, arn: str) -> dict[str, str] | None:
        for cluster in backend.clusters.values():
            for profile in cluster.fargate_profiles.values():
                if profile.fargate_profile_arn == arn:
                    return profile.tags
            for entry in getattr(cluster, "_rl_access_entries", {}).values():
                if entry.get("accessEntryArn") == arn:
                    return entry.setdefault("tags", {})
        return None

    original_tag = EKSBackend.tag_resource
    original_untag = EKSBackend.untag_resource
    original_list = EKSBackend.list_tags_for_resource

    def tag_resource(self: Any, resource_arn: str, tags: dict[str, str]) -> None:
        found = tagged(self, resource_arn)
        if found is None:
            return original_tag(self, resource_arn, tags)
        found.update(tags)

    def untag_resource(self: Any, resource_arn: str, tag_keys: list[str]) -> None:
        found = tagged(self, resource_arn)
        if found is None:
            return original_untag(self, resource_arn, tag_keys)
        for k in tag_keys if isinstance(tag_keys, list) else [tag_keys]:
            found.pop(k, None)

    def list_tags_for_resource(self: Any, resource_arn: str) -> dict[str, str]:
        found = tagged(self, resource_arn)
        if found is None:
            return original_list(self, resource_arn)
        return found

    EKSBackend.tag_resource = tag_resource
    EKSBackend.untag_resource = untag_resource
    EKSBackend.list_tags_for_resource = list_tags_for_resource


_applied = False


def apply() -> None:
    global _applied
    if not _applied:
        _patch_security_group_rule_description()
        _patch_eks_tagging()
        _applied = True
