"""The launcher: stdout protocol, env file, config flags, clean shutdown.

Each test starts its own server through localaws/launch (separate from the
session one) and reset is tested last, in its own server, since it wipes
every account.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import LAUNCH, launch, make_client


def port_closed(endpoint: str) -> bool:
    host, port = endpoint.rsplit("//", 1)[1].split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return False
    except OSError:
        return True


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def test_stdout_protocol_env_file_and_exit_on_stdin_eof(tmp_path):
    env_file = tmp_path / "localaws.env"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"latency_ms": 5, "durations": {"eks_cluster_create": 60}}))
    srv = launch("--env-file", str(env_file), "--config", str(config), "--seed", "3", "--time-scale", "0.5", tmp=tmp_path)
    assert re.fullmatch(r"endpoint=http://127\.0\.0\.1:\d+\n", srv.first_stdout_line)
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert env == {
        "AWS_ENDPOINT_URL": srv.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "ap-south-1", "SLIPWAY_LOCALAWS_URL": srv.endpoint,
    }
    cfg = json.load(urllib.request.urlopen(srv.endpoint + "/_realism/config", timeout=10))
    assert (cfg["latency_ms"], cfg["seed"], cfg["time_scale"], cfg["durations"]["eks_cluster_create"]) == (5, 3, 0.5, 60)
    assert make_client(srv.endpoint, "sts", "123456789012").get_caller_identity()["Account"] == "123456789012"

    pid = srv.proc.pid
    assert srv.stop(timeout=15) == 0  # closes stdin
    assert srv.proc.stdout.read() == ""  # nothing but the one line on stdout
    assert children_of(pid) == []
    assert port_closed(srv.endpoint)
    assert not env_file.exists()


def test_oidc_ca_file_and_its_env_var(tmp_path):
    env_file, ca_file = tmp_path / "localaws.env", tmp_path / "oidc-ca.pem"
    srv = launch("--env-file", str(env_file), "--oidc-ca-file", str(ca_file), tmp=tmp_path)
    oidc = json.load(urllib.request.urlopen(srv.endpoint + "/_realism/oidc", timeout=10))
    assert ca_file.read_text() == oidc["ca_pem"]
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert env["AWS_CA_BUNDLE"] == str(ca_file)
    assert env["AWS_ENDPOINT_URL"] == srv.endpoint
    issuer = f"https://127.0.0.1:{oidc['port']}"
    assert not port_closed(issuer)

    assert srv.stop(timeout=15) == 0
    assert srv.proc.stdout.read() == ""
    assert port_closed(srv.endpoint)
    assert port_closed(issuer)  # the issuer stops with it
    assert not ca_file.exists() and not env_file.exists()


def test_exits_on_sigterm(tmp_path):
    srv = launch(tmp=tmp_path)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0
    assert port_closed(srv.endpoint)


def test_bad_config_fails_fast(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"faults": {"kinds": ["meteor"]}}))
    proc = subprocess.run([str(LAUNCH), "--config", str(bad)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "meteor" in proc.stderr


def test_moto_reset_resets_the_layer_too(tmp_path):
    srv = launch(tmp=tmp_path)
    try:
        eks = make_client(srv.endpoint, "eks", "123456789012")
        eks.create_cluster(name="c1", roleArn="arn:aws:iam::123456789012:role/r",
                           resourcesVpcConfig={"subnetIds": ["s"]}, accessConfig={"authenticationMode": "API"})
        req = urllib.request.Request(srv.endpoint + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10)
        calls = json.load(urllib.request.urlopen(srv.endpoint + "/_realism/calls", timeout=10))
        assert calls == {"calls": [], "total": 0, "mutating": 0, "served_s": 0, "cpu_s": 0}
        assert eks.list_clusters()["clusters"] == []
    finally:
        srv.stop()


def test_warm_builds_every_backend_first_and_forgets_those_calls(tmp_path):
    srv = launch("--warm", tmp=tmp_path)
    try:
        log = srv.stderr.read_text()
        assert "warmed up in" in log, log
        assert "warm-up " not in log, log  # every service answered
        calls = json.load(urllib.request.urlopen(srv.endpoint + "/_realism/calls?log=1", timeout=10))
        assert (calls["total"], calls["log"]) == (0, []), calls
    finally:
        srv.stop()
