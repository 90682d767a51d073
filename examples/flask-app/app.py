"""The example application slipway deploys: one page and a health endpoint.

`/healthz` is the Kubernetes readiness probe and the load balancer's health
check; `/` names the environment (`APP_ENV`, which the pods take from their
`slipway.dev/environment` label) and the version (`APP_VERSION`).
"""

from __future__ import annotations

import os
from html import escape

from flask import Flask, jsonify


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/")
    def index():
        env = escape(os.environ.get("APP_ENV") or "local")
        version = escape(os.environ.get("APP_VERSION") or "dev")
        return (
            "<!doctype html>\n<html><head><title>smallcase app</title></head>\n"
            f"<body><h1>smallcase app</h1><p>Environment: <strong>{env}</strong></p>"
            f"<p>Version: {version}</p></body></html>\n"
        )

    @app.errorhandler(404)
    def not_found(_error):
        return jsonify(error="not found"), 404

    return app


app = create_app()
