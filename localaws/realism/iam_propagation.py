"""IAM eventual consistency: a new role is not yet a valid trust principal.

For a few seconds after a role is created, IAM refuses a trust policy that
names it as a principal: CreateRole (and UpdateAssumeRolePolicy) whose
`AssumeRolePolicyDocument` has that role's ARN in a statement's
`Principal.AWS` (a string or a list) fails with `MalformedPolicyDocument`
(400) `Invalid principal in policy: "AWS":"arn:aws:iam::ACCOUNT:role/NAME"`
-- Terraform's AWS provider retries exactly this. moto accepts the role at
once, so an engine that does not retry would pass its tests and fail on AWS.

With `iam_principal_propagation_ms` > 0 in the config, these patches of
moto's IAM responses refuse the two calls while any AWS principal of the
trust policy is a role younger than that many milliseconds (wall clock: not
multiplied by `time_scale`, like `latency_ms`). The error is moto's own
`MalformedPolicyDocument`, raised before moto's backend is called, so moto
writes IAM's Query XML error (`<ErrorResponse><Error><Type>Sender`) and
nothing is created or changed; the middleware has counted the call already.

The creation time of every role (moto's `create_role`, whoever calls it) is
remembered by ARN, per account, whatever the config says (so turning the key
on also covers roles created just before); DeleteRole and /moto-api/reset
forget it. Principals that are not role ARNs (`*`, account ids, account root
ARNs, users, service and federated principals), ARNs of roles the layer has
not seen created, unparsable documents, and a CreateRole whose name is
taken or an UpdateAssumeRolePolicy of an unknown role are left to moto.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Iterator

from .config import CONFIG
from .lifecycle import now

# arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME
_ROLE_ARN_RE = re.compile(r"arn:[a-z0-9-]+:iam::(\d{12}):role/.+")

_lock = threading.Lock()
# account id -> role ARN -> creation time (lifecycle.now, monotonic seconds)
_created: dict[str, dict[str, float]] = {}


def reset() -> None:
    """Forget every creation time (POST /moto-api/reset)."""
    with _lock:
        _created.clear()


def _record(account: str, arn: str) -> None:
    with _lock:
        _created.setdefault(account, {})[arn] = now()


def _forget(account: str, arn: str) -> None:
    with _lock:
        _created.get(account, {}).pop(arn, None)


def _age(arn: str) -> float | None:
    """Seconds since the role with this ARN was created; None if not known."""
    m = _ROLE_ARN_RE.fullmatch(arn)
    if m is None:
        return None
    with _lock:
        t = _created.get(m.group(1), {}).get(arn)
    return None if t is None else now() - t


def _aws_principals(document: Any) -> Iterator[str]:
    """The `Principal.AWS` entries of a trust policy, in document order."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return  # moto's own validation (or acceptance) applies
    if not isinstance(document, dict):
        return
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return
    for statement in statements:
        principal = statement.get("Principal") if isinstance(statement, dict) else None
        if not isinstance(principal, dict):
            continue  # "*" or malformed
        aws = principal.get("AWS")
        for entry in aws if isinstance(aws, list) else [aws]:
            if isinstance(entry, str):
                yield entry


def check_trust_policy(document: Any) -> None:
    """Raise MalformedPolicyDocument if a principal is a role still propagating."""
    window_ms = CONFIG.iam_principal_propagation_ms
    if not window_ms or not document:
        return
    for arn in _aws_principals(document):
        age = _age(arn)
        if age is not None and age * 1000.0 < window_ms:
            from moto.iam.exceptions import MalformedPolicyDocument

            raise MalformedPolicyDocument(f'Invalid principal in policy: "AWS":"{arn}"')


def _patch_iam() -> None:
    from moto.iam.models import IAMBackend
    from moto.iam.responses import IamResponse

    orig_create_role = IAMBackend.create_role

    def create_role(self: Any, *a: Any, **kw: Any) -> Any:
        role = orig_create_role(self, *a, **kw)
        _record(self.account_id, role.arn)
        return role

    orig_delete_role = IAMBackend.delete_role

    def delete_role(self: Any, role_name: str) -> None:
        arn = next((r.arn for r in self.get_roles() if r.name == role_name), None)
        orig_delete_role(self, role_name)
        if arn is not None:
            _forget(self.account_id, arn)

    orig_resp_create_role = IamResponse.create_role

    def resp_create_role(self: Any) -> Any:
        name = self._get_param("RoleName")
        if not any(r.name == name for r in self.backend.get_roles()):  # else moto's EntityAlreadyExists
            check_trust_policy(self._get_param("AssumeRolePolicyDocument"))
        return orig_resp_create_role(self)

    orig_resp_update = IamResponse.update_assume_role_policy

    def resp_update_assume_role_policy(self: Any) -> Any:
        self.backend.get_role(self._get_param("RoleName"))  # moto's NoSuchEntity first
        check_trust_policy(self._get_param("PolicyDocument"))
        return orig_resp_update(self)

    IAMBackend.create_role = create_role
    IAMBackend.delete_role = delete_role
    IamResponse.create_role = resp_create_role
    IamResponse.update_assume_role_policy = resp_update_assume_role_policy


_applied = False


def apply() -> None:
    global _applied
    if not _applied:
        _patch_iam()
        _applied = True
