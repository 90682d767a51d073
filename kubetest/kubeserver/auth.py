"""Authentication: the static bearer token, and EKS tokens verified like aws-iam-authenticator does.

An EKS token is `k8s-aws-v1.` + base64url (no padding) of a presigned STS
GetCallerIdentity URL whose signature covers the header `x-k8s-aws-id:
<cluster name>`. The authenticator checks the URL's form (https, an STS host,
path `/`, an allow-list of query parameters, `Action=GetCallerIdentity`,
`x-k8s-aws-id` among the signed headers, `X-Amz-Expires` <= 900, `X-Amz-Date`
at most 15 minutes old) and then sends the request to STS with
`x-k8s-aws-id: <its cluster name>`; STS answers with the caller's ARN when the
signature holds. Here "STS" is the local AWS (`--aws-endpoint`, moto).

moto routes a request to a service by the credential scope of its
`Authorization` header; a presigned GET has none, so moto would hand it to S3
(its default: `ListBuckets`). The request is therefore sent with the same
path and query plus `Authorization: AWS4-HMAC-SHA256 Credential=<the query's
X-Amz-Credential>, SignedHeaders=..., Signature=...` (the query's own
signature in header form): moto then picks STS and takes the access key from
it, so GetCallerIdentity answers for the token's credentials. moto does not
check signatures; for the access keys named with `--aws-credentials`
kubetest checks the SigV4 signature itself (with `host` and `x-k8s-aws-id:
<cluster name>`), so a token signed for another cluster is rejected as STS
would reject it.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

TOKEN_PREFIX = "k8s-aws-v1."
MAX_TOKEN_LEN = 4096  # aws-iam-authenticator's maxTokenLenBytes
PRESIGNED_URL_EXPIRATION = 15 * 60  # the authenticator's fixed token lifetime
MAX_EXPIRES = 900  # the largest X-Amz-Expires it accepts
CLOCK_SKEW = 5 * 60  # how far in the future X-Amz-Date may be
CLUSTER_ID_HEADER = "x-k8s-aws-id"
ALLOWED_PARAMS = {p.lower(): p for p in (
    "Action", "Version", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
    "X-Amz-Security-Token", "X-Amz-Signature", "X-Amz-SignedHeaders")}
REQUIRED_PARAMS = ("Action", "Version", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                   "X-Amz-SignedHeaders", "X-Amz-Signature")
STS_HOST_RE = re.compile(r"^sts(?:\.(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+))?\.amazonaws\.com(?P<cn>\.cn)?$")
CREDENTIAL_RE = re.compile(r"^(?P<key>[^/]+)/(?P<date>[0-9]{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)"
                           r"/aws4_request$")
DATE_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CACHE_MAX = 1024


class TokenError(Exception):
    """The token is rejected (401); the message says why."""


@dataclass
class Identity:
    arn: str
    account: str
    user_id: str
    access_key: str
    expires: float  # epoch seconds: X-Amz-Date + 15 min


@dataclass
class Presigned:
    url: str
    host: str
    raw_query: str
    params: dict  # canonical parameter name -> value
    access_key: str
    date: float  # X-Amz-Date as epoch seconds


def decode_token(token: str) -> str:
    """The presigned URL inside an EKS token (TokenError when malformed)."""
    if not token.startswith(TOKEN_PREFIX):
        raise TokenError("token does not start with k8s-aws-v1.")
    if len(token) > MAX_TOKEN_LEN:
        raise TokenError("token is too large")
    body = token[len(TOKEN_PREFIX):].rstrip("=")
    if not body:
        raise TokenError("token has no body")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError) as e:
        raise TokenError(f"token is not base64url: {e}") from None


def parse_presigned(url: str, now: float) -> Presigned:
    """Check a presigned STS URL the way aws-iam-authenticator does (TokenError when it would refuse it)."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise TokenError(f"malformed presigned URL: {e}") from None
    if u.scheme != "https":
        raise TokenError(f"unexpected scheme {u.scheme!r} in presigned URL")
    host = u.netloc
    m = STS_HOST_RE.match(host)
    if port is not None or u.username is not None or not m:
        raise TokenError(f"unexpected hostname {host!r} in presigned URL")
    if u.path != "/":
        raise TokenError("unexpected path in presigned URL")
    if u.fragment:
        raise TokenError("unexpected fragment in presigned URL")
    params: dict[str, str] = {}
    for k, v in parse_qsl(u.query, keep_blank_values=True):
        name = ALLOWED_PARAMS.get(k.lower())
        if name is None:
            raise TokenError(f"non-allowed query parameter {k!r} in presigned URL")
        if name in params:
            raise TokenError("query parameter with multiple values not supported")
        params[name] = v
    for name in REQUIRED_PARAMS:
        if not params.get(name):
            raise TokenError(f"{name} parameter must be present in presigned URL")
    if params["Action"] != "GetCallerIdentity":
        raise TokenError("unexpected action parameter in presigned URL")
    if params["Version"] != "2011-06-15":
        raise TokenError("unexpected version parameter in presigned URL")
    if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
        raise TokenError("unexpected X-Amz-Algorithm in presigned URL")
    signed = params["X-Amz-SignedHeaders"].split(";")
    if CLUSTER_ID_HEADER not in [h.lower() for h in signed]:
        raise TokenError(f"client did not sign the {CLUSTER_ID_HEADER} header in the presigned URL")
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        expires = -1
    if not 0 <= expires <= MAX_EXPIRES:
        raise TokenError(f"invalid X-Amz-Expires parameter in presigned URL: {params['X-Amz-Expires']!r}")
    if not DATE_RE.match(params["X-Amz-Date"]):
        raise TokenError(f"malformed X-Amz-Date {params['X-Amz-Date']!r} in presigned URL")
    try:
        date = calendar.timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise TokenError(f"malformed X-Amz-Date {params['X-Amz-Date']!r} in presigned URL") from None
    if now > date + PRESIGNED_URL_EXPIRATION:
        raise TokenError(f"X-Amz-Date parameter is expired (15 minute expiration) {params['X-Amz-Date']}")
    if date > now + CLOCK_SKEW:
        raise TokenError(f"X-Amz-Date parameter is in the future {params['X-Amz-Date']}")
    # What STS itself would refuse before looking at the signature (moto does not check).
    c = CREDENTIAL_RE.match(params["X-Amz-Credential"])
    if not c:
        raise TokenError("malformed X-Amz-Credential in presigned URL")
    if c["service"] != "sts":
        raise TokenError(f"credential scope names service {c['service']!r}, not sts")
    if c["date"] != params["X-Amz-Date"][:8]:
        raise TokenError("credential scope date does not match X-Amz-Date")
    if m["region"] and c["region"] != m["region"]:
        raise TokenError(f"credential scope region {c['region']!r} does not match host {host!r}")
    if not m["region"] and not m["cn"] and c["region"] != "us-east-1":
        raise TokenError(f"credential scope region {c['region']!r} does not match host {host!r}")
    return Presigned(url=url, host=host, raw_query=u.query, params=params, access_key=c["key"], date=date)


