"""Reading a whole number by segmentation, with a single-digit run (`digitlab read --method segment`).

    to_grey -> find_ink                                  the whole image, as `preprocess` does
            -> segment: lines, candidates, cuts          preprocess/segment.py
            -> normalize_digit, batched classify         the same steps as one digit; the run's calibration
                                                         and unsure rule: the wholes (and the cuts of those
                                                         too wide) in one call, the cuts of unsure ones next
            -> per candidate: whole or cut, by the classifier's combined probability

A single digit goes through exactly the steps `preprocess` takes, so it reads as `predict` reads it.
`hypotheses` asks the model and `decide` chooses, so that `bench/read_numbers.py --tune` can try other
Scorings on the same answers.

With a count of digits to meet (`--digits`, a `DigitCount`) whose reading above has another count, the
model is also asked every cut of every candidate (into three and into equal widths too) and each two neighbours of a line
merged into one, in one more call, and `decide` takes the best-scoring choice per candidate whose digits
number as expected (a sum over candidates, exact: `_with_count`); see `digitlab.predict.count` for when
that makes the reading unsure.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from digitlab.errors import DigitlabError
from digitlab.predict import Predictor, classify
from digitlab.predict.count import LOG_CLEARLY, DigitCount, found_reason
from digitlab.predict.results import ReadDigit, Reading, no_reading, ordinal
from digitlab.preprocess import NO_INK
from digitlab.preprocess.image import FORMATS, WORK_SIDE, to_grey
from digitlab.preprocess.ink import blank_reason, find_ink, ink_levels
from digitlab.preprocess.normalize import normalize_digit
from digitlab.preprocess.segment import Piece, Segmentation, cut_graph, piece_mask, segment

# How a candidate's segmentations are scored, in log-probability: the sum over its digits of the log of
# each one's calibrated confidence, CUT_PENALTY per digit a cut adds, and WIDE_PENALTY per line height
# by which a digit is wider than WIDE_FROM line heights (the model is often sure of two digits squeezed
# into one box). A candidate the model reads surely (not unsure) and no wider than WIDE_FROM is kept
# whole: one digit stays as `predict` reads it. Chosen on numbers composed from validation digits, never
# test ones (`bench/read_numbers.py --tune`; the figures in docs/design/reading.md).
CUT_PENALTY = -1.2
WIDE_PENALTY = -4.0
WIDE_FROM = 1.1
# Two segmentations of a candidate whose combined log-probabilities lie within this are "ambiguous": the
# factor of those tried with the most accurate accepted validation numbers.
AMBIGUOUS = math.log(2.0)
# A candidate is cut into at most this many digits when a reading needs more digits than it found.
MAX_PARTS = 10


@dataclass(frozen=True)
class Scoring:
    """The constants above, together, so that `bench/read_numbers.py --tune` can try others."""

    cut_penalty: float = CUT_PENALTY
    wide_penalty: float = WIDE_PENALTY
    wide_from: float = WIDE_FROM
    ambiguous: float = AMBIGUOUS


SCORING = Scoring()


@dataclass(frozen=True, eq=False)
class Hypotheses:
    """What `read` asks the model, before any segmentation is chosen: the candidates and cuts, and the
    model's answer and crop for each piece asked. `decide` turns it into a Reading under a Scoring."""

    size: tuple[int, int]  # (width, height) of the input image
    scale: tuple[float, float]  # input px per working px, (x, y)
    seg: Segmentation | None  # None when there is no ink
    results: dict  # Piece -> the classify row
    crops: dict  # Piece -> (28, 28) uint8
    scoring: Scoring | None = None  # the pieces asked are those `decide` needs under it; None: all of them
    # For a reading with another count of digits (asked only when needed): (line, candidate) -> its cut
    # graph (segment.cut_graph: (c0, c1) -> Piece), and -> the candidate and the next one merged into one digit.
    graphs: dict = dataclasses.field(default_factory=dict)
    merged: dict = dataclasses.field(default_factory=dict)
    blank: str = NO_INK  # without ink: why (preprocess.blank_reason)


