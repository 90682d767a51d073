"""The launcher's stdout protocol, kubeconfig, and shutdown on stdin EOF / SIGTERM."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time

import requests
import yaml

from conftest import ROOT, start


def _get(url, ca, token, path="/version"):
    s = requests.Session()
    s.trust_env = False
    return s.get(url + path, verify=ca, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_stdout_protocol_kubeconfig_and_stdin_eof(tmp_path):
    kc, ca = tmp_path / "kc", tmp_path / "ca.pem"
    cmd = [str(ROOT / "kubetest" / "launch"), "--kubeconfig", str(kc), "--ca-file", str(ca)]
    p, url = start(cmd)
    try:
        assert url.startswith("https://127.0.0.1:")
        conf = yaml.safe_load(kc.read_text())
        assert conf["current-context"] == "kubetest"
        cluster = conf["clusters"][0]["cluster"]
        assert cluster["server"] == url
        assert base64.b64decode(cluster["certificate-authority-data"]) == ca.read_bytes()
        token = conf["users"][0]["user"]["token"]
        assert len(token) >= 32
        assert _get(url, str(ca), token).status_code == 200
        assert _get(url, str(ca), "wrong").status_code == 401
        r = subprocess.run(["kubectl", "--kubeconfig", str(kc), "get", "ns", "default", "-o", "name"],
                           capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "namespace/default", r.stderr
        p.stdin.close()
        p.wait(timeout=10)
        rest = p.stdout.read()
        assert rest == b""  # exactly one line on stdout
        assert not kc.exists()  # removed on exit
    finally:
        if p.poll() is None:
            p.kill()


def test_sigterm_stops_it(tmp_path):
    p, url = start([str(ROOT / "kubetest" / "launch"), "--token", "t"])
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)
    assert p.returncode == 0
    time.sleep(0.1)
    _ = os
