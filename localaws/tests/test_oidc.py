"""The EKS clusters' OIDC issuer served over HTTPS (realism/oidc.py), its
thumbprint as the IAM docs compute it, and IAM's OIDC providers for it."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography import x509

from conftest import NO_RETRIES, control, wait_for
from test_eks import create_cluster


@pytest.fixture(scope="module")
def oidc(endpoint):
    return control(endpoint, "GET", "/_realism/oidc")


def tls_context(ca_pem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def fetch(url: str, ca_pem: str) -> dict:
    with urllib.request.urlopen(url, context=tls_context(ca_pem), timeout=10) as r:
        assert r.headers["Content-Type"] == "application/json"
        return json.load(r)


def served_chain(host: str, port: int, ca_pem: str) -> list[bytes]:
    """The DER certificates the server presents, in its order, read off a
    TLS 1.2 handshake (where the Certificate message travels in clear), as
    `openssl s_client -showcerts` shows them. The handshake is verified."""
    ctx = tls_context(ca_pem)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    raw = bytearray()
    with socket.create_connection((host, port), timeout=10) as s:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                s.sendall(outgoing.read())
                data = s.recv(65536)
                assert data, "server closed the connection during the handshake"
                raw += data
                incoming.write(data)
    handshake, i = bytearray(), 0
    while i + 5 <= len(raw) and raw[i] != 20:  # up to ChangeCipherSpec; encrypted after
        length = int.from_bytes(raw[i + 3 : i + 5], "big")
        if raw[i] == 22:
            handshake += raw[i + 5 : i + 5 + length]
        i += 5 + length
    j = 0
    while j + 4 <= len(handshake):
        kind, length = handshake[j], int.from_bytes(handshake[j + 1 : j + 4], "big")
        if kind == 11:  # Certificate
            body, certs, k = handshake[j + 4 : j + 4 + length], [], 3
            while k < 3 + int.from_bytes(body[:3], "big"):
                n = int.from_bytes(body[k : k + 3], "big")
                certs.append(bytes(body[k + 3 : k + 3 + n]))
                k += 3 + n
            return certs
        j += 4 + length
    raise AssertionError("no Certificate message in the handshake")


def issuer_of(eks, name="c1"):
    return eks.describe_cluster(name=name)["cluster"]["identity"]["oidc"]["issuer"]


def test_control_endpoint(oidc):
    assert set(oidc) == {"ca_pem", "thumbprint", "port"}
    root = x509.load_pem_x509_certificate(oidc["ca_pem"].encode())
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert re.fullmatch(r"[0-9a-f]{40}", oidc["thumbprint"])
    assert isinstance(oidc["port"], int) and oidc["port"] > 0


def test_each_cluster_has_its_own_stable_local_https_issuer(aws, account, oidc, realism):
    eks = aws("eks")
    created = create_cluster(eks, account)["identity"]["oidc"]["issuer"]
    assert re.fullmatch(rf"https://localhost:{oidc['port']}/id/[0-9A-F]{{32}}", created)
    assert issuer_of(eks) == created  # CREATING
    wait_for(lambda: eks.describe_cluster(name="c1")["cluster"]["status"], lambda s: s == "ACTIVE")
    assert issuer_of(eks) == created
    realism({"time_scale": 0.0001})
    eks.update_cluster_config(name="c1", logging={"clusterLogging": [{"types": ["api"], "enabled": True}]})
    assert issuer_of(eks) == created
    other = create_cluster(eks, account, name="c2")["identity"]["oidc"]["issuer"]
    assert other != created and other.rsplit("/", 1)[0] == created.rsplit("/", 1)[0]
    assert issuer_of(eks, "c2") == other
    assert eks.delete_cluster(name="c2")["cluster"]["identity"]["oidc"]["issuer"] == other


def test_discovery_document_and_jwks_over_tls(aws, account, oidc):
    eks = aws("eks")
    issuer = create_cluster(eks, account)["identity"]["oidc"]["issuer"]
    doc = fetch(issuer + "/.well-known/openid-configuration", oidc["ca_pem"])
    assert doc == {
        "issuer": issuer,
        "jwks_uri": issuer + "/keys",
        "authorization_endpoint": "urn:kubernetes:programmatic_authorization",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "iss"],
    }
    jwks = fetch(doc["jwks_uri"], oidc["ca_pem"])
    assert len(jwks["keys"]) == 1
    key = jwks["keys"][0]
    assert (key["kty"], key["alg"], key["use"], key["e"]) == ("RSA", "RS256", "sig", "AQAB")
    assert key["kid"] and len(key["n"]) > 300  # 2048-bit modulus, base64url

    for path in ("/id/" + issuer.rsplit("/", 1)[1], "/", "/id/X/other", "/keys"):
        with pytest.raises(urllib.error.HTTPError) as e:
            fetch(f"https://localhost:{oidc['port']}{path}", oidc["ca_pem"])
        assert e.value.code == 404

    with pytest.raises(urllib.error.URLError) as e:  # the system CAs do not trust it
        urllib.request.urlopen(doc["jwks_uri"], context=ssl.create_default_context(), timeout=10)
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)


def test_served_chain_is_leaf_and_intermediate_and_its_last_cert_is_the_thumbprint(aws, account, oidc):
    eks = aws("eks")
    issuer = create_cluster(eks, account)["identity"]["oidc"]["issuer"]
    jwks_uri = fetch(issuer + "/.well-known/openid-configuration", oidc["ca_pem"])["jwks_uri"]
    host = urllib.parse.urlsplit(jwks_uri)
    chain = served_chain(host.hostname, host.port, oidc["ca_pem"])
    root = x509.load_pem_x509_certificate(oidc["ca_pem"].encode())
    leaf, inter = (x509.load_der_x509_certificate(c) for c in chain)  # exactly two: no root
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert leaf.issuer == inter.subject and inter.issuer == root.subject and inter.subject != root.subject
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert hashlib.sha1(chain[-1]).hexdigest() == oidc["thumbprint"]


def test_iam_oidc_provider_for_the_issuer_round_trips(aws, account, oidc):
    eks, iam = aws("eks"), aws("iam")
    issuer = create_cluster(eks, account)["identity"]["oidc"]["issuer"]
    arn = iam.create_open_id_connect_provider(
        Url=issuer, ClientIDList=["sts.amazonaws.com"], ThumbprintList=[oidc["thumbprint"]],
        Tags=[{"Key": "slipway:stack", "Value": "s"}],
    )["OpenIDConnectProviderArn"]
    host_path = issuer.removeprefix("https://")  # localhost:PORT/id/ID
    assert arn == f"arn:aws:iam::{account}:oidc-provider/{host_path}"
    got = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)
    assert got["Url"] == host_path
    assert got["ThumbprintList"] == [oidc["thumbprint"]]
    assert got["ClientIDList"] == ["sts.amazonaws.com"]
    assert got["Tags"] == [{"Key": "slipway:stack", "Value": "s"}]
    assert [p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]] == [arn]

    iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=arn, ThumbprintList=["0" * 40, oidc["thumbprint"]])
    assert iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ThumbprintList"] == ["0" * 40, oidc["thumbprint"]]

    with pytest.raises(ClientError) as e:
        iam.create_open_id_connect_provider(Url=issuer, ClientIDList=["sts.amazonaws.com"], ThumbprintList=[oidc["thumbprint"]])
    assert e.value.response["Error"]["Code"] == "EntityAlreadyExists"


def test_iam_retrieves_the_thumbprint_when_none_is_given(aws, account, oidc):
    eks, iam = aws("eks"), aws("iam")
    issuer = create_cluster(eks, account)["identity"]["oidc"]["issuer"]
    arn = iam.create_open_id_connect_provider(Url=issuer, ClientIDList=["sts.amazonaws.com"])["OpenIDConnectProviderArn"]
    assert iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ThumbprintList"] == [oidc["thumbprint"]]
    # Any other URL keeps moto's empty list (it cannot be reached here).
    other = iam.create_open_id_connect_provider(Url="https://oidc.example.com/id/X")["OpenIDConnectProviderArn"]
    assert iam.get_open_id_connect_provider(OpenIDConnectProviderArn=other)["ThumbprintList"] == []


def test_thumbprints_must_be_40_characters(aws, account, oidc):
    # As the Rust SDK does, send without boto3's client-side length checks.
    iam = aws("iam", NO_RETRIES.merge(Config(parameter_validation=False)))
    url = f"https://localhost:{oidc['port']}/id/SHORT"
    for bad in ("ab" * 10, "a" * 41):
        with pytest.raises(ClientError) as e:
            iam.create_open_id_connect_provider(Url=url, ThumbprintList=[bad])
        code, message = e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]
        assert code == "ValidationError"
        assert 'at "thumbprintList" failed to satisfy constraint' in message
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []

    arn = iam.create_open_id_connect_provider(Url=url, ThumbprintList=[oidc["thumbprint"]])["OpenIDConnectProviderArn"]
    with pytest.raises(ClientError) as e:
        iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=arn, ThumbprintList=["abc"])
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ThumbprintList"] == [oidc["thumbprint"]]