def hypotheses(
    predictor: Predictor, image, scoring: Scoring | None = None, digits: DigitCount | None = None
) -> Hypotheses:
    """Segment the image (a path, bytes, PIL image or array) and classify its pieces; see `ask`."""
    return ask(predictor, *open_image(image), scoring, digits)


def ask(
    predictor: Predictor,
    grey: np.ndarray,
    size: tuple[int, int],
    scoring: Scoring | None,
    digits: DigitCount | None = None,
) -> Hypotheses:
    """Segment a grey image (to_grey's) shown at `size` (width, height) px, and classify its pieces. With
    `scoring`, only those `decide` can use under it: every whole candidate and the cuts' parts of a
    candidate too wide for one digit, in one call, then the cuts' parts of the candidates the model read
    unsurely, in a second call when there are any. None: every part of every cut too, in one call, so
    that any Scoring can decide (the tuner's). With `digits`, when the reading those give has another
    count: every cut of every candidate into two or three and each two neighbours merged, in one more call."""
    scale = (size[0] / grey.shape[1], size[1] / grey.shape[0])
    ink = find_ink(grey)
    if ink is None or not ink.mask.any():
        return Hypotheses(size, scale, None, {}, {}, scoring, blank=blank_reason(grey))
    seg = segment(ink.mask)
    candidates = [(c, seg.line_heights[k]) for k, line in enumerate(seg.lines) for c in line]
    results: dict = {}  # Piece -> classify row
    crops: dict = {}  # Piece -> its 28x28 crop
    if scoring is None:
        _ask(predictor, ink, seg, [p for c, _ in candidates for p in (c.whole, *_parts(c))], results, crops)
    else:
        first = [p for c, h in candidates for p in (c.whole, *(_parts(c) if _too_wide(c, h, scoring) else ()))]
        _ask(predictor, ink, seg, first, results, crops)
        cut = [p for c, h in candidates if _cut(c, h, results, scoring) for p in _parts(c)]
        _ask(predictor, ink, seg, cut, results, crops)  # nothing left to ask when every whole is sure
    h = Hypotheses(size, scale, seg, results, crops, scoring)
    if digits is None or _count(_choose(h, scoring or SCORING)) in digits:
        return h
    graphs, merged = {}, {}
    # the most digits one candidate may have to give: the count asked, less one for each other candidate
    parts = min(MAX_PARTS, max(3, digits.most - (seg.count - 1)))
    for k, line in enumerate(seg.lines):
        for i, c in enumerate(line):
            graphs[k, i] = cut_graph(c.whole, seg.labels, seg.line_heights[k], parts)
            if i + 1 < len(line):
                a, b = c.whole, line[i + 1].whole
                box = (
                    min(a.box[0], b.box[0]),
                    min(a.box[1], b.box[1]),
                    max(a.box[2], b.box[2]),
                    max(a.box[3], b.box[3]),
                )
                merged[k, i] = Piece(tuple(sorted(a.ids + b.ids)), box)
    more = [p for graph in graphs.values() for p in graph.values()] + list(merged.values())
    _ask(predictor, ink, seg, more, results, crops)
    return dataclasses.replace(h, graphs=graphs, merged=merged)


def _ask(predictor: Predictor, ink, seg: Segmentation, pieces: list, results: dict, crops: dict) -> None:
    """Normalise the pieces not asked yet, each once, and classify them in one call into results, crops."""
    pieces = [p for p in dict.fromkeys(pieces) if p not in results]
    if not pieces:
        return
    batch = np.stack([_normalise(ink, seg, p) for p in pieces])
    results.update(zip(pieces, classify(predictor, batch, [True] * len(pieces))))
    crops.update(zip(pieces, batch))


