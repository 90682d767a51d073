"""`eks_api_servers` (realism/eks_endpoint.py): an EKS cluster reports a
local Kubernetes API server's endpoint and CA instead of moto's invented ones."""

from __future__ import annotations

import base64
import datetime
import json
import urllib.error
import urllib.request

import pytest

from conftest import TIME_SCALE, control, launch, make_client, wait_for
from test_eks import active_cluster, create_cluster


def ca_pem(cn: str = "kubetest CA") -> str:
    """A self-signed CA certificate (PEM), as a kubetest API server's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


CA1, CA2 = ca_pem("kubetest CA 1"), ca_pem("kubetest CA 2")
EP1, EP2 = "https://127.0.0.1:40001", "https://127.0.0.1:40002"


def b64(pem: str) -> str:
    return base64.b64encode(pem.encode()).decode()


def shown(eks, name):
    c = eks.describe_cluster(name=name)["cluster"]
    return c.get("endpoint"), c.get("certificateAuthority", {}).get("data")


def wait_active(eks, name):
    wait_for(lambda: eks.describe_cluster(name=name)["cluster"]["status"], lambda s: s == "ACTIVE")


def post_config(endpoint, patch):
    """POST /_realism/config -> (status, body)."""
    req = urllib.request.Request(endpoint + "/_realism/config", data=json.dumps(patch).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_applies_to_clusters_created_before_and_after_it_is_set(aws, account, realism):
    eks = aws("eks")
    active_cluster(eks, account, name="before")
    active_cluster(eks, account, name="other")
    moto_before, moto_other = shown(eks, "before"), shown(eks, "other")
    assert moto_before[0].rstrip("/").endswith(".eks.amazonaws.com")

    cfg = realism({"eks_api_servers": {"before": {"endpoint": EP1, "ca_pem": CA1},
                                       "after": {"endpoint": EP2, "ca_pem": CA2}}})
    assert cfg["eks_api_servers"]["before"] == {"endpoint": EP1, "ca_pem": CA1}
    assert shown(eks, "before") == (EP1, b64(CA1))
    assert base64.b64decode(shown(eks, "before")[1]).decode() == CA1  # the PEM text itself
    assert shown(eks, "other") == moto_other  # not in the map: moto's

    created = create_cluster(eks, account, name="after")
    assert created["status"] == "CREATING"
    assert "endpoint" not in created and not created.get("certificateAuthority", {}).get("data")
    wait_active(eks, "after")
    assert shown(eks, "after") == (EP2, b64(CA2))
    described = eks.describe_cluster(name="after")["cluster"]
    assert described["status"] == "ACTIVE" and described["name"] == "after"

    deleted = eks.delete_cluster(name="after")["cluster"]  # DELETING: still shown
    assert (deleted["endpoint"], deleted["certificateAuthority"]["data"]) == (EP2, b64(CA2))
    assert shown(eks, "other") == moto_other


def test_no_endpoint_while_creating_even_with_an_override(aws, account, realism):
    eks = aws("eks")
    realism({"time_scale": 0.01})  # create 6 s
    realism({"eks_api_servers": {"c1": {"endpoint": EP1, "ca_pem": CA1}}})
    create_cluster(eks, account)
    described = eks.describe_cluster(name="c1")["cluster"]
    assert described["status"] == "CREATING"
    assert "endpoint" not in described
    assert not described.get("certificateAuthority", {}).get("data")
    wait_for(lambda: shown(eks, "c1"), lambda s: s == (EP1, b64(CA1)), timeout=30)
    assert eks.describe_cluster(name="c1")["cluster"]["status"] == "ACTIVE"


def test_replacing_and_removing_overrides(aws, account, realism):
    eks = aws("eks")
    active_cluster(eks, account, name="a")
    active_cluster(eks, account, name="b")
    moto_a, moto_b = shown(eks, "a"), shown(eks, "b")

    realism({"eks_api_servers": {"a": {"endpoint": EP1, "ca_pem": CA1}, "b": {"endpoint": EP2, "ca_pem": CA2}}})
    assert (shown(eks, "a"), shown(eks, "b")) == ((EP1, b64(CA1)), (EP2, b64(CA2)))
    # A new map replaces the previous one as a whole.
    cfg = realism({"eks_api_servers": {"b": {"endpoint": EP1, "ca_pem": CA1}}})
    assert cfg["eks_api_servers"] == {"b": {"endpoint": EP1, "ca_pem": CA1}}
    assert (shown(eks, "a"), shown(eks, "b")) == (moto_a, (EP1, b64(CA1)))
    # Other keys leave it alone.
    assert realism({"latency_ms": 0})["eks_api_servers"] == {"b": {"endpoint": EP1, "ca_pem": CA1}}
    assert shown(eks, "b") == (EP1, b64(CA1))
    # {} removes every override.
    assert realism({"eks_api_servers": {}})["eks_api_servers"] == {}
    assert (shown(eks, "a"), shown(eks, "b")) == (moto_a, moto_b)


@pytest.mark.parametrize("bad, expected", [
    ([], "eks_api_servers must be a JSON object"),
    ({"c1": "https://127.0.0.1:1"}, "eks_api_servers.c1 must be an object"),
    ({"-c1": {"endpoint": EP1, "ca_pem": CA1}}, "is not a valid EKS cluster name"),
    ({"c1": {"ca_pem": CA1}}, "eks_api_servers.c1.endpoint is required"),
    ({"c1": {"endpoint": EP1}}, "eks_api_servers.c1.ca_pem is required"),
    ({"c1": {"endpoint": EP1, "ca_pem": CA1, "token": "x"}}, "unknown key 'token' in eks_api_servers.c1"),
    ({"c1": {"endpoint": "http://127.0.0.1:6443", "ca_pem": CA1}}, "eks_api_servers.c1.endpoint must be an https URL"),
    ({"c1": {"endpoint": "127.0.0.1:6443", "ca_pem": CA1}}, "eks_api_servers.c1.endpoint must be an https URL"),
    ({"c1": {"endpoint": "https://", "ca_pem": CA1}}, "eks_api_servers.c1.endpoint must be an https URL"),
    ({"c1": {"endpoint": "https://127.0.0.1:99999", "ca_pem": CA1}}, "eks_api_servers.c1.endpoint must be an https URL"),
    ({"c1": {"endpoint": 6443, "ca_pem": CA1}}, "eks_api_servers.c1.endpoint must be an https URL"),
    ({"c1": {"endpoint": EP1, "ca_pem": "not a certificate"}}, "eks_api_servers.c1.ca_pem must contain a PEM certificate"),
    ({"c1": {"endpoint": EP1, "ca_pem": b64(CA1)}}, "eks_api_servers.c1.ca_pem must contain a PEM certificate"),
    ({"c1": {"endpoint": EP1, "ca_pem": None}}, "eks_api_servers.c1.ca_pem must be a string"),
    ({"c1": {"endpoint": EP1, "ca_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}},
     "eks_api_servers.c1.ca_pem: certificate 1 is not a valid PEM certificate"),
])
def test_bad_values_are_rejected_with_400(endpoint, realism, bad, expected):
    good = {"keep": {"endpoint": EP1, "ca_pem": CA1}}
    realism({"eks_api_servers": good})
    status, body = post_config(endpoint, {"eks_api_servers": bad})
    assert status == 400
    assert expected in body["error"]
    assert control(endpoint, "GET", "/_realism/config")["eks_api_servers"] == good  # unchanged


def test_set_at_startup_with_config_file(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"time_scale": TIME_SCALE, "eks_api_servers": {"c1": {"endpoint": EP1, "ca_pem": CA1}}}))
    srv = launch("--config", str(config), tmp=tmp_path)
    try:
        eks = make_client(srv.endpoint, "eks", "123456789012")
        create_cluster(eks, "123456789012")
        create_cluster(eks, "123456789012", name="c2")
        wait_active(eks, "c1")
        wait_active(eks, "c2")
        assert shown(eks, "c1") == (EP1, b64(CA1))
        assert shown(eks, "c2")[0].rstrip("/").endswith(".eks.amazonaws.com")
    finally:
        assert srv.stop() == 0

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"eks_api_servers": {"c1": {"endpoint": "http://127.0.0.1:1", "ca_pem": CA1}}}))
    import subprocess

    from conftest import LAUNCH

    proc = subprocess.run([str(LAUNCH), "--config", str(bad)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "eks_api_servers.c1.endpoint must be an https URL" in proc.stderr
