"""The one reading path, for the CLI, the REST API, batch and Python: images in, typed results out.

    kind(predictor)                  "digit" or "line": the run's ModelConfig.kind, checked against its model
    choose_method(predictor, ...)    how a number is read with it: "segment" (a digit run), "line", or
                                     "combined" (a line run holding a digit model too: both, one answer)
    candidates(...), combine(...)    the combined reader: both methods' readings scored by the line
                                     model's CTC probability, and the choice among them
    number_features(...), judge(...) the evidence a run's NumberRule weighs, and its confidence and
                                     unsure rule applied to the combined reader's answer
    read(run, image)                 one number: the image opened once, read by the method chosen once
    predict_image(run, image)        one digit, as `digitlab predict` reads a file
    load_reader(run)                 a Reader: a run loaded once, its .predict(image) and .read(image) the above
    read_inputs(predictor, inputs, names, method)
                                     many images: each opened once; a bad one gets an Outcome holding its
                                     one-line error (input_error) and the others go on; digits are asked
                                     of the model in one call
    read_files, predict_files        read_inputs over files and folders, as the CLI's rows

An input is a path, a URI's or an upload's bytes, an array (for method "digit" a 28x28 grid used as given,
already MNIST-like), or the exception that stands in for one found bad before (a request's field).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitlab import atomic, runs
from digitlab.config import READ_METHODS
from digitlab.errors import DigitlabError, RunError
from digitlab.predict import Predictor, classify, expand_paths, load_predictor
from digitlab.predict.count import MAX_DIGITS, DigitCount, parse_digits
from digitlab.predict.ctc import log_likelihood
from digitlab.predict.lines import SHAPE as LINE_SHAPE
from digitlab.predict.lines import LineInputs, line_inputs, mark_reasons, read_lines
from digitlab.predict.results import RESULT_KEYS, Outcome, Prediction, Reading
from digitlab.predict.segmented import SCORING, Scoring, ask, decide, open_image
from digitlab.preprocess import preprocess, save_debug_strip, to_grey
from digitlab.preprocess.normalize import SIDE

DIGIT = "digit"  # read_inputs' method for one digit per image, as `digitlab predict` reads it
METHODS = (DIGIT, *READ_METHODS)


def kind(predictor: Predictor) -> str:
    """The run's kind, "digit" or "line": its ModelConfig's (Predictor.kind, from load_predictor); a model
    made without a run is taken by its input shape. A RunError when the input is not what the kind reads."""
    shapes = {"digit": (SIDE, SIDE), "line": LINE_SHAPE}  # px (height, width) each kind's model takes
    shape = tuple(predictor.input_shape)
    found = predictor.kind or next((k for k, s in shapes.items() if s == shape), None)
    if shapes.get(found) != shape:
        raise RunError(
            f"{predictor.run_dir or 'the run'}: the model takes images of shape {shape}; expected {SIDE}x{SIDE} "
            f"digits (a single-digit model) or {LINE_SHAPE[0]}x{LINE_SHAPE[1]} lines (a line model)"
        )
    return found


def digit_part(predictor: Predictor) -> Predictor | None:
    """The digit model a line run holds in its `digits/` folder (runs.DIGIT_PART, trained with it by
    `--preset numbers`), loaded once per run and runtime; None for a run without one."""
    if kind(predictor) != "line" or predictor.run_dir is None:
        return None
    part = Path(predictor.run_dir) / runs.DIGIT_PART
    if not (part / runs.CONFIG).is_file():
        return None
    # ONNX Runtime where the part has a current export, else Keras: a part need not be exported.
    return _load_part(part.resolve(), None if predictor.runtime == "onnx" else predictor.runtime)


@functools.lru_cache(maxsize=8)
def _load_part(part: Path, runtime: str | None) -> Predictor:
    return load_predictor(part, runtime)


def choose_method(predictor: Predictor, method: str | None) -> str:
    """How `read` reads a number with the run: `method` if the run can do it, else a one-line error; None:
    the run's best ("segment" for a single-digit run, "combined" for a line run holding a digit model,
    "line" for one without)."""
    line = kind(predictor) == "line"
    has_digits = line and digit_part(predictor) is not None
    if method is None:
        return ("combined" if has_digits else "line") if line else "segment"
    if method not in READ_METHODS:
        raise DigitlabError(f"--method: expected one of {', '.join(READ_METHODS)}, got {method!r}")
    where = predictor.run_dir or "the run"
    if not line and method != "segment":
        raise DigitlabError(
            f"--method {method}: {where} holds a single-digit model; reading lines needs a run of --preset numbers"
        )
    if line and method != "line" and not has_digits:
        raise DigitlabError(
            f"--method {method}: {where} holds a line model and no digit model ({runs.DIGIT_PART}/); "
            "segmentation needs a single-digit run or a run of --preset numbers that trained one"
        )
    return method


def read(
    run_or_predictor: Predictor | str | os.PathLike,
    image,
    scoring: Scoring = SCORING,
    method: str | None = None,
    digits: DigitCount | int | str | None = None,
) -> Reading:
    """Read the number in an image (a path, bytes, PIL image or array, as `preprocess` takes): its lines
    and digits, each with a calibrated confidence. `method` "segment" or "line"; None: the run's own.
    `digits` (4, "5-9"): the best reading with that many digits, or unsure saying what was found."""
    digits = parse_digits(digits, "digits")
    predictor = run_or_predictor
    if not isinstance(predictor, Predictor):
        predictor = load_predictor(Path(run_or_predictor))
    method = choose_method(predictor, method)
    return _read_number(predictor, *open_image(image), method, scoring, digits)


def predict_image(run_or_predictor: Predictor | str | os.PathLike, image) -> Prediction:
    """The digit in one image, as `digitlab predict` reads a file: `image` a path, bytes, a PIL image or an
    array (a photo's pixels, preprocessed; a 28x28 MNIST-like digit, used as it is). Its fields are those
    of `digitlab predict --json` (`.to_dict()` gives them as a dict); a DigitlabError when the image cannot
    be read."""
    predictor = run_or_predictor
    if not isinstance(predictor, Predictor):
        predictor = load_predictor(Path(run_or_predictor))
    if isinstance(image, np.ndarray) and tuple(image.shape) != tuple(predictor.input_shape):
        if image.ndim != 2 and not (image.ndim == 3 and image.shape[-1] in (3, 4)):
            raise DigitlabError(
                f"the image: expected one image, (height, width) grey or (height, width, 3 or 4) colour, got an "
                f"array of shape {image.shape} (many MNIST-like digits: predict_proba)"
            )
        image = Image.fromarray(np.asarray(image, np.uint8))  # a photo's pixels: preprocessed as a file's
    name = str(image) if isinstance(image, (str, os.PathLike)) else "the image"
    (outcome,) = read_inputs(predictor, [image], [name], DIGIT)
    if outcome.error:
        raise DigitlabError(outcome.error)
    return outcome.result


class Reader(Predictor):
    """A run loaded once, for Python: `predict(image)` one digit, `read(image)` a whole number, each as
    the CLI reads a file (the fields of `digitlab predict --json` and `digitlab read --json`, through
    `read_inputs`); a Predictor still, so `predict_proba(x)` gives arrays of MNIST-like digits' probabilities."""

    def predict(self, image) -> Prediction:
        """The digit in one image (a path, bytes, a PIL image or an array), as `predict_image` reads it."""
        return predict_image(self, image)

    def read(self, image, method: str | None = None, digits: DigitCount | int | str | None = None) -> Reading:
        """The number in one image (a path, bytes, a PIL image or an array), as `digitlab read` reads it;
        `method` "segment" or "line", None: the run's own; `digits` (4, "5-9") as `--digits`."""
        return read(self, image, method=method, digits=digits)


def load_reader(run_dir: str | os.PathLike, runtime: str = "keras") -> Reader:
    """A run's model, calibration and unsure rule, loaded once (`load_predictor`'s checks and errors) to
    read many images: `load_reader("runs/first").predict("digit.png")`. runtime "onnx": model.onnx on
    ONNX Runtime, without TensorFlow."""
    predictor = load_predictor(Path(run_dir), runtime)
    return Reader(**{f.name: getattr(predictor, f.name) for f in fields(predictor)})


def _read_number(
    predictor: Predictor,
    grey: np.ndarray,
    size: tuple[int, int],
    method: str,
    scoring: Scoring = SCORING,
    digits: DigitCount | None = None,
) -> Reading:
    if method == "line":
        return read_lines(predictor, grey, size, digits)
    if method == "combined":
        seen = candidates(predictor, digit_part(predictor), grey, size, scoring, digits)
        return combine(seen, COMBINING, digits, predictor.numbers)
    reader = digit_part(predictor) if kind(predictor) == "line" else predictor
    return decide(ask(reader, grey, size, scoring, digits), scoring, digits)


# The combined reader (method "combined"): the line model's reading and the segmentation's; when they
# differ, also each read with the other's count of digits (the line model's constrained CTC decoding,
# the segmentation's cut and merged candidates). Every candidate is scored by the line model's CTC
# log-probability of its text (all paths summed, every line), plus SEGMENT_BONUS for the segmentation's
# readings when they are sure; the best is answered. Two readers that disagree are unsure; when they agree,
# the reading is sure only if both are (BOTH_SURE; else if either is). Chosen on numbers composed from
# validation digits (`bench/read_numbers.py --tune-combined`; docs/design/reading.md).
SEGMENT_BONUS = 12.0
BOTH_SURE = True


@dataclass(frozen=True)
class Combining:
    """The combined reader's constants, together, so that the tuner can try others."""

    segment_bonus: float = SEGMENT_BONUS
    both_sure: bool = BOTH_SURE


COMBINING = Combining()


@dataclass(frozen=True, eq=False)
class Candidates:
    """What the combined reader weighs: the line model's reading and the segmentation's, and, when they
    differ, the readings with each other's count: (reading, "line" or "segment", CTC log-probability)."""

    line: Reading
    segment: Reading
    scored: tuple


def candidates(
    line_predictor: Predictor,
    digit_predictor: Predictor,
    grey: np.ndarray,
    size: tuple[int, int],
    scoring: Scoring = SCORING,
    digits: DigitCount | None = None,
) -> Candidates:
    """Both readers' readings of a grey image, and the candidates `combine` chooses from, each with the
    line model's CTC log-probability of its text."""
    inputs = line_inputs(line_predictor, grey)
    line = read_lines(line_predictor, grey, size, digits, inputs)
    segment = decide(ask(digit_predictor, grey, size, scoring, digits), scoring, digits)
    found = [(line, "line"), (segment, "segment")]
    n_line, n_segment = _count(line), _count(segment)
    # Each reader asked for the other's count, when both counts are ones a reading may have.
    differ = line.text != segment.text and n_line != n_segment and min(n_line, n_segment) > 0
    differ = differ and max(n_line, n_segment) <= MAX_DIGITS
    if inputs is not None and differ and digits is None:
        found.append((read_lines(line_predictor, grey, size, DigitCount(n_segment, n_segment), inputs), "line"))
        h = ask(digit_predictor, grey, size, scoring, DigitCount(n_line, n_line))
        found.append((decide(h, scoring, DigitCount(n_line, n_line)), "segment"))
    return Candidates(line, segment, tuple((r, how, _ctc(line_predictor, inputs, r)) for r, how in found))


def _count(reading: Reading) -> int:
    return sum(len(t) for t in reading.lines)


def _ctc(predictor: Predictor, inputs: LineInputs | None, reading: Reading) -> tuple[float, ...] | None:
    """The line model's log-probability of each line of the reading's text; None when its lines are not
    the line model's."""
    if inputs is None or reading.text is None or len(reading.lines) != len(inputs.images):
        return None
    names = {name: i for i, name in enumerate(predictor.class_names)}
    return tuple(
        log_likelihood(p, [names[c] for c in text], predictor.temperature)
        for p, text in zip(inputs.probs, reading.lines)
    )


def combine(
    c: Candidates,
    combining: Combining = COMBINING,
    digits: DigitCount | None = None,
    rule: runs.NumberRule | None = None,
) -> Reading:
    """The combined reader's answer from its candidates (see COMBINING); `digits`: the count they were
    read with, whose forced readings stay unsure. `rule`: the run's NumberRule (calibration.json's
    "numbers"), which gives the answer's confidence and decides whether it is unsure (`judge`); None: the
    readers' own rule above. Where the line model read a mark (not a digit), the answer is unsure and says
    where first, whichever reading is chosen."""
    chosen = judge(c, _choose(c, combining, digits), rule, digits)
    missing = [m for m in mark_reasons(c.line) if m not in (chosen.reason or "")]
    if not missing:
        return chosen
    return dataclasses.replace(chosen, unsure=True, reason="; ".join([*missing, *filter(None, [chosen.reason])]))


def _choose(c: Candidates, combining: Combining, digits: DigitCount | None) -> Reading:
    line, segment = c.line, c.segment
    if segment.text is None or line.text is None:
        return line if segment.text is None else segment
    if line.text == segment.text:  # two readers agree
        chosen = segment if not segment.unsure or line.unsure else line
        confidence = 1.0 - (1.0 - (line.confidence or 0.0)) * (1.0 - (segment.confidence or 0.0))
        unsure = (line.unsure or segment.unsure) if combining.both_sure else (line.unsure and segment.unsure)
        if unsure and not chosen.unsure:
            reason = f"the {'line model' if line.unsure else 'segmentation'} is unsure: {(line if line.unsure else segment).reason}"
            return dataclasses.replace(chosen, confidence=confidence, unsure=True, reason=reason)
        return dataclasses.replace(
            chosen, confidence=confidence, unsure=unsure, reason=chosen.reason if unsure else None
        )
    if len(line.lines) > 1 and digits is None and all(ctc is not None for _, _, ctc in c.scored):
        return _combine_lines(c, combining, digits)
    scores: dict[str, float] = {}  # text -> best score
    best_of: dict[str, Reading] = {}
    for reading, how, ctc in c.scored:
        if ctc is None:
            continue
        score = sum(ctc) + (combining.segment_bonus if how == "segment" and not reading.unsure else 0.0)
        if reading.text not in scores or score > scores[reading.text]:
            scores[reading.text], best_of[reading.text] = score, reading
    if not scores:  # the line model cannot score them (other lines): the segmentation's
        return segment
    text = max(scores, key=scores.get)
    top = scores[text]
    share = 1.0 / sum(math.exp(v - top) for v in scores.values())
    chosen = best_of[text]
    return dataclasses.replace(
        chosen,
        confidence=float((chosen.confidence or 0.0) * share),
        unsure=True,
        reason=_disagree(text, scores, chosen if digits is not None else None),
    )


# The combined reader's confidence in a whole number, for a run whose calibration holds a NumberRule
# (calibrate.fit_numbers, on numbers composed from validation digits): a logistic model of this evidence,
# which ranks right numbers above wrong ones better than either reader's confidence (docs/design/reading.md).
NUMBER_FEATURES = ("agree", "line_doubt", "segment_doubt", "ctc", "margin")
DOUBT_FLOOR = 1e-4  # a reader's doubt: log(DOUBT_FLOOR + the sum over its digits of 1 - confidence)
CTC_FLOOR = -50.0  # the chosen text's CTC log-probability, at least this (also when the line model cannot score it)
MARGIN_CAP = 30.0  # its margin over the best other candidate's, within ±MARGIN_CAP (the cap when there is none)


def number_features(c: Candidates, chosen: Reading) -> list[float]:
    """The evidence a NumberRule weighs, in NUMBER_FEATURES' order: 1.0 when the two readers agree, else 0.0;
    each reader's doubt (0.0, a whole digit's, for a reading without digits); the line model's CTC
    log-probability of the chosen text, its lines' each as the candidates scored it; and that less the best
    other candidate text's."""

    def doubt(r: Reading) -> float:
        return math.log(DOUBT_FLOOR + sum(1.0 - d.confidence for d in r.digits)) if r.digits else 0.0

    per_line: list[dict] = [{} for _ in chosen.lines]  # line k: its text -> CTC log-probability
    whole: dict[str, float] = {}  # each candidate's text -> CTC log-probability, all lines
    for r, _, ctc in c.scored:
        if ctc is not None and len(ctc) == len(chosen.lines):
            whole[r.text] = sum(ctc)
            for k, (t, v) in enumerate(zip(r.lines, ctc)):
                per_line[k][t] = v
    ctc = sum(per_line[k].get(t, -math.inf) for k, t in enumerate(chosen.lines))
    ctc = max(ctc, CTC_FLOOR)
    others = [v for t, v in whole.items() if t != chosen.text]
    margin = min(max(ctc - max(others), -MARGIN_CAP), MARGIN_CAP) if others else MARGIN_CAP
    return [float(c.line.text == c.segment.text), doubt(c.line), doubt(c.segment), float(ctc), float(margin)]


def judge(c: Candidates, chosen: Reading, rule: runs.NumberRule | None, digits: DigitCount | None = None) -> Reading:
    """The chosen reading with `rule`'s confidence, unsure when that is below its threshold; with a count of
    digits asked (`digits`, which the rule was not fitted with), also when the readers' own rule made it
    unsure. Without a rule, or without ink, the reading as it is."""
    if rule is None or chosen.text is None:
        return chosen
    if rule.features != NUMBER_FEATURES:
        raise RunError(
            f"calibration.json: numbers.features is {list(rule.features)}; this version of digitlab reads "
            f"{list(NUMBER_FEATURES)} (`digitlab.training.calibrate_numbers(RUN)` refits it)"
        )
    confidence = rule.confidence(number_features(c, chosen))
    low = confidence < rule.threshold
    reasons = [chosen.reason] if chosen.unsure and chosen.reason and (low or digits is not None) else []
    if low:
        reasons.append(f"confidence {confidence:.3f} is below the threshold {rule.threshold:.3f}")
    unsure = low or (digits is not None and chosen.unsure)
    return dataclasses.replace(chosen, confidence=confidence, unsure=unsure, reason="; ".join(reasons) or None)


def _disagree(text: str, scores: dict, forced: Reading | None) -> str:
    others = " or ".join(t.replace("\n", " / ") for t in scores if t != text)
    reason = f"the two readers disagree: {text.replace(chr(10), ' / ')} or {others}"
    return f"{reason}; {forced.reason}" if forced is not None and forced.reason else reason


def _combine_lines(c: Candidates, combining: Combining, digits: DigitCount | None) -> Reading:
    """Several lines, every candidate with the line model's lines, no count to meet: each line chosen apart, as one number is
    (its CTC log-probability, plus the bonus where the segmentation read that line's digits surely), and
    the reading put together from the chosen lines' digits."""
    chosen_lines, texts, scores_all = [], [], []
    for k in range(len(c.line.lines)):
        scores: dict[str, float] = {}
        best_of: dict[str, Reading] = {}
        for reading, how, ctc in c.scored:
            sure = how == "segment" and not any(d.unsure for d in reading.digits if d.line == k)
            score = ctc[k] + (combining.segment_bonus if sure and reading.lines[k] else 0.0)
            if reading.lines[k] not in scores or score > scores[reading.lines[k]]:
                scores[reading.lines[k]], best_of[reading.lines[k]] = score, reading
        text = max(scores, key=scores.get)
        chosen_lines.append(best_of[text])
        texts.append(text)
        scores_all.append(scores)
    picks = [[i for i, d in enumerate(r.digits) if d.line == k] for k, r in enumerate(chosen_lines)]
    share = math.prod(1.0 / sum(math.exp(v - s[t]) for v in s.values()) for s, t in zip(scores_all, texts))
    text = "\n".join(texts)
    whole = {r.text: sum(ctc) for r, _, ctc in c.scored}
    return Reading(
        text=text,
        lines=tuple(texts),
        confidence=float(min(r.confidence or 0.0 for r in chosen_lines) * share),
        unsure=True,
        reason=_disagree(text, {**whole, text: 0.0}, chosen_lines[0] if digits is not None else None),
        digits=tuple(r.digits[i] for r, idx in zip(chosen_lines, picks) for i in idx),
        crops=np.concatenate([r.crops[idx] for r, idx in zip(chosen_lines, picks)]) if any(picks) else c.line.crops[:0],
        size=c.line.size,
    )


def input_error(name: str, error: Exception) -> str:
    """One input's error as its Outcome records it, the same for the CLI, the REST API and batch:
    "<name>: <what was wrong>". An error that already starts with the input's name (a file's, or a request
    field's) is kept as it is."""
    if isinstance(error, OSError):
        return f"{name}: cannot be read ({error.strerror or error})"
    if not isinstance(error, DigitlabError):  # a decoder's or a file system's own failure
        return f"{name}: cannot be read ({type(error).__name__}: {error})"
    text = str(error)
    if text == name or text.startswith((f"{name}:", f"{name}[")):
        return text
    return f"{name}: {text}"


def read_inputs(
    predictor: Predictor,
    inputs: Sequence,
    names: Sequence[str],
    method: str,
    debug_dir: Path | None = None,
    digits: DigitCount | None = None,
) -> list[Outcome]:
    """One Outcome per input, in order: a Prediction (method "digit") or a Reading ("segment", "line"), or
    the input's error; an input that cannot be read never stops the others. Digits are preprocessed one by
    one and asked of the model in one call, with the run's calibration and unsure rule. `debug_dir`: a
    picture of each input's steps (digits) or of its boxes and crops (numbers) is written there. `digits`:
    how many digits each number has (numbers only), see `read`."""
    if method not in METHODS:
        raise DigitlabError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if method == DIGIT and kind(predictor) != "digit":
        raise DigitlabError(
            f"{predictor.run_dir or 'the run'} holds a line model, which reads whole lines, not one "
            f"{SIDE}x{SIDE} digit; expected a single-digit run (`digitlab read` reads numbers with it)"
        )
    if digits is not None and method == DIGIT:
        raise DigitlabError("--digits: counts a number's digits; expected method segment or line, not one digit")
    outcomes: list[Outcome | None] = []
    grids, rejected, waiting = [], [], []  # method "digit": what the one model call is given, for whom
    for i, (item, name) in enumerate(zip(inputs, names)):
        if isinstance(item, Exception):  # found bad before (a request's field, a URI): it stands for it
            outcomes.append(Outcome(name, None, input_error(name, item)))
            continue
        debug = None if debug_dir is None else Path(debug_dir) / f"{i:04d}-{Path(name).stem}.png"
        try:
            if method != DIGIT:
                grey, size = open_image(item)
                reading = _read_number(predictor, grey, size, method, digits=digits)
            elif isinstance(item, np.ndarray):  # a pixel grid, MNIST-like already: used as given
                pre, digit, reason = None, np.asarray(item, np.float32), bool(item.max() > 0)  # its only test: ink
            else:
                pre = preprocess(item, debug=debug is not None)
                digit, reason = pre.digit, pre.reason  # no ink, or not a digit: no numbers
        except (DigitlabError, OSError) as e:
            outcomes.append(Outcome(name, None, input_error(name, e)))
            continue
        if method != DIGIT:
            if debug is not None:
                save_debug_image(reading, grey, debug)
            outcomes.append(Outcome(name, reading, debug=debug))
            continue
        if pre is None:
            debug = None  # a pixel grid has no steps to show
        grids.append(digit)
        rejected.append(reason)
        waiting.append((len(outcomes), name, debug, pre))
        outcomes.append(None)  # filled below, from the one model call
    if waiting:
        rows = classify(predictor, np.stack(grids), rejected)
        for (k, name, debug, pre), digit, row in zip(waiting, grids, rows):
            if debug is not None:  # the strip, with the answer it led to
                save_debug_strip(pre, debug, answer=answer_line(row))
            outcomes[k] = Outcome(name, Prediction(**{key: row[key] for key in RESULT_KEYS}, image=digit), debug=debug)
    return outcomes


def answer_line(row: dict) -> str:
    """What was answered for one digit, in one line (under its debug strip)."""
    if row["confidence"] is None:
        return f"no digit: {row['reason']}"
    if row["digit"] is None:
        best = row["top3"][0]
        doubt = row["reason"] if row["reason"].startswith("unsure: ") else f"unsure: {row['reason']}"
        return f"{doubt} (best guess {best['label']}, {best['probability']:.3f})"
    return f"answer: {row['label']} ({row['confidence']:.3f})"


def file_rows(outcomes: list[Outcome]) -> list[dict]:
    """The CLI's rows: file and the result's JSON form, or file and error; debug when a picture was written."""
    rows = []
    for o in outcomes:
        row: dict = {"file": o.name}
        if o.error is not None:
            row["error"] = o.error
        else:
            row.update(o.result.to_dict())
        if o.debug is not None and o.error is None:
            row["debug"] = str(o.debug)
        rows.append(row)
    return rows


def read_files(
    predictor: Predictor,
    paths: list[Path],
    debug_dir: Path | None = None,
    method: str | None = None,
    digits: DigitCount | None = None,
) -> list[dict]:
    """`digitlab read`: one row per image file (folders searched) with its number, or its error.
    `method` "segment" or "line", None: the run's own; "digit" reads one digit per file, as predict_files.
    `digits`: how many digits each number has (`--digits`)."""
    files = expand_paths(paths)
    method = method if method == DIGIT else choose_method(predictor, method)
    return file_rows(read_inputs(predictor, files, [str(p) for p in files], method, debug_dir, digits))


def predict_files(predictor: Predictor, paths: list[Path], debug_dir: Path | None = None) -> list[dict]:
    """`digitlab predict`: one row per image file (folders searched): file and RESULT_KEYS, or file and
    error. An image preprocessing refuses (no ink, not a digit) gets its reason and None for the numbers."""
    return read_files(predictor, paths, debug_dir, method=DIGIT)


DEBUG_WIDTH = 720  # px, the drawn image's width in the debug picture
CROP_SCALE = 3  # each 28x28 crop is drawn 3x in the strip


def save_debug_image(reading: Reading, image, path: str | os.PathLike) -> Path:
    """Write the image with each digit's box, digit and confidence drawn on it (unsure in red), and the
    normalised 28x28 crops in a strip below, as a PNG; returns the path."""
    grey = to_grey(image)
    scale = DEBUG_WIDTH / grey.shape[1]
    shown = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")
    shown = shown.resize((DEBUG_WIDTH, max(1, round(grey.shape[0] * scale))), Image.Resampling.BILINEAR)
    font = ImageFont.load_default(size=14)
    side = SIDE * CROP_SCALE
    gap, caption = 8, 18  # px
    strip_height = side + caption + 2 * gap
    canvas = Image.new(
        "RGB", (max(DEBUG_WIDTH, gap + len(reading.digits) * (side + gap)), shown.height + strip_height), "white"
    )
    canvas.paste(shown, (0, 0))
    draw = ImageDraw.Draw(canvas)
    box_scale = DEBUG_WIDTH / reading.size[0]
    for d in reading.digits:
        colour = (220, 0, 0) if d.unsure else (0, 150, 0)
        x0, y0, x1, y1 = (round(v * box_scale) for v in d.box)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=2)
        draw.text((x0 + 2, max(0, y0 - 16)), f"{d.label} {d.confidence:.2f}", fill=colour, font=font)
    top = shown.height + gap
    for i, (d, crop) in enumerate(zip(reading.digits, reading.crops)):
        left = gap + i * (side + gap)
        tile = Image.fromarray(crop).resize((side, side), Image.Resampling.NEAREST)
        canvas.paste(tile.convert("RGB"), (left, top))
        draw.text((left + side / 2, top + side + 2), d.label, fill=(0, 0, 0), font=font, anchor="mt")
    if reading.text is None:
        draw.text((gap, top), reading.reason or "", fill=(220, 0, 0), font=font)
    with atomic.replacing(path) as tmp:
        canvas.save(tmp, "PNG")
    return Path(path)
