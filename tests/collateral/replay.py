"""A loopback stand-in for Intel PCS, AMD KDS and NVIDIA's OCSP responder: a werkzeug server that
replays recorded vendor responses by path+query (the latest recording in the list wins; 404 otherwise),
and can throttle a path like AMD KDS does (429 with Retry-After) a given number of times. An OCSP
request POSTed as ``application/ocsp-request`` (RFC 6960 appendix A.1) is answered by the recording
of its GET form."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from ca_service.collateral import endpoints
from ca_service.collateral.endpoints import ALLOWED_HOSTS


class VendorReplay:
    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.routes: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.throttle: dict[str, tuple[int, str]] = {}  # path -> (times left, Retry-After value)
        self.set(entries)

    def set(self, entries: list[dict[str, Any]]) -> None:
        self.routes = {}
        for e in entries:
            u = urlsplit(endpoints.parse_url(e["url"]).url)
            self.routes[u.path + ("?" + u.query if u.query else "")] = e

    def __call__(self, environ: Any, start_response: Any) -> Any:
        req = Request(environ)
        key = req.path + ("?" + req.query_string.decode() if req.query_string else "")
        if req.method == "POST" and req.mimetype == "application/ocsp-request":
            key = "/" + quote(base64.b64encode(req.get_data()).decode(), safe="")
        self.requests.append(key)
        left, after = self.throttle.get(req.path, (0, ""))
        if left > 0:
            self.throttle[req.path] = (left - 1, after)
            resp = Response(b"Too Many Requests", status=429, headers={"Retry-After": after} if after else {})
            return resp(environ, start_response)
        e = self.routes.get(key)
        resp = Response(b"not found", status=404) if e is None else Response(
            base64.b64decode(e["body_b64"]), status=e["status"], headers=e["headers"])
        return resp(environ, start_response)


@contextmanager
def serve(entries: list[dict[str, Any]]) -> Iterator[tuple[VendorReplay, str]]:
    app = VendorReplay(entries)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        t.join(5)


def mirrors(base: str) -> dict[str, str]:
    return {h: base for h in ALLOWED_HOSTS}


def mirror_args(base: str) -> list[str]:
    return [f"--mirror={h}={base}" for h in sorted(ALLOWED_HOSTS)]
