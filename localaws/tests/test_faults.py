"""Injected faults: rate, reproducibility, each protocol's shape, drops."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from conftest import control


def throttled_sequence(eks, n=200):
    seq = []
    for _ in range(n):
        try:
            eks.list_clusters()
            seq.append(0)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ThrottlingException"
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429
            seq.append(1)
    return seq


def test_throttling_rate_is_as_configured_and_reproducible(aws, account, realism):
    eks = aws("eks")
    realism({"seed": 7, "faults": {"rate": 0.2, "kinds": ["throttle"], "accounts": [account]}})
    first = throttled_sequence(eks)
    assert 20 <= sum(first) <= 60  # 200 draws at p=0.2: mean 40, sd ~5.7
    realism({"seed": 7})  # re-seeding restarts the sequence
    assert throttled_sequence(eks) == first
    realism({"seed": 8})
    assert throttled_sequence(eks) != first
    calls = control(eks.meta.endpoint_url, "GET", f"/_realism/calls?account={account}")["calls"]
    [lc] = [c for c in calls if c["operation"] == "ListClusters"]
    assert lc["count"] == 600 and lc["faults"] >= 60


def test_operation_filter_and_max(aws, account, realism):
    eks = aws("eks")
    realism({"faults": {"rate": 1.0, "kinds": ["503"], "operations": ["CreateCluster"], "accounts": [account], "max": 1}})
    eks.list_clusters()  # not a targeted operation
    with pytest.raises(ClientError) as e:
        eks.create_cluster(name="c1", roleArn=f"arn:aws:iam::{account}:role/r", resourcesVpcConfig={"subnetIds": ["s"]})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert e.value.response["Error"]["Code"] == "ServiceUnavailableException"
    # max=1: the retry goes through
    eks.create_cluster(name="c1", roleArn=f"arn:aws:iam::{account}:role/r", resourcesVpcConfig={"subnetIds": ["s"]})


CALLS = {
    "ec2": lambda c: c.describe_vpcs(),
    "iam": lambda c: c.list_roles(),
    "sts": lambda c: c.get_caller_identity(),
    "elbv2": lambda c: c.describe_load_balancers(),
    "eks": lambda c: c.list_clusters(),
    "ecr": lambda c: c.describe_repositories(),
    "ssm": lambda c: c.describe_parameters(),
    "s3": lambda c: c.list_buckets(),
}
EXPECTED = {
    "throttle": {
        "ec2": (503, "RequestLimitExceeded"), "iam": (400, "Throttling"), "sts": (400, "Throttling"),
        "elbv2": (400, "Throttling"), "eks": (429, "ThrottlingException"), "ecr": (400, "ThrottlingException"),
        "ssm": (400, "ThrottlingException"), "s3": (503, "SlowDown"),
    },
    "500": {
        "ec2": (500, "InternalError"), "iam": (500, "InternalFailure"), "sts": (500, "InternalFailure"),
        "elbv2": (500, "InternalFailure"), "eks": (500, "ServerException"), "ecr": (500, "InternalFailure"),
        "ssm": (500, "InternalFailure"), "s3": (500, "InternalError"),
    },
    "503": {
        "ec2": (503, "ServiceUnavailable"), "iam": (503, "ServiceUnavailable"), "sts": (503, "ServiceUnavailable"),
        "elbv2": (503, "ServiceUnavailable"), "eks": (503, "ServiceUnavailableException"),
        "ecr": (503, "ServiceUnavailable"), "ssm": (503, "ServiceUnavailable"), "s3": (503, "ServiceUnavailable"),
    },
    # Refused credentials, as each service says it.
    "denied": {
        "ec2": (401, "AuthFailure"), "iam": (403, "InvalidClientTokenId"), "sts": (403, "InvalidClientTokenId"),
        "elbv2": (403, "InvalidClientTokenId"), "eks": (403, "UnrecognizedClientException"),
        "ecr": (400, "UnrecognizedClientException"), "ssm": (400, "UnrecognizedClientException"),
        "s3": (403, "InvalidAccessKeyId"),
    },
}


@pytest.mark.parametrize("kind", ["throttle", "500", "503", "denied"])
def test_fault_shapes_per_protocol(aws, account, realism, kind):
    realism({"faults": {"rate": 1.0, "kinds": [kind], "accounts": [account]}})
    for service, call in CALLS.items():
        with pytest.raises(ClientError) as e:
            call(aws(service))
        got = (e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"])
        assert got == EXPECTED[kind][service], service


def test_query_throttle_body_is_the_real_shape(endpoint, account, realism):
    import urllib.request

    realism({"faults": {"rate": 1.0, "kinds": ["throttle"], "accounts": [account]}})
    req = urllib.request.Request(
        endpoint + "/", data=b"Action=ListRoles&Version=2010-05-08", method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=x",
            "x-moto-account-id": account,
        },
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    body = e.value.read().decode()
    assert e.value.code == 400
    assert body.startswith("<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>")


def test_drop_closes_the_connection_without_a_response(aws, account, realism):
    realism({"faults": {"rate": 1.0, "kinds": ["drop"], "accounts": [account]}})
    for service in ("eks", "ec2"):
        with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
            CALLS[service](aws(service))
    realism({"faults": {"rate": 0.0}})
    assert aws("eks").list_clusters()["clusters"] == []


def test_faults_only_hit_the_configured_accounts(aws, endpoint, realism):
    from conftest import make_client

    realism({"faults": {"rate": 1.0, "kinds": ["throttle"], "accounts": ["999999999999"]}})
    assert aws("eks").list_clusters()["clusters"] == []
    with pytest.raises(ClientError):
        make_client(endpoint, "eks", "999999999999").list_clusters()


def test_mutating_only(aws, account, realism):
    realism({"faults": {"rate": 1.0, "kinds": ["500"], "accounts": [account], "mutating_only": True}})
    ecr = aws("ecr")
    ecr.describe_repositories()
    with pytest.raises(ClientError):
        ecr.create_repository(repositoryName="app")


def test_a_lost_response_lands_but_the_client_sees_a_dropped_connection(aws, account, realism):
    import pytest
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

    s3 = aws("s3")
    s3.create_bucket(Bucket="lost", CreateBucketConfiguration={"LocationConstraint": "ap-south-1"})
    realism({"faults": {"rate": 1.0, "kinds": ["lost_response"], "operations": ["PutObject"], "accounts": [account], "max": 1}})
    with pytest.raises((ConnectionClosedError, EndpointConnectionError, ReadTimeoutError, ConnectionError)):
        s3.put_object(Bucket="lost", Key="k", Body=b"landed")
    realism({"faults": {"rate": 0.0}})
    assert s3.get_object(Bucket="lost", Key="k")["Body"].read() == b"landed"
