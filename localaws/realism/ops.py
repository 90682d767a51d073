"""Identify account, region, service, operation and protocol of a request.

* service and region: the SigV4 credential scope
  (`Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request`,
  or `X-Amz-Credential` in a presigned query string);
* operation: `X-Amz-Target` (JSON protocols), `Action=` (query protocols),
  otherwise the botocore model's HTTP bindings (restJson such as EKS,
  restXml such as S3 — best effort for S3).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

DEFAULT_ACCOUNT = "123456789012"

_CRED_RE = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")

READ_ONLY_PREFIXES = (
    "Describe", "List", "Get", "Head", "BatchGet", "Search", "Lookup",
    "Query", "Scan", "Select",
)

# Credential-scope names whose botocore model name differs.
_MODEL_NAME = {"elasticloadbalancing": "elbv2", "monitoring": "cloudwatch", "email": "ses"}


@dataclass
class RequestInfo:
    account: str
    region: str
    service: str
    operation: str
    protocol: str  # "json", "query", "ec2", "rest-json", "rest-xml"
    method: str
    path_segments: list[str]  # raw path split on "/", each percent-decoded
    query: dict[str, list[str]]
    body: bytes
    access_key: str = ""

    @property
    def mutating(self) -> bool:
        if self.operation.startswith(READ_ONLY_PREFIXES):
            return False
        if self.service == "s3" and self.method in ("GET", "HEAD"):
            return False
        if self.operation == "Unknown":
            return self.method not in ("GET", "HEAD")
        return True


def raw_path(environ: dict[str, Any]) -> str:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path = raw.split("?", 1)[0]
        if "://" in path:  # absolute-form request target
            path = "/" + path.split("://", 1)[1].split("/", 1)[-1]
        return path
    return environ.get("PATH_INFO", "/")


def split_path(path: str) -> list[str]:
    p = path.strip("/")
    return [unquote(s) for s in p.split("/")] if p else []


@functools.lru_cache(maxsize=None)
def _service_model(name: str) -> Any:
    import botocore.session

    try:
        return botocore.session.get_session().get_service_model(_MODEL_NAME.get(name, name))
    except Exception:  # unknown service
        return None


@functools.lru_cache(maxsize=None)
def _rest_routes(service: str) -> list[tuple[str, list[str], list[str], list[str], str, int]]:
    """(method, path template segments, required query keys, required
    headers (as WSGI environ keys), operation, score)."""
    model = _service_model(service)
    routes = []
    if model is None:
        return routes
    for op in model.operation_names:
        http = model.operation_model(op).http
        uri = http.get("requestUri", "/")
        path, _, qs = uri.partition("?")
        segs = [s for s in path.strip("/").split("/") if s]
        req_q = [kv.split("=")[0] for kv in qs.split("&") if kv and not kv.startswith("x-id")]
        shape = model.operation_model(op).input_shape
        req_h = []
        if shape is not None:
            for name in shape.required_members:
                member = shape.members[name]
                if member.serialization.get("location") == "header":
                    hdr = member.serialization.get("name", name)
                    req_h.append("HTTP_" + hdr.upper().replace("-", "_"))
        literal = sum(1 for s in segs if not s.startswith("{"))
        score = literal * 10 + len(segs) + len(req_q) * 5 + len(req_h) * 5
        routes.append((http.get("method", "POST"), segs, req_q, req_h, op, score))
    return routes


def _match(template: list[str], segs: list[str]) -> bool:
    i = 0
    for n, t in enumerate(template):
        if t.startswith("{") and t.endswith("+}"):
            return len(segs) > i  # greedy label eats the rest (at least one)
        if i >= len(segs):
            return False
        if not t.startswith("{") and t != segs[i]:
            return False
        i += 1
    return i == len(segs)


def rest_operation(
    service: str, method: str, segs: list[str], query: dict[str, list[str]], environ: dict[str, Any]
) -> str:
    best: tuple[int, str] | None = None
    for m, tmpl, req_q, req_h, op, score in _rest_routes(service):
        if m != method or not all(q in query for q in req_q) or not all(h in environ for h in req_h):
            continue
        if _match(tmpl, segs) and (best is None or score > best[0]):
            best = (score, op)
    return best[1] if best else "Unknown"


def identify(environ: dict[str, Any], body: bytes) -> RequestInfo:
    method = environ.get("REQUEST_METHOD", "GET").upper()
    qs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = _CRED_RE.search(auth)
    if not m and "X-Amz-Credential" in qs:
        m = _CRED_RE.search("Credential=" + qs["X-Amz-Credential"][0])
    access_key, region, service = (m.group(1), m.group(3), m.group(4)) if m else ("", "us-east-1", "unknown")
    account = environ.get("HTTP_X_MOTO_ACCOUNT_ID") or DEFAULT_ACCOUNT
    segs = split_path(raw_path(environ))

    target = environ.get("HTTP_X_AMZ_TARGET")
    ctype = environ.get("CONTENT_TYPE", "")
    if target:
        op, proto = target.rsplit(".", 1)[-1], "json"
    else:
        action = qs.get("Action", [None])[0]
        if action is None and method == "POST" and ctype.startswith("application/x-www-form-urlencoded"):
            try:
                action = parse_qs(body.decode("utf-8"), keep_blank_values=True).get("Action", [None])[0]
            except UnicodeDecodeError:
                action = None
        if action:
            op, proto = action, ("ec2" if service == "ec2" else "query")
        else:
            model = _service_model(service)
            proto = (model.metadata.get("protocol") if model is not None else None) or (
                "rest-xml" if service == "s3" else "rest-json"
            )
            if proto not in ("rest-json", "rest-xml"):
                proto = "rest-json"
            op = rest_operation(service, method, segs, qs, environ)
    return RequestInfo(
        account=account, region=region, service=service, operation=op, protocol=proto,
        method=method, path_segments=segs, query=qs, body=body, access_key=access_key,
    )


def rest_labels(service: str, operation: str, segs: list[str]) -> dict[str, str]:
    """The URI labels of `operation` bound from the request path segments."""
    model = _service_model(service)
    uri = model.operation_model(operation).http.get("requestUri", "/")
    template = [s for s in uri.partition("?")[0].strip("/").split("/") if s]
    out: dict[str, str] = {}
    for i, t in enumerate(template):
        if t.startswith("{") and t.endswith("+}"):
            out[t[1:-2]] = "/".join(segs[i:])
            break
        if t.startswith("{") and i < len(segs):
            out[t[1:-1]] = segs[i]
    return out
