"""The HTTP server: a FastAPI app over loaded model directories.

    GET  /health           liveness, answered even while models decode (model work runs on threads)
    GET  /models           name, task, languages, parameters, precision of every model
    POST /translate        {"model", "text": [...], "beam", "nbest", ..., "return_attention"}
    POST /generate         {"model", "prompt", "max_chars", "temperature", ...}
    POST /generate/stream  the same, as server-sent events while the text is generated
    POST /classify         {"model", "text": [...]}
    POST /forecast         {"model", "values": [...], "horizon"}
    GET  /                 a web page to try the models; /docs and /openapi.json describe the API

Every bad input gets a 4xx JSON answer {"error": message, "field": name}; the server goes on.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Hashable
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, create_model

import seq2seq
from seq2seq.errors import UserError
from seq2seq.serving.batching import Batcher
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


class APIError(Exception):
    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


def error_response(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


# ----------------------------------------------------------------------------- request bodies
class Body(BaseModel):
    # strict: "5" is not a number and 1 is not true; extra="forbid": a misspelt option is an error.
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())
    model: str | None = Field(None, description="a name from GET /models; may be left out when only "
                                                "one model of the task is served")


# The decoding fields come from the options type (null or absent: the model's default).
TranslateBody = create_model(
    "TranslateBody", __base__=Body,
    text=(list[str], Field(..., description="sentences to translate", examples=[["Ein Hund läuft im Park."]])),
    return_attention=(bool, Field(False, description="the attention matrix of the best translation")),
    **request_fields())
REQUEST_OPTIONS = tuple(request_fields())


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


class Server:
    """The app's state: the models, one batcher per translator and classifier, counters."""

    def __init__(self, models: dict[str, ServedModel], settings: ServeSettings) -> None:
        self.models, self.settings = models, settings
        self.started = time.time()
        self.streams = {"started": 0, "finished": 0, "stopped": 0, "steps": 0}
        self.batchers: dict[str, Batcher] = {}
        for name, served in models.items():
            if served.task in ("translation", "classification"):
                self.batchers[name] = Batcher(self._runner(served), settings.batch_tokens,
                                              settings.batch_wait_ms / 1000.0, settings.batching,
                                              name=f"batcher-{name}")

    def _runner(self, served: ServedModel):
        budget = self.settings.batch_tokens
        if served.task == "translation":
            def run(key: Hashable, lines: list) -> list:
                return served.model.translate(lines, return_hypotheses=True, **dict(key))
            return run

        def classify(key: Hashable, texts: list) -> list:
            return served.model.classify(texts, batch_tokens=budget)
        return classify

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()

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


async def call_model(future_or_call, body: BaseModel, default_field: str):
    """Await model work; a UserError from it becomes a 422 naming the field it is about."""
    try:
        if asyncio.isfuture(future_or_call) or asyncio.iscoroutine(future_or_call):
            return await future_or_call
        return await asyncio.wrap_future(future_or_call)
    except UserError as error:
        raise APIError(422, field_of_user_error(str(error), body, default_field), str(error)) from None


