"""Reading a request's images: multipart files, base64 JSON or pixel grids, each checked, with a 4xx
naming the field for anything else."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncIterator

import numpy as np
from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from digitlab.config import SERVE_TIMEOUT
from digitlab.errors import DigitlabError
from digitlab.preprocess import SIDE
from digitlab.serve.schemas import (
    JSON,
    MAX_BATCH,
    MAX_BODY,
    MAX_ERRORS_SHOWN,
    MULTIPART,
    PIXELS,
    BatchRequest,
    PredictRequest,
)


def problem(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def _media_type(request: Request) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (MULTIPART, JSON):
        raise problem(415, f"Content-Type: expected multipart/form-data or application/json, got {media or 'none'!r}")
    return media


async def _limited_stream(request: Request) -> AsyncIterator[bytes]:
    """The body as it arrives, refused with 413 once it passes MAX_BODY bytes (declared or actually sent),
    and with 408 (closing the connection) when it has not all arrived within the app's `timeout` seconds
    (app.state.timeout, set by create_app) of the first read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise problem(413, f"body: {int(declared)} bytes, at most {MAX_BODY} allowed")
    timeout = getattr(request.app.state, "timeout", SERVE_TIMEOUT)
    deadline = asyncio.get_running_loop().time() + timeout
    size, chunks = 0, request.stream()
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise HTTPException(
                status_code=408,
                detail=f"body: {size} bytes arrived in {timeout:g} s and the rest did not; "
                "expected the whole body within the server's --timeout",
                headers={"Connection": "close"},  # the rest of the body is never read
            ) from None
        size += len(chunk)
        if size > MAX_BODY:
            raise problem(413, f"body: more than {MAX_BODY} bytes, at most {MAX_BODY} allowed")
        yield chunk


# Entries and values (numbers, strings, lists) a JSON body may hold before it is refused unparsed: twice
# one 28x28 grid's, or MAX_BATCH grids'; what is between is parsed, and a wrong shape is its grid's 422.
GRID_VALUES = SIDE * SIDE + SIDE + 2
MAX_ENTRIES = {False: 2 * SIDE, True: MAX_BATCH}  # rows of one grid; images of a batch
MAX_VALUES = {False: 2 * GRID_VALUES, True: 2 * MAX_BATCH * GRID_VALUES}
_SHALLOW = re.compile(rb'[][{},"]')  # what matters at depth 1-2, where commas separate a field's entries
_DEEP = re.compile(rb'[][{}"]')  # deeper, commas are only counted (bytes.count, not one match each)


class JsonCounter:
    """The entries of a JSON object's lists (a field's images or grids) and its values in all, counted
    as the body arrives without building it: a body of 1.5 million cheap entries is refused after its
    first few kB, before pydantic spends seconds and hundreds of MB on it. Counts are upper bounds (a
    malformed body is the parser's to explain); strings are skipped whole, escaped quotes included."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.pos = 0  # where scanning resumes
        self.depth = 0
        self.string_at: int | None = None  # where the string being skipped began
        self.key = ""  # the last string closed at depth 1: the field whose list is being counted
        self.entries = 1  # in the lists at depth 2 (commas + 1)
        self.values = 0

    def feed(self, chunk: bytes, max_entries: int, max_values: int) -> None:
        """Add `chunk` and scan it, stopping once either count passes its maximum."""
        body, pos = self.body, self.pos
        body += chunk
        n = len(body)
        while pos < n and self.entries <= max_entries and self.values <= max_values:
            if self.string_at is not None:
                end = body.find(b'"', pos)
                if end < 0:
                    pos = n
                    break
                k = end
                while body[k - 1] == 0x5C:  # backslashes before the quote: an odd run escapes it
                    k -= 1
                pos = end + 1
                if (end - k) % 2 == 0:
                    if self.depth == 1 and end - self.string_at < 64:
                        self.key = body[self.string_at + 1 : end].decode("utf-8", "replace")
                    self.string_at = None
                continue
            m = (_SHALLOW if self.depth <= 2 else _DEEP).search(body, pos)
            end = m.start() if m else n
            if self.depth > 2:
                self.values += body.count(b",", pos, end)
            if m is None:
                pos = n
                break
            pos, c = end + 1, body[end]
            if c == 0x22:  # "
                self.string_at = end
            elif c in b"[{":
                self.depth += 1
                self.values += 1
            elif c in b"]}":
                self.depth -= 1
            else:  # a comma at depth 1 or 2
                self.values += 1
                if self.depth == 2:
                    self.entries += 1
        self.pos = pos


async def _read_body(request: Request, many: bool) -> bytes:
    """The whole (JSON) body, within MAX_BODY, refused with 413 as soon as its lists hold more entries
    than MAX_ENTRIES or it holds more values than MAX_VALUES."""
    max_entries, max_values = MAX_ENTRIES[many], MAX_VALUES[many]
    counter = JsonCounter()
    async for chunk in _limited_stream(request):
        counter.feed(chunk, max_entries, max_values)
        if counter.entries > max_entries:
            field, what = counter.key or "body", "images" if many else "rows"
            raise problem(413, f"{field}: more than {max_entries} {what}, at most {max_entries} per request")
        if counter.values > max_values:
            what = f"{MAX_BATCH} grids" if many else "one grid"
            raise problem(413, f"body: more than {max_values} JSON values, at most {max_values} (twice {what})")
    if not counter.body:
        raise problem(422, "body: empty; expected multipart/form-data or a JSON object")
    return bytes(counter.body)


async def _read_form(request: Request, field: str) -> list[tuple[str | None, bytes]]:
    """The (filename, bytes) of every part named `field`; any other part is an unknown field. Starlette's
    own multipart parser reads the body as it streams in, within MAX_BODY."""
    try:
        # Files are counted as they stream in: the parser stops at the first one past MAX_BATCH, before
        # 150,000 empty parts cost seconds of the event loop.
        form = await MultiPartParser(
            request.headers, _limited_stream(request), max_files=MAX_BATCH, max_fields=16
        ).parse()
    except MultiPartException as e:
        if e.message.startswith("Too many files"):
            raise problem(413, f"{field}: more than {MAX_BATCH} files, at most {MAX_BATCH} per request") from None
        raise problem(422, f"body: malformed multipart/form-data ({e.message})") from None
    try:
        unknown = sorted(set(form.keys()) - {field})
        if unknown:
            raise problem(422, f"{', '.join(unknown)}: unknown field; expected only {field!r}")
        parts = form.getlist(field)
        if not parts:
            raise problem(422, f"{field}: missing; expected a multipart file field named {field!r}")
        if len(parts) > MAX_BATCH:
            raise problem(413, f"{field}: {len(parts)} files, at most {MAX_BATCH} per request")
        files = []
        for part in parts:
            if not isinstance(part, UploadFile):
                raise problem(422, f"{field}: expected a file (a part with a filename), got a text field")
            files.append((part.filename, await part.read()))
        return files
    finally:
        await form.close()


def _parse_json(model: type[BaseModel], body: bytes) -> BaseModel:
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise problem(422, _explain(e)) from None


def _explain(e: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as one line: 'pixels[3][5]: Input should be ... 255, got 300; ...'."""
    parts = []
    for err in e.errors(include_url=False)[:MAX_ERRORS_SHOWN]:
        loc = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "json_invalid":
            msg = f"not valid JSON ({err.get('ctx', {}).get('error', msg)})"
        elif not isinstance(err.get("input"), (dict, list)) and err["type"] != "missing":
            msg += f", got {err['input']!r}"[:120]
        parts.append(f"{loc or 'body'}: {msg}")
    if e.error_count() > MAX_ERRORS_SHOWN:
        parts.append(f"and {e.error_count() - MAX_ERRORS_SHOWN} more")
    return "; ".join(parts)


