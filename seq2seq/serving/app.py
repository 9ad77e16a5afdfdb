"""The HTTP server: a FastAPI app over loaded model directories.

    GET  /health           liveness, answered even while models decode (model work runs on threads)
    GET  /models           name, task, languages, parameters, precision of every model
    POST /translate        {"model", "text": [...], "beam", "nbest", ..., "return_attention"}
    POST /generate         {"model", "prompt", "max_chars", "temperature", ...}
    POST /generate/stream  the same, as server-sent events while the text is generated
    POST /classify         {"model", "text": [...]}
    POST /forecast         {"model", "values": [...], "horizon"}
    GET  /metrics          Prometheus text format: requests, latency, queue depth, batch sizes, tokens
    GET  /                 a web page to try the models; /docs and /openapi.json describe the API

Every bad input gets a 4xx JSON answer {"error": message, "field": name}; the server goes on.
Past its capacity the server refuses instead of queueing without bound: a full model queue is
503 with Retry-After at once; a request past its deadline (timeout_s) is 504 and its model work
stops (seq2seq.serving.batching says where). With api_key set, every route but /health and the
page's files answers 401 without the key; a body over max_body_bytes is 413 before it is parsed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

import seq2seq
from seq2seq.errors import UserError
from seq2seq.serving.batching import (
    Batcher,
    BatcherClosed,
    DeadlineExceeded,
    QueueFull,
    no_autograd,
    watch_network,
)
from seq2seq.serving.metrics import Metrics, MetricsMiddleware
from seq2seq.serving.middleware import APIKeyMiddleware, BodySizeMiddleware, FastPathMiddleware
from seq2seq.serving.models import ServedModel
from seq2seq.tasks.translation.options import request_fields

STATIC_DIR = resources.files("seq2seq.serving") / "static"


@dataclass
class ServeSettings:
    """Limits and batching; conf/apps/serve.yaml sets them."""

    batching: bool = True
    batch_wait_ms: float = 5.0     # how long the first request of a batch waits for others
    batch_tokens: int = 4000       # source tokens per decoding batch (the budget of a shared batch)
    max_texts: int = 64            # texts per /translate or /classify request
    max_text_chars: int = 2000     # characters per text (and per prompt)
    max_beam: int = 16
    max_generate_chars: int = 5000
    max_samples: int = 8
    max_forecast_values: int = 10000
    max_horizon: int = 520
    max_queue: int = 64            # per model: jobs waiting (translators, classifiers) or requests admitted
                                   # (language models, forecasters); past it 503 + Retry-After at once
    timeout_s: float = 30.0        # a request's deadline; a request's own timeout_s may only shorten it
    max_body_bytes: int = 1_048_576  # larger bodies get 413 before they are parsed
    shutdown_timeout_s: float = 10.0  # on SIGTERM/SIGINT: in-flight requests get this long, then are cancelled
    # Kept out of repr and /models; the command reads it from SEQ2SEQ_API_KEY unless api_key= is given.
    api_key: str | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        """The limits /models shows: everything but the key."""
        return {name: value for name, value in asdict(self).items() if name != "api_key"}


RETRY_AFTER_S = 1  # a full queue drains in well under a second at the measured rates (README "Serve over HTTP")


class APIError(Exception):
    def __init__(self, status: int, field: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers


def error_response(status: int, field: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


class ErrorBody(BaseModel):
    error: str = Field(..., description="one line saying what is wrong")
    field: str = Field(..., description="the request field it is about ('body' for the whole body, "
                                        "'' when none)")


def documented_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    meaning = {400: "the body is not a JSON object", 401: "missing or wrong API key (when the server has one)",
               404: "no such model", 413: "the body is larger than max_body_bytes",
               422: "a field has a bad value", 500: "an unexpected model failure",
               503: "the model's queue is full (see Retry-After) or the server is shutting down",
               504: "no answer within the request's deadline (timeout_s); its model work was stopped"}
    return {status: {"model": ErrorBody, "description": meaning[status]} for status in statuses}


POST_ERRORS = documented_errors(400, 401, 404, 413, 422, 500, 503, 504)


# ----------------------------------------------------------------------------- request bodies
class Body(BaseModel):
    # strict: "5" is not a number and 1 is not true; extra="forbid": a misspelt option is an error.
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())
    model: str | None = Field(None, description="a name from GET /models; may be left out when only "
                                                "one model of the task is served")
    timeout_s: float | None = Field(None, gt=0, description="seconds until the server gives up with 504; "
                                                            "at most the server's timeout_s (default: that)")


# The decoding fields come from the options type (null or absent: the model's default).
TranslateBody = create_model(
    "TranslateBody", __base__=Body,
    text=(list[str], Field(..., description="sentences to translate", examples=[["Ein Hund läuft im Park."]])),
    return_attention=(bool, Field(False, description="the attention matrix of the best translation")),
    **request_fields())
REQUEST_OPTIONS = tuple(request_fields())
ROUTE_TASKS = {"/translate": "translation", "/classify": "classification", "/generate": "language_model",
               "/generate/stream": "language_model", "/forecast": "forecast"}


class GenerateBody(Body):
    prompt: str = Field("", description="text the model continues")
    max_chars: int = Field(200, ge=0)
    num_samples: int = Field(1, ge=1)
    temperature: float = Field(0.8, gt=0.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    greedy: bool = False
    seed: int | None = None
    stop: list[str] = Field(default_factory=list, description="end a sample before the first of these")


class ClassifyBody(Body):
    text: list[str] = Field(..., examples=[["a gorgeous , witty , seductive movie ."]])


class ForecastBody(Body):
    values: list[float | None] = Field(..., description="weekly history ending at the forecast origin; "
                                                        "null = a missing week")
    horizon: int = Field(..., ge=1, description="weeks to forecast")


# ----------------------------------------------------------------------------- helpers
def field_name(location: tuple | list) -> str:
    """('body', 'text', 3) -> 'text[3]'."""
    parts = [p for p in location if p != "body"]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def options_of(body: BaseModel, exclude: set[str]) -> dict[str, Any]:
    return {k: v for k, v in body.model_dump().items() if k not in exclude and k != "model"}


def field_of_user_error(message: str, body: BaseModel, default: str) -> str:
    """The project's messages start with the setting they refuse: 'beam=0 must be ...'."""
    match = re.match(r"(\w+)=", message)
    if match and match.group(1) in type(body).model_fields:
        return match.group(1)
    return default


