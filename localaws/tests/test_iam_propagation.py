"""IAM eventual consistency: for `iam_principal_propagation_ms` after a role
is created, a trust policy naming it in `Principal.AWS` is refused with
MalformedPolicyDocument (realism/iam_propagation.py), as IAM does."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError

from conftest import control, make_client

NS = "{https://iam.amazonaws.com/doc/2010-05-08/}"
WINDOW_MS = 1500
EC2_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def trusting(*principals, key="AWS"):
    """A trust policy allowing sts:AssumeRole to `principals` (one: a string; several: a list)."""
    value = principals[0] if len(principals) == 1 else list(principals)
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {key: value}, "Action": "sts:AssumeRole"}]})


@pytest.fixture
def propagation(realism):
    realism({"iam_principal_propagation_ms": WINDOW_MS})


def create(iam, name, policy=EC2_TRUST):
    """Create role `name`; return (its ARN, local monotonic time once created)."""
    doc = policy if isinstance(policy, str) else json.dumps(policy)
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=doc)["Role"]["Arn"]
    return arn, time.monotonic()


def refused(fn, arn, **kw):
    """fn(**kw) fails as IAM refuses a principal that is not propagated yet."""
    with pytest.raises(ClientError) as excinfo:
        fn(**kw)
    r = excinfo.value.response
    assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"]["Message"]) == (
        400, "MalformedPolicyDocument", f'Invalid principal in policy: "AWS":"{arn}"'), r


def still_young(created_at):
    """The refusal checks are only meaningful while the role is well inside the window."""
    assert time.monotonic() - created_at < WINDOW_MS / 1000 - 0.3, "test machine too slow for the window"


def wait_past_window(created_at):
    time.sleep(max(0.0, created_at + WINDOW_MS / 1000 + 0.1 - time.monotonic()))


def role_names(iam):
    return {r["RoleName"] for r in iam.list_roles()["Roles"]}


def test_create_role_trusting_a_new_role_is_refused_until_it_propagates(aws, propagation):
    iam = aws("iam")
    a, created_at = create(iam, "a")
    refused(iam.create_role, a, RoleName="b", AssumeRolePolicyDocument=trusting(a))
    refused(iam.create_role, a, RoleName="b", AssumeRolePolicyDocument=trusting(a))  # still, when retried at once
    still_young(created_at)
    assert role_names(iam) == {"a"}  # the refused call created nothing
    wait_past_window(created_at)
    b = iam.create_role(RoleName="b", AssumeRolePolicyDocument=trusting(a))["Role"]
    assert b["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"AWS": a}
    assert role_names(iam) == {"a", "b"}


def test_update_assume_role_policy_is_refused_until_the_role_propagates(aws, propagation):
    iam = aws("iam")
    create(iam, "b")
    a, created_at = create(iam, "a")
    refused(iam.update_assume_role_policy, a, RoleName="b", PolicyDocument=trusting(a))
    still_young(created_at)
    assert iam.get_role(RoleName="b")["Role"]["AssumeRolePolicyDocument"] == EC2_TRUST  # unchanged
    wait_past_window(created_at)
    iam.update_assume_role_policy(RoleName="b", PolicyDocument=trusting(a))
    assert iam.get_role(RoleName="b")["Role"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"AWS": a}


def test_off_by_default_a_new_role_is_trusted_at_once(aws, endpoint):
    assert control(endpoint, "GET", "/_realism/config")["iam_principal_propagation_ms"] == 0
    iam = aws("iam")
    a, _ = create(iam, "a")
    iam.create_role(RoleName="b", AssumeRolePolicyDocument=trusting(a))
    create(iam, "c")
    iam.update_assume_role_policy(RoleName="c", PolicyDocument=trusting(a))
    assert role_names(iam) == {"a", "b", "c"}


def test_zero_turns_it_off_at_run_time(aws, realism):
    realism({"iam_principal_propagation_ms": WINDOW_MS})
    iam = aws("iam")
    a, _ = create(iam, "a")
    refused(iam.create_role, a, RoleName="b", AssumeRolePolicyDocument=trusting(a))
    realism({"iam_principal_propagation_ms": 0})
    iam.create_role(RoleName="b", AssumeRolePolicyDocument=trusting(a))


def test_principals_that_are_not_new_roles_pass_at_once(aws, account, propagation):
    iam = aws("iam")
    user = iam.create_user(UserName="deployer")["User"]["Arn"]
    passing = [
        trusting("ec2.amazonaws.com", key="Service"),
        trusting("eks.amazonaws.com", "eks-fargate-pods.amazonaws.com", key="Service"),
        json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"}]}),
        trusting("*"),
        trusting(account),
        trusting(f"arn:aws:iam::{account}:root"),
        trusting(user),
        trusting(f"arn:aws:iam::{account}:role/never-created"),
        trusting(f"arn:aws:iam::{account}:oidc-provider/oidc.eks.ap-south-1.amazonaws.com/id/X",
                 key="Federated"),
    ]
    for i, doc in enumerate(passing):
        iam.create_role(RoleName=f"r{i}", AssumeRolePolicyDocument=doc)
    assert len(role_names(iam)) == len(passing)


def test_a_list_principal_is_refused_naming_the_new_role(aws, account, propagation):
    iam = aws("iam")
    old, old_at = create(iam, "old")
    wait_past_window(old_at)
    new, created_at = create(iam, "new")
    refused(iam.create_role, new, RoleName="b", AssumeRolePolicyDocument=trusting(old, new))
    # A new role in a Service + AWS principal, in a second statement.
    doc = json.dumps({"Version": "2012-10-17", "Statement": [
        EC2_TRUST["Statement"][0],
        {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com", "AWS": [old, new]},
         "Action": "sts:AssumeRole"}]})
    refused(iam.create_role, new, RoleName="b", AssumeRolePolicyDocument=doc)
    still_young(created_at)
    iam.create_role(RoleName="b", AssumeRolePolicyDocument=trusting(old, f"arn:aws:iam::{account}:root"))
    wait_past_window(created_at)
    iam.create_role(RoleName="c", AssumeRolePolicyDocument=trusting(old, new))
    assert role_names(iam) == {"old", "new", "b", "c"}


def test_a_new_role_of_another_account_is_refused_too(aws, endpoint, account, propagation):
    other = f"{(int(account) + 555_000_000) % 10**12:012d}"
    a, created_at = create(make_client(endpoint, "iam", other), "a")
    iam = aws("iam")
    refused(iam.create_role, a, RoleName="b", AssumeRolePolicyDocument=trusting(a))
    still_young(created_at)
    wait_past_window(created_at)
    iam.create_role(RoleName="b", AssumeRolePolicyDocument=trusting(a))


def test_a_recreated_role_is_new_again_and_a_deleted_one_is_left_to_moto(aws, propagation):
    iam = aws("iam")
    a, created_at = create(iam, "a")
    wait_past_window(created_at)
    iam.delete_role(RoleName="a")
    iam.create_role(RoleName="b", AssumeRolePolicyDocument=trusting(a))  # unknown ARN: moto accepts it
    a_again, _ = create(iam, "a")
    assert a_again == a
    refused(iam.create_role, a, RoleName="c", AssumeRolePolicyDocument=trusting(a))


def test_moto_errors_come_first(aws, propagation):
    iam = aws("iam")
    a, _ = create(iam, "a")
    with pytest.raises(ClientError) as e:
        iam.create_role(RoleName="a", AssumeRolePolicyDocument=trusting(a))
    assert e.value.response["Error"]["Code"] == "EntityAlreadyExists"
    with pytest.raises(ClientError) as e:
        iam.update_assume_role_policy(RoleName="missing", PolicyDocument=trusting(a))
    assert e.value.response["Error"]["Code"] == "NoSuchEntity"


def test_refusal_is_the_iam_query_xml_error_and_is_counted(aws, endpoint, account, propagation):
    iam = aws("iam")
    raw = []
    iam.meta.events.register("before-parse.iam.*", lambda response_dict, **_: raw.append(response_dict))
    a, _ = create(iam, "a")
    refused(iam.create_role, a, RoleName="b", AssumeRolePolicyDocument=trusting(a))
    r = raw[-1]
    assert r["status_code"] == 400 and r["headers"]["Content-Type"].startswith("text/xml")
    root = ET.fromstring(r["body"])
    assert root.tag == NS + "ErrorResponse"
    assert (root.findtext(f"{NS}Error/{NS}Type"), root.findtext(f"{NS}Error/{NS}Code"),
            root.findtext(f"{NS}Error/{NS}Message")) == (
        "Sender", "MalformedPolicyDocument", f'Invalid principal in policy: "AWS":"{a}"')

    # The same shape as moto's own MalformedPolicyDocument (a policy that is not JSON).
    with pytest.raises(ClientError) as e:
        iam.put_role_policy(RoleName="a", PolicyName="p", PolicyDocument="not json")
    assert e.value.response["Error"]["Code"] == "MalformedPolicyDocument"
    moto_root = ET.fromstring(raw[-1]["body"])
    assert raw[-1]["status_code"] == 400
    assert [c.tag for c in moto_root] == [c.tag for c in root]
    assert [c.tag for c in moto_root.find(NS + "Error")] == [c.tag for c in root.find(NS + "Error")]

    calls = {c["operation"]: {k: v for k, v in c.items() if k not in ("served_s", "cpu_s")}
             for c in control(endpoint, "GET", f"/_realism/calls?account={account}")["calls"]}
    assert calls["CreateRole"] == {"account": account, "service": "iam", "operation": "CreateRole",
                                   "mutating": True, "count": 2, "faults": 0}


@pytest.mark.parametrize("bad", ["1500", -1, None, True])
def test_bad_values_are_rejected_with_400(endpoint, bad):
    req = urllib.request.Request(endpoint + "/_realism/config", method="POST",
                                 data=json.dumps({"iam_principal_propagation_ms": bad}).encode())
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(req, timeout=10)
    assert excinfo.value.code == 400
    assert "iam_principal_propagation_ms must be" in json.load(excinfo.value)["error"]
    assert control(endpoint, "GET", "/_realism/config")["iam_principal_propagation_ms"] == 0
