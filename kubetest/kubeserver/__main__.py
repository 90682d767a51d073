"""Entry point: `python -m kubeserver [flags]` (run by kubetest/launch).

Prints exactly one line on stdout, `endpoint=https://127.0.0.1:PORT`, once the
server answers; everything else goes to stderr. Runs until SIGTERM/SIGINT or
until stdin reaches EOF (when stdin is a pipe, socket or terminal).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import os
import secrets
import signal
import ssl
import stat
import sys
import tempfile
import threading
import time


def log(msg: str) -> None:
    print(f"kubetest: {msg}", file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="kubetest/launch", description="in-memory Kubernetes API server for tests")
    p.add_argument("--kubeconfig", metavar="PATH", help="write a kubeconfig for the server to PATH (removed on exit)")
    p.add_argument("--ca-file", metavar="PATH", help="write the CA certificate (PEM) to PATH (removed on exit)")
    p.add_argument("--token", help="bearer token clients must send (default: generated)")
    p.add_argument("--context-name", default="kubetest", help="cluster/user/context name in the kubeconfig")
    p.add_argument("--namespace", default="default", help="namespace of the kubeconfig context")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free port)")
    p.add_argument("--aws-endpoint", metavar="URL", help="local AWS endpoint for the ALB ingress controller")
    p.add_argument("--aws-region", default="ap-south-1")
    p.add_argument("--eks-cluster-name", metavar="NAME",
                   help="also accept EKS tokens (aws-iam-authenticator's k8s-aws-v1. presigned STS "
                        "GetCallerIdentity URLs) signed for cluster NAME, verified against the STS of "
                        "--aws-endpoint (required with it)")
    p.add_argument("--eks-secret-key", action="append", default=[], metavar="ACCESS_KEY_ID:SECRET",
                   help="with --eks-cluster-name: check the SigV4 signature of EKS tokens made with this "
                        "access key, as STS would (moto does not); repeatable")
    p.add_argument("--eks-known-key-ms", type=float, metavar="MS",
                   help="with --eks-secret-key: once STS has named the identity of such an access key, check "
                        "that key's later tokens here (the signature, as always) and answer after MS "
                        "milliseconds, STS's own round trip, instead of asking the local AWS again, whose "
                        "queue the client's own AWS calls fill (real STS is not slowed by them); default: "
                        "ask for every new token")
    p.add_argument("--cluster-name", default="smallcase", help="value of the elbv2.k8s.aws/cluster tag")
    p.add_argument("--deployment-delay", type=float, default=1.0, metavar="S", help="seconds until a rollout completes")
    p.add_argument("--ingress-delay", type=float, default=1.0, metavar="S", help="seconds until an ALB ingress is reconciled")
    p.add_argument("--namespace-delay", type=float, default=1.0, metavar="S",
                   help="seconds a deleted namespace stays Terminating before its content is deleted")
    p.add_argument("--crd-delay", type=float, default=0.0, metavar="S",
                   help="seconds until a new CRD is Established and its kinds are served (default 0: at once)")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="F",
                   help="multiplies progressDeadlineSeconds, the crash-loop back-off and the readiness-probe period")
    p.add_argument("--unpullable-image", action="append", default=[], metavar="IMAGE",
                   help="image whose pods fail with ErrImagePull/ImagePullBackOff (repeatable; * wildcards)")
    p.add_argument("--crashing-image", action="append", default=[], metavar="IMAGE",
                   help="image whose containers crash (CrashLoopBackOff; repeatable; * wildcards)")
    p.add_argument("--unready-image", action="append", default=[], metavar="IMAGE",
                   help="image whose containers run but fail their readiness probe (repeatable; * wildcards)")
    p.add_argument("--unschedulable-namespace", action="append", default=[], metavar="NS",
                   help="namespace whose pods stay Pending, Unschedulable (repeatable; * wildcards)")
    p.add_argument("--latency-ms", type=float, default=0.0, metavar="N",
                   help="milliseconds added to every API request (not the control endpoints)")
    p.add_argument("--no-stdin-watch", action="store_true", help="do not stop when stdin reaches EOF")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = p.parse_args(argv)
    if args.eks_cluster_name is not None and not args.aws_endpoint:
        p.error("--eks-cluster-name requires --aws-endpoint (the STS that verifies EKS tokens)")
    if args.eks_cluster_name == "":
        p.error("--eks-cluster-name must not be empty")
    if args.eks_secret_key and args.eks_cluster_name is None:
        p.error("--eks-secret-key requires --eks-cluster-name")
    for kv in args.eks_secret_key:
        if ":" not in kv or not kv.split(":", 1)[0] or not kv.split(":", 1)[1]:
            p.error(f"--eks-secret-key wants ACCESS_KEY_ID:SECRET, got {kv!r}")
    return args


def stdin_watchable() -> bool:
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0)


def make_certs(tmpdir: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubetest-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
                x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default.svc")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = os.path.join(tmpdir, "tls.crt"), os.path.join(tmpdir, "tls.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return ca_pem, cert_path, key_path


def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)




def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import yaml
    from werkzeug.serving import WSGIRequestHandler, make_server

    from .app import App
    from .auth import Authenticator, EksVerifier
    from .controllers import Controllers
    from .store import Store

    token = args.token or secrets.token_hex(24)
    tmpdir = tempfile.mkdtemp(prefix="kubetest-")
    ca_pem, cert_path, key_path = make_certs(tmpdir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])

    config = {
        "deployment_delay": args.deployment_delay,
        "ingress_delay": args.ingress_delay,
        "namespace_delay": args.namespace_delay,
        "crd_delay": args.crd_delay,
        "time_scale": args.time_scale,
        "latency_ms": args.latency_ms,
        "unpullable_images": list(args.unpullable_image),
        "crashing_images": list(args.crashing_image),
        "unready_images": list(args.unready_image),
        "unschedulable_namespaces": list(args.unschedulable_namespace),
        "watch_faults": [],
        "busy_requests": 0,
        "busy_retry_after": 0,
        "_ca_pem": ca_pem.decode(),
    }
    store = Store(config)

    class Handler(WSGIRequestHandler):
        def log_request(self, code="-", size="-"):
            pass

        def log_message(self, format, *a):  # noqa: A002
            if args.verbose:
                super().log_message(format, *a)

    eks = None
    if args.eks_cluster_name is not None:
        eks = EksVerifier(args.eks_cluster_name, args.aws_endpoint,
                          dict(kv.split(":", 1) for kv in args.eks_secret_key),
                          known_key_ms=args.eks_known_key_ms)
        log(f"accepting EKS tokens for cluster {args.eks_cluster_name!r} (STS: {args.aws_endpoint})")
    app = App(store, token, config, verbose=args.verbose,
              authenticator=Authenticator(token, eks, verbose=args.verbose))
    server = make_server("127.0.0.1", args.port, app, threaded=True, ssl_context=ctx, request_handler=Handler)
    server.daemon_threads = True
    port = server.socket.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    app.host_port = f"127.0.0.1:{port}"
    threading.Thread(target=server.serve_forever, name="serve", daemon=True).start()

    controllers = Controllers(store, config, {"endpoint": args.aws_endpoint, "region": args.aws_region,
                                              "cluster": args.cluster_name})
    controllers.start()

    # ready check over TLS with the generated CA
    import urllib.request

    cctx = ssl.create_default_context(cadata=ca_pem.decode())
    deadline = time.monotonic() + 30
    while True:
        try:
            rq = urllib.request.Request(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(rq, timeout=5, context=cctx) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            log("server did not become ready within 30 s")
            return 1
        time.sleep(0.05)

    written = []
    if args.ca_file:
        write_atomic(args.ca_file, ca_pem)
        written.append(args.ca_file)
    if args.kubeconfig:
        n = args.context_name
        kc = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": n, "cluster": {"server": url,
                                                 "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
            "users": [{"name": n, "user": {"token": token}}],
            "contexts": [{"name": n, "context": {"cluster": n, "user": n, "namespace": args.namespace}}],
            "current-context": n,
        }
        write_atomic(args.kubeconfig, yaml.safe_dump(kc, sort_keys=False).encode())
        written.append(args.kubeconfig)

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    if not args.no_stdin_watch and stdin_watchable():
        def watch_stdin():
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            stop.set()

        threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()

    sys.stdout.write(f"endpoint={url}\n")
    sys.stdout.flush()
    log(f"serving on {url} (stop: SIGTERM, SIGINT or EOF on stdin)")
    while not stop.wait(0.5):
        pass
    log("stopping")
    controllers.stop.set()
    with store.lock:
        store.closed = True
        store.cond.notify_all()
    threading.Thread(target=server.shutdown, daemon=True).start()
    time.sleep(0.1)
    for p in written:
        try:
            os.unlink(p)
        except OSError:
            pass
    for f in (cert_path, key_path):
        try:
            os.unlink(f)
        except OSError:
            pass
    try:
        os.rmdir(tmpdir)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
