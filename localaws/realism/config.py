"""Runtime configuration of the realism layer (defaults, merge, validation)."""

from __future__ import annotations

import copy
import ipaddress
import re
import threading
from typing import Any
from urllib.parse import urlsplit

# Durations in seconds, as real AWS takes them (typical figures), before
# `time_scale` is applied.
DEFAULT_DURATIONS: dict[str, float] = {
    "eks_cluster_create": 600,
    "eks_cluster_delete": 300,
    "eks_fargate_profile_create": 150,
    "eks_fargate_profile_delete": 120,
    "eks_update_version": 900,
    "eks_update_config": 300,
    "nat_gateway_create": 90,
    "nat_gateway_delete": 60,
    "ec2_instance_start": 30,
    "ec2_instance_stop": 30,
    "ec2_instance_terminate": 30,
    "elbv2_load_balancer_create": 120,
    # A registered target is `initial` for its first health checks: the AWS
    # Load Balancer Controller's target groups check every 15 s and need 2
    # successes (healthy threshold), so ~30 s.
    "elbv2_target_healthy": 30,
    # A deregistered target is `draining` for the target group's
    # deregistration delay (deregistration_delay.timeout_seconds, default 300).
    "elbv2_target_deregister": 300,
}

# Drawn from by default.
DEFAULT_FAULT_KINDS = ("throttle", "500", "503", "drop")
# Also `lost_response`: the request is served, then the connection is dropped
# before the answer (the client cannot tell whether it landed); and `denied`:
# the credentials are refused, in the protocol's own shape (EC2 AuthFailure,
# InvalidClientTokenId, UnrecognizedClientException, S3 InvalidAccessKeyId).
FAULT_KINDS = DEFAULT_FAULT_KINDS + ("lost_response", "denied")

DEFAULTS: dict[str, Any] = {
    "latency_ms": 0,
    "time_scale": 1.0,
    "seed": 0,
    "durations": dict(DEFAULT_DURATIONS),
    "faults": {
        "rate": 0.0,
        "kinds": list(DEFAULT_FAULT_KINDS),
        "operations": [],
        "services": [],
        "accounts": [],
        "mutating_only": False,
        "max": None,
    },
    # cluster name -> {"endpoint": "https://127.0.0.1:PORT", "ca_pem": "-----BEGIN CERTIFICATE-----..."}:
    # the Kubernetes API server EKS reports for that cluster (see eks_endpoint.py).
    # Set as a whole: a new value replaces the previous map; {} removes every override.
    "eks_api_servers": {},
    # ELBv2 target ids (IPs or instance ids; an entry with "/" is a CIDR block
    # matching IP targets) whose health checks fail once past `initial`.
    "unhealthy_targets": [],
    # EC2 deletes of objects still in use answer DependencyViolation, as on
    # AWS (see dependencies.py); false: moto's own checks only.
    "dependency_violations": True,
    # Milliseconds (wall clock, not scaled by time_scale) during which a new
    # IAM role is not yet a valid trust-policy principal: CreateRole /
    # UpdateAssumeRolePolicy naming it in Principal.AWS answer
    # MalformedPolicyDocument (see iam_propagation.py). 0: off.
    "iam_principal_propagation_ms": 0,
    # EKS's quota of Fargate profiles per cluster (the default; adjustable
    # on AWS through Service Quotas). CreateFargateProfile beyond it answers
    # ResourceLimitExceededException.
    "eks_fargate_profiles_per_cluster": 10,
}

# Keys whose value is replaced as a whole by an update (not deep-merged).
REPLACED_KEYS = ("eks_api_servers",)

# EKS cluster names (CreateCluster's `name`).
_CLUSTER_NAME_RE = re.compile(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}")
_PEM_CERT_RE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)


class ConfigError(ValueError):
    pass


def _check(cfg: dict[str, Any]) -> None:
    def num(v: Any, name: str, lo: float = 0.0, hi: float | None = None) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{name} must be a number, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            raise ConfigError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}], got {v!r}")

    num(cfg["latency_ms"], "latency_ms")
    num(cfg["time_scale"], "time_scale")
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int):
        raise ConfigError(f"seed must be an integer, got {cfg['seed']!r}")
    for k, v in cfg["durations"].items():
        if k not in DEFAULT_DURATIONS:
            raise ConfigError(f"unknown duration {k!r} (known: {', '.join(sorted(DEFAULT_DURATIONS))})")
        num(v, f"durations.{k}")
    f = cfg["faults"]
    num(f["rate"], "faults.rate", 0.0, 1.0)
    if not isinstance(f["kinds"], list) or not f["kinds"]:
        raise ConfigError("faults.kinds must be a non-empty list")
    for k in f["kinds"]:
        if k not in FAULT_KINDS:
            raise ConfigError(f"unknown fault kind {k!r} (known: {', '.join(FAULT_KINDS)})")
    for key in ("operations", "services", "accounts"):
        if not isinstance(f[key], list) or not all(isinstance(x, str) for x in f[key]):
            raise ConfigError(f"faults.{key} must be a list of strings")
    if not isinstance(f["mutating_only"], bool):
        raise ConfigError("faults.mutating_only must be true or false")
    if f["max"] is not None:
        if isinstance(f["max"], bool) or not isinstance(f["max"], int) or f["max"] < 0:
            raise ConfigError("faults.max must be null or a non-negative integer")
    _check_api_servers(cfg["eks_api_servers"])
    _check_targets(cfg["unhealthy_targets"])
    if not isinstance(cfg["dependency_violations"], bool):
        raise ConfigError(f"dependency_violations must be true or false, got {cfg['dependency_violations']!r}")
    num(cfg["iam_principal_propagation_ms"], "iam_principal_propagation_ms")
    quota = cfg["eks_fargate_profiles_per_cluster"]
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 1:
        raise ConfigError(f"eks_fargate_profiles_per_cluster must be a positive integer, got {quota!r}")


