"""The Flask app factory. Flask stays a thin shell: parse, call one service, serialize."""

from __future__ import annotations

import importlib
import logging
import uuid
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.routing import IntegerConverter

from ca_service import boundedjson
from ca_service.api import bodylimit, metrics, problems, ratelimit
from ca_service.config import Settings
from ca_service.errors import MalformedJSON, RequestError
from ca_service.services.container import Services

log = logging.getLogger("ca_service.api")

# Blueprints, each `bp` in its module. Optional ones register when their module is present.
BLUEPRINTS = (
    "ca_service.api.v1.health",
    "ca_service.api.v1.challenges",
    "ca_service.api.v1.certificates",
    "ca_service.api.v1.ca",
    "ca_service.api.v1.ocsp",
    "ca_service.api.v1.policies",
    "ca_service.api.v1.attestations",
    "ca_service.api.v1.audit",
    "ca_service.api.v1.jwks",
    "ca_service.api.v1.log",
    "ca_service.api.v1.anchors",
    "ca_service.api.v1.integrity",
    "ca_service.api.v1.openapi",
)


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or (services.settings if services else Settings.from_env())
    svc = services or Services.create(settings)
    app = Flask("ca_service")
    app.url_map.converters["int"] = BoundedIntConverter
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["ca_service"] = svc
    problems.init_app(app)
    metrics.init_app(app)
    for module_name in BLUEPRINTS:
        module = importlib.import_module(module_name)
        app.register_blueprint(module.bp)
    if settings.explorer_enabled:
        from ca_service.api import explorer

        explorer.init_app(app)

    @app.before_request
    def _no_control_characters() -> None:
        # NUL and other C0 controls in a path or query value are never meaningful here and some
        # backends (PostgreSQL text) refuse them deep down: refuse them at the door.
        values = [request.path, *request.args.keys(), *request.args.values()]
        if any(ch < " " for v in values for ch in v):
            raise RequestError("control characters in the URL", where="url")

    @app.before_request
    def _request_id() -> None:
        given = request.headers.get("X-Request-Id", "")
        ok = 0 < len(given) <= 128 and all(ch.isascii() and ch.isprintable() and ch != " " for ch in given)
        g.request_id = given if ok else uuid.uuid4().hex

    @app.after_request
    def _headers(resp: Response) -> Response:
        rid = getattr(g, "request_id", None)
        if rid:
            resp.headers["X-Request-Id"] = rid
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Cache-Control", "no-store")
        if settings.insecure:
            resp.headers["X-CA-Service-Profile"] = "insecure-dev"
        return resp

    # after the request id, so their refusals carry it too
    ratelimit.init_app(app, settings)
    bodylimit.init_app(app, settings.max_body_bytes)
    return app


class BoundedIntConverter(IntegerConverter):
    """`<int:...>` that matches only what a signed 64-bit column can hold: a larger number is a
    404 like any other unknown id, never an overflow deep in the database driver."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:  # noqa: A002
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


def json_body() -> Any:
    """The request's JSON body, or a problem: 415 for another media type, 400 for bad JSON."""
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("send application/json")
    raw = request.get_data(cache=False)
    try:
        return boundedjson.loads(raw)
    except boundedjson.TooDeep as exc:
        raise MalformedJSON(f"request body nests deeper than {boundedjson.MAX_DEPTH} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJSON("request body is not valid JSON") from exc


class UnsupportedMediaType(RequestError):
    code = "request.unsupported_media_type"
    status = 415
    title = "Unsupported media type"
