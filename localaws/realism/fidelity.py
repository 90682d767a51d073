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


_applied = False


def apply() -> None:
    global _applied
    if not _applied:
        _patch_security_group_rule_description()
        _applied = True
