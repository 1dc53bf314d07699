"""Request bodies, read whole before the app (``CA_SERVICE_MAX_BODY_BYTES``).

- A body with a ``Content-Length`` over the limit is not read: 413 ``request.too_large``.
- A chunked body has no length: werkzeug would read at most the limit and stop there silently, so
  an oversized JSON body reached the parser cut short and came back as a 400
  ``request.malformed_json``. It is read here, one byte past the limit at most: 413 above it.
- A transfer coding other than chunked (gunicorn hands gzip, deflate and compress on undecoded): 501
  ``request.unsupported_transfer_coding``.
- A body that ends before its ``Content-Length`` is 408 ``request.timeout`` when the client ran out
  of ``serve --request-timeout`` (it was a misleading ``request.malformed_json``), else 400
  ``request.malformed_http``.

Within the limit the body is handed on in memory with its exact length; the app reads it whole
anyway (JSON, OCSP), so this costs no extra copy worth counting.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request

from ca_service.errors import BodyTooLarge, CAServiceError, MalformedHTTP, RequestTimeout, TransferCodingUnsupported

PROBLEM = "ca_service.body_problem"
_READ = 64 * 1024


def _length(environ: dict[str, Any]) -> int | None:
    try:
        value = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return value if value >= 0 else None


class BoundedBody:
    """WSGI middleware: read a request body up to ``limit`` bytes, or mark why not."""

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = _length(environ)
        codings = [c.strip(" \t").lower() for c in environ.get("HTTP_TRANSFER_ENCODING", "").split(",") if c.strip()]
        chunked = "chunked" in codings
        if length is None and not chunked:
            return self.app(environ, start_response)
        problem: CAServiceError | None = None
        if any(c not in ("chunked", "identity") for c in codings):
            # gunicorn passes gzip/deflate/compress through undecoded; nothing here decodes them
            problem, buf = TransferCodingUnsupported("only the chunked transfer coding is supported"), bytearray()
        elif length is not None and length > self.limit:
            problem, buf = BodyTooLarge(f"the request body is larger than {self.limit} bytes"), bytearray()
        else:
            want = length if length is not None else self.limit + 1
            buf = self._read(environ["wsgi.input"], want)
            if len(buf) > self.limit:
                problem, buf = BodyTooLarge(f"the request body is larger than {self.limit} bytes"), bytearray()
            elif length is not None and len(buf) < length:
                if getattr(environ.get("gunicorn.socket"), "timed_out", False):
                    problem = RequestTimeout("the request body did not arrive in time")
                else:
                    problem = MalformedHTTP("the body ended before its Content-Length")
                buf = bytearray()
        if problem is not None:
            environ[PROBLEM] = problem
        environ["wsgi.input"] = io.BytesIO(bytes(buf))
        environ["CONTENT_LENGTH"] = str(len(buf))
        return self.app(environ, start_response)

    @staticmethod
    def _read(stream: Any, want: int) -> bytearray:
        buf = bytearray()
        while len(buf) < want:
            data = stream.read(min(_READ, want - len(buf)))
            if not data:
                break
            buf += data
        return buf


def init_app(app: Flask, limit: int) -> None:
    app.wsgi_app = BoundedBody(app.wsgi_app, limit)  # type: ignore[method-assign]

    @app.before_request
    def _body_problem() -> None:
        problem = request.environ.get(PROBLEM)
        if isinstance(problem, CAServiceError):
            raise problem
