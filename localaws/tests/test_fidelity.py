"""Where the layer corrects moto to answer as AWS does (realism/fidelity.py)."""

from __future__ import annotations

from test_eks import ROLE, active_cluster, create_profile
from conftest import wait_for


def test_group_pair_rule_description_is_reported(aws):
    ec2 = aws("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    a = ec2.create_security_group(GroupName="a", Description="a", VpcId=vpc)["GroupId"]
    b = ec2.create_security_group(GroupName="b", Description="b", VpcId=vpc)["GroupId"]
    rules = ec2.authorize_security_group_ingress(
        GroupId=a,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [{"GroupId": b, "Description": "from b"}]}],
    )["SecurityGroupRules"]
    got = ec2.describe_security_group_rules(SecurityGroupRuleIds=[rules[0]["SecurityGroupRuleId"]])["SecurityGroupRules"][0]
    assert got["Description"] == "from b"
    assert got["ReferencedGroupInfo"]["GroupId"] == b


def test_fargate_profiles_and_access_entries_can_be_tagged(aws, account):
    eks = aws("eks")
    active_cluster(eks, account)
    profile = create_profile(eks, account, "p1")
    wait_for(lambda: eks.describe_fargate_profile(clusterName="c1", fargateProfileName="p1")["fargateProfile"]["status"], lambda s: s == "ACTIVE")
    arn = profile["fargateProfileArn"]
    eks.tag_resource(resourceArn=arn, tags={"team": "a", "old": "x"})
    eks.untag_resource(resourceArn=arn, tagKeys=["old"])
    assert eks.list_tags_for_resource(resourceArn=arn)["tags"] == {"team": "a"}
    assert eks.describe_fargate_profile(clusterName="c1", fargateProfileName="p1")["fargateProfile"]["tags"] == {"team": "a"}

    entry = eks.create_access_entry(clusterName="c1", principalArn=ROLE.format(account).replace("eks-cluster", "jenkins"))["accessEntry"]
    eks.tag_resource(resourceArn=entry["accessEntryArn"], tags={"team": "b"})
    assert eks.list_tags_for_resource(resourceArn=entry["accessEntryArn"])["tags"] == {"team": "b"}


def test_elbv2_describe_tags_of_a_deleted_load_balancer_or_target_group_fails_the_call(aws):
    import botocore.exceptions
    import pytest

    from test_ec2_elb import network

    ec2, elb = aws("ec2"), aws("elbv2")
    vpc, a, b = network(ec2)
    lb = elb.create_load_balancer(Name="gone", Subnets=[a, b], Type="application",
                                  Tags=[{"Key": "k", "Value": "v"}])["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elb.create_target_group(Name="gone-tg", Protocol="HTTP", Port=80, VpcId=vpc,
                                 TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    got = elb.describe_tags(ResourceArns=[lb, tg])["TagDescriptions"]
    assert {d["ResourceArn"] for d in got} == {lb, tg}
    elb.delete_load_balancer(LoadBalancerArn=lb)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        elb.describe_tags(ResourceArns=[lb, tg])
    assert e.value.response["Error"]["Code"] == "LoadBalancerNotFound"
    elb.delete_target_group(TargetGroupArn=tg)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        elb.describe_tags(ResourceArns=[tg])
    assert e.value.response["Error"]["Code"] == "TargetGroupNotFound"


def test_concurrent_conditional_s3_writes_have_one_winner(aws):
    """S3 applies If-None-Match / If-Match atomically: of many racing
    writers exactly one succeeds, the others get 412."""
    import concurrent.futures

    from botocore.exceptions import ClientError

    s3 = aws("s3")
    s3.create_bucket(Bucket="race", CreateBucketConfiguration={"LocationConstraint": "ap-south-1"})

    def create(i: int) -> str:
        try:
            s3.put_object(Bucket="race", Key="lock", Body=str(i).encode(), IfNoneMatch="*")
            return "won"
        except ClientError as e:
            return e.response["Error"]["Code"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(create, range(16)))
    assert results.count("won") == 1, results
    assert set(results) - {"won"} == {"PreconditionFailed"}, results

    etag = s3.head_object(Bucket="race", Key="lock")["ETag"]

    def replace(i: int) -> str:
        try:
            s3.put_object(Bucket="race", Key="lock", Body=f"r{i}".encode(), IfMatch=etag)
            return "won"
        except ClientError as e:
            return e.response["Error"]["Code"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(replace, range(16)))
    assert results.count("won") == 1, results


def test_a_tls_only_bucket_policy_lets_the_local_endpoints_requests_through(aws):
    """The local AWS stands in for AWS's HTTPS endpoints; a deny on requests
    without TLS must not deny them, while other denials still apply."""
    import json as _json

    from botocore.exceptions import ClientError

    s3 = aws("s3")
    s3.create_bucket(Bucket="tls", CreateBucketConfiguration={"LocationConstraint": "ap-south-1"})
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
             "Resource": ["arn:aws:s3:::tls", "arn:aws:s3:::tls/*"],
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        ],
    }
    s3.put_bucket_policy(Bucket="tls", Policy=_json.dumps(policy))
    s3.put_object(Bucket="tls", Key="k", Body=b"v")
    assert s3.get_object(Bucket="tls", Key="k")["Body"].read() == b"v"

    policy["Statement"].append({"Sid": "NoReads", "Effect": "Deny", "Principal": "*",
                                "Action": "s3:GetObject", "Resource": "arn:aws:s3:::tls/*"})
    s3.put_bucket_policy(Bucket="tls", Policy=_json.dumps(policy))
    try:
        s3.get_object(Bucket="tls", Key="k")
        raise AssertionError("an unconditional deny still applies")
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_get_bucket_versioning_answers_a_versioning_configuration(endpoint, account):
    """The document's root is `VersioningConfiguration` (the S3 API
    reference); botocore ignores the root, so read the raw answer."""
    import urllib.request

    from conftest import make_client

    s3 = make_client(endpoint, "s3", account)
    s3.create_bucket(Bucket="ver", CreateBucketConfiguration={"LocationConstraint": "ap-south-1"})
    s3.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="ver")["Status"] == "Enabled"
    url = s3.generate_presigned_url("get_bucket_versioning", Params={"Bucket": "ver"})
    body = urllib.request.urlopen(url).read().decode()
    assert "<VersioningConfiguration" in body and "<Status>Enabled</Status>" in body, body
