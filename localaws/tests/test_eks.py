"""EKS: lasting CREATING/DELETING phases, the one-profile-change-at-a-time
rule, and the operations the layer serves (access entries, updates)."""

from __future__ import annotations

import time
import urllib.error

import pytest
from botocore.exceptions import ClientError

from conftest import TIME_SCALE, wait_for

ROLE = "arn:aws:iam::{}:role/eks-cluster"
ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


def create_cluster(eks, account, name="c1", mode="API_AND_CONFIG_MAP", version="1.30"):
    return eks.create_cluster(
        name=name, version=version, roleArn=ROLE.format(account),
        resourcesVpcConfig={"subnetIds": ["subnet-1", "subnet-2"]},
        accessConfig={"authenticationMode": mode},
    )["cluster"]


def active_cluster(eks, account, **kw):
    create_cluster(eks, account, **kw)
    name = kw.get("name", "c1")
    wait_for(lambda: eks.describe_cluster(name=name)["cluster"]["status"], lambda s: s == "ACTIVE")
    return name


def create_profile(eks, account, name, cluster="c1"):
    return eks.create_fargate_profile(
        clusterName=cluster, fargateProfileName=name, podExecutionRoleArn=ROLE.format(account),
        subnets=["subnet-1"], selectors=[{"namespace": name}],
    )["fargateProfile"]


def error(excinfo):
    e = excinfo.value.response
    return e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Code"], e["Error"]["Message"]


def test_cluster_is_creating_until_its_duration_passes_then_active(aws, account):
    eks = aws("eks")
    started = time.monotonic()
    cluster = create_cluster(eks, account)
    assert cluster["status"] == "CREATING"
    described = eks.describe_cluster(name="c1")["cluster"]
    assert described["status"] == "CREATING"
    assert "endpoint" not in described  # no API server yet
    assert not described.get("certificateAuthority", {}).get("data")
    wait_for(lambda: eks.describe_cluster(name="c1")["cluster"]["status"], lambda s: s == "ACTIVE")
    assert time.monotonic() - started >= 600 * TIME_SCALE
    described = eks.describe_cluster(name="c1")["cluster"]
    assert described["endpoint"].startswith("https://")
    assert described["certificateAuthority"]["data"]


def test_delete_cluster_is_deleting_then_gone(aws, account, realism):
    eks = aws("eks")
    active_cluster(eks, account)
    realism({"time_scale": 0.005})  # delete 1.5 s
    assert eks.delete_cluster(name="c1")["cluster"]["status"] == "DELETING"
    assert eks.describe_cluster(name="c1")["cluster"]["status"] == "DELETING"
    assert eks.list_clusters()["clusters"] == ["c1"]

    def gone():
        try:
            eks.describe_cluster(name="c1")
            return False
        except ClientError as e:
            return e.response["Error"]["Code"] == "ResourceNotFoundException"

    wait_for(gone, bool)
    assert eks.list_clusters()["clusters"] == []


def test_fargate_profile_needs_an_active_cluster(aws, account):
    eks = aws("eks")
    create_cluster(eks, account)
    with pytest.raises(ClientError) as e:
        create_profile(eks, account, "blue")
    assert error(e)[:2] == (400, "InvalidRequestException")


def test_second_fargate_profile_during_the_first_fails_resource_in_use(aws, account, realism):
    eks = aws("eks")
    active_cluster(eks, account)
    realism({"time_scale": 0.01})  # profile create 1.5 s: a wide window
    assert create_profile(eks, account, "blue")["status"] == "CREATING"
    with pytest.raises(ClientError) as e:
        create_profile(eks, account, "green")
    status, code, message = error(e)
    assert (status, code) == (409, "ResourceInUseException")
    assert message == "Cannot create Fargate Profile green because cluster c1 currently has Fargate profile blue in status CREATING"
    assert e.value.response["Error"]["Code"] == "ResourceInUseException"
    # deleting during the creation fails the same way
    with pytest.raises(ClientError) as e:
        eks.delete_fargate_profile(clusterName="c1", fargateProfileName="blue")
    assert error(e)[:2] == (409, "ResourceInUseException")

    wait_for(lambda: eks.describe_fargate_profile(clusterName="c1", fargateProfileName="blue")["fargateProfile"]["status"],
             lambda s: s == "ACTIVE")
    assert create_profile(eks, account, "green")["status"] == "CREATING"
    wait_for(lambda: eks.describe_fargate_profile(clusterName="c1", fargateProfileName="green")["fargateProfile"]["status"],
             lambda s: s == "ACTIVE")

    # one deletion at a time too; DELETING -> gone
    assert eks.delete_fargate_profile(clusterName="c1", fargateProfileName="blue")["fargateProfile"]["status"] == "DELETING"
    with pytest.raises(ClientError) as e:
        eks.delete_fargate_profile(clusterName="c1", fargateProfileName="green")
    assert error(e) == (409, "ResourceInUseException",
                        "Cannot Delete Fargate Profile green because cluster c1 currently has Fargate profile blue in status DELETING")
    wait_for(lambda: eks.list_fargate_profiles(clusterName="c1")["fargateProfileNames"], lambda n: n == ["green"])


