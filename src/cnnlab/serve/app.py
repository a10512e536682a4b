"""The FastAPI application of `cnnlab serve`, around one loaded model.

    POST /predict   images (multipart files, or one raw image body) -> the rows `cnnlab predict` writes
    POST /explain   one image -> Grad-CAM's overlay as PNG
    POST /input     one image -> the image as the model sees it (its size, grey or colour), as PNG
    GET  /health, /info, /metrics (Prometheus), /docs (OpenAPI), / (the page)

The model is whatever `cnnlab.trained.load` returned at start-up; nothing in a request names a
model. Every answer about the image comes from the task (`task.predictions`, `explain_target`),
so any task cnnlab has is served the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from importlib import resources
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from cnnlab import __version__
from cnnlab.errors import CnnlabError, UnreadableImageError
from cnnlab.serve.batching import Batcher, Handover, QueueFull
from cnnlab.serve.metrics import Metrics
from cnnlab.serve.settings import ServeSettings
from cnnlab.serve.uploads import (BodyTooLarge, ClientGone, Upload, counting_receive, decode, declared_too_large,
                                  read_body, read_uploads, uploads_in_body)

log = logging.getLogger(__name__)

ENDPOINTS = ("/", "/predict", "/explain", "/input", "/health", "/info", "/metrics", "/docs", "/openapi.json")
RETRY_AFTER_S = 1
MAX_TOP_K = 1000
INLINE_DECODE_BYTES = 64 << 10  # smaller uploads are decoded on the event loop: a thread hop costs more


def create_app(trained: Any, settings: ServeSettings) -> "_Front":
    """The service for `trained` (a TrainedModel, or anything with its inference interface), as the
    ASGI application uvicorn runs: the FastAPI app behind a front layer (`_Front`)."""
    metrics = Metrics()
    batcher = Batcher(trained.outputs, max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000,
                      max_queue=settings.max_queue, metrics=metrics)
    metrics.queue_depth = lambda: batcher.depth

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        batcher.start()
        # Everything loaded so far (torch, the model, FastAPI) lives as long as the service: out of the
        # garbage collector's scans, whose full passes over it paused the event loop for tens of ms.
        gc.collect()
        gc.freeze()
        yield
        batcher.stop()

    app = FastAPI(title="cnnlab serve", version=__version__, lifespan=lifespan,
                  description=f"{trained.info.architecture.label or trained.info.architecture.name}: "
                              f"{trained.task.name}. The page is at /.")
    app.state.batcher, app.state.metrics = batcher, metrics
    _handle_errors(app)
    service = _Service(trained, settings, batcher)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("cnnlab.serve").joinpath("static/index.html").read_text("utf-8"))

    @app.get("/health")
    def health() -> dict:
        """Whether the service answers, how many requests wait for the model, how many are being read."""
        return {"status": "ok", "queue_depth": batcher.depth, "reading": batcher.reading}

    @app.get("/info")
    def info() -> dict:
        """The model: its architecture, task, classes or outputs, and the input it takes."""
        return service.info()

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        """Request counts, latency and batch-size histograms, queue depth (Prometheus text format)."""
        return PlainTextResponse(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/predict", openapi_extra=_IMAGE_BODY)
    async def predict(request: Request, top_k: int = Query(1, ge=1, le=MAX_TOP_K)) -> Response:
        """One row per image, as `cnnlab predict` writes them: {"file", "label", "confidence", "top_k"}
        for a classifier, {"file", "values"} for regression, {"file", "objects"} for a detector, or
        {"file", "error"} for a file that is not a readable image."""
        rows = await service.predict(lambda: read_uploads(request, max_files=settings.max_files), top_k)
        return Response(json_body(rows), media_type="application/json")

    @app.post("/explain", openapi_extra=_IMAGE_BODY, response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    async def explain(request: Request, target: str | None = Query(None, description="a class name or index "
                                                                  "(default: the predicted answer)")) -> Response:
        """Grad-CAM: where in the image the evidence for the answer (or `target`) lies, as a PNG overlay."""
        picture, label = await service.explain(request, target)
        return Response(picture, media_type="image/png", headers={"X-Cnnlab-Explained": quote(label)})

    @app.post("/input", openapi_extra=_IMAGE_BODY, response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    async def model_input(request: Request) -> Response:
        """The image as the model sees it: resized (or cropped, padded) to its input, grey or colour."""
        from cnnlab.serve.pictures import as_model_sees_it

        pixels, _ = (await service.decoded_one(request))
        return Response(as_model_sees_it(pixels), media_type="image/png")

    return _Front(app, service, metrics, settings.max_body_bytes)


# The request body in the OpenAPI docs: the endpoints read it themselves (multipart or raw bytes).
_IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


class _Service:
    """What the endpoints do with the model: decode, queue for the worker, answer through the task."""

    def __init__(self, trained: Any, settings: ServeSettings, batcher: Batcher):
        self.trained, self.settings, self.batcher = trained, settings, batcher
        self._answers: dict[int, Any] = {}  # top_k -> its `_predictions` function
        self._handover = Handover()

    def _predictions(self, top_k: int) -> Any:
        """`task.predictions` at `top_k`, as (outputs, origins) -> rows: one object per top_k, so the
        worker answers every request of a batch asking the same top_k in one call."""
        if top_k not in self._answers:
            task = self.trained.task
            self._answers[top_k] = lambda outputs, origins: task.predictions(outputs, top_k=top_k, origins=origins)
        return self._answers[top_k]

    def info(self) -> dict:
        spec = self.trained.input
        architecture = self.trained.info.architecture
        return {"model": architecture.label or architecture.name, "architecture": architecture.name,
                "task": self.trained.task.name, "classes": self.trained.class_names,
                "outputs": list(self.trained.task.output_names),
                "input": {"channels": spec.channels, "height": spec.height, "width": spec.width, "fit": spec.fit},
                "explain": _can_explain(self.trained), "max_batch": self.settings.max_batch,
                "max_body_bytes": self.settings.max_body_bytes, "max_files": self.settings.max_files,
                "cnnlab": __version__}

    def check_top_k(self, top_k: int) -> None:
        try:
            self.trained.task.check_top_k(top_k)
        except CnnlabError as error:
            raise HTTPException(422, str(error)) from None

    async def predict(self, read: Callable[[], Awaitable[list[Upload]]], top_k: int) -> list[dict[str, Any]]:
        """The rows for the images `read()` gives (reading and decoding them counts as arriving: a
        batch waits for them)."""
        self.check_top_k(top_k)
        with self.batcher.arriving():
            uploads = await read()
            rows: list[dict[str, Any]] = [{"file": upload.name} for upload in uploads]
            decoded = []
            for row, result in zip(rows, await self._decode_all(uploads)):
                if isinstance(result, UnreadableImageError):
                    row["error"] = result.reason
                else:
                    decoded.append((row, *result))
        if not decoded:
            raise HTTPException(422, f"{rows[0]['file']}: {rows[0]['error']}")
        import numpy as np
        import torch

        images = torch.from_numpy(decoded[0][1][None] if len(decoded) == 1
                                  else np.stack([pixels for _, pixels, _ in decoded]))
        origins = [origin[:2] for _, _, origin in decoded]
        predictions = await self._on_model(
            lambda: self.batcher.submit_per_image(images, self._predictions(top_k), origins))
        for (row, _, _), prediction in zip(decoded, predictions):
            row.update(prediction)
        return rows

    async def explain(self, request: Request, target: str | None) -> tuple[bytes, str]:
        from cnnlab.serve.pictures import explain_picture

        if not _can_explain(self.trained):
            raise HTTPException(501, "Grad-CAM needs the PyTorch model: serve the run folder, not an exported file")
        pixels, _ = await self.decoded_one(request)
        return await self._on_model(lambda: self.batcher.call(lambda: explain_picture(self.trained, pixels, target)))

    async def decoded_one(self, request: Request) -> tuple[Any, tuple[int, int, bool]]:
        uploads = await read_uploads(request, max_files=self.settings.max_files)
        if len(uploads) != 1:
            raise HTTPException(422, f"send one image here (got {len(uploads)})")
        result = (await self._decode_all(uploads))[0]
        if isinstance(result, UnreadableImageError):
            raise HTTPException(422, f"{uploads[0].name}: {result.reason}")
        return result

    async def _decode_all(self, uploads: list[Upload]) -> list[Any]:
        if sum(len(upload.data) for upload in uploads) <= INLINE_DECODE_BYTES:
            return self._decode_each(uploads)
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self._decode_each, uploads)

    def _decode_each(self, uploads: list[Upload]) -> list[Any]:
        results: list[Any] = []
        for upload in uploads:
            try:
                results.append(decode(upload, self.trained.input, self.settings.max_image_pixels))
            except UnreadableImageError as error:
                results.append(error)
        return results

    async def _on_model(self, enqueue: Any) -> Any:
        """The result of the future `enqueue()` gives, from the model's worker: 503 when its queue is
        full, 504 past the timeout."""
        try:
            future = enqueue()
        except QueueFull as full:
            raise HTTPException(503, f"busy: {full}; retry later", headers={"Retry-After": str(RETRY_AFTER_S)})
        waiting = self._handover.awaitable(future)

        def too_late() -> None:
            if not waiting.done():
                future.cancel()  # dropped before its forward pass if it has not started
                waiting.set_exception(_TooLate())

        # A timer rather than asyncio.wait_for, which starts a task for every request.
        timer = asyncio.get_running_loop().call_later(self.settings.timeout_s, too_late)
        try:
            return await waiting
        except _TooLate:
            raise HTTPException(504, f"no answer within --timeout {self.settings.timeout_s:g} s") from None
        finally:
            timer.cancel()


class _TooLate(Exception):
    """A request's answer did not come within --timeout."""