class Admission:
    """The bound of a model without a batcher (language models, forecasters): at most `limit`
    requests running or waiting for a thread; touched on the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise QueueFull(f"{self.active} requests run or wait for this model already (max_queue)")
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


class Server:
    """The app's state: the models, one batcher per translator and classifier, counters."""

    def __init__(self, models: dict[str, ServedModel], settings: ServeSettings) -> None:
        self.models, self.settings = models, settings
        self.started = time.time()
        self.streams = {"started": 0, "finished": 0, "stopped": 0, "steps": 0, "timed_out": 0}
        self.metrics = Metrics()
        self.batchers: dict[str, Batcher] = {}
        self.admissions: dict[str, Admission] = {}
        self.stream_stops: set[threading.Event] = set()
        for name, served in models.items():
            if served.task in ("translation", "classification"):
                watch_network(getattr(served.model, "model", None))
                self.batchers[name] = self._batcher(served)
                self.metrics.watch_depth(name, lambda name=name: self.batchers[name].depth)
            else:
                admission = self.admissions[name] = Admission(settings.max_queue)
                self.metrics.watch_depth(name, lambda a=admission: a.active)

    def _batcher(self, served: ServedModel) -> Batcher:
        settings, name = self.settings, served.name
        return Batcher(self._runner(served), settings.batch_tokens, settings.batch_wait_ms / 1000.0,
                       settings.batching, name=f"batcher-{name}", max_queue=settings.max_queue,
                       on_call=self.metrics.batch_size.labels(model=name).observe, on_drop=self._drop_counter(name))

    def open(self) -> None:
        """At the app's startup: batchers closed by an earlier shutdown start again (an app that
        test clients start and stop more than once)."""
        for name, batcher in self.batchers.items():
            if batcher.closed:
                self.batchers[name] = self._batcher(self.models[name])

    def _drop_counter(self, name: str) -> Callable[[str, int], None]:
        def count(reason: str, jobs: int) -> None:
            self.metrics.dropped.labels(model=name, reason=reason).inc(jobs)
        return count

    def _runner(self, served: ServedModel):
        budget = self.settings.batch_tokens
        tokens = self.metrics.tokens.labels(model=served.name)
        if served.task == "translation":
            def run(key: Hashable, lines: list) -> list:
                results = served.model.translate(lines, return_hypotheses=True, **dict(key))
                tokens.inc(sum(len(getattr(h, "tokens", ())) + 1 for hyps in results for h in hyps))  # + </s>
                return results
            return run

        def classify(key: Hashable, texts: list) -> list:
            return served.model.classify(texts, batch_tokens=budget)
        return classify

    def close(self) -> None:
        for stop in list(self.stream_stops):
            stop.set()
        for batcher in self.batchers.values():
            batcher.close()

    def deadline(self, body: BaseModel) -> tuple[float, float]:
        """(seconds allowed, time.monotonic() deadline): the request's timeout_s, capped by the server's."""
        asked = getattr(body, "timeout_s", None)
        seconds = self.settings.timeout_s if asked is None else min(asked, self.settings.timeout_s)
        return seconds, time.monotonic() + seconds

    def admit(self, served: ServedModel) -> Admission:
        admission = self.admissions[served.name]
        try:
            admission.enter()
        except QueueFull as error:
            raise self.overloaded(served, error) from None
        return admission

    def health(self) -> dict:
        return {"status": "ok", "models": len(self.models), "uptime_s": round(time.time() - self.started, 3)}

    def is_full(self, name: str) -> bool:
        batcher = self.batchers.get(name)
        if batcher is not None:
            return batcher.max_queue is not None and batcher.depth >= batcher.max_queue
        admission = self.admissions[name]
        return admission.active >= admission.limit

    def refusal(self, task: str) -> tuple[str, list] | None:
        """The 503 for a request to `task` when every model of that task is full (which one the
        request names is in its body, not yet read), else None."""
        names = [name for name, served in self.models.items() if served.task == task]
        if not names or not all(self.is_full(name) for name in names):
            return None
        # With several models of the task the request's own is unknown here: counted as "any:<task>".
        self.metrics.rejected.labels(model=names[0] if len(names) == 1 else f"any:{task}").inc()
        busy = f"model {names[0]!r} is busy" if len(names) == 1 else f"every {task} model is busy"
        return (f"{busy}: its queue is full (max_queue={self.settings.max_queue}); retry after {RETRY_AFTER_S} s",
                [(b"retry-after", str(RETRY_AFTER_S).encode())])

    def check_room(self, served: ServedModel) -> None:
        """Refuse before any parsing of options or tokenizing, which a full queue would waste."""
        if self.is_full(served.name):
            batcher = self.batchers[served.name]
            batcher.stats.rejected += 1
            raise self.overloaded(served, QueueFull(f"{batcher.depth} requests wait for this model already "
                                                    f"(max_queue)"))

    def submit(self, served: ServedModel, key: Hashable, items: list, cost: int, deadline: float,
               alone: bool = False) -> concurrent.futures.Future:
        try:
            return self.batchers[served.name].submit(key, items, cost, alone=alone, deadline=deadline)
        except QueueFull as error:
            raise self.overloaded(served, error) from None
        except BatcherClosed:
            raise APIError(503, "", "the server is shutting down", {"Retry-After": str(RETRY_AFTER_S)}) from None

    def overloaded(self, served: ServedModel, error: Exception) -> APIError:
        self.metrics.rejected.labels(model=served.name).inc()
        return APIError(503, "model", f"model {served.name!r} is busy: {error}; retry after "
                                      f"{RETRY_AFTER_S} s", {"Retry-After": str(RETRY_AFTER_S)})

    def timed_out(self, served: ServedModel, seconds: float) -> APIError:
        self.metrics.timeouts.labels(model=served.name).inc()
        return APIError(504, "timeout_s", f"no answer within timeout_s={seconds:g} s; the model's work on "
                                          f"this request was stopped")

    async def result(self, work, body: BaseModel, default_field: str, served: ServedModel,
                     limit: tuple[float, float]):
        """Await model work until the deadline; a UserError from it becomes a 422 naming its field,
        the deadline a 504. A batcher job given up on is marked so that the worker drops it."""
        seconds, deadline = limit
        waited = asyncio.wrap_future(work) if isinstance(work, concurrent.futures.Future) else work
        try:
            return await asyncio.wait_for(waited, max(0.0, deadline - time.monotonic()))
        except (asyncio.TimeoutError, DeadlineExceeded):
            raise self.timed_out(served, seconds) from None
        except BatcherClosed:
            raise APIError(503, "", "the server is shutting down", {"Retry-After": str(RETRY_AFTER_S)}) from None
        except UserError as error:
            raise APIError(422, field_of_user_error(str(error), body, default_field), str(error)) from None
        finally:
            if hasattr(work, "abandon"):  # a no-op once it has its result
                work.abandon()

    def pick(self, name: str | None, task: str, route: str) -> ServedModel:
        if name is None:
            candidates = [m for m in self.models.values() if m.task == task]
            if len(candidates) == 1:
                return candidates[0]
            if not candidates:
                raise APIError(404, "model", f"no {task} model is served; {route} has nothing to run")
            raise APIError(422, "model", f"several {task} models are served; name one of "
                                         f"{', '.join(m.name for m in candidates)}")
        served = self.models.get(name)
        if served is None:
            raise APIError(404, "model", f"unknown model {name!r}; GET /models lists them "
                                         f"({', '.join(self.models) or 'none'})")
        if served.task != task:
            raise APIError(422, "model", f"model {name!r} is a {served.task} model; {route} needs a {task} model")
        return served

    def check_texts(self, texts: list[str], field: str = "text") -> None:
        limits = self.settings
        if not texts:
            raise APIError(422, field, f"{field} is empty; give at least one text")
        if len(texts) > limits.max_texts:
            raise APIError(422, field, f"{len(texts)} texts; at most {limits.max_texts} per request (max_texts)")
        for index, text in enumerate(texts):
            if len(text) > limits.max_text_chars:
                raise APIError(422, f"{field}[{index}]", f"text {index} has {len(text)} characters; at most "
                                                         f"{limits.max_text_chars} (max_text_chars)")


