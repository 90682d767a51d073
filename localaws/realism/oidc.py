"""The EKS clusters' OIDC issuer, served locally over HTTPS.

A real cluster's `identity.oidc.issuer` is an HTTPS URL serving an OpenID
discovery document whose `jwks_uri` is on the same host; a client computes
the IAM OIDC provider thumbprint from the TLS chain that host presents (the
SHA-1 of the last certificate's DER: the top intermediate CA). moto's issuer
(`https://oidc.eks.REGION.amazonaws.com/id/…`, one id for every cluster of
the process) cannot be reached here, so the layer:

* generates at start a root CA, an intermediate CA it signs and a leaf for
  `localhost` / `127.0.0.1` signed by the intermediate;
* serves HTTPS on 127.0.0.1 (a free port, daemon threads), presenting leaf +
  intermediate, as real servers do (not the root):
  `GET /id/<id>/.well-known/openid-configuration` and `GET /id/<id>/keys`
  (a JWKS with one RSA key) for any id, 404 for anything else;
* gives every EKS cluster its own issuer `https://localhost:PORT/id/<ID>`
  (ID: 32 uppercase hex digits, as EKS's), fixed when the cluster is created;
* fills in the issuer's thumbprint when CreateOpenIDConnectProvider names
  this issuer without a ThumbprintList (IAM retrieves it itself then).

`GET /_realism/oidc` (middleware.py) returns the root CA (PEM), the
thumbprint and the port.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATH_RE = re.compile(r"^/id/([A-Za-z0-9]+)/(\.well-known/openid-configuration|keys)$")


def _b64url(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _chain() -> dict[str, Any]:
    """Root CA, intermediate CA, leaf (localhost, 127.0.0.1) and their keys."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def key() -> Any:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "slipway localaws"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, pub: Any, issuer: x509.Name, signer: Any, issuer_pub: Any, ca: bool,
             path_length: int | None, extra: list[tuple[Any, bool]]) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365 if ca else 30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=not ca, content_commitment=False, key_encipherment=not ca,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), critical=False)
        )
        for ext, critical in extra:
            b = b.add_extension(ext, critical=critical)
        return b.sign(signer, hashes.SHA256())

    root_key, int_key, leaf_key = key(), key(), key()
    root = cert("slipway localaws OIDC root CA", root_key.public_key(), name("slipway localaws OIDC root CA"),
                root_key, root_key.public_key(), True, None, [])
    inter = cert("slipway localaws OIDC intermediate CA", int_key.public_key(), root.subject,
                 root_key, root_key.public_key(), True, 0, [])
    leaf = cert("localhost", leaf_key.public_key(), inter.subject, int_key, int_key.public_key(), False, None, [
        (x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                      x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
    ])
    pem = serialization.Encoding.PEM
    return {
        "root_pem": root.public_bytes(pem).decode(),
        "chain_pem": leaf.public_bytes(pem) + inter.public_bytes(pem),
        "leaf_key_pem": leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "thumbprint": hashlib.sha1(inter.public_bytes(serialization.Encoding.DER)).hexdigest(),
    }


def _jwks() -> dict[str, Any]:
    """A JWKS with one RSA signing key (the service account token issuer's)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    numbers = pub.public_numbers()
    return {"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": hashlib.sha1(der).hexdigest(),
        "n": _b64url(numbers.n), "e": _b64url(numbers.e),
    }]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, so a
        # slow or failing client never holds up the accept loop.
        request.settimeout(30)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


class Issuer:
    """The HTTPS issuer: certificates, keys and the server (start/stop)."""

    def __init__(self, verbose: bool = False) -> None:
        chain = _chain()
        self.ca_pem: str = chain["root_pem"]
        self.thumbprint: str = chain["thumbprint"]
        self.jwks = _jwks()
        self.verbose = verbose
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tmp = tempfile.mkdtemp(prefix="localaws-oidc-")
        cert_file, key_file = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(chain["leaf_key_pem"])
            with open(cert_file, "wb") as f:
                f.write(chain["chain_pem"])
            context.load_cert_chain(cert_file, key_file)
        finally:
            for p in (cert_file, key_file):
                try:
                    os.remove(p)
                except OSError:
                    pass
            os.rmdir(tmp)
        self._context = context
        self._server: _Server | None = None
        self.port = 0

    def url(self, oidc_id: str) -> str:
        return f"https://localhost:{self.port}/id/{oidc_id}"

    def info(self) -> dict[str, Any]:
        return {"ca_pem": self.ca_pem, "thumbprint": self.thumbprint, "port": self.port}

    def is_ours(self, url: str) -> bool:
        return bool(self.port) and url.startswith(f"https://localhost:{self.port}/")

    def document(self, path: str) -> dict[str, Any] | None:
        m = _PATH_RE.match(path)
        if m is None:
            return None
        issuer = self.url(m.group(1))
        if m.group(2) == "keys":
            return self.jwks
        return {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/keys",
            "authorization_endpoint": "urn:kubernetes:programmatic_authorization",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["sub", "iss"],
        }

    def start(self) -> int:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def do_GET(self) -> None:  # noqa: N802
                doc = issuer.document(self.path.split("?", 1)[0])
                status = 200 if doc is not None else 404
                body = json.dumps(doc if doc is not None else {"message": "Not Found"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802
                self.send_response(200 if issuer.document(self.path.split("?", 1)[0]) is not None else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *a: object) -> None:  # noqa: A002
                if issuer.verbose:
                    sys.stderr.write("oidc: %s - %s\n" % (self.address_string(), format % a))

        server = _Server(("127.0.0.1", 0), Handler)
        server.ssl_context = self._context
        self._server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="oidc", daemon=True).start()
        return self.port

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


ISSUER: Issuer | None = None


def start(verbose: bool = False) -> Issuer:
    """Generate the certificates and serve the issuer; idempotent."""
    global ISSUER
    if ISSUER is None:
        ISSUER = Issuer(verbose)
        ISSUER.start()
    return ISSUER


def _patch_eks_issuer() -> None:
    """Every cluster gets its own issuer at the local HTTPS server (moto's
    is one unreachable URL for the whole process)."""
    from moto.eks.models import Cluster
    from moto.moto_api._internal import mock_random

    def identity_get(self: Any) -> dict[str, Any]:
        d = self.__dict__
        if ISSUER is None:
            return d.get("_rl_identity", {})
        oidc_id = d.get("_rl_oidc_id")
        if oidc_id is None:
            oidc_id = d.setdefault("_rl_oidc_id", mock_random.get_random_hex(32).upper())
        return {"oidc": {"issuer": ISSUER.url(oidc_id)}}

    def identity_set(self: Any, value: dict[str, Any]) -> None:
        self.__dict__["_rl_identity"] = value

    Cluster.identity = property(identity_get, identity_set)


def _patch_iam_thumbprint() -> None:
    """CreateOpenIDConnectProvider without a ThumbprintList: IAM retrieves the
    issuer's top intermediate CA thumbprint itself. Done for this issuer;
    other URLs keep moto's empty list."""
    from moto.iam.models import IAMBackend

    original = IAMBackend.create_open_id_connect_provider

    def create_open_id_connect_provider(self: Any, url: str, thumbprint_list: list[str], *a: Any, **kw: Any) -> Any:
        if not thumbprint_list and ISSUER is not None and isinstance(url, str) and ISSUER.is_ours(url):
            thumbprint_list = [ISSUER.thumbprint]
        return original(self, url, thumbprint_list, *a, **kw)

    IAMBackend.create_open_id_connect_provider = create_open_id_connect_provider


_applied = False


def apply() -> None:
    global _applied
    if not _applied:
        _patch_eks_issuer()
        _patch_iam_thumbprint()
        _applied = True