def _too_wide(candidate, height: float, scoring: Scoring) -> bool:
    return candidate.whole.width > scoring.wide_from * height


def _cut(candidate, height: float, results: dict, scoring: Scoring) -> bool:
    """Whether `decide` weighs the candidate's cuts: the model read it unsurely, or it is too wide."""
    return results[candidate.whole]["unsure"] or _too_wide(candidate, height, scoring)


@dataclass(frozen=True)
class _Step:
    """One candidate's reading (or two neighbours' merged into one digit) within a whole reading."""

    line: int
    parts: tuple  # the Pieces read as digits, left to right
    score: float
    other: tuple[int, float] | None = None  # the next best option's (digits, score) when within `ambiguous`


def decide(h: Hypotheses, scoring: Scoring = SCORING, digits: DigitCount | None = None) -> Reading:
    """Per candidate, whole or cut by the combined score; the reading with its reasons. With `digits`, the
    best-scoring reading with that many digits, all lines together, when the best one has another count."""
    if h.scoring is not None and h.scoring.wide_from != scoring.wide_from:
        raise ValueError(f"decide: {scoring} needs every piece asked, hypotheses(..., scoring=None)")
    if h.seg is None:
        return no_reading(h.blank, h.size)
    steps = _choose(h, scoring)
    found = _count(steps)
    reasons = []
    if digits is not None and found not in digits:
        sure = not any(s.other for s in steps) and not any(h.results[p]["unsure"] for s in steps for p in s.parts)
        forced = _with_count(h, scoring, digits, steps)
        if forced is None:  # no reading has that many digits: the best one, unsure
            reasons.append(found_reason(digits, found, sure))
        else:
            gap = sum(s.score for s in steps) - sum(s.score for s in forced)
            reasons.append(found_reason(digits, found, sure and gap > LOG_CLEARLY))  # forced: always unsure
            steps = forced
    return _reading(h, steps, reasons)


def _options(h: Hypotheses, k: int, i: int, scoring: Scoring, every: bool) -> tuple[list[tuple], list[float]]:
    """Candidate i of line k: its readings (the whole first, then its cuts) and their scores. Cuts are
    weighed when `_cut` says so; with `every`, every cut whose parts were asked and the best path of its
    cut graph into each number of digits."""
    candidate, height, results = h.seg.lines[k][i], h.seg.line_heights[k], h.results
    options = [(candidate.whole,)]
    if every:
        cuts = dict.fromkeys((*candidate.cuts, *_best_paths(h, k, i, scoring)))
        options += [parts for parts in cuts if all(p in results for p in parts)]
    elif _cut(candidate, height, results, scoring):
        options += candidate.cuts
    scores = [_score(h, parts, height, scoring) for parts in options]
    return options, scores


def _best_paths(h: Hypotheses, k: int, i: int, scoring: Scoring) -> list[tuple]:
    """The best-scoring cut of candidate i of line k into each number of digits from 2, over its cut graph:
    a path of pieces from its first column to its end, the score a sum over pieces (a dynamic programme
    over the columns, left to right, and the pieces so far)."""
    graph, height = h.graphs.get((k, i), {}), h.seg.line_heights[k]
    x0, x1 = h.seg.lines[k][i].whole.box[0], h.seg.lines[k][i].whole.box[2]
    best: dict = {(x0, 0): (0.0, ())}  # (column, pieces so far) -> (score, pieces)
    for (a, b), piece in sorted(graph.items()):  # by start column: every path into a is complete before
        weight = _score(h, (piece,), height, scoring) + scoring.cut_penalty
        for m in range(MAX_PARTS):
            if (a, m) in best and ((b, m + 1) not in best or best[a, m][0] + weight > best[b, m + 1][0]):
                best[b, m + 1] = (best[a, m][0] + weight, (*best[a, m][1], piece))
    return [best[x1, m][1] for m in range(2, MAX_PARTS + 1) if (x1, m) in best]


