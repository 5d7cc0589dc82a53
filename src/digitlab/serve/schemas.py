"""The request and response shapes of the REST API: what /docs shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, model_validator

from digitlab.predict.count import MAX_DIGITS
from digitlab.preprocess import SIDE

MAX_BODY = 10 * 1024 * 1024  # bytes in one request body
MAX_BATCH = 256  # images in one batch request
MAX_MEGAPIXELS = 100  # decoded pixels in one request, all its images together (from their headers)
MAX_ERRORS_SHOWN = 5  # validation errors listed in one `detail`
MULTIPART, JSON = "multipart/form-data", "application/json"

Pixel = Annotated[float, Field(strict=True, ge=0, le=255, allow_inf_nan=False)]
Pixels = Annotated[
    list[Annotated[list[Pixel], Field(min_length=SIDE, max_length=SIDE)]],
    Field(
        min_length=SIDE,
        max_length=SIDE,
        description=f"{SIDE} rows of {SIDE} numbers 0-255, ink bright on black "
        "and centred as in MNIST; used as given, not preprocessed",
    ),
]
PIXELS = TypeAdapter(Pixels)


class PredictRequest(BaseModel):
    """One image: exactly one of `image` or `pixels`."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(
        None,
        description="An image file (PNG, JPEG, BMP, GIF, WebP, TIFF), base64 or a "
        "data: URL such as a canvas's toDataURL()",
    )
    pixels: Pixels | None = None

    @model_validator(mode="after")
    def _one_input(self):
        if (self.image is None) == (self.pixels is None):
            raise ValueError("expected exactly one of `image` (base64 or data: URL) or `pixels` (28x28 numbers 0-255)")
        return self