def test_fargate_profiles_beyond_the_quota_are_refused(aws, account, realism):
    eks = aws("eks")
    active_cluster(eks, account)
    realism({"eks_fargate_profiles_per_cluster": 2})

    def profile_made(name):
        create_profile(eks, account, name)
        wait_for(lambda: eks.describe_fargate_profile(clusterName="c1", fargateProfileName=name)["fargateProfile"]["status"],
                 lambda s: s == "ACTIVE")

    profile_made("blue")
    profile_made("green")
    with pytest.raises(ClientError) as e:
        create_profile(eks, account, "develop")
    assert error(e) == (400, "ResourceLimitExceededException",
                        "Cannot create Fargate Profile develop: cluster c1 already has 2 Fargate profiles, the limit is 2")
    assert sorted(eks.list_fargate_profiles(clusterName="c1")["fargateProfileNames"]) == ["blue", "green"]
    # a raised quota lets it through
    realism({"eks_fargate_profiles_per_cluster": 3})
    profile_made("develop")
    with pytest.raises(urllib.error.HTTPError) as bad:
        realism({"eks_fargate_profiles_per_cluster": 0})
    assert bad.value.code == 400


def test_deleting_a_cluster_with_fargate_profiles_fails(aws, account):
    eks = aws("eks")
    active_cluster(eks, account)
    create_profile(eks, account, "blue")
    with pytest.raises(ClientError) as e:
        eks.delete_cluster(name="c1")
    assert error(e)[:2] == (409, "ResourceInUseException")
    wait_for(lambda: eks.describe_fargate_profile(clusterName="c1", fargateProfileName="blue")["fargateProfile"]["status"],
             lambda s: s == "ACTIVE")
    eks.delete_fargate_profile(clusterName="c1", fargateProfileName="blue")
    wait_for(lambda: eks.list_fargate_profiles(clusterName="c1")["fargateProfileNames"], lambda n: n == [])
    assert eks.delete_cluster(name="c1")["cluster"]["status"] == "DELETING"


def test_access_entries_and_access_policies(aws, account):
    eks = aws("eks")
    create_cluster(eks, account)
    principal = f"arn:aws:iam::{account}:role/deployer"
    with pytest.raises(ClientError) as e:  # cluster still CREATING
        eks.create_access_entry(clusterName="c1", principalArn=principal)
    assert error(e)[:2] == (400, "InvalidRequestException")
    wait_for(lambda: eks.describe_cluster(name="c1")["cluster"]["status"], lambda s: s == "ACTIVE")
    cluster = eks.describe_cluster(name="c1")["cluster"]
    assert cluster["accessConfig"]["authenticationMode"] == "API_AND_CONFIG_MAP"

    # the creator's admin entry (bootstrapClusterCreatorAdminPermissions defaults to true)
    creator = f"arn:aws:iam::{account}:user/moto"
    assert eks.list_access_entries(clusterName="c1")["accessEntries"] == [creator]

    entry = eks.create_access_entry(clusterName="c1", principalArn=principal, kubernetesGroups=["deployers"])["accessEntry"]
    assert entry["principalArn"] == principal
    assert entry["type"] == "STANDARD"
    assert entry["kubernetesGroups"] == ["deployers"]
    assert entry["username"] == f"arn:aws:sts::{account}:assumed-role/deployer/{{{{SessionName}}}}"
    assert entry["accessEntryArn"].startswith(f"arn:aws:eks:ap-south-1:{account}:access-entry/c1/role/{account}/deployer/")
    with pytest.raises(ClientError) as e:
        eks.create_access_entry(clusterName="c1", principalArn=principal)
    assert error(e)[:2] == (409, "ResourceInUseException")
    assert eks.describe_access_entry(clusterName="c1", principalArn=principal)["accessEntry"] == entry
    assert sorted(eks.list_access_entries(clusterName="c1")["accessEntries"]) == sorted([creator, principal])
    updated = eks.update_access_entry(clusterName="c1", principalArn=principal, kubernetesGroups=["a", "b"])["accessEntry"]
    assert updated["kubernetesGroups"] == ["a", "b"]

    assoc = eks.associate_access_policy(
        clusterName="c1", principalArn=principal, policyArn=ADMIN_POLICY,
        accessScope={"type": "namespace", "namespaces": ["blue"]},
    )
    assert assoc["clusterName"] == "c1" and assoc["principalArn"] == principal
    assert assoc["associatedAccessPolicy"]["policyArn"] == ADMIN_POLICY
    assert assoc["associatedAccessPolicy"]["accessScope"] == {"type": "namespace", "namespaces": ["blue"]}
    listed = eks.list_associated_access_policies(clusterName="c1", principalArn=principal)
    assert [p["policyArn"] for p in listed["associatedAccessPolicies"]] == [ADMIN_POLICY]
    assert eks.list_access_entries(clusterName="c1", associatedPolicyArn=ADMIN_POLICY)["accessEntries"] == sorted([creator, principal])
    with pytest.raises(ClientError) as e:
        eks.associate_access_policy(clusterName="c1", principalArn=principal, policyArn=ADMIN_POLICY,
                                    accessScope={"type": "namespace"})
    assert error(e)[:2] == (400, "InvalidParameterException")
    eks.disassociate_access_policy(clusterName="c1", principalArn=principal, policyArn=ADMIN_POLICY)
    assert eks.list_associated_access_policies(clusterName="c1", principalArn=principal)["associatedAccessPolicies"] == []

    policies = eks.list_access_policies()["accessPolicies"]
    assert {"name": "AmazonEKSClusterAdminPolicy", "arn": ADMIN_POLICY} in policies

    eks.delete_access_entry(clusterName="c1", principalArn=principal)
    with pytest.raises(ClientError) as e:
        eks.describe_access_entry(clusterName="c1", principalArn=principal)
    assert error(e)[:2] == (404, "ResourceNotFoundException")