def _can_explain(trained: Any) -> bool:
    """Grad-CAM differentiates the network: only a PyTorch model (not an exported file's session) can."""
    import torch

    from cnnlab.errors import CnnlabError

    try:
        model = trained.model
    except (AttributeError, CnnlabError):  # an ExportedModel says why it has no network to differentiate
        return False
    return isinstance(model, torch.nn.Module)


def _handle_errors(app: FastAPI) -> None:
    """Every error as one JSON line, {"detail": reason}: the user's mistakes with their reason, anything
    else as "internal error" (the traceback goes to the server's log, never to the client)."""

    @app.exception_handler(UnreadableImageError)
    async def unreadable(_request: Request, error: UnreadableImageError) -> JSONResponse:
        return JSONResponse({"detail": error.reason}, 422)

    @app.exception_handler(CnnlabError)
    async def refused(_request: Request, error: CnnlabError) -> JSONResponse:
        return JSONResponse({"detail": str(error).splitlines()[0]}, 422)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return JSONResponse({"detail": "internal error (the server's log has the details)"}, 500)


class _Front:
    """The ASGI application uvicorn calls, in front of the FastAPI app. Every HTTP request is timed
    into the metrics (by endpoint; unknown paths together as "other", so a scan of random URLs cannot
    grow them) and held to --max-body-bytes: 413 for a Content-Length over it before anything is read,
    and for a body whose bytes pass it while they are read. POST /predict is answered here, past
    FastAPI's stack (its error, telemetry and body middlewares, routing, parameter validation, response
    encoding), which for a small model costs more than its share of the forward pass; its answers are
    those of the route (kept for the OpenAPI docs): the same rows, the same one-line errors
    {"detail": reason}, 500 without a traceback for anything unexpected. The rest goes to FastAPI."""

    def __init__(self, app: FastAPI, service: _Service, metrics: Metrics, max_body_bytes: int):
        self.app, self.service, self.metrics, self.max_body_bytes = app, service, metrics, max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # lifespan: starts and stops the batcher
        started = time.perf_counter()
        status = 500

        async def keep_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"]
        try:
            if declared_too_large(scope["headers"], self.max_body_bytes):
                await _send_json(keep_status, 413, {"detail": BodyTooLarge(self.max_body_bytes).detail})
            elif path == "/predict" and scope["method"] == "POST":
                await self._predict(scope, receive, keep_status)
            else:
                await self.app(scope, counting_receive(receive, self.max_body_bytes), keep_status)
        finally:
            self.metrics.request_done(path if path in ENDPOINTS else "other", status, time.perf_counter() - started)

    async def _predict(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            rows = await self.service.predict(lambda: self._uploads(scope, receive),
                                              _top_k(scope.get("query_string", b"")))
            status, answer = 200, json_body(rows)
            headers: dict[str, str] = {}
        except ClientGone:
            return
        except HTTPException as error:
            status, answer, headers = error.status_code, _detail(error.detail), dict(error.headers or {})
        except UnreadableImageError as error:
            status, answer, headers = 422, _detail(error.reason), {}
        except CnnlabError as error:
            status, answer, headers = 422, _detail(str(error).splitlines()[0]), {}
        except Exception as error:  # noqa: BLE001  (answered as the app's handler answers it)
            log.error("POST /predict failed", exc_info=error)
            status, answer, headers = 500, _detail("internal error (the server's log has the details)"), {}
        await _send(send, status, answer, headers)

    async def _uploads(self, scope: dict, receive: Any) -> list[Upload]:
        body = await read_body(receive, self.max_body_bytes)
        max_files = self.service.settings.max_files
        uploads = uploads_in_body(_header(scope["headers"], b"content-type"), body, max_files)
        if uploads is None:  # an unusual form: Starlette's full parser, over the body already read
            uploads = await read_uploads(_replayed(scope, body), max_files=max_files)
        return uploads


def json_body(value: Any) -> bytes:
    """`value` as JSON bytes, written as Starlette's JSONResponse writes them; a nan or inf (a regression
    output that diverged) becomes null, since JSON has no such numbers."""
    import json

    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        from cnnlab.strict_json import finite_or_none

        text = json.dumps(finite_or_none(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


def _detail(reason: Any) -> bytes:
    return json_body({"detail": reason})


async def _send_json(send: Any, status: int, value: Any) -> None:
    await _send(send, status, json_body(value), {})


async def _send(send: Any, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _replayed(scope: dict, body: bytes) -> Request:
    """A Starlette request whose body is `body`, already read."""
    async def once() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request(scope, once)
    request._body = body  # noqa: SLF001  (Starlette's own cache of a body read: form() streams it)
    return request


def _top_k(query_string: bytes) -> int:
    """The `top_k` query parameter (default 1), checked as the route's Query(ge=1, le=MAX_TOP_K)."""
    if not query_string:
        return 1
    from urllib.parse import parse_qsl

    given = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)).get("top_k")
    if given is None:
        return 1
    if not (given.strip().isascii() and given.strip().isdigit()) or not 1 <= int(given) <= MAX_TOP_K:
        raise HTTPException(422, f"top_k must be a whole number from 1 to {MAX_TOP_K} (got {given[:40]!r})")
    return int(given)
