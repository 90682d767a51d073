"""EKS tokens (`--eks-cluster-name`): aws-iam-authenticator's checks, verified against the local AWS's STS."""

from __future__ import annotations

import base64
import datetime
import http.server
import subprocess
import threading
from unittest import mock
from urllib.parse import parse_qsl, urlencode, urlsplit

import boto3
import botocore.auth
import pytest
import requests

from conftest import ROOT, TOKEN, start, stop

CLUSTER = "smallcase-eks"
KNOWN_KEY, KNOWN_SECRET = "AKIAKUBETESTKNOWN001", "kubetest-known-secret"  # given with --eks-secret-key
OTHER_KEY, OTHER_SECRET = "AKIAKUBETESTOTHER001", "whatever"  # unknown to kubetest: STS (moto) alone decides


def presigned_url(cluster: str | None, key: str = OTHER_KEY, secret: str = OTHER_SECRET, session_token=None,
                  region: str = "us-east-1", endpoint: str = "https://sts.amazonaws.com", expires: int = 60,
                  at: datetime.datetime | None = None) -> str:
    """A presigned GetCallerIdentity URL made the way `aws eks get-token` makes it."""
    client = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                   aws_session_token=session_token, region_name=region).client(
        "sts", endpoint_url=endpoint)

    def retrieve(params, context, **_kw):
        if "x-k8s-aws-id" in params:
            context["x-k8s-aws-id"] = params.pop("x-k8s-aws-id")

    def inject(request, **_kw):
        if request.context.get("x-k8s-aws-id"):
            request.headers["x-k8s-aws-id"] = request.context["x-k8s-aws-id"]

    client.meta.events.register("provide-client-params.sts.GetCallerIdentity", retrieve)
    client.meta.events.register("before-sign.sts.GetCallerIdentity", inject)
    params = {} if cluster is None else {"x-k8s-aws-id": cluster}
    if at is None:
        return client.generate_presigned_url("get_caller_identity", Params=params, ExpiresIn=expires,
                                             HttpMethod="GET")
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=at):
        return client.generate_presigned_url("get_caller_identity", Params=params, ExpiresIn=expires,
                                             HttpMethod="GET")


def token_of(url: str) -> str:
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def eks_token(cluster: str | None = CLUSTER, **kw) -> str:
    return token_of(presigned_url(cluster, **kw))


def edit_query(url: str, **changes) -> str:
    u = urlsplit(url)
    q = dict(parse_qsl(u.query, keep_blank_values=True))
    q.update(changes)
    return u._replace(query=urlencode(q)).geturl()


