"""The typed answers of ``posereg serve`` (pydantic models; OpenAPI at ``/docs``).

Coordinates are pixels of the uploaded image after its EXIF orientation is applied (the
upright photo), x to the right and y down, as :class:`posereg.predict.PoseResult`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["Keypoint", "Person", "Timings", "PredictResponse", "ModelInfo", "Health", "Limits",
           "ErrorResponse", "PredictJSON"]  # fmt: skip


class Keypoint(BaseModel):
    """One keypoint of one person."""

    name: str = Field(description="the skeleton's name of the keypoint, e.g. left_wrist")
    x: float = Field(description="pixels, to the right")
    y: float = Field(description="pixels, down")
    confidence: float = Field(
        description="the head's per-keypoint score in [0, 1] (1 - mean sigma_hat, Eq. 9 of the "
        "RLE paper, for heads with sigma; the heatmap maximum for the heatmap head)"
    )
    sigma: tuple[float, float] | None = Field(
        description="per-axis (x, y) sigma in pixels; null when the head predicts none. "
        "The head's raw output, a relative scale: see sigma_calibrated and region for what it "
        "means in pixels"
    )
    sigma_calibrated: tuple[float, float] | None = Field(
        default=None,
        description="per-axis (x, y) calibrated sigma in pixels, c_k x sigma: a Laplace scale per "
        "keypoint and axis fitted on the run's validation set, so the mean |error| per axis is about "
        "this (c_k = 1 when the checkpoint holds no calibration: see sigma_calibration_fitted); "
        "null when the head predicts no sigma",
    )
    region: tuple[float, float] | None = Field(
        default=None,
        description="semi-axes (x, y) in pixels of the keypoint's predictive region at the "
        "response's region_p: the axis-aligned ellipse that holds the true keypoint with "
        "probability region_p if the model is calibrated (r_p x sigma, r_p from the density "
        "the loss learned; docs/uncertainty.md); null when the loss learns no density",
    )


class Person(BaseModel):
    """One person: the box it was cropped from, its instance score and its keypoints."""

    box: tuple[float, float, float, float] = Field(description="(x, y, w, h) pixels")
    score: float = Field(description="instance score (box score + mean + max confidence)")
    keypoints: list[Keypoint]


class Timings(BaseModel):
    """Where the request's time went, in milliseconds."""

    decode_ms: float = Field(description="decoding the image")
    queue_ms: float = Field(description="waiting for the model (one request at a time)")
    predict_ms: float = Field(description="the model (crops, forward pass, flip test)")
    total_ms: float = Field(description="from the request's arrival to the answer")


class PredictResponse(BaseModel):
    """``POST /v1/predict``: the people in the image."""

    model: str = Field(description="the checkpoint's run name")
    skeleton: str
    image_width: int
    image_height: int
    sigma_calibration: float = Field(
        description="median |error| / sigma of the checkpoint's evaluation (1 when unknown): "
        "sigma x this is the median error in pixels"
    )
    sigma_calibration_fitted: bool = Field(
        default=False,
        description="whether the checkpoint holds per-keypoint scales c_k fitted on its "
        "validation set; false: sigma_calibrated = sigma (c = 1)",
    )
    region_p: float | None = Field(
        default=None,
        description="the probability level p of each keypoint's region (0.9); null when the "
        "model has no regions",
    )
    people: list[Person]
    timings: Timings


class Limits(BaseModel):
    """The server's request limits."""

    max_upload_mb: float
    max_boxes: int
    timeout_s: float
    max_pixels: int = Field(description="most pixels (width x height) of an uploaded image")


class ModelInfo(BaseModel):
    """``GET /v1/model``: what the server runs."""

    name: str = Field(description="the checkpoint's run name")
    checkpoint: str
    backbone: str
    head: str
    skeleton: str
    keypoint_names: list[str]
    limbs: list[tuple[int, int]] = Field(description="(a, b) keypoint indices drawn as bones")
    flip_pairs: list[tuple[int, int]]
    input_size: tuple[int, int] = Field(description="(h, w) of the model input")
    flip_test: bool
    sigma_calibration: float
    sigma_calibration_fitted: bool = Field(
        default=False, description="whether keypoint_sigma_scale was fitted (else all 1)"
    )
    keypoint_sigma_scale: list[tuple[float, float]] = Field(
        default_factory=list,
        description="per keypoint, the (x, y) scales c_k of sigma_calibrated = c_k x sigma "
        "(Laplace MLE on the validation residuals; 1 when not fitted)",
    )
    metrics: dict[str, float | int | str | bool | None] = Field(
        description="the checkpoint's evaluation metrics (e.g. AP, sigma_calibration)"
    )
    limits: Limits


class Health(BaseModel):
    """``GET /health``."""

    status: Literal["ok"]
    model: str
    busy: bool = Field(description="a request is being predicted or waits for the model")
    requests: int = Field(description="predict requests answered (any status)")
    failed: int = Field(description="of which failed (status >= 400)")
    uptime_s: float


class ErrorResponse(BaseModel):
    """Any error: what was wrong, in one sentence."""

    detail: str


class PredictJSON(BaseModel):
    """The JSON form of ``POST /v1/predict`` (the other is multipart with the file in ``image``)."""

    image: str = Field(description="the encoded image (JPEG, PNG, ...) in base64, or a data: URL")
    boxes: list[list[float]] | None = Field(
        default=None,
        description="person boxes [[x, y, w, h], ...] in pixels; none: the whole image",
    )
