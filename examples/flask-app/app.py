"""The example application slipway deploys: one page and a health endpoint.

`/healthz` is the Kubernetes readiness probe and the load balancer's health
check; `/` names the environment (`APP_ENV`, which the pods take from their
`slipway.dev/environment` label) and the version (`APP_VERSION`). Any other
path, or any other error, is answered in JSON.
"""

from __future__ import annotations

import os
from html import escape

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

NAME = "smallcase app"


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
            "<!doctype html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{NAME}</title></head>\n'
            f"<body><h1>{NAME}</h1>\n"
            f"<p>Environment: <strong>{env}</strong></p>\n"
            f"<p>Version: <code>{version}</code></p></body></html>\n"
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return jsonify(error=(error.name or "error").lower()), error.code

    return app


app = create_app()