def test_access_entries_need_api_authentication_mode(aws, account):
    eks = aws("eks")
    active_cluster(eks, account, mode="CONFIG_MAP")
    assert eks.list_access_entries(clusterName="c1")["accessEntries"] == []
    with pytest.raises(ClientError) as e:
        eks.create_access_entry(clusterName="c1", principalArn=f"arn:aws:iam::{account}:role/x")
    assert error(e)[:2] == (400, "InvalidRequestException")


def test_update_cluster_version_and_describe_update(aws, account):
    eks = aws("eks")
    active_cluster(eks, account, version="1.30")
    update = eks.update_cluster_version(name="c1", version="1.31")["update"]
    assert update["status"] == "InProgress"
    assert update["type"] == "VersionUpdate"
    assert {"type": "Version", "value": "1.31"} in update["params"]
    assert update["errors"] == []
    cluster = eks.describe_cluster(name="c1")["cluster"]
    assert (cluster["status"], cluster["version"]) == ("UPDATING", "1.30")
    assert eks.list_updates(name="c1")["updateIds"] == [update["id"]]
    with pytest.raises(ClientError) as e:  # one update at a time
        eks.update_cluster_version(name="c1", version="1.31")
    assert error(e)[:2] == (409, "ResourceInUseException")
    wait_for(lambda: eks.describe_update(name="c1", updateId=update["id"])["update"]["status"], lambda s: s == "Successful")
    cluster = eks.describe_cluster(name="c1")["cluster"]
    assert (cluster["status"], cluster["version"]) == ("ACTIVE", "1.31")
    with pytest.raises(ClientError) as e:  # minor versions one at a time
        eks.update_cluster_version(name="c1", version="1.33")
    assert error(e)[:2] == (400, "InvalidParameterException")
    with pytest.raises(ClientError) as e:
        eks.describe_update(name="c1", updateId="00000000-0000-0000-0000-000000000000")
    assert error(e)[:2] == (404, "ResourceNotFoundException")


def test_update_cluster_config_returns_an_update(aws, account, realism):
    eks = aws("eks")
    active_cluster(eks, account)
    realism({"time_scale": 0.005})  # config update 1.5 s
    logging = {"clusterLogging": [{"types": ["api", "audit"], "enabled": True}]}
    update = eks.update_cluster_config(name="c1", logging=logging)["update"]
    assert (update["type"], update["status"]) == ("LoggingUpdate", "InProgress")
    assert eks.describe_cluster(name="c1")["cluster"]["status"] == "UPDATING"
    wait_for(lambda: eks.describe_update(name="c1", updateId=update["id"])["update"]["status"], lambda s: s == "Successful")
    cluster = eks.describe_cluster(name="c1")["cluster"]
    assert cluster["status"] == "ACTIVE"
    assert cluster["logging"] == logging
    with pytest.raises(ClientError) as e:
        eks.update_cluster_config(name="c1", logging=logging, accessConfig={"authenticationMode": "API"})
    assert error(e)[:2] == (400, "InvalidParameterException")