def _score(h: Hypotheses, parts: tuple, height: float, scoring: Scoring) -> float:
    return score([h.results[p]["confidence"] for p in parts], [p.width / height for p in parts], scoring)


def _choose(h: Hypotheses, scoring: Scoring) -> list[_Step]:
    """The best reading: each candidate's best-scoring option, with the next best when within `ambiguous`."""
    steps = []
    for k, line in enumerate(h.seg.lines):
        for i in range(len(line)):
            options, scores = _options(h, k, i, scoring, every=False)
            order = np.argsort(scores)[::-1]
            other = None
            if len(order) > 1 and scores[order[0]] - scores[order[1]] < scoring.ambiguous:
                other = (len(options[order[1]]), scores[order[1]])
            steps.append(_Step(k, options[order[0]], scores[order[0]], other))
    return steps


def _count(steps: list[_Step]) -> int:
    return sum(len(s.parts) for s in steps)


def _with_count(h: Hypotheses, scoring: Scoring, digits: DigitCount, best: list[_Step]) -> list[_Step] | None:
    """The best-scoring reading with `digits` digits: per candidate its whole, any cut, or (within a line)
    merged with the next one, the sum of their scores the highest over all such readings (a dynamic
    programme over the candidates, left to right, and the digits read so far); None when none has that
    many. A candidate read as in `best` keeps its ambiguity note."""
    places = [(k, i) for k, line in enumerate(h.seg.lines) for i in range(len(line))]
    kept = {(s.line, s.parts): s for s in best}
    most = digits.most
    # table[j][n]: (score, previous place, previous n, step) of the best reading of places[:j] with n digits
    table = [{} for _ in range(len(places) + 1)]
    table[0][0] = (0.0, None, None, None)
    for j, (k, i) in enumerate(places):
        moves = []
        options, scores = _options(h, k, i, scoring, every=True)
        for parts, value in zip(options, scores):
            moves.append((j + 1, kept.get((k, parts), _Step(k, parts, value))))
        if (k, i) in h.merged and h.merged[k, i] in h.results:
            piece = h.merged[k, i]
            # one cut penalty: the segmentation is overruled once, as a cut overrules it
            value = _score(h, (piece,), h.seg.line_heights[k], scoring) + scoring.cut_penalty
            moves.append((j + 2, _Step(k, (piece,), value)))
        for n, (value, *_) in list(table[j].items()):
            for to, step in moves:
                m = n + len(step.parts)
                if m <= most and (m not in table[to] or value + step.score > table[to][m][0]):
                    table[to][m] = (value + step.score, j, n, step)
    ends = {n: entry for n, entry in table[-1].items() if n in digits}
    if not ends:
        return None
    n = max(ends, key=lambda n: ends[n][0])
    steps, j = [], len(places)
    while j:
        _, j, n, step = table[j][n]
        steps.append(step)
    return steps[::-1]