def status(kube, token: str, path: str = "/api") -> int:
    s = requests.Session()
    s.trust_env = False
    return s.get(kube.url + path, verify=kube.ca, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code


def sts_calls(localaws: str) -> int:
    r = requests.get(f"{localaws}/_realism/calls", timeout=10, proxies={"http": None, "https": None})
    return sum(c["count"] for c in r.json()["calls"] if c["service"] == "sts" and c["operation"] == "GetCallerIdentity")


class EksKube:
    def __init__(self, url, ca, kubeconfig):
        from conftest import Kube

        self.k = Kube(url, ca, kubeconfig)
        self.url, self.ca, self.kubeconfig = url, ca, kubeconfig

    def auth(self) -> dict:
        code, out = self.k.get("/_kubetest/auth")
        assert code == 200, out
        return out


@pytest.fixture(scope="module")
def eks(localaws, tmp_path_factory):
    d = tmp_path_factory.mktemp("eks")
    kc, ca = str(d / "kubeconfig"), str(d / "ca.crt")
    p, url = start([str(ROOT / "kubetest" / "launch"), "--kubeconfig", kc, "--ca-file", ca, "--token", TOKEN,
                    "--aws-endpoint", localaws, "--eks-cluster-name", CLUSTER,
                    "--eks-secret-key", f"{KNOWN_KEY}:{KNOWN_SECRET}"])
    yield EksKube(url, ca, kc)
    stop(p)


@pytest.fixture(scope="module")
def iam_user(localaws):
    """An IAM user in the local AWS and its access key: STS must answer with this user's ARN."""
    iam = boto3.client("iam", endpoint_url=localaws, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    user = iam.create_user(UserName="eks-deployer")["User"]
    key = iam.create_access_key(UserName="eks-deployer")["AccessKey"]
    return user["Arn"], key["AccessKeyId"], key["SecretAccessKey"]


def test_valid_token_is_accepted_and_its_identity_recorded(eks, localaws, iam_user):
    arn, key, secret = iam_user
    before = eks.auth()
    calls = sts_calls(localaws)
    tok = eks_token(key=key, secret=secret)
    assert status(eks, tok) == 200
    assert status(eks, tok, "/api/v1/namespaces/default") == 200
    after = eks.auth()
    assert after["eks_tokens"] == before["eks_tokens"] + 1
    assert arn in after["identities"]
    assert arn.startswith("arn:aws:iam::") and arn.endswith(":user/eks-deployer")
    assert after["rejected"] == before["rejected"]
    # verified once at STS, then served from the cache for the token's lifetime
    assert sts_calls(localaws) == calls + 1


def test_regional_sts_host_session_token_and_padding(eks):
    region = "ap-south-1"
    url = presigned_url(CLUSTER, region=region, endpoint=f"https://sts.{region}.amazonaws.com",
                        session_token="FwoGZXIvYXdzEXAMPLE+/=token")
    assert urlsplit(url).netloc == "sts.ap-south-1.amazonaws.com"
    assert "X-Amz-Security-Token=" in url
    assert status(eks, token_of(url)) == 200
    padded = "k8s-aws-v1." + base64.urlsafe_b64encode(presigned_url(CLUSTER).encode()).decode()
    assert status(eks, padded) == 200


def test_known_secret_key_signature_is_checked(eks):
    good = presigned_url(CLUSTER, key=KNOWN_KEY, secret=KNOWN_SECRET)
    assert status(eks, token_of(good)) == 200
    before = eks.auth()["rejected"]
    sig = dict(parse_qsl(urlsplit(good).query))["X-Amz-Signature"]
    tampered = edit_query(good, **{"X-Amz-Signature": ("0" if sig[0] != "0" else "1") + sig[1:]})
    assert status(eks, token_of(tampered)) == 401
    other_cluster = presigned_url("another-cluster", key=KNOWN_KEY, secret=KNOWN_SECRET)
    assert status(eks, token_of(other_cluster)) == 401
    wrong_secret = presigned_url(CLUSTER, key=KNOWN_KEY, secret="not-the-secret")
    assert status(eks, token_of(wrong_secret)) == 401
    report = eks.auth()
    assert report["rejected"] == before + 3
    assert "signature" in report["last_rejection"]


def test_known_key_ms_answers_a_known_keys_later_tokens_without_sts(localaws, tmp_path):
    import time

    now = datetime.datetime.now(datetime.timezone.utc)
    ago = lambda s: now - datetime.timedelta(seconds=s)  # distinct tokens, not one cached token  # noqa: E731
    d = tmp_path
    p, url = start([str(ROOT / "kubetest" / "launch"), "--kubeconfig", str(d / "kc"), "--ca-file", str(d / "ca"),
                    "--token", TOKEN, "--aws-endpoint", localaws, "--eks-cluster-name", CLUSTER,
                    "--eks-secret-key", f"{KNOWN_KEY}:{KNOWN_SECRET}", "--eks-known-key-ms", "300"])
    try:
        kube = EksKube(url, str(d / "ca"), str(d / "kc"))
        calls = sts_calls(localaws)
        assert status(kube, eks_token(key=KNOWN_KEY, secret=KNOWN_SECRET, at=ago(30))) == 200
        assert sts_calls(localaws) == calls + 1  # the first token of the key: asked
        started = time.monotonic()
        assert status(kube, eks_token(key=KNOWN_KEY, secret=KNOWN_SECRET, at=ago(20))) == 200
        assert time.monotonic() - started >= 0.3  # in STS's time
        assert sts_calls(localaws) == calls + 1  # a later one: not asked again
        ids = kube.auth()["identities"]
        assert len(ids) == 1 and ids[0].startswith("arn:aws:")
        # The signature is still checked; keys kubetest cannot check go to STS.
        assert status(kube, eks_token(key=KNOWN_KEY, secret="not-the-secret")) == 401
        assert status(kube, eks_token(key=OTHER_KEY, secret=OTHER_SECRET, at=ago(30))) == 200
        assert status(kube, eks_token(key=OTHER_KEY, secret=OTHER_SECRET, at=ago(20))) == 200
        assert sts_calls(localaws) == calls + 3
    finally:
        stop(p)


def test_the_authenticators_15_minute_lifetime(eks):
    now = datetime.datetime.now(datetime.timezone.utc)
    # X-Amz-Expires=60 does not shorten it: aws-iam-authenticator allows 15 minutes from X-Amz-Date
    assert status(eks, eks_token(at=now - datetime.timedelta(minutes=14))) == 200
    assert status(eks, eks_token(at=now - datetime.timedelta(minutes=16))) == 401
    assert "expired" in eks.auth()["last_rejection"]
    assert status(eks, eks_token(at=now + datetime.timedelta(minutes=30))) == 401
    assert status(eks, eks_token(expires=901)) == 401


@pytest.mark.parametrize("make", [
    pytest.param(lambda: "k8s-aws-v1.", id="empty"),
    pytest.param(lambda: "k8s-aws-v1.***not-base64***", id="not-base64"),
    pytest.param(lambda: "k8s-aws-v1." + base64.urlsafe_b64encode(b"\xff\xfe").decode(), id="not-utf8"),
    pytest.param(lambda: "k8s-aws-v1." + base64.urlsafe_b64encode(b"hello world").decode(), id="not-a-url"),
    pytest.param(lambda: "k8s-aws-v2." + eks_token()[len("k8s-aws-v1."):], id="wrong-prefix"),
    pytest.param(lambda: eks_token() + "A" * 5000, id="too-long"),
    pytest.param(lambda: eks_token(cluster=None), id="x-k8s-aws-id-not-signed"),
    pytest.param(lambda: eks_token(endpoint="https://sts.example.com"), id="bad-host"),
    pytest.param(lambda: eks_token(endpoint="https://sts.amazonaws.com.evil.example"), id="bad-host-suffix"),
    pytest.param(lambda: eks_token(endpoint="https://sts.amazonaws.com:8443"), id="port"),
    pytest.param(lambda: token_of(presigned_url(CLUSTER).replace("https://", "http://", 1)), id="http"),
    pytest.param(lambda: token_of(presigned_url(CLUSTER).replace(".com/?", ".com/x?", 1)), id="path"),
    pytest.param(lambda: token_of(edit_query(presigned_url(CLUSTER), Action="GetSessionToken")), id="action"),
    pytest.param(lambda: token_of(edit_query(presigned_url(CLUSTER), Version="2010-01-01")), id="version"),
    pytest.param(lambda: token_of(edit_query(presigned_url(CLUSTER), Extra="1")), id="extra-param"),
    pytest.param(lambda: token_of(presigned_url(CLUSTER) + "&Action=GetCallerIdentity"), id="repeated-param"),
    pytest.param(lambda: token_of(edit_query(presigned_url(CLUSTER), **{"X-Amz-Date": "2026-01-01T00:00:00Z"})),
                 id="date-format"),
    pytest.param(lambda: token_of(edit_query(presigned_url(CLUSTER), **{"X-Amz-Expires": "sixty"})), id="expires"),
    pytest.param(lambda: token_of(presigned_url(CLUSTER).replace("%2Fsts%2F", "%2Fs3%2F")), id="scope-service"),
    pytest.param(lambda: token_of(edit_query(presigned_url(CLUSTER), **{"X-Amz-Signature": ""})), id="no-signature"),
])
def test_malformed_tokens_are_rejected(eks, make):
    before = eks.auth()
    assert status(eks, make()) == 401
    after = eks.auth()
    assert after["rejected"] == before["rejected"] + 1
    assert after["eks_tokens"] == before["eks_tokens"]


def test_static_token_and_kubectl_with_an_eks_token(eks):
    assert status(eks, TOKEN) == 200
    assert status(eks, "wrong") == 401
    r = subprocess.run(["kubectl", "--kubeconfig", eks.kubeconfig, "--token", eks_token(), "get", "ns", "default",
                        "-o", "name"], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "namespace/default", r.stderr


def test_auth_report_reset(eks):
    assert status(eks, eks_token()) == 200
    code, out = eks.k.delete("/_kubetest/auth")
    assert code == 200 and out["eks_tokens"] == 0 and out["identities"] == [] and out["rejected"] == 0
    assert eks.auth()["eks_cluster_name"] == CLUSTER


def test_eks_tokens_rejected_without_the_flag(kube):
    before = kube.get("/_kubetest/auth")[1]
    assert before["eks_cluster_name"] is None
    assert status(kube, eks_token()) == 401
    after = kube.get("/_kubetest/auth")[1]
    assert after["rejected"] == before["rejected"] + 1 and after["eks_tokens"] == 0
    assert "--eks-cluster-name" in after["last_rejection"]


def test_flag_requires_aws_endpoint():
    r = subprocess.run([str(ROOT / "kubetest" / "launch"), "--eks-cluster-name", CLUSTER], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "--eks-cluster-name requires --aws-endpoint" in r.stderr


class FakeSts(http.server.BaseHTTPRequestHandler):
    """Records what the authenticator sends; answers like STS refusing a signature."""

    seen: list = []

    def do_GET(self):  # noqa: N802
        FakeSts.seen.append((self.path, dict(self.headers)))
        body = (b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                b"<Code>SignatureDoesNotMatch</Code><Message>no</Message></Error></ErrorResponse>")
        self.send_response(403)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_what_is_sent_to_sts_and_a_refusal(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeSts)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    kc, ca = str(tmp_path / "kc"), str(tmp_path / "ca.crt")
    p, url = start([str(ROOT / "kubetest" / "launch"), "--kubeconfig", kc, "--ca-file", ca, "--token", TOKEN,
                    "--aws-endpoint", f"http://127.0.0.1:{srv.server_address[1]}", "--eks-cluster-name", CLUSTER])
    try:
        k = EksKube(url, ca, kc)
        presigned = presigned_url(CLUSTER)
        assert status(k, token_of(presigned)) == 401
        report = k.auth()
        assert report["rejected"] == 1 and report["eks_tokens"] == 0 and "403" in report["last_rejection"]
        path, headers = FakeSts.seen[-1]
        assert path == "/?" + urlsplit(presigned).query  # the presigned query, unchanged
        assert headers["Host"] == "sts.amazonaws.com"
        assert headers["x-k8s-aws-id"] == CLUSTER
        assert headers["Accept"] == "application/json"
        cred = dict(parse_qsl(urlsplit(presigned).query))["X-Amz-Credential"]
        assert headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={cred}, ")
    finally:
        stop(p)
        srv.shutdown()