def translation_json(hyps: list, nbest: int, attention: bool, served: ServedModel, source: str) -> dict:
    best = hyps[0]
    item: dict[str, Any] = {"text": best.text, "score": round(float(best.score), 6)}
    if nbest > 1:
        item["nbest"] = [{"text": h.text, "score": round(float(h.score), 6)} for h in hyps]
    if attention and best.attention is not None:
        translator = served.model
        src_pieces = translator.src_tokenizer.encode_pieces(source) or ["<empty>"]
        tgt_pieces = translator.tgt_tokenizer.id_to_piece(best.tokens) + ["</s>"]
        weights = best.attention[: len(tgt_pieces), : len(src_pieces)].tolist()  # torch or numpy
        item["attention"] = {"source_pieces": src_pieces, "target_pieces": tgt_pieces,
                             "weights": [[round(w, 4) for w in row] for row in weights]}
    return item


def call_on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], Any]) -> None:
    """From a model thread; a loop already closed (the server stopped) has nobody left to tell."""
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:
        pass


def sse(event: str | None, data: dict) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


# ----------------------------------------------------------------------------- the app
def create_app(models: dict[str, ServedModel], settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    server = Server(models, settings)
    app = FastAPI(title="seq2seq", version=seq2seq.__version__,
                  description="Translation, language models, sentence classification and forecasting "
                              "from seq2seq model directories.")
    app.state.server = server
    app.router.add_event_handler("startup", server.open)
    app.router.add_event_handler("shutdown", server.close)

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error_response(error.status, error.field, error.message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": ("body",), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return error_response(400, "body", f"the body is not valid JSON ({first.get('ctx', {}).get('error', '')})")
        field = field_name(first.get("loc", ("body",)))
        if first.get("type") == "missing" and field == "body":
            return error_response(400, "body", "the body is missing: send a JSON object")
        if field == "body" and first.get("type", "").endswith("_type"):  # a list, a number... not an object
            return error_response(400, "body", "the body must be a JSON object")
        if first.get("type") == "extra_forbidden":
            return error_response(422, field, f"{field}: unknown option (see /docs for the accepted ones)")
        return error_response(422, field, f"{field}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Starlette's own answers (404 unknown path, 405, 400 for a body that is not UTF-8) in the API's shape
        field = "body" if error.status_code == 400 else ""
        return error_response(error.status_code, field, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, "", f"internal error: {type(error).__name__}: {error}")

    @app.get("/health", summary="Liveness: answers while models work; needs no API key")
    async def health() -> dict:  # answered by FastPathMiddleware; the route documents it
        return server.health()

    @app.get("/models", summary="The models served", responses=documented_errors(401))
    async def list_models() -> dict:
        return {"models": [m.describe() for m in server.models.values()], "limits": settings.public()}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    @app.post("/translate", summary="Translate sentences (batched with concurrent requests)", responses=POST_ERRORS)
    async def translate(body: TranslateBody) -> dict:
        limit = server.deadline(body)
        served = server.pick(body.model, "translation", "/translate")
        server.check_room(served)
        server.check_texts(body.text)
        try:  # the request's options over the model's defaults
            options = served.model.options(**{name: getattr(body, name) for name in REQUEST_OPTIONS})
        except UserError as error:
            raise APIError(422, field_of_user_error(str(error), body, "text"), str(error)) from None
        if options.beam > settings.max_beam:
            raise APIError(422, "beam", f"beam={options.beam} is above the server's limit of {settings.max_beam}")
        if options.sampling and options.nbest > settings.max_beam:
            raise APIError(422, "nbest", f"nbest={options.nbest} must be between 1 and max_beam={settings.max_beam}")
        check_seed(options.seed)
        key = (*options.updated(batch_tokens=settings.batch_tokens).as_dict().items(),
               ("return_attention", body.return_attention))
        cost = sum(max(len(ids), 1) for ids in served.model.src_tokenizer.encode(list(body.text)))
        future = server.submit(served, key, body.text, cost, limit[1],
                               alone=options.sampling and options.seed is not None)
        results = await server.result(future, body, "text", served, limit)
        return {"model": served.name, "translations": [
            translation_json(hyps, options.nbest, body.return_attention, served, source)
            for hyps, source in zip(results, body.text)]}

    def generation_options(body: GenerateBody) -> tuple[ServedModel, dict]:
        served = server.pick(body.model, "language_model", "/generate")
        if len(body.prompt) > settings.max_text_chars:
            raise APIError(422, "prompt", f"prompt has {len(body.prompt)} characters; at most "
                                          f"{settings.max_text_chars} (max_text_chars)")
        if body.max_chars > settings.max_generate_chars:
            raise APIError(422, "max_chars", f"max_chars={body.max_chars} is above the server's limit of "
                                             f"{settings.max_generate_chars}")
        if body.num_samples > settings.max_samples:
            raise APIError(422, "num_samples", f"num_samples={body.num_samples} is above the server's limit "
                                               f"of {settings.max_samples}")
        check_seed(body.seed)
        return served, options_of(body, {"timeout_s"})

    def run_on_thread(admission: Admission, work: Callable[[], Any]) -> asyncio.Future:
        """`work` on a thread; its admission is given back when the thread is done, not when the
        request gives up (the thread may still be in its last step)."""
        loop = asyncio.get_running_loop()

        def guarded() -> Any:
            try:
                return work()
            finally:
                call_on_loop(loop, admission.leave)

        try:
            return asyncio.ensure_future(asyncio.to_thread(guarded))
        except BaseException:
            admission.leave()
            raise

    @app.post("/generate", summary="Continue a prompt with a language model", responses=POST_ERRORS)
    async def generate(body: GenerateBody) -> dict:
        limit = server.deadline(body)
        served, options = generation_options(body)
        tokens = server.metrics.tokens.labels(model=served.name)
        gave_up = threading.Event()

        def work() -> list[str]:
            # Checked before the first step (the request may have waited for a thread past its
            # deadline) and between steps: the thread stops within a character of the deadline.
            parts: list[list[str]] = [[] for _ in range(options["num_samples"])]
            with no_autograd():
                steps = served.model.stream(options.pop("prompt"), options.pop("max_chars"), **options)
                try:
                    for pieces in steps:
                        if gave_up.is_set() or time.monotonic() >= limit[1]:
                            raise DeadlineExceeded("the deadline passed while generating")
                        for part, piece in zip(parts, pieces):
                            part.append(piece)
                        tokens.inc(sum(len(piece) for piece in pieces))
                finally:
                    steps.close()
            return ["".join(part) for part in parts]

        running = run_on_thread(server.admit(served), work)
        try:
            texts = await server.result(running, body, "prompt", served, limit)
        finally:
            gave_up.set()
        return {"model": served.name, "text": texts[0], "texts": texts}

    @app.post("/generate/stream", summary="Continue a prompt, streamed as server-sent events",
              description="Events: `data: {\"text\": ...}` as characters are generated, then "
                          "`event: end` (or `event: error`). Generation stops when the client goes away "
                          "and at the request's deadline (timeout_s; then `event: error`).",
              response_class=StreamingResponse, responses=POST_ERRORS)
    async def generate_stream(body: GenerateBody) -> StreamingResponse:
        seconds, deadline = server.deadline(body)
        served, options = generation_options(body)
        if body.num_samples != 1:
            raise APIError(422, "num_samples", "the stream sends one sample; use POST /generate for several")
        admission = server.admit(served)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        counts = server.streams
        tokens = server.metrics.tokens.labels(model=served.name)

        def produce() -> None:
            def put(kind: str, value: Any) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

            steps = None
            try:
                with no_autograd():
                    steps = served.model.stream(options.pop("prompt"), options.pop("max_chars"), **options)
                    for pieces in steps:
                        counts["steps"] += 1
                        if stop.is_set():
                            counts["stopped"] += 1
                            return
                        if time.monotonic() >= deadline:
                            counts["timed_out"] += 1
                            server.metrics.timeouts.labels(model=served.name).inc()
                            put("error", f"the stream reached its deadline (timeout_s={seconds:g} s) and stops here")
                            return
                        if pieces[0]:
                            tokens.inc(len(pieces[0]))
                            put("text", pieces[0])
                put("end", None)
            except UserError as error:
                put("error", str(error))
            except Exception as error:  # noqa: BLE001 - the stream reports it; the server goes on
                put("error", f"internal error: {type(error).__name__}: {error}")
            finally:
                if steps is not None:
                    steps.close()
                counts["finished"] += 1
                server.stream_stops.discard(stop)
                call_on_loop(loop, admission.leave)

        async def events() -> AsyncIterator[str]:
            sent = 0
            try:
                while True:
                    kind, value = await queue.get()
                    texts = []
                    while kind == "text":  # send what has piled up as one event
                        texts.append(value)
                        if queue.empty():
                            break
                        kind, value = queue.get_nowait()
                    if texts:
                        chunk = "".join(texts)
                        sent += len(chunk)
                        yield sse(None, {"text": chunk})
                    if kind == "end":
                        yield sse("end", {"chars": sent})
                        return
                    if kind == "error":
                        yield sse("error", {"error": value})
                        return
            finally:
                stop.set()  # the client went away, or the stream is over: the thread stops at its next step

        # Started here, not in events(): a client gone before the answer starts never runs events(),
        # and the thread (which gives the admission back) must end all the same, at the deadline at last.
        counts["started"] += 1
        server.stream_stops.add(stop)
        try:
            threading.Thread(target=produce, name="generate-stream", daemon=True).start()
        except BaseException:
            server.stream_stops.discard(stop)
            admission.leave()
            raise
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/classify", summary="Label sentences with a classifier", responses=POST_ERRORS)
    async def classify(body: ClassifyBody) -> dict:
        limit = server.deadline(body)
        served = server.pick(body.model, "classification", "/classify")
        server.check_room(served)
        server.check_texts(body.text)
        future = server.submit(served, "classify", body.text, sum(len(t) for t in body.text), limit[1])
        predictions = await server.result(future, body, "text", served, limit)
        return {"model": served.name, "predictions": [
            {"label": None, "probability": None, "probabilities": {}} if p is None else
            {"label": p.label, "probability": round(p.probability, 6),
             "probabilities": {k: round(v, 6) for k, v in p.probabilities.items()}}
            for p in predictions]}

    @app.post("/forecast", summary="Forecast the weeks after a weekly history", responses=POST_ERRORS)
    async def forecast(body: ForecastBody) -> dict:
        limit = server.deadline(body)
        served = server.pick(body.model, "forecast", "/forecast")
        if not body.values:
            raise APIError(422, "values", "values is empty; give the weekly history")
        if len(body.values) > settings.max_forecast_values:
            raise APIError(422, "values", f"{len(body.values)} values; at most {settings.max_forecast_values} "
                                          f"(max_forecast_values)")
        if all(v is None for v in body.values):
            raise APIError(422, "values", "every value is missing (null); give at least one number")
        if body.horizon > settings.max_horizon:
            raise APIError(422, "horizon", f"horizon={body.horizon} is above the server's limit of "
                                           f"{settings.max_horizon}")

        def work() -> list[float]:
            # One forward pass, not stoppable part-way; skipped when the deadline passed while it waited.
            if time.monotonic() >= limit[1]:
                raise DeadlineExceeded("the deadline passed before a thread was free")
            with no_autograd():
                return [float(v) for v in served.model.forecast(list(body.values), body.horizon)]

        values = await server.result(run_on_thread(server.admit(served), work), body, "values", served, limit)
        return {"model": served.name, "horizon": body.horizon, "forecast": values}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    # Outermost last: metrics see every answer (401 and 413 too); the key is checked before the
    # size, so that a caller without the key learns nothing about the limits.
    app.add_middleware(FastPathMiddleware, health=server.health, refusal=server.refusal, route_tasks=ROUTE_TASKS)
    app.add_middleware(BodySizeMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(APIKeyMiddleware, key=settings.api_key)
    known = frozenset(route.path for route in app.routes if hasattr(route, "path"))
    app.add_middleware(MetricsMiddleware, metrics=server.metrics, known_paths=known)
    return app


SEED_RANGE = (-2**63, 2**64 - 1)  # what torch.Generator.manual_seed takes; a JSON integer may be any size


def check_seed(seed: int | None) -> None:
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise APIError(422, "seed", f"seed={seed} must be between -2**63 and 2**64-1")
