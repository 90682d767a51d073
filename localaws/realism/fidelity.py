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


_THUMBPRINT_CONSTRAINT = (
    "Member must satisfy constraint: "
    "[Member must have length less than or equal to 40, Member must have length greater than or equal to 40]"
)


def _patch_oidc_thumbprint_length() -> None:
    """IAM thumbprints are exactly 40 characters (the IAM model's
    thumbprintType: min 40, max 40), in CreateOpenIDConnectProvider and
    UpdateOpenIDConnectProviderThumbprint alike; moto only rejects longer
    ones, and only on create. (boto3 checks this client-side; the Rust SDK
    does not.)"""
    from moto.iam.exceptions import ValidationError
    from moto.iam.models import IAMBackend, OpenIDConnectProvider

    original_validate = OpenIDConnectProvider._validate
    original_update = IAMBackend.update_open_id_connect_provider_thumbprint

    def validate(self: Any, url: str, thumbprint_list: list[str], client_id_list: list[str]) -> None:
        lengths = [len(t) for t in thumbprint_list]
        if any(n < 40 for n in lengths) and not any(n > 40 for n in lengths):  # moto reports those
            self._errors.append(self._format_error(key="thumbprintList", value=thumbprint_list,
                                                   constraint=_THUMBPRINT_CONSTRAINT))
        return original_validate(self, url, thumbprint_list, client_id_list)

    def update_thumbprint(self: Any, arn: str, thumbprint_list: list[str]) -> None:
        if any(len(t) != 40 for t in thumbprint_list):
            raise ValidationError(
                f'1 validation error detected: Value "{thumbprint_list}" at "thumbprintList" '
                f"failed to satisfy constraint: {_THUMBPRINT_CONSTRAINT}"
            )
        return original_update(self, arn, thumbprint_list)

    OpenIDConnectProvider._validate = validate
    IAMBackend.update_open_id_connect_provider_thumbprint = update_thumbprint


_applied = False


def apply() -> None:
    global _applied
    if not _applied:
        _patch_security_group_rule_description()
        _patch_eks_tagging()
        _patch_oidc_thumbprint_length()
        _applied = True
