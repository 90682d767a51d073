"""Entry point: `python -m realism [flags]` (run by localaws/launch).

Prints exactly one line on stdout, `endpoint=http://127.0.0.1:PORT`, once the
server answers; everything else goes to stderr. Runs until SIGTERM/SIGINT or
until stdin reaches EOF (when stdin is a pipe, socket or terminal).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import threading
import time
import urllib.request

MOTO_ENV = {
    "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
}


def log(msg: str) -> None:
    print(f"localaws: {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="localaws/launch", description="moto plus slipway's realism layer")
    p.add_argument("--config", metavar="FILE", help="JSON config file (keys: see docs/testing.md)")
    p.add_argument("--time-scale", type=float, metavar="F", help="multiply every lifecycle duration by F")
    p.add_argument("--latency-ms", type=float, metavar="N", help="delay every AWS call by N ms")
    p.add_argument("--seed", type=int, metavar="N", help="seed of the fault injector")
    p.add_argument("--env-file", metavar="PATH", help="write AWS_ENDPOINT_URL etc. to PATH (removed on exit)")
    p.add_argument("--oidc-ca-file", metavar="PATH",
                   help="write the EKS OIDC issuer's root CA (PEM) to PATH (removed on exit); "
                   "with --env-file, AWS_CA_BUNDLE=PATH is added to it")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free port)")
    p.add_argument("--no-stdin-watch", action="store_true", help="do not stop when stdin reaches EOF")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    p.add_argument("--warm", action="store_true",
                   help="before answering, call each service slipway uses once (moto builds its backends "
                   "on first use: ~1 s for IAM's managed policies alone) and forget those calls")
    return p.parse_args(argv)


# One read per service slipway calls: the first call of each builds moto's
# backend (and, for any, the IAM backends that map access keys to accounts).
WARM_CALLS = [
    ("sts", "get_caller_identity", {}),
    ("iam", "list_roles", {}),
    ("ec2", "describe_tags", {}),
    ("eks", "list_clusters", {}),
    ("ecr", "describe_repositories", {}),
    ("elbv2", "describe_load_balancers", {}),
    ("ssm", "describe_parameters", {}),
    ("s3", "list_buckets", {}),
]


def warm(url: str) -> None:
    """Builds moto's backends before the first client's call, so that a
    benchmark's first calls do not pay for them, then forgets those calls
    (counters, call log, faults' counts)."""
    import boto3
    from botocore.config import Config

    from .middleware import reset_layer

    started = time.monotonic()
    for service, call, kwargs in WARM_CALLS:
        client = boto3.client(service, endpoint_url=url, region_name="ap-south-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 1},
                                                                        connect_timeout=5, read_timeout=10))
        try:
            getattr(client, call)(**kwargs)
        except Exception as e:  # best effort: a configured fault may refuse it
            log(f"warm-up {service} {call}: {e}")
    reset_layer()
    log(f"warmed up in {time.monotonic() - started:.2f} s")


def stdin_watchable() -> bool:
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for k, v in MOTO_ENV.items():
        os.environ[k] = v

    from .config import CONFIG, ConfigError

    try:
        if args.config:
            with open(args.config, encoding="utf-8") as f:
                CONFIG.update(json.load(f))
        flags = {}
        if args.time_scale is not None:
            flags["time_scale"] = args.time_scale
        if args.latency_ms is not None:
            flags["latency_ms"] = args.latency_ms
        if args.seed is not None:
            flags["seed"] = args.seed
        if flags:
            CONFIG.update(flags)
    except (OSError, ValueError, ConfigError) as e:
        log(f"bad configuration: {e}")
        return 2

    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    from . import dependencies, eks_endpoint, fidelity, iam_propagation, lifecycle, oidc
    from .middleware import RealismApp

    lifecycle.apply()
    eks_endpoint.apply()  # wraps lifecycle's endpoint / CA properties
    fidelity.apply()
    dependencies.apply()
    iam_propagation.apply()
    issuer = oidc.start(verbose=args.verbose)
    oidc.apply()
    log(f"EKS OIDC issuer on https://localhost:{issuer.port}/id/<ID>")

    class Handler(MotoRequestHandler):
        def connection_dropped(self, error: BaseException, environ: dict | None = None) -> None:
            # An injected drop (or a client that went away): close without a response.
            self.close_connection = True

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if args.verbose:
                super().log_request(code, size)

        def log_message(self, format: str, *a: object) -> None:  # noqa: A002
            if args.verbose:
                super().log_message(format, *a)

    moto_app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", args.port, RealismApp(moto_app), threaded=True, request_handler=Handler)
    server.daemon_threads = True
    port = server.socket.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    threading.Thread(target=server.serve_forever, name="serve", daemon=True).start()

    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            log("server did not become ready within 60 s")
            issuer.stop()
            return 1
        time.sleep(0.05)

    if args.warm:
        warm(url)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    if not args.no_stdin_watch and stdin_watchable():
        def watch_stdin() -> None:
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            stop.set()

        threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()

    if args.oidc_ca_file:
        tmp = f"{args.oidc_ca_file}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(issuer.ca_pem)
        os.replace(tmp, args.oidc_ca_file)

    if args.env_file:
        tmp = f"{args.env_file}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(
                f"AWS_ENDPOINT_URL={url}\nAWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n"
                f"AWS_REGION=ap-south-1\nAWS_DEFAULT_REGION=ap-south-1\nSLIPWAY_LOCALAWS_URL={url}\n"
            )
            if args.oidc_ca_file:
                f.write(f"AWS_CA_BUNDLE={os.path.abspath(args.oidc_ca_file)}\n")
        os.replace(tmp, args.env_file)

    sys.stdout.write(f"endpoint={url}\n")
    sys.stdout.flush()
    log(f"serving on {url} (stop: SIGTERM, SIGINT or EOF on stdin)")

    while not stop.wait(0.5):
        pass
    log("stopping")
    for path in (args.env_file, args.oidc_ca_file):
        if path:
            try:
                os.remove(path)
            except OSError:
                pass
    server.shutdown()
    server.server_close()
    issuer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