def _reading(h: Hypotheses, steps: list[_Step], reasons: list[str]) -> Reading:
    """The Reading of the chosen steps: its digits, their boxes and crops, and why it is unsure."""
    digits, crops_kept, reasons = [], [], list(reasons)
    texts = [""] * len(h.seg.lines)
    sx, sy = h.scale
    for step in steps:
        k, best = step.line, step.parts
        first = len(digits) + 1
        for p in best:
            r = h.results[p]
            top = r["top3"][0]
            x0, y0, x1, y1 = p.box
            box = (math.floor(x0 * sx), math.floor(y0 * sy), math.ceil(x1 * sx), math.ceil(y1 * sy))
            digits.append(ReadDigit(top["digit"], top["label"], r["confidence"], box, k, r["unsure"], r["reason"]))
            crops_kept.append(h.crops[p])
            texts[k] += top["label"]
            if r["unsure"]:
                reasons.append(f"the {ordinal(len(digits))} digit: {r['reason']}")
        if step.other is not None:
            count, other = step.other
            last = first + len(best) - 1
            where = (
                f"the {ordinal(first)} digit" if len(best) == 1 else f"the {ordinal(first)} to {ordinal(last)} digits"
            )
            plural = lambda n: f"{n} digit{'s' * (n > 1)}"  # noqa: E731
            doubt = (
                "not sure where one digit ends and the next begins"
                if count == len(best)
                else f"not sure whether this is {plural(len(best))} or {plural(count)}"
            )
            reasons.append(f"{where}: {doubt} ({math.exp(step.score):.3f} against {math.exp(other):.3f})")
    confidence = float(np.prod([d.confidence for d in digits]))
    return Reading(
        text="\n".join(texts),
        lines=tuple(texts),
        confidence=confidence,
        unsure=bool(reasons),
        reason="; ".join(reasons) or None,
        digits=tuple(digits),
        crops=np.stack(crops_kept),
        size=h.size,
    )


def score(confidences: list[float], widths: list[float], scoring: Scoring = SCORING) -> float:
    """The log-score of reading a candidate as these digits, of these widths (in line heights)."""
    fit = sum(math.log(max(p, 1e-12)) for p in confidences)
    wide = sum(scoring.wide_penalty * max(0.0, w - scoring.wide_from) for w in widths)
    return fit + wide + scoring.cut_penalty * (len(confidences) - 1)


def _parts(candidate):
    return [p for parts in candidate.cuts for p in parts]


def _normalise(ink, seg: Segmentation, piece) -> np.ndarray:
    """One piece's ink through the steps `preprocess` takes for one digit. The window is the piece's box
    plus 2 px: `ink_levels` keeps the box plus 1 px, so the result is that of the whole image; another
    candidate's ink in it is made paper."""
    window, mask = piece_mask(piece, seg.labels, margin=2)
    bright = ink.bright[window]
    others = (seg.labels[window] > 0) & ~mask
    if others.any():
        bright = np.where(others, np.float32(ink.paper), bright)
    return normalize_digit(*ink_levels(bright, mask, ink.paper))


# An image more than this many times as long as it is wide (or tall) is refused before it is segmented: at
# to_grey's working size (WORK_SIDE px long) its digits would be under 8 px, too small to read, and a line
# of more than about 25 digits would overflow the candidates and the CTC frames (a line of 200 digits,
# 5,600 x 40 px, is 160 x 1 px there).
MAX_ASPECT = 20


def open_image(image) -> tuple[np.ndarray, tuple[int, int]]:
    """An image (a path, bytes, PIL image or array) -> (to_grey's grey image, (width, height) of the input
    as it stands upright). A file is decoded once, by to_grey; its size then comes from its header. A
    DigitlabError for an image too long and thin to hold readable digits (MAX_ASPECT)."""
    grey = to_grey(image)  # checks the file: any error names it
    if isinstance(image, np.ndarray):
        size = (int(image.shape[1]), int(image.shape[0]))
    elif isinstance(image, Image.Image):
        size = _upright_size(image)
    else:
        fp = io.BytesIO(bytes(image)) if isinstance(image, (bytes, bytearray, memoryview)) else Path(image)
        with Image.open(fp, formats=FORMATS) as img:  # the header only: to_grey has read the file safely
            size = _upright_size(img)
    w, h = size
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise DigitlabError(
            f"image: {w}x{h} px, {max(w, h) / min(w, h):.0f} times as {'wide' if w > h else 'tall'} as it is "
            f"{'tall' if w > h else 'wide'}; expected at most {MAX_ASPECT} times (numbers are read with the long "
            f"side at {WORK_SIDE} px, where these digits would be too small): split a long line into several"
        )
    return grey, size


def _upright_size(img: Image.Image) -> tuple[int, int]:
    turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap width and height
    return (img.height, img.width) if turned else img.size
