"""Reading a line model's output: greedy CTC decoding, the string's confidence and each digit's frames;
with a count of digits to meet (`--digits`), the best path with that many (`count_decode`).

NumPy only, so that ONNX Runtime reads lines without Keras; it agrees with `keras.ops.ctc_decode`'s
greedy strategy (tests/test_line_model.py checks that). The blank is the last class.

Greedy decoding takes the most likely class in every frame, merges runs of the same class and drops
blanks: "3 3 _ 3 _ _ 7" reads "337", and two equal digits need a blank between them. The confidence
of the reading is the probability of that best path, each frame's probabilities tempered by the run's
calibration first (softmax(log p / T)); a digit's confidence is its class's highest tempered
probability over the frames of its run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digitlab.metrics import EPS, temper


@dataclass(frozen=True)
class Decoded:
    digits: tuple[int, ...]  # class indices, left to right
    frames: tuple[tuple[int, int], ...]  # each digit's run of frames [start, end)
    digit_confidences: tuple[float, ...]
    confidence: float  # probability of the best path


def greedy_decode(probs: np.ndarray, temperature: float = 1.0) -> list[Decoded]:
    """(n, frames, classes) per-frame probabilities, blank last -> one Decoded per line."""
    probs = temper(probs, temperature)
    if probs.ndim != 3:
        raise ValueError(f"greedy_decode: expected probabilities (n, frames, classes), got shape {probs.shape}")
    blank = probs.shape[-1] - 1
    best = probs.argmax(-1)
    path = np.log(np.clip(probs.max(-1), EPS, 1.0)).sum(-1)
    out = []
    for row, p, log_p in zip(best, probs, path):
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])  # where each run of one class begins
        ends = np.r_[starts[1:], len(row)]
        runs = [(int(s), int(e)) for s, e in zip(starts, ends) if row[s] != blank]
        digits = tuple(int(row[s]) for s, _ in runs)
        confidences = tuple(float(p[s:e, d].max()) for (s, e), d in zip(runs, digits))
        out.append(Decoded(digits, tuple(runs), confidences, float(np.exp(log_p))))
    return out


def texts(decoded: list[Decoded], class_names: tuple[str, ...]) -> list[str]:
    return ["".join(class_names[d] for d in line.digits) for line in decoded]


def count_decode(probs: np.ndarray, least: int, most: int, temperature: float = 1.0) -> list[Decoded] | None:
    """(n, frames, classes) per-frame probabilities of the n lines of one reading, blank last -> the most
    probable paths (one per line) whose digits, all lines together, number from `least` to `most`; None
    when no path has that many (more digits than frames allow).

    Exact, not a beam: a Viterbi pass over each line's frames whose state is (digits so far, the frame's
    class), then the lines' counts shared out by a max-plus sum over lines. Without a count to meet
    (least 0, most the frames) it is the greedy best path. Cost: frames x (most + 1) x classes^2 per line."""
    probs = temper(probs, temperature)
    if probs.ndim != 3:
        raise ValueError(f"count_decode: expected probabilities (n, frames, classes), got shape {probs.shape}")
    if not 0 <= least <= most:
        raise ValueError(f"count_decode: expected 0 <= least <= most, got {least}, {most}")
    most = min(most, probs.shape[0] * probs.shape[1])  # a frame emits at most one digit
    log_p = np.log(np.clip(probs, EPS, 1.0))
    passes = [_viterbi(lp, most) for lp in log_p]
    # best[k][n]: the best log-probability of lines 0..k having n digits in all; split[k][n]: line k's share
    best, split = passes[0][0], []
    sums = np.add.outer(np.arange(most + 1), np.arange(most + 1))  # (digits so far, this line's): their sum
    for ends, _ in passes[1:]:
        total = best[:, None] + ends[None, :]  # (digits so far, this line's digits)
        merged = np.full(most + 1, -np.inf)
        share = np.zeros(most + 1, int)
        for n in range(most + 1):
            at = np.where(sums == n, total, -np.inf)
            k = int(np.argmax(at.max(0)))
            merged[n], share[n] = at[:, k].max(), k
        best, split = merged, [*split, share]
    if least > most or not np.isfinite(best[least : most + 1]).any():
        return None
    n = least + int(np.argmax(best[least : most + 1]))
    counts = []
    for share in reversed(split):  # the last line's share first
        counts.append(int(share[n]))
        n -= counts[-1]
    counts = [n, *reversed(counts)]
    return [_trace(p, lp, back, c) for p, lp, (_, back), c in zip(probs, log_p, passes, counts)]


def _viterbi(log_p: np.ndarray, most: int) -> tuple[np.ndarray, tuple]:
    """One line's (frames, classes) log-probabilities -> (the best path's log-probability for each count of
    digits 0..most, -inf where none; what `_trace` needs to follow it back)."""
    frames, classes = log_p.shape
    blank = classes - 1
    other = np.where(np.eye(classes, dtype=bool), -np.inf, 0.0)  # a new digit follows any other class
    score = np.full((most + 1, classes), -np.inf)  # (digits so far, the frame's class)
    score[0, blank] = log_p[0, blank]
    if most:
        score[1, :blank] = log_p[0, :blank]
    came_from = np.zeros((frames, most + 1, classes), np.int8)  # the previous frame's class
    fresh = np.zeros((frames, most + 1, classes), bool)  # the frame starts a digit: one more than before
    last_score = score
    for t in range(1, frames):
        prev = last_score
        below = np.vstack([np.full((1, classes), -np.inf), prev[:-1]])  # one digit fewer
        start = below[:, None, :] + other[None]  # (n, new class, previous class)
        start_from = start.argmax(-1)
        start_best = np.take_along_axis(start, start_from[..., None], -1)[..., 0]
        new = np.empty_like(prev)
        came_from[t, :, blank] = prev.argmax(-1)
        new[:, blank] = prev.max(-1)
        stay = prev[:, :blank]  # the same digit goes on
        fresh[t, :, :blank] = start_best[:, :blank] > stay
        new[:, :blank] = np.maximum(stay, start_best[:, :blank])
        came_from[t, :, :blank] = np.where(fresh[t, :, :blank], start_from[:, :blank], np.arange(blank))
        last_score = new + log_p[t]
    fresh[0, 1:, :blank] = True
    return last_score.max(-1), (last_score, came_from, fresh)


def _trace(probs: np.ndarray, log_p: np.ndarray, back: tuple, count: int) -> Decoded:
    """The best path of one line with `count` digits, followed back from its last frame, as a Decoded."""
    last_score, came_from, fresh = back
    frames, classes = log_p.shape
    blank = classes - 1
    c, n = int(last_score[count].argmax()), count
    path = np.empty(frames, int)
    for t in range(frames - 1, -1, -1):
        path[t] = c
        c, n = int(came_from[t, n, c]), n - int(fresh[t, n, c])
    starts = np.flatnonzero(np.r_[True, path[1:] != path[:-1]])
    ends = np.r_[starts[1:], frames]
    runs = [(int(s), int(e)) for s, e in zip(starts, ends) if path[s] != blank]
    digits = tuple(int(path[s]) for s, _ in runs)
    confidences = tuple(float(probs[s:e, d].max()) for (s, e), d in zip(runs, digits))
    return Decoded(digits, tuple(runs), confidences, float(np.exp(log_p[np.arange(frames), path].sum())))


def log_likelihood(probs: np.ndarray, digits: tuple[int, ...] | list[int], temperature: float = 1.0) -> float:
    """log P(digits | one line's frames): CTC's probability of the string summed over every path that reads
    it (the forward pass of Graves et al., 2006, in log space), `probs` (frames, classes) blank last,
    tempered first. -inf when no path reads it (more digits than the frames hold)."""
    log_p = np.log(np.clip(temper(probs[None], temperature)[0], EPS, 1.0))
    blank = log_p.shape[-1] - 1
    states = [blank]  # blank, d1, blank, d2, ..., blank
    for d in digits:
        states += [int(d), blank]
    states = np.array(states)
    n = len(states)
    # A state may also come from two back when it is a digit other than the digit two back.
    skip = np.zeros(n, bool)
    skip[2:] = (states[2:] != blank) & (states[2:] != states[:-2])
    alpha = np.full(n, -np.inf)
    alpha[0] = log_p[0, blank]
    if n > 1:
        alpha[1] = log_p[0, states[1]]
    for t in range(1, len(log_p)):
        one = np.r_[-np.inf, alpha[:-1]]
        two = np.where(skip, np.r_[-np.inf, -np.inf, alpha[:-2]][:n], -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, one), two) + log_p[t, states]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if n > 1 else alpha[-1])