def translation_json(hyps: list, nbest: int, attention: bool, served: ServedModel, source: str) -> dict:
    best = hyps[0]
    item: dict[str, Any] = {"text": best.text, "score": round(float(best.score), 6)}
    if nbest > 1:
        item["nbest"] = [{"text": h.text, "score": round(float(h.score), 6)} for h in hyps]
    if attention and best.attention is not None:
        translator = served.model
        src_pieces = translator.src_tokenizer.encode_pieces(source) or ["<empty>"]
        tgt_pieces = translator.tgt_tokenizer.id_to_piece(best.tokens) + ["</s>"]
        weights = best.attention[: len(tgt_pieces), : len(src_pieces)].float().tolist()
        item["attention"] = {"source_pieces": src_pieces, "target_pieces": tgt_pieces,
                             "weights": [[round(w, 4) for w in row] for row in weights]}
    return item


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
    app.router.add_event_handler("shutdown", server.close)

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error_response(error.status, error.field, error.message)

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

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, "", f"internal error: {type(error).__name__}: {error}")

    @app.get("/health", summary="Liveness: answers while models work")
    async def health() -> dict:
        return {"status": "ok", "models": len(server.models), "uptime_s": round(time.time() - server.started, 3)}

    @app.get("/models", summary="The models served")
    async def list_models() -> dict:
        return {"models": [m.describe() for m in server.models.values()],
                "limits": asdict(settings)}

    @app.post("/translate", summary="Translate sentences (batched with concurrent requests)")
    async def translate(body: TranslateBody) -> dict:
        served = server.pick(body.model, "translation", "/translate")
        server.check_texts(body.text)
        try:  # the request's options over the model's defaults
            options = served.model.options(**{name: getattr(body, name) for name in REQUEST_OPTIONS})
        except UserError as error:
            raise APIError(422, field_of_user_error(str(error), body, "text"), str(error)) from None
        if options.beam > settings.max_beam:
            raise APIError(422, "beam", f"beam={options.beam} is above the server's limit of {settings.max_beam}")
        if options.sampling and options.nbest > settings.max_beam:
            raise APIError(422, "nbest", f"nbest={options.nbest} must be between 1 and max_beam={settings.max_beam}")
        key = (*options.updated(batch_tokens=settings.batch_tokens).as_dict().items(),
               ("return_attention", body.return_attention))
        cost = sum(max(len(ids), 1) for ids in served.model.src_tokenizer.encode(list(body.text)))
        future = server.batchers[served.name].submit(key, body.text, cost,
                                                     alone=options.sampling and options.seed is not None)
        results = await call_model(future, body, "text")
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
        return served, options_of(body, set())

    @app.post("/generate", summary="Continue a prompt with a language model")
    async def generate(body: GenerateBody) -> dict:
        served, options = generation_options(body)

        def work() -> list[str]:
            import torch

            with torch.inference_mode():
                return served.model.generate(options.pop("prompt"), options.pop("max_chars"), **options)

        texts = await call_model(asyncio.to_thread(work), body, "prompt")
        return {"model": served.name, "text": texts[0], "texts": texts}

    @app.post("/generate/stream", summary="Continue a prompt, streamed as server-sent events",
              description="Events: `data: {\"text\": ...}` as characters are generated, then "
                          "`event: end` (or `event: error`). Generation stops when the client goes away.",
              response_class=StreamingResponse)
    async def generate_stream(body: GenerateBody) -> StreamingResponse:
        served, options = generation_options(body)
        if body.num_samples != 1:
            raise APIError(422, "num_samples", "the stream sends one sample; use POST /generate for several")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        counts = server.streams

        def produce() -> None:
            import torch

            def put(kind: str, value: Any) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

            steps = None
            try:
                with torch.inference_mode():
                    steps = served.model.stream(options.pop("prompt"), options.pop("max_chars"), **options)
                    for pieces in steps:
                        counts["steps"] += 1
                        if stop.is_set():
                            counts["stopped"] += 1
                            return
                        if pieces[0]:
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

        async def events() -> AsyncIterator[str]:
            counts["started"] += 1
            threading.Thread(target=produce, name="generate-stream", daemon=True).start()
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

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/classify", summary="Label sentences with a classifier")
    async def classify(body: ClassifyBody) -> dict:
        served = server.pick(body.model, "classification", "/classify")
        server.check_texts(body.text)
        future = server.batchers[served.name].submit("classify", body.text, sum(len(t) for t in body.text))
        predictions = await call_model(future, body, "text")
        return {"model": served.name, "predictions": [
            {"label": None, "probability": None, "probabilities": {}} if p is None else
            {"label": p.label, "probability": round(p.probability, 6),
             "probabilities": {k: round(v, 6) for k, v in p.probabilities.items()}}
            for p in predictions]}

    @app.post("/forecast", summary="Forecast the weeks after a weekly history")
    async def forecast(body: ForecastBody) -> dict:
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
            import torch

            with torch.inference_mode():
                return [float(v) for v in served.model.forecast(list(body.values), body.horizon)]

        values = await call_model(asyncio.to_thread(work), body, "values")
        return {"model": served.name, "horizon": body.horizon, "forecast": values}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app
