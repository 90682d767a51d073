"""Per-operation call counters, latency, passthrough fidelity, reset."""

from __future__ import annotations

import time

from conftest import control, make_client


def calls_of(endpoint, account):
    return {(c["service"], c["operation"]): c for c in control(endpoint, "GET", f"/_realism/calls?account={account}")["calls"]}


def test_counters_match_the_calls_made_and_mutating_is_right(aws, endpoint, account):
    ec2, iam, s3, eks, ecr = aws("ec2"), aws("iam"), aws("s3"), aws("eks"), aws("ecr")
    ec2.describe_vpcs()
    ec2.describe_vpcs()
    ec2.create_vpc(CidrBlock="10.1.0.0/16")
    iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")
    iam.get_role(RoleName="r")
    ecr.describe_repositories()
    ecr.create_repository(repositoryName="app")
    eks.list_clusters()
    s3.create_bucket(Bucket="bkt-counters", CreateBucketConfiguration={"LocationConstraint": "ap-south-1"})
    s3.put_object(Bucket="bkt-counters", Key="a/b.txt", Body=b"x")
    s3.get_object(Bucket="bkt-counters", Key="a/b.txt")
    s3.head_object(Bucket="bkt-counters", Key="a/b.txt")

    got = {k: (c["count"], c["mutating"], c["faults"]) for k, c in calls_of(endpoint, account).items()}
    assert got == {
        ("ec2", "DescribeVpcs"): (2, False, 0),
        ("ec2", "CreateVpc"): (1, True, 0),
        ("iam", "CreateRole"): (1, True, 0),
        ("iam", "GetRole"): (1, False, 0),
        ("ecr", "DescribeRepositories"): (1, False, 0),
        ("ecr", "CreateRepository"): (1, True, 0),
        ("eks", "ListClusters"): (1, False, 0),
        ("s3", "CreateBucket"): (1, True, 0),
        ("s3", "PutObject"): (1, True, 0),
        ("s3", "GetObject"): (1, False, 0),
        ("s3", "HeadObject"): (1, False, 0),
    }
    report = control(endpoint, "GET", f"/_realism/calls?account={account}")
    assert (report["total"], report["mutating"]) == (12, 5)
    assert all(c["account"] == account for c in report["calls"])

    control(endpoint, "DELETE", f"/_realism/calls?account={account}")
    assert control(endpoint, "GET", f"/_realism/calls?account={account}") == {
        "calls": [], "total": 0, "mutating": 0, "served_s": 0.0, "cpu_s": 0.0,
    }


def test_the_call_log_times_each_call_without_its_latency(aws, endpoint, account, realism):
    ec2 = aws("ec2")
    ec2.describe_vpcs()
    control(endpoint, "DELETE", f"/_realism/calls?account={account}")
    realism({"latency_ms": 200})
    ec2.describe_vpcs()
    ec2.describe_subnets()
    report = control(endpoint, "GET", f"/_realism/calls?account={account}&log=1")
    log = report["log"]
    assert [(e["service"], e["operation"]) for e in log] == [("ec2", "DescribeVpcs"), ("ec2", "DescribeSubnets")]
    for e in log:
        assert e["answered"] - e["arrived"] >= 0.2
        assert 0 <= e["served_s"] < 0.2
        # The CPU of serving it, the latency's sleep left out.
        assert 0 < e["cpu_s"] < 0.2
        assert e["answered"] <= report["now"]
    # The second call arrived after the first was answered: a chain of two.
    assert log[1]["arrived"] >= log[0]["answered"]
    assert abs(report["served_s"] - sum(e["served_s"] for e in log)) < 1e-9
    assert abs(report["cpu_s"] - sum(e["cpu_s"] for e in log)) < 1e-9
    assert "log" not in control(endpoint, "GET", f"/_realism/calls?account={account}")
    control(endpoint, "DELETE", f"/_realism/calls?account={account}")
    assert control(endpoint, "GET", f"/_realism/calls?account={account}&log=1")["log"] == []


def test_request_bodies_reach_moto_intact(aws):
    s3 = aws("s3")
    s3.create_bucket(Bucket="bkt-body", CreateBucketConfiguration={"LocationConstraint": "ap-south-1"})
    payload = bytes(range(256)) * 4096  # 1 MiB, binary
    s3.put_object(Bucket="bkt-body", Key="blob", Body=payload)
    assert s3.get_object(Bucket="bkt-body", Key="blob")["Body"].read() == payload
    ssm = aws("ssm")
    ssm.put_parameter(Name="/slipway/x", Value="héllo wörld", Type="String")
    assert ssm.get_parameter(Name="/slipway/x")["Parameter"]["Value"] == "héllo wörld"
    iam = aws("iam")
    iam.create_role(RoleName="with-doc", AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}')
    assert iam.get_role(RoleName="with-doc")["Role"]["RoleName"] == "with-doc"


def test_latency_is_applied_to_aws_calls_only(aws, endpoint, realism):
    eks = aws("eks")
    eks.list_clusters()  # warm
    realism({"latency_ms": 300})
    started = time.monotonic()
    eks.list_clusters()
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    control(endpoint, "GET", "/_realism/calls?account=000000000000")
    assert time.monotonic() - started < 0.3


def test_accounts_are_isolated(aws, endpoint, account):
    aws("ecr").create_repository(repositoryName="mine")
    other = make_client(endpoint, "ecr", "888888888888")
    assert [r["repositoryName"] for r in aws("ecr").describe_repositories()["repositories"]] == ["mine"]
    assert other.describe_repositories()["repositories"] == []


def test_config_endpoint_validates_and_merges(endpoint, realism):
    import json
    import urllib.error
    import urllib.request

    cfg = realism({"durations": {"nat_gateway_create": 5}})
    assert cfg["durations"]["nat_gateway_create"] == 5
    assert cfg["durations"]["eks_cluster_create"] == 600
    for bad in ({"nope": 1}, {"faults": {"kinds": ["meteor"]}}, {"faults": {"rate": 2}}, {"durations": {"x": 1}}):
        req = urllib.request.Request(endpoint + "/_realism/config", data=json.dumps(bad).encode(), method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError(f"accepted {bad}")
        except urllib.error.HTTPError as e:
            assert e.code == 400
            assert "error" in json.load(e)
    assert control(endpoint, "GET", "/_realism/config")["durations"]["nat_gateway_create"] == 5
