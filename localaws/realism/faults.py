"""Injected faults in each protocol's real error shape, chosen by a seeded RNG."""

from __future__ import annotations

import json
import random
import threading
import uuid
from typing import Any

from .config import CONFIG
from .ops import RequestInfo


class DropConnection(ConnectionError):
    """Raised by the middleware: the request handler closes the socket
    without writing a response (werkzeug treats ConnectionError as a
    dropped connection and writes nothing)."""


# (kind) -> (status, code, message) per protocol family.
_EC2 = {
    "throttle": (503, "RequestLimitExceeded", "Request limit exceeded."),
    "500": (500, "InternalError", "An internal error has occurred."),
    "503": (503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
    "denied": (401, "AuthFailure", "AWS was not able to validate the provided access credentials"),
}
_QUERY = {
    "throttle": (400, "Throttling", "Rate exceeded"),
    "500": (500, "InternalFailure", "The request processing has failed because of an unknown error, exception or failure."),
    "503": (503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
    "denied": (403, "InvalidClientTokenId", "The security token included in the request is invalid."),
}
_JSON = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "500": (500, "InternalFailure", "The request processing has failed because of an unknown error, exception or failure."),
    "503": (503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
    "denied": (400, "UnrecognizedClientException", "The security token included in the request is invalid."),
}
# restJson (EKS): the EKS model declares ThrottlingException 429,
# ServerException 500, ServiceUnavailableException 503.
_REST_JSON = {
    "throttle": (429, "ThrottlingException", "Rate exceeded"),
    "500": (500, "ServerException", "An internal error has occurred."),
    "503": (503, "ServiceUnavailableException", "The service is unavailable. Back off and retry the operation."),
    "denied": (403, "UnrecognizedClientException", "The security token included in the request is invalid."),
}
_S3 = {
    "throttle": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "ServiceUnavailable", "Reduce your request rate."),
    "denied": (403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."),
}


def fault_response(kind: str, info: RequestInfo) -> tuple[int, list[tuple[str, str]], bytes]:
    rid = str(uuid.uuid4())
    proto = info.protocol
    if proto == "ec2":
        status, code, msg = _EC2[kind]
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{code}</Code><Message>{msg}</Message></Error></Errors>"
            f"<RequestID>{rid}</RequestID></Response>"
        )
        return status, [("Content-Type", "text/xml;charset=UTF-8")], body.encode()
    if proto == "query":
        status, code, msg = _QUERY[kind]
        etype = "Sender" if status < 500 else "Receiver"
        body = (
            f"<ErrorResponse><Error><Type>{etype}</Type><Code>{code}</Code><Message>{msg}</Message></Error>"
            f"<RequestId>{rid}</RequestId></ErrorResponse>"
        )
        return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid)], body.encode()
    if proto == "json":
        status, code, msg = _JSON[kind]
        body = json.dumps({"__type": code, "message": msg})
        return status, [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("x-amzn-ErrorType", code),
            ("x-amzn-RequestId", rid),
        ], body.encode()
    if proto == "rest-xml":
        status, code, msg = _S3[kind]
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{msg}</Message><RequestId>{rid[:16].upper()}</RequestId>"
            f"<HostId>{uuid.uuid4().hex}</HostId></Error>"
        )
        return status, [("Content-Type", "application/xml"), ("x-amz-request-id", rid[:16].upper())], body.encode()
    status, code, msg = _REST_JSON[kind]
    return status, [
        ("Content-Type", "application/json"),
        ("x-amzn-ErrorType", code),
        ("x-amzn-RequestId", rid),
    ], json.dumps({"message": msg}).encode()


class FaultInjector:
    """Decides per request whether to inject a fault.

    One RNG per account, seeded from (seed, account): with a fixed seed, the
    faults an account sees depend only on that account's own sequence of
    eligible requests, whatever other accounts do concurrently.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rngs: dict[str, random.Random] = {}
        self._generation = -1
        self._injected = 0

    def reset(self) -> None:
        with self._lock:
            self._rngs.clear()
            self._injected = 0

    def decide(self, info: RequestInfo) -> str | None:
        f = CONFIG.faults
        if not f["rate"]:
            return None
        if f["operations"] and info.operation not in f["operations"]:
            return None
        if f["services"] and info.service not in f["services"]:
            return None
        if f["accounts"] and info.account not in f["accounts"]:
            return None
        if f["mutating_only"] and not info.mutating:
            return None
        with self._lock:
            if self._generation != CONFIG.generation:
                self._generation = CONFIG.generation
                self._rngs.clear()
                self._injected = 0
            rng = self._rngs.get(info.account)
            if rng is None:
                rng = self._rngs[info.account] = random.Random(f"{CONFIG.seed}:{info.account}")
            hit = rng.random() < f["rate"]
            kind = rng.choice(f["kinds"])
            if not hit:
                return None
            if f["max"] is not None and self._injected >= f["max"]:
                return None
            self._injected += 1
            return kind


INJECTOR = FaultInjector()
