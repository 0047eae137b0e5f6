"""The ASGI app of ``posereg serve``: FastAPI routes around one :class:`Predictor`.

Why FastAPI (on uvicorn): the response schema is declared once as pydantic models and FastAPI
publishes it as OpenAPI (``/docs``) and validates it; it is the most used, actively maintained
ASGI framework for Python ML services, and uvicorn is its reference server. A hand-written
``http.server`` would have to re-implement multipart parsing, limits and concurrency.

Concurrency: the model runs on one worker thread, one request at a time (PyTorch already uses
the cores inside a forward pass). Decoding runs beside it in a thread pool, so the event loop
keeps accepting requests. A request that is not answered within ``timeout_s`` (waiting included)
gets 503: if it was still waiting for the model it is dropped from the queue and told the model
is busy (with ``Retry-After``); if it was itself being read, decoded or predicted it is told
that it exceeded the timeout and where, and a forward pass that had started finishes and its
answer is discarded. Inference goes only
through :class:`posereg.predict.Predictor`; nothing here imports the training loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect

from posereg import __version__
from posereg.data.badinput import BadInputError
from posereg.data.image_header import ImageTooLargeError
from posereg.data.image_io import apply_orientation, decode_bgr, read_exif_orientation
from posereg.predict import PoseResult, Predictor, box_problem
from posereg.serve.schema import (
    ErrorResponse,
    Health,
    Keypoint,
    Limits,
    ModelInfo,
    Person,
    PredictJSON,
    PredictResponse,
    Timings,
)

__all__ = ["create_app", "ServeSettings"]

# uvicorn's own log (what --log-level sets): one line per aborted upload goes there
logger = logging.getLogger("uvicorn.error")

PREDICT_PATH = "/v1/predict"
WAITING = "waiting for the model"  # the phase of a request queued behind others


@dataclass
class ServeSettings:
    """Limits of ``posereg serve``.

    Arguments:
        max_upload_mb: largest request body (the upload, or the JSON with the base64 image), MiB.
        max_boxes: most person boxes per request.
        timeout_s: longest a request may take, waiting for the model included.
        max_pixels: most pixels (width x height) of an uploaded image, read from its header
            before decoding; the default holds any phone or camera photo (a 48 MP phone photo
            is 8000 x 6000 px) and bounds the decoded image at about 200 MB of BGR pixels.
        checkpoint: shown by ``/v1/model``.
    """

    max_upload_mb: float = 10.0
    max_boxes: int = 32
    timeout_s: float = 30.0
    max_pixels: int = 64_000_000
    checkpoint: str = ""

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_boxes", "timeout_s", "max_pixels"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a ``POST /v1/predict`` body over ``limit`` bytes.

    The Content-Length header is checked before anything is read; a body sent without one
    (chunked) is counted as it arrives. Either way the rest of the body, up to ``drain`` bytes,
    is read and discarded before the 413 goes out: clients that send the whole body before
    reading the answer (``http.client``, ``requests``) then get the 413 and its message rather
    than a broken connection. A body larger than that is cut off (connection closed).
    """

    def __init__(self, app: Any, limit: int, on_reject: Any = None) -> None:
        self.app, self.limit, self.on_reject = app, limit, on_reject
        self.drain = 4 * limit + 16 * 2**20

    def _message(self) -> str:
        return (
            f"the request body is over the upload limit of {self.limit / 2**20:g} MiB "
            f"(posereg serve --max-upload-mb)"
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT_PATH:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            if self.on_reject is not None:  # the route never sees this request: count it here
                self.on_reject()
            return await self._reject(scope, receive, send, 0, int(length))
        seen = 0
        done = False
        started = False

        async def limited_receive() -> dict:
            nonlocal seen, done
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except _TooLarge:
            if started:
                raise
            await self._reject(scope, receive, send, seen, None if done else -1)

    async def _reject(
        self, scope: dict, receive: Any, send: Any, seen: int, length: int | None
    ) -> None:
        """Drain what is left of the body (``length``: total bytes, -1 unknown, None: all read)
        unless it is over ``drain``; then answer 413."""
        complete = length is None
        if length is not None and length <= self.drain:
            while seen <= self.drain:
                message = await receive()
                if message["type"] != "http.request":
                    break
                seen += len(message.get("body", b""))
                if not message.get("more_body", False):
                    complete = True
                    break
        response = JSONResponse({"detail": self._message()}, status_code=413)
        if not complete:
            response.headers["Connection"] = "close"
        await response(scope, receive, send)


class ModelRunner:
    """The model's single worker thread, and what /health reports about it."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posereg-model")
        self.lock = threading.Lock()
        self.waiting = 0  # requests queued or running on the model thread
        self.requests = 0
        self.failed = 0
        self.started = time.monotonic()

    async def predict(
        self, image: np.ndarray, boxes: np.ndarray | None, progress: dict[str, str] | None = None
    ) -> tuple[PoseResult, float, float]:
        """(result, queue seconds, predict seconds); cancellable while queued.

        ``progress["phase"]`` is set to ``"waiting for the model"`` now and to ``"predicting"``
        when the forward pass starts (what a timeout reports)."""
        queued = time.perf_counter()
        times: dict[str, float] = {}
        progress = {} if progress is None else progress
        progress["phase"] = WAITING

        def job() -> PoseResult:
            progress["phase"] = "predicting"
            times["start"] = time.perf_counter()
            try:
                return self.predictor(image, boxes)
            finally:
                times["end"] = time.perf_counter()

        with self.lock:
            self.waiting += 1
        # done when the job ends, or when it is cancelled while still queued (a timeout)
        job_future = self.executor.submit(job)
        job_future.add_done_callback(lambda _: self._done())
        result = await asyncio.wrap_future(job_future)  # cancelling this cancels a queued job
        return result, times["start"] - queued, times["end"] - times["start"]

    def count(self, failed: bool) -> None:
        """One more answered request for /health."""
        with self.lock:
            self.requests += 1
            self.failed += failed

    def _done(self) -> None:
        with self.lock:
            self.waiting -= 1


def _decode(data: bytes, exif_orientation: bool, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 BGR of an uploaded file, upright by its EXIF tag like a file on disk;
    413 when its header says it has more than ``max_pixels`` pixels (nothing is decoded)."""
    if not data:
        raise HTTPException(400, "image is empty (0 bytes)")
    try:
        pixels = decode_bgr(data, "image", max_pixels=max_pixels).pixels
    except ImageTooLargeError as e:
        raise HTTPException(413, f"{e.problem} (posereg serve --max-pixels)") from None
    except BadInputError as e:
        raise HTTPException(400, f"image cannot be decoded: {e.problem or e}") from None
    if exif_orientation:
        pixels = apply_orientation(pixels, read_exif_orientation(data))
    return pixels


def _json_type(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words: 'a number', 'an array', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = {dict: "an object", list: "an array", str: "a string", int: "a number"}
    return next((k for t, k in kinds.items() if isinstance(value, t)), "a number")


def _parse_boxes(value: Any, max_boxes: int) -> np.ndarray | None:
    """(N, 4) boxes from the ``boxes`` field (JSON text or an already parsed list); 422 naming
    the box at fault."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise HTTPException(422, f"boxes is not valid JSON ({e})") from None
    if not isinstance(value, list):
        raise HTTPException(422, "boxes must be a JSON list of [x, y, w, h] boxes")
    if len(value) > max_boxes:
        raise HTTPException(
            422,
            f"too many boxes: {len(value)} (the limit is {max_boxes}, posereg serve --max-boxes)",
        )
    out = np.zeros((len(value), 4))
    for i, box in enumerate(value):
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
            or not all(math.isfinite(v) for v in box)
        ):
            raise HTTPException(
                422,
                f"box #{i}: expected [x, y, w, h], 4 finite numbers; got {json.dumps(box)[:80]}",
            )
        out[i] = box
    return out


def _response(
    predictor: Predictor, result: PoseResult, image: np.ndarray, timings: Timings
) -> PredictResponse:
    names = predictor.skeleton.keypoint_names
    people = []
    for i in range(len(result.keypoints)):
        keypoints = [
            Keypoint(
                name=names[k],
                x=float(result.keypoints[i, k, 0]),
                y=float(result.keypoints[i, k, 1]),
                confidence=float(result.confidence[i, k]),
                sigma=None
                if result.sigma is None
                else (float(result.sigma[i, k, 0]), float(result.sigma[i, k, 1])),
                region=None
                if result.region is None
                else (float(result.region[i, k, 0]), float(result.region[i, k, 1])),
                sigma_calibrated=None
                if result.sigma_calibrated is None
                else (
                    float(result.sigma_calibrated[i, k, 0]),
                    float(result.sigma_calibrated[i, k, 1]),
                ),
            )
            for k in range(len(names))
        ]
        box = tuple(float(v) for v in result.boxes[i])
        people.append(Person(box=box, score=float(result.scores[i]), keypoints=keypoints))  # type: ignore[arg-type]
    return PredictResponse(
        model=predictor.name,
        skeleton=predictor.skeleton.name,
        image_width=int(image.shape[1]),
        image_height=int(image.shape[0]),
        sigma_calibration=predictor.sigma_scale,
        sigma_calibration_fitted=predictor.calibration.fitted,
        region_p=result.region_p if result.region is not None else None,
        people=people,
        timings=timings,
    )


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "the image is empty or cannot be decoded, or the body is not valid JSON/base64",
        413: "the request body is over --max-upload-mb, or the image over --max-pixels",
        415: "the request is neither multipart/form-data nor application/json",
        422: "boxes are malformed, outside the image, or more than --max-boxes",
        503: "not answered within --timeout seconds: the model is busy (retry later, see "
        "Retry-After), or the request itself took longer",
    }.items()
}

_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "boxes": {
                            "type": "string",
                            "description": "JSON list of [x, y, w, h] person boxes (pixels)",
                        },
                    },
                }
            },
            "application/json": {"schema": PredictJSON.model_json_schema()},
        },
    }
}


def _timeout_response(timeout_s: float, phase: str) -> JSONResponse:
    """503 for a request not answered within ``timeout_s``: "busy" with ``Retry-After`` if it
    was still queued behind other requests; otherwise it took that long itself, and says where
    (retrying the same request would time out again)."""
    if phase == WAITING:
        return JSONResponse(
            {"detail": f"not answered within {timeout_s:g} s (posereg serve --timeout); "
             "the model is busy, retry later"},
            status_code=503,
            headers={"Retry-After": str(max(1, math.ceil(timeout_s)))},
        )  # fmt: skip
    return JSONResponse(
        {"detail": f"the request exceeded the timeout ({timeout_s:g} s, posereg serve "
         f"--timeout) while {phase}; a smaller image or fewer boxes take less time"},
        status_code=503,
    )  # fmt: skip


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The ``posereg serve`` app for ``predictor`` (see the module docstring and docs/serve.md)."""
    settings = settings or ServeSettings()
    runner = ModelRunner(predictor)
    app = FastAPI(
        title="posereg",
        version=__version__,
        description="Human pose with per-keypoint uncertainty (RLE sigma). See docs/serve.md.",
    )
    app.add_middleware(
        BodyLimit,  # type: ignore[arg-type]
        limit=settings.max_upload_bytes,
        on_reject=lambda: runner.count(failed=True),
    )
    page = resources.files("posereg.serve").joinpath("static/index.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(
            status="ok",
            model=predictor.name,
            busy=runner.waiting > 0,
            requests=runner.requests,
            failed=runner.failed,
            uptime_s=round(time.monotonic() - runner.started, 3),
        )

    @app.get("/v1/model", response_model=ModelInfo)
    async def model_info() -> ModelInfo:
        cfg = predictor.config
        skeleton = predictor.skeleton
        return ModelInfo(
            name=predictor.name,
            checkpoint=settings.checkpoint,
            backbone=str(getattr(cfg.model, "backbone", "")) if cfg else "",
            head=str(getattr(cfg.model, "head", "")) if cfg else "",
            skeleton=skeleton.name,
            keypoint_names=list(skeleton.keypoint_names),
            limbs=[tuple(limb) for limb in skeleton.limbs],  # type: ignore[misc]
            flip_pairs=[tuple(pair) for pair in skeleton.flip_pairs],  # type: ignore[misc]
            input_size=predictor.input_size,
            flip_test=predictor.flip_test,
            sigma_calibration=predictor.sigma_scale,
            sigma_calibration_fitted=predictor.calibration.fitted,
            keypoint_sigma_scale=[
                (float(x), float(y)) for x, y in predictor.calibration.scale.tolist()
            ],
            metrics={
                k: v
                for k, v in predictor.metrics.items()
                if isinstance(v, int | float | str | bool) or v is None
            },
            limits=Limits(
                max_upload_mb=settings.max_upload_mb,
                max_boxes=settings.max_boxes,
                timeout_s=settings.timeout_s,
                max_pixels=settings.max_pixels,
            ),
        )

    async def read_request(request: Request) -> tuple[bytes, np.ndarray | None]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=8)
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise HTTPException(400, "the multipart field 'image' (a file) is missing")
            data = await upload.read()
            boxes = form.get("boxes")
            return data, _parse_boxes(boxes if isinstance(boxes, str) else None, settings.max_boxes)
        if media == "application/json":
            try:
                payload = json.loads(await request.body())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise HTTPException(400, f"the body is not valid JSON ({e})") from None
            if not isinstance(payload, dict):
                raise HTTPException(
                    400,
                    'expected a JSON object {"image": "<base64>", "boxes": [[x, y, w, h]]}; '
                    f"got {_json_type(payload)}",
                )
            if "image" not in payload:
                raise HTTPException(
                    400,
                    "the JSON field 'image' is missing (base64 of the image file, or a data: URL)",
                )
            if not isinstance(payload["image"], str):
                raise HTTPException(
                    400,
                    "the JSON field 'image' must be a string (base64 of the image file, or a "
                    f"data: URL); got {_json_type(payload['image'])}",
                )
            text = payload["image"]
            if text.startswith("data:"):  # a data: URL, as a browser's FileReader gives
                text = text.partition(",")[2]
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as e:
                raise HTTPException(400, f"image is not valid base64 ({e})") from None
            return data, _parse_boxes(payload.get("boxes"), settings.max_boxes)
        raise HTTPException(
            415,
            f"Content-Type must be multipart/form-data (the file in the field 'image') or "
            f"application/json (base64 in 'image'); got {media or 'none'!r}",
        )

    async def answer(request: Request, progress: dict[str, str]) -> PredictResponse:
        arrived = time.perf_counter()
        progress["phase"] = "reading the request"
        data, boxes = await read_request(request)
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        progress["phase"] = "decoding the image"
        image = await loop.run_in_executor(
            None, _decode, data, predictor.exif_orientation, settings.max_pixels
        )
        decoded = time.perf_counter()
        if boxes is not None and predictor.finds_people:
            raise HTTPException(
                422,
                f"this model ({predictor.name}) finds the people itself: send the image "
                "without boxes",
            )
        if boxes is not None:
            for i, box in enumerate(boxes):
                problem = box_problem(box, image.shape[:2])
                if problem is not None:
                    raise HTTPException(422, f"box #{i}: {problem}")
        result, queue_s, predict_s = await runner.predict(image, boxes, progress)
        timings = Timings(
            decode_ms=round(1000 * (decoded - start), 3),
            queue_ms=round(1000 * queue_s, 3),
            predict_ms=round(1000 * predict_s, 3),
            total_ms=round(1000 * (time.perf_counter() - arrived), 3),
        )
        return _response(predictor, result, image, timings)

    @app.post(
        PREDICT_PATH,
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra=_REQUEST_BODY,
        summary="the people in an image, with per-keypoint confidence and sigma",
    )
    async def predict(request: Request) -> PredictResponse | JSONResponse:
        failed = True
        progress: dict[str, str] = {}
        try:
            async with asyncio.timeout(settings.timeout_s):
                response = await answer(request, progress)
            failed = False
            return response
        except TimeoutError:
            return _timeout_response(settings.timeout_s, progress.get("phase", ""))
        except ClientDisconnect:  # nobody is left to answer: one line in the log, no traceback
            client = (
                f"{request.client.host}:{request.client.port}" if request.client else "a client"
            )
            logger.warning(
                "%s disconnected before its request to %s was read in full; nothing answered",
                client, PREDICT_PATH,
            )  # fmt: skip
            return Response(status_code=400)
        finally:
            runner.count(failed)

    return app
