"""Pure ASGI middlewares of seq2seq-serve: the API key, the request size limit and the fast path.

They answer before FastAPI reads or parses a body, so a wrong key, an oversized body or a request
to a full model costs the server neither the upload nor the JSON parsing nor FastAPI's routing.
Their answers have the API's error shape {"error": message, "field": name}.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping

# What the browser must fetch before it can ask for the key (the page holds no model data).
PAGE_PATHS = ("/", "/favicon.ico")
PAGE_PREFIXES = ("/static/",)
OPEN_PATHS = ("/health",)


async def send_error(send, status: int, field: str, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message, "field": field}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class APIKeyMiddleware:
    """Every route but /health and the page's own files needs `Authorization: Bearer KEY` (or
    `X-API-Key: KEY`); else 401."""

    def __init__(self, app, key: str) -> None:
        self.app = app
        # Digests of equal length: compare_digest then takes the same time whatever the key's length.
        self._digest = hashlib.sha256(key.encode()).digest()

    def is_open(self, path: str) -> bool:
        return path in OPEN_PATHS or path in PAGE_PATHS or path.startswith(PAGE_PREFIXES)

    def authorized(self, scope) -> bool:
        given = header(scope, b"x-api-key")
        if given is None:
            authorization = header(scope, b"authorization") or b""
            scheme, _, credentials = authorization.partition(b" ")
            if scheme.lower() != b"bearer":
                return False
            given = credentials.strip()
        return hmac.compare_digest(hashlib.sha256(given).digest(), self._digest)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.is_open(scope["path"]) or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        await send_error(send, 401, "authorization", "missing or wrong API key: send the header "
                         "'Authorization: Bearer KEY' (or 'X-API-Key: KEY')",
                         [(b"www-authenticate", b'Bearer realm="seq2seq"')])


class BodySizeMiddleware:
    """Bodies over `max_bytes` get 413: at once when Content-Length says so; a body without one
    (chunked) is read up to the limit first, so the app never sees more than `max_bytes`."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def too_large(self) -> str:
        return f"the body is larger than the server's limit of {self.max_bytes} bytes (max_body_bytes)"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_error(send, 400, "body", "Content-Length is not a number")
                return
            if declared > self.max_bytes:
                await send_error(send, 413, "body", self.too_large())
                return
            # The server (h11/httptools) delivers no more than Content-Length bytes.
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(send, 413, "body", self.too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect message, when it comes

        await self.app(scope, replay, send)


class FastPathMiddleware:
    """/health and the refusals of a flood, answered without FastAPI.

    Under a flood the event loop is what falls behind: every request it parses, validates and
    routes delays the next one, /health included. So /health is answered here from `health()`,
    and a POST to a model route whose models are all full (`refusal(task)` gives the 503's
    (message, headers)) is refused here before its body is read."""

    def __init__(self, app, health: Callable[[], dict], refusal: Callable[[str], tuple[str, list] | None],
                 route_tasks: Mapping[str, str]) -> None:
        self.app, self.health, self.refusal, self.route_tasks = app, health, refusal, route_tasks

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope.get("method")
            if path == "/health" and method in ("GET", "HEAD"):
                body = json.dumps(self.health()).encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
                return
            task = self.route_tasks.get(path)
            if task is not None and method == "POST":
                refused = self.refusal(task)
                if refused is not None:
                    message, headers = refused
                    await send_error(send, 503, "model", message, headers)
                    return
        await self.app(scope, receive, send)
