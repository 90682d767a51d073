"""Fixtures: one local AWS per session, started through localaws/launch.

Every test gets its own account (`x-moto-account-id`), so tests are isolated
from each other; tests that change the runtime config restore it.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "localaws" / "launch"
REGION = "ap-south-1"
# The session server's time scale: EKS cluster create 600 s -> 1.2 s, etc.
TIME_SCALE = 0.002
# No retries at all. Note: botocore's `max_attempts` counts *retries* (so
# {"max_attempts": 1} still retries once); `total_max_attempts` counts attempts.
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"})


class Launched:
    def __init__(self, proc: subprocess.Popen[str], endpoint: str, stderr: Path) -> None:
        self.proc, self.endpoint, self.stderr = proc, endpoint, stderr
        self.first_stdout_line = ""

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None and self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


def launch(*args: str, tmp: Path, timeout: float = 120) -> Launched:
    """Run localaws/launch with a stdin pipe; return once it printed its endpoint."""
    stderr = tmp / f"launch-{time.monotonic_ns()}.stderr"
    proc = subprocess.Popen(
        [str(LAUNCH), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=open(stderr, "w"), text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"launcher printed no endpoint within {timeout} s:\n{stderr.read_text()}")
    if not line.startswith("endpoint="):
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"unexpected launcher stdout {line!r}:\n{stderr.read_text()}")
    launched = Launched(proc, line.strip().split("=", 1)[1], stderr)
    launched.first_stdout_line = line
    return launched


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    launched = launch("--time-scale", str(TIME_SCALE), tmp=tmp_path_factory.mktemp("localaws"))
    yield launched
    assert launched.stop() == 0


@pytest.fixture(scope="session")
def endpoint(server: Launched) -> str:
    return server.endpoint


_accounts = itertools.count(1)


@pytest.fixture
def account() -> str:
    return f"{100000000000 + os.getpid() % 1000 * 100000 + next(_accounts):012d}"


def make_client(endpoint: str, service: str, account: str, config: Config = NO_RETRIES) -> Any:
    client = boto3.client(
        service, endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing", config=config,
    )

    def add_account(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = account

    client.meta.events.register("before-sign", add_account)
    return client


@pytest.fixture
def aws(endpoint: str, account: str) -> Callable[..., Any]:
    """aws("eks") -> a boto3 client for this test's account, without retries."""
    return lambda service, config=NO_RETRIES: make_client(endpoint, service, account, config)


def control(endpoint: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(endpoint + path, data=data, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


@pytest.fixture
def realism(endpoint: str) -> Any:
    """realism({"faults": {...}}) merges into the running config; restored after the test."""
    original = control(endpoint, "GET", "/_realism/config")
    yield lambda patch: control(endpoint, "POST", "/_realism/config", patch)
    control(endpoint, "POST", "/_realism/config", original)


def wait_for(fn: Callable[[], Any], pred: Callable[[Any], bool], timeout: float = 15, interval: float = 0.05) -> Any:
    """Poll fn() until pred(value); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if pred(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s; last value: {value!r}")
        time.sleep(interval)