def _uri_encode(s: str) -> str:
    return quote(s, safe="-_.~")


def signature_matches(p: Presigned, secret: str, cluster: str) -> bool:
    """Does X-Amz-Signature hold for `secret` with `host` and `x-k8s-aws-id: cluster` (SigV4, query form)?"""
    values = {"host": p.host, CLUSTER_ID_HEADER: cluster, "accept": "application/json"}
    names = sorted(h.strip().lower() for h in p.params["X-Amz-SignedHeaders"].split(";"))
    if any(n not in values for n in names):
        return False  # a header the authenticator never sends could not have matched at STS
    canonical_headers = "".join(f"{n}:{values[n]}\n" for n in names)
    query = sorted((_uri_encode(k), _uri_encode(v)) for k, v in p.params.items() if k != "X-Amz-Signature")
    canonical_query = "&".join(f"{k}={v}" for k, v in query)
    scope = p.params["X-Amz-Credential"].split("/", 1)[1]
    _date, region, service, _ = scope.split("/")
    key = hmac.new(f"AWS4{secret}".encode(), p.params["X-Amz-Date"][:8].encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    given = p.params["X-Amz-Signature"].lower()
    for payload in (EMPTY_SHA256, "UNSIGNED-PAYLOAD"):
        creq = "\n".join(["GET", "/", canonical_query, canonical_headers, ";".join(names), payload])
        sts = "\n".join(["AWS4-HMAC-SHA256", p.params["X-Amz-Date"], scope,
                         hashlib.sha256(creq.encode()).hexdigest()])
        if hmac.compare_digest(hmac.new(key, sts.encode(), hashlib.sha256).hexdigest(), given):
            return True
    return False


def parse_caller_identity(body: bytes, content_type: str) -> tuple[str, str, str]:
    """(Arn, Account, UserId) from a GetCallerIdentity response, JSON or XML."""
    if "json" in content_type:
        import json

        doc = json.loads(body)
        r = doc["GetCallerIdentityResponse"]["GetCallerIdentityResult"]
        return r["Arn"], r.get("Account", ""), r.get("UserId", "")
    root = ET.fromstring(body)
    found = {}
    for el in root.iter():
        local = el.tag.rsplit("}", 1)[-1]
        if local in ("Arn", "Account", "UserId") and local not in found:
            found[local] = (el.text or "").strip()
    if not found.get("Arn"):
        raise ValueError("no Arn in the GetCallerIdentity response")
    return found["Arn"], found.get("Account", ""), found.get("UserId", "")


class EksVerifier:
    """Verifies EKS tokens for one cluster name against an STS endpoint (the local AWS)."""

    def __init__(self, cluster: str, sts_endpoint: str, credentials: dict[str, str] | None = None,
                 clock=time.time, timeout: float = 10.0, known_key_ms: float | None = None):
        self.cluster, self.endpoint = cluster, sts_endpoint.rstrip("/")
        self.credentials = dict(credentials or {})
        self.clock, self.timeout = clock, timeout
        self.lock = threading.Lock()
        self.cache: dict[str, Identity] = {}
        # `--eks-known-key-ms`: the identity STS named for each access key of
        # `credentials`, and how long such a key's later tokens take to check
        # without asking the local AWS again (None: always ask).
        self.known_key_ms = known_key_ms
        self.known: dict[str, Identity] = {}
        self._session = None

    def session(self):
        if self._session is None:
            import requests

            s = requests.Session()
            s.trust_env = False  # the local AWS is reached directly, never through a proxy
            self._session = s
        return self._session

    def verify(self, token: str) -> Identity:
        now = self.clock()
        with self.lock:
            hit = self.cache.get(token)
            if hit is not None and now <= hit.expires:
                return hit
        p = parse_presigned(decode_token(token), now)
        secret = self.credentials.get(p.access_key)
        if secret is not None and not signature_matches(p, secret, self.cluster):
            raise TokenError("the signature does not match (SignatureDoesNotMatch: signed for another cluster "
                             "name or with another secret key)")
        with self.lock:
            known = self.known.get(p.access_key) if secret is not None and self.known_key_ms is not None else None
        if known is not None:
            # The signature is checked and STS named this key's identity
            # before: answered as STS would, in STS's own time.
            time.sleep(self.known_key_ms / 1000)
            ident = Identity(arn=known.arn, account=known.account, user_id=known.user_id,
                             access_key=p.access_key, expires=p.date + PRESIGNED_URL_EXPIRATION)
        else:
            ident = self.ask_sts(p)
        with self.lock:
            if secret is not None:
                self.known[p.access_key] = ident
            if len(self.cache) >= CACHE_MAX:
                for k in [k for k, v in self.cache.items() if now > v.expires] or list(self.cache)[:CACHE_MAX // 2]:
                    del self.cache[k]
            self.cache[token] = ident
        return ident

    def ask_sts(self, p: Presigned) -> Identity:
        import requests

        prm = p.params
        headers = {
            "Host": p.host,
            CLUSTER_ID_HEADER: self.cluster,
            "Accept": "application/json",
            # moto picks the service (and the caller's access key) from this header's credential scope
            "Authorization": f"AWS4-HMAC-SHA256 Credential={prm['X-Amz-Credential']}, "
                             f"SignedHeaders={prm['X-Amz-SignedHeaders']}, Signature={prm['X-Amz-Signature']}",
        }
        try:
            r = self.session().get(f"{self.endpoint}/?{p.raw_query}", headers=headers, timeout=self.timeout,
                                   allow_redirects=False)
        except requests.RequestException as e:
            raise TokenError(f"error contacting STS: {e}") from None
        if r.status_code != 200:
            raise TokenError(f"STS answered {r.status_code}: {r.text[:300]}")
        try:
            arn, account, user_id = parse_caller_identity(r.content, r.headers.get("Content-Type", ""))
        except (ValueError, KeyError, TypeError, ET.ParseError) as e:
            raise TokenError(f"unexpected STS response: {e}") from None
        return Identity(arn=arn, account=account, user_id=user_id, access_key=p.access_key,
                        expires=p.date + PRESIGNED_URL_EXPIRATION)


class Authenticator:
    """Who sent a request: the static token's user, an EKS token's ARN, or nobody (401). Keeps a record."""

    STATIC_USER = "kubetest-admin"

    def __init__(self, token: str, eks: EksVerifier | None = None, verbose: bool = False):
        self.token, self.eks, self.verbose = token, eks, verbose
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.accepted_tokens: set[str] = set()
            self.identities: list[str] = []
            self.rejected = 0
            self.last_rejection: str | None = None

    def authenticate(self, header: str) -> str | None:
        if header == f"Bearer {self.token}":
            return self.STATIC_USER
        bearer = header[len("Bearer "):].strip() if header.startswith("Bearer ") else None
        if bearer is None:
            return self._reject("no bearer token" if not header else "not a bearer token")
        if not bearer.startswith(TOKEN_PREFIX):
            return self._reject("unknown bearer token")
        if self.eks is None:
            return self._reject("EKS token, but the server was started without --eks-cluster-name")
        try:
            ident = self.eks.verify(bearer)
        except TokenError as e:
            return self._reject(f"EKS token: {e}")
        digest = hashlib.sha256(bearer.encode()).hexdigest()
        with self.lock:
            if digest not in self.accepted_tokens:
                self.accepted_tokens.add(digest)
                if self.verbose:
                    print(f"kubetest: EKS token accepted for {ident.arn}", file=sys.stderr, flush=True)
            if ident.arn not in self.identities:
                self.identities.append(ident.arn)
        return ident.arn

    def _reject(self, why: str) -> str | None:
        with self.lock:
            self.rejected += 1
            self.last_rejection = why
        print(f"kubetest: 401: {why}", file=sys.stderr, flush=True)
        return None

    def report(self) -> dict:
        with self.lock:
            return {"eks_tokens": len(self.accepted_tokens), "identities": list(self.identities),
                    "rejected": self.rejected, "last_rejection": self.last_rejection,
                    "eks_cluster_name": self.eks.cluster if self.eks else None}
