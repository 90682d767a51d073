"""The realism layer: a WSGI middleware around moto's DomainDispatcherApplication.

Per AWS request, in order: read (and re-wrap) the body, identify account,
service and operation, count the call, sleep `latency_ms`, maybe inject a
fault, serve the EKS operations moto lacks, serialise S3's conditional
writes (atomic in S3, check-then-write in moto), otherwise pass through to
moto untouched. `/_realism/*` are the layer's control endpoints (calls, config,
oidc: the local EKS OIDC issuer's root CA, thumbprint and port); `/moto-api/*`
passes through (POST /moto-api/reset also resets the layer's counters, fault
RNGs and IAM role creation times). Neither kind of control call is delayed,
counted or faulted.
"""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from . import eks_api, iam_propagation, oidc
from .config import CONFIG, ConfigError
from .faults import INJECTOR, DropConnection, fault_response
from .lifecycle import reap_eks
from .ops import RequestInfo, identify

StartResponse = Callable[..., Any]


# Entries kept in the call log (the oldest are dropped beyond this).
LOG_LIMIT = 200_000


class Counters:
    """Calls per (account, service, operation), and a log of each call's
    arrival and answer times (monotonic seconds) for benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._log: list[dict[str, Any]] = []

    def record(self, info: RequestInfo, fault: str | None) -> None:
        key = (info.account, info.service, info.operation)
        with self._lock:
            c = self._calls.get(key)
            if c is None:
                c = self._calls[key] = {
                    "account": info.account, "service": info.service, "operation": info.operation,
                    "mutating": info.mutating, "count": 0, "faults": 0, "served_s": 0.0, "cpu_s": 0.0,
                }
            c["count"] += 1
            if fault:
                c["faults"] += 1

    def served(self, info: RequestInfo, arrived: float, answered: float, latency_s: float, cpu_s: float) -> None:
        """One call's times: `served_s` is the time spent answering it beyond
        the configured latency (moto's own work, and waiting for the GIL);
        `cpu_s` the CPU time its thread spent after the latency's sleep."""
        served = max(0.0, answered - arrived - latency_s)
        key = (info.account, info.service, info.operation)
        with self._lock:
            c = self._calls.get(key)
            if c is not None:
                c["served_s"] += served
                c["cpu_s"] += cpu_s
            self._log.append({
                "account": info.account, "service": info.service, "operation": info.operation,
                "arrived": arrived, "answered": answered, "served_s": served, "cpu_s": cpu_s,
            })
            if len(self._log) > LOG_LIMIT:
                del self._log[: len(self._log) - LOG_LIMIT]

    def report(self, account: str | None, log: bool = False) -> dict[str, Any]:
        with self._lock:
            calls = [dict(c) for k, c in sorted(self._calls.items()) if account is None or k[0] == account]
            entries = [dict(e) for e in self._log if account is None or e["account"] == account] if log else None
        out: dict[str, Any] = {
            "calls": calls,
            "total": sum(c["count"] for c in calls),
            "mutating": sum(c["count"] for c in calls if c["mutating"]),
            "served_s": sum(c["served_s"] for c in calls),
            "cpu_s": sum(c["cpu_s"] for c in calls),
        }
        if entries is not None:
            out["log"] = entries
            out["now"] = time.monotonic()
        return out

    def reset(self, account: str | None = None) -> None:
        with self._lock:
            if account is None:
                self._calls.clear()
                self._log.clear()
            else:
                for k in [k for k in self._calls if k[0] == account]:
                    del self._calls[k]
                self._log = [e for e in self._log if e["account"] != account]


COUNTERS = Counters()

# S3 applies a conditional write (If-Match, If-None-Match) atomically: no
# other write to the key lands between its check and its write. moto checks
# and then writes, so concurrent conditional writes are serialised here.
_CONDITIONAL_WRITES = threading.Lock()


def _read_body(environ: dict[str, Any]) -> bytes:
    """Read the whole body and put it back, so moto can read it again."""
    stream = environ.get("wsgi.input")
    length = environ.get("CONTENT_LENGTH")
    body = b""
    if stream is not None:
        if length:
            try:
                body = stream.read(int(length))
            except ValueError:
                body = b""
        elif environ.get("wsgi.input_terminated"):
            body = stream.read()
    environ["wsgi.input"] = io.BytesIO(body)
    if length or environ.get("wsgi.input_terminated"):
        environ["CONTENT_LENGTH"] = str(len(body))
    return body


def _respond(start_response: StartResponse, status: int, headers: list[tuple[str, str]], body: bytes) -> Iterable[bytes]:
    from http import HTTPStatus

    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    headers = list(headers) + [("Content-Length", str(len(body)))]
    start_response(f"{status} {phrase}", headers)
    return [body]


def _json(start_response: StartResponse, status: int, obj: Any) -> Iterable[bytes]:
    return _respond(start_response, status, [("Content-Type", "application/json")], json.dumps(obj, indent=1).encode())


def reset_layer() -> None:
    COUNTERS.reset()
    INJECTOR.reset()
    iam_propagation.reset()


class RealismApp:
    def __init__(self, moto_app: Callable[..., Any]) -> None:
        self.moto_app = moto_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if path.startswith("/_realism/") or path == "/_realism":
            return self.control(environ, start_response, path, method)
        if path.startswith("/moto-api"):
            if method == "POST" and path.rstrip("/") == "/moto-api/reset":
                reset_layer()
            return self.moto_app(environ, start_response)

        body = _read_body(environ)
        arrived = time.monotonic()
        info = identify(environ, body)
        fault = INJECTOR.decide(info)
        COUNTERS.record(info, fault)
        latency = CONFIG.latency_ms
        # The thread's CPU time: its sleep for the latency takes none, so
        # this is the work of serving the call once the latency has passed.
        cpu_before = time.thread_time()
        try:
            answer = self.serve(environ, start_response, info, fault, latency, method)
        finally:
            COUNTERS.served(info, arrived, time.monotonic(), latency / 1000.0, time.thread_time() - cpu_before)
        return answer

    def serve(self, environ: dict[str, Any], start_response: StartResponse, info: RequestInfo,
              fault: str | None, latency: float, method: str) -> Iterable[bytes]:
        if latency:
            time.sleep(latency / 1000.0)
        if fault == "drop":
            raise DropConnection("injected dropped connection")
        if fault == "lost_response":
            # Served (it lands), then the answer is lost.
            if info.service == "s3" and (environ.get("HTTP_IF_MATCH") or environ.get("HTTP_IF_NONE_MATCH")):
                with _CONDITIONAL_WRITES:
                    list(self.moto_app(environ, lambda *a, **k: None))
            else:
                list(self.moto_app(environ, lambda *a, **k: None))
            raise DropConnection("injected lost response")
        if fault:
            return _respond(start_response, *fault_response(fault, info))
        if info.service == "eks":
            reap_eks(info.account, info.region)
            served = eks_api.handle(info)
            if served is not None:
                return _respond(start_response, *served)
        if (
            info.service == "s3"
            and method in ("PUT", "DELETE")
            and (environ.get("HTTP_IF_MATCH") or environ.get("HTTP_IF_NONE_MATCH"))
        ):
            with _CONDITIONAL_WRITES:
                return list(self.moto_app(environ, start_response))
        return self.moto_app(environ, start_response)

    def control(self, environ: dict[str, Any], start_response: StartResponse, path: str, method: str) -> Iterable[bytes]:
        qs = parse_qs(environ.get("QUERY_STRING", ""))
        account = qs.get("account", [None])[0]
        route = path.rstrip("/")
        if route == "/_realism/calls":
            if method == "GET":
                log = qs.get("log", ["0"])[0] not in ("0", "false", "")
                return _json(start_response, 200, COUNTERS.report(account, log))
            if method == "DELETE":
                COUNTERS.reset(account)
                return _json(start_response, 200, COUNTERS.report(account))
        elif route == "/_realism/config":
            if method == "GET":
                return _json(start_response, 200, CONFIG.snapshot())
            if method in ("POST", "PUT", "PATCH"):
                raw = _read_body(environ)
                try:
                    patch = json.loads(raw or b"{}")
                    return _json(start_response, 200, CONFIG.update(patch))
                except (ValueError, ConfigError) as e:
                    return _json(start_response, 400, {"error": str(e)})
        elif route == "/_realism/oidc":
            if method == "GET":
                if oidc.ISSUER is None:
                    return _json(start_response, 404, {"error": "the OIDC issuer is not running"})
                return _json(start_response, 200, oidc.ISSUER.info())
        else:
            return _json(start_response, 404, {"error": f"no such control endpoint: {path}",
                                               "endpoints": ["/_realism/calls", "/_realism/config", "/_realism/oidc"]})
        return _json(start_response, 405, {"error": f"method {method} not allowed on {route}"})