def decode_image(text: str, field: str) -> bytes:
    """Base64, or a data: URL with base64 content, -> the image file's bytes."""
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise DigitlabError(
                f"{field}: expected a base64 data: URL like data:image/png;base64,..., got {header[:40]!r}"
            )
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DigitlabError(f"{field}: not valid base64; expected an image file in base64 or a data: URL") from None
    if not data:
        raise DigitlabError(f"{field}: empty; expected an image file in base64 or a data: URL")
    return data


def _decode_all(texts: list[str]) -> list:
    """Each base64 image's bytes, or the error that stands in for it."""
    out = []
    for i, text in enumerate(texts):
        try:
            out.append(decode_image(text, f"images[{i}]"))
        except DigitlabError as e:
            out.append(e)
    return out


def _check_grids(grids: list) -> list:
    """Each 28x28 grid as float32, or the error that stands in for it."""
    out = []
    for i, grid in enumerate(grids):
        try:
            out.append(np.asarray(PIXELS.validate_python(grid, strict=True), np.float32))
        except ValidationError as e:
            out.append(DigitlabError(_explain(e, prefix=f"pixels[{i}]")))
    return out


async def read_images(request: Request, many: bool) -> tuple[list, list[str], list[str | None]]:
    """A request's images, checked: (inputs, the field of each, the file name of each). An input is image
    bytes, a float32 28x28 array, or (batch only) the DigitlabError that stands in for a bad image."""
    media = _media_type(request)
    if media == MULTIPART:
        files = await _read_form(request, "files" if many else "file")
        if not many and len(files) != 1:
            raise problem(422, f"file: expected one file, got {len(files)}; /api/predict/batch takes several")
        fields = [f"files[{i}]" for i in range(len(files))] if many else ["file"]
        return [data for _, data in files], fields, [name for name, _ in files]
    body = await _read_body(request, many)
    if not many:
        req = _parse_json(PredictRequest, body)
        if req.pixels is not None:
            return [np.asarray(req.pixels, np.float32)], ["pixels"], [None]
        try:
            return [decode_image(req.image, "image")], ["image"], [None]
        except DigitlabError as e:
            raise problem(422, str(e)) from None
    req = _parse_json(BatchRequest, body)
    field = "images" if req.images is not None else "pixels"
    items = getattr(req, field)
    if not items:
        raise problem(422, f"{field}: empty list; expected at least one image")
    if len(items) > MAX_BATCH:
        raise problem(413, f"{field}: {len(items)} images, at most {MAX_BATCH} per request")
    inputs = _decode_all(items) if field == "images" else _check_grids(items)
    return inputs, [f"{field}[{i}]" for i in range(len(items))], [None] * len(items)