class BatchRequest(BaseModel):
    """Several images: exactly one of `images` or `pixels`. A bad entry gets an error; the rest go on."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] | None = Field(None, description="Image files, each base64 or a data: URL")
    # Checked one entry at a time, so that one bad grid does not fail the others.
    pixels: Annotated[list[Any] | None, WithJsonSchema({"type": "array", "items": PIXELS.json_schema()})] = Field(
        None, description=f"Images as {SIDE}x{SIDE} numbers 0-255, already MNIST-like"
    )

    @model_validator(mode="after")
    def _one_input(self):
        if (self.images is None) == (self.pixels is None):
            raise ValueError("expected exactly one of `images` (base64 or data: URLs) or `pixels` (28x28 grids)")
        return self


# The `digits` query parameter of /api/read and /api/read/batch, parsed by digitlab.predict.count (a 422
# naming it otherwise): one rule for the API, the CLI's --digits and batch.
DIGITS_DOC = (
    f"How many digits each number has, all lines together: 4, or a range like 5-9 (1 to {MAX_DIGITS}). The "
    "reading is the best one with that many digits; one that had to be forced to it is unsure (expected 4 digits, "
    "found 3)"
)


class ModelName(BaseModel):
    name: str = Field(description="The run directory's name")
    architecture: str = Field(description="mlp or cnn (single-digit runs), line (a line model's run)")


class Candidate(BaseModel):
    digit: int
    label: str
    probability: float


class Prediction(BaseModel):
    digit: int | None = Field(description="The predicted class index; null when unsure")
    label: str | None = Field(description="The predicted class name; null when unsure")
    confidence: float | None = Field(
        description="Calibrated probability of the most likely class; null when the image holds no digit "
        "(no ink, or not a digit: see `reason`)"
    )
    probabilities: list[float] | None = Field(
        description="Calibrated probability of each digit class, in class order; null when the image holds no "
        'digit. With a model that has a "not a digit" output they add up to less than 1: the rest is the '
        "probability that the image is not a digit"
    )
    top3: list[Candidate] | None = Field(
        description="The three most likely classes; null when the image holds no digit"
    )
    unsure: bool
    reason: str | None = Field(
        description="Why the prediction is unsure: no ink, not a digit, or confidence below the threshold"
    )
    model: ModelName
    preprocessed: list[list[int]] = Field(description=f"The {SIDE}x{SIDE} image (0-255) the model received")


class BatchPrediction(Prediction):
    index: int = Field(description="Position in the request")
    name: str | None = Field(None, description="The uploaded file's name (multipart only)")


class BatchFailure(BaseModel):
    index: int
    name: str | None = None
    error: str = Field(description="What was wrong with this image")


class BatchResponse(BaseModel):
    results: list[BatchPrediction | BatchFailure]


class ReadDigit(BaseModel):
    digit: int = Field(description="The most likely class index, also when unsure")
    confidence: float = Field(description="Calibrated probability of that class")
    box: list[int] = Field(description="[x0, y0, x1, y1] in px of the uploaded image, ends exclusive")
    line: int = Field(description="0-based line, top to bottom")
    unsure: bool
    preprocessed: list[list[int]] = Field(description=f"The {SIDE}x{SIDE} image (0-255) the model received")


class Reading(BaseModel):
    text: str | None = Field(description='The best reading, lines joined by "\\n"; null when there is no ink')
    lines: list[str]
    confidence: float | None = Field(
        description="Probability that the whole reading is right: the product of the digits' confidences"
    )
    unsure: bool = Field(description="Any digit unsure, the segmentation ambiguous, or no ink")
    reason: str | None
    digits: list[ReadDigit] = Field(description="Left to right within each line, lines top to bottom")
    size: list[int] = Field(description="[width, height] of the uploaded image, in which the boxes are measured")
    model: ModelName


class BatchReading(Reading):
    index: int = Field(description="Position in the request")
    name: str | None = Field(None, description="The uploaded file's name (multipart only)")


class ReadBatchResponse(BaseModel):
    results: list[BatchReading | BatchFailure]


Kind = Annotated[
    Literal["digit", "line"],
    Field(
        description='"digit": a single-digit run (/api/predict classifies a digit, /api/read segments a number); '
        '"line": a line model\'s run, which reads whole lines (/api/read only; /api/predict answers 409)'
    ),
]


class Health(BaseModel):
    status: str
    kind: Kind
    model: ModelName
    runtime: Literal["keras", "onnx"] = Field(
        description="What runs the model: Keras (model.keras) or ONNX Runtime (model.onnx, the default where the "
        "run has one exported from its model.keras)"
    )
    threads: int | None = Field(
        description="Threads each model call uses in this process; null: the runtime's default, one per core"
    )
    uptime_s: float
    internal_errors: int = Field(description="Requests answered 500 since start-up; should stay 0")
    disconnects: int = Field(description="Clients that went away before their request had all arrived")
    pid: int = Field(description="The server process that answered (one of several with --workers)")


class ModelReport(BaseModel):
    name: str
    kind: Kind
    config: dict = Field(description="The run's config.json: model, training and data configuration")
    validation: dict | None = Field(description="Validation figures of the best epoch")
    test: dict | None = Field(description="Test figures, when the run has been evaluated")
    calibration: dict | None = Field(description="Temperature and unsure threshold, when fitted")


class Problem(BaseModel):
    detail: str


ERRORS = {
    413: {"model": Problem, "description": f"Body over {MAX_BODY} bytes, or more than {MAX_BATCH} images"},
    415: {"model": Problem, "description": "Content-Type is neither multipart/form-data nor application/json"},
    422: {"model": Problem, "description": "Not an image, empty, truncated, too many pixels, or a wrong field"},
}
PREDICT_ERRORS = {
    **ERRORS,
    409: {"model": Problem, "description": "The run holds a line model, which reads whole lines: use /api/read"},
}


def body_doc(json_model: type[BaseModel], field: str, many: bool) -> dict:
    """OpenAPI for a body that is either JSON or multipart (the endpoint parses it itself)."""
    file = {"type": "string", "format": "binary"}
    part = {"type": "array", "items": file} if many else file
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": json_model.model_json_schema(ref_template="#/components/schemas/{model}")
                },
                "multipart/form-data": {"schema": {"type": "object", "required": [field], "properties": {field: part}}},
            },
        }
    }