def _check_targets(targets: Any) -> None:
    if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
        raise ConfigError("unhealthy_targets must be a list of target ids (IPs, instance ids or CIDR blocks)")
    for t in targets:
        if "/" in t:
            try:
                ipaddress.ip_network(t, strict=False)
            except ValueError:
                raise ConfigError(f"unhealthy_targets: {t!r} is not a CIDR block") from None


def _check_api_servers(servers: Any) -> None:
    if not isinstance(servers, dict):
        raise ConfigError("eks_api_servers must be a JSON object (cluster name -> {endpoint, ca_pem})")
    for name, server in servers.items():
        where = f"eks_api_servers.{name}"
        if not _CLUSTER_NAME_RE.fullmatch(name):
            raise ConfigError(f"eks_api_servers: {name!r} is not a valid EKS cluster name")
        if not isinstance(server, dict):
            raise ConfigError(f"{where} must be an object with keys endpoint and ca_pem")
        unknown = sorted(set(server) - {"endpoint", "ca_pem"})
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in {where} (known: ca_pem, endpoint)")
        missing = [k for k in ("endpoint", "ca_pem") if k not in server]
        if missing:
            raise ConfigError(f"{where}.{missing[0]} is required")
        _check_https_url(server["endpoint"], f"{where}.endpoint")
        _check_pem_cert(server["ca_pem"], f"{where}.ca_pem")


def _check_https_url(url: Any, name: str) -> None:
    bad = f"{name} must be an https URL such as https://127.0.0.1:6443, got {url!r}"
    if not isinstance(url, str) or url != url.strip() or any(c.isspace() for c in url):
        raise ConfigError(bad)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ConfigError(bad) from None
    if parts.scheme != "https" or not parts.hostname or parts.username is not None or parts.query or parts.fragment:
        raise ConfigError(bad)


def _check_pem_cert(pem: Any, name: str) -> None:
    if not isinstance(pem, str):
        raise ConfigError(f"{name} must be a string holding a PEM certificate, got {pem!r}")
    blocks = _PEM_CERT_RE.findall(pem)
    if not blocks:
        raise ConfigError(f"{name} must contain a PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)")
    from cryptography import x509

    for i, block in enumerate(blocks):
        try:
            x509.load_pem_x509_certificate(block.encode())
        except ValueError as e:
            raise ConfigError(f"{name}: certificate {i + 1} is not a valid PEM certificate ({e})") from None


def merge(base: dict[str, Any], update: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Deep-merge `update` into a copy of `base`; unknown keys are errors."""
    if not isinstance(update, dict):
        raise ConfigError(f"{path or 'config'} must be a JSON object")
    out = copy.deepcopy(base)
    for k, v in update.items():
        name = f"{path}.{k}" if path else k
        if k not in out and not (path == "durations"):
            raise ConfigError(f"unknown config key {name!r}")
        if isinstance(out.get(k), dict) and path != "faults" and not (path == "" and k in REPLACED_KEYS):
            out[k] = merge(out[k], v, name)
        else:
            out[k] = copy.deepcopy(v)
    return out


class Config:
    """Thread-safe holder of the current configuration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cfg = copy.deepcopy(DEFAULTS)
        self.generation = 0  # bumped whenever `seed` or `faults` is set

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._cfg)

    def update(self, patch: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            new = merge(self._cfg, patch)
            _check(new)
            self._cfg = new
            if "seed" in patch or "faults" in patch:
                self.generation += 1
            return copy.deepcopy(new)

    # Fast accessors (no copies) for the request path.
    @property
    def latency_ms(self) -> float:
        return self._cfg["latency_ms"]

    @property
    def faults(self) -> dict[str, Any]:
        return self._cfg["faults"]

    @property
    def seed(self) -> int:
        return self._cfg["seed"]

    @property
    def eks_api_servers(self) -> dict[str, dict[str, str]]:
        return self._cfg["eks_api_servers"]

    @property
    def unhealthy_targets(self) -> list[str]:
        return self._cfg["unhealthy_targets"]

    @property
    def dependency_violations(self) -> bool:
        return self._cfg["dependency_violations"]

    @property
    def iam_principal_propagation_ms(self) -> float:
        """Not scaled by time_scale (a wall-clock window, like latency_ms)."""
        return self._cfg["iam_principal_propagation_ms"]

    @property
    def eks_fargate_profiles_per_cluster(self) -> int:
        return self._cfg["eks_fargate_profiles_per_cluster"]

    def duration(self, kind: str) -> float:
        """Scaled duration in seconds of a lifecycle phase."""
        cfg = self._cfg
        return float(cfg["durations"][kind]) * float(cfg["time_scale"])


CONFIG = Config()
