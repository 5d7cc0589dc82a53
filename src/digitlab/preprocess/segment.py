"""Segmenting a number: the ink of a whole image split into lines (top to bottom) and digit candidates
(left to right), each with the ways it might be cut into two or three digits.

It runs between `ink.find_ink` and `normalize.normalize_digit`: connected pieces of ink are grouped into
lines by vertical overlap, pieces of one digit (a 5's detached bar, a broken 4, a 7's crossbar, a dot
above a 1) are merged by horizontal overlap, and a blob wide enough to hold two digits gets cuts at the
narrowest columns of its ink. Which cut, if any, is kept is for the classifier to say (`digitlab.predict.segmented`):
this module only proposes them. Sizes are relative to the line's height, so the rules hold at any scale.
The constants are chosen on numbers composed from validation digits (`bench/read_numbers.py --tune`;
docs/design/reading.md).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from digitlab.errors import DigitlabError

MAX_CANDIDATES = 64  # digit candidates in one image; more is refused before any is classified
LINE_OVERLAP = 0.5  # shared rows / the piece's height for a piece to join a line
FLOAT_DISTANCE = 0.6  # x line height: a small piece above or below a line within this joins it (a dot)
SMALL = 0.75  # x line height: a piece shorter than this can be part of a taller digit
TINY = 0.5  # x line height: a piece shorter than this is never a digit of its own (a 5's bar, a dot)
TINY_REACH = 0.25  # x line height: how far beside its neighbour a tiny piece may lie and still join it
MERGE_OVERLAP = 0.5  # shared columns / the narrower piece's width for a short piece to join a digit
CONTAINED = 0.8  # shared columns / the narrower width above which any two pieces are one digit
MAX_DIGIT_WIDTH = 1.3  # x line height: pieces are never merged into anything wider
TINY_WIDTH = 1.6  # x line height: ... except a tiny piece, which can widen a digit to this (a 5's long bar)
SPLIT_WIDTH = 0.25  # x line height: narrower candidates are never cut (two touching 1s: 0.25-0.6)
THREE_WIDTH = 1.4  # x line height: wider candidates are also tried as three digits
MIN_PART = 0.1  # x line height: each part of a cut is at least this wide (a thin 1)
MAX_CUTS = 5  # cut columns tried per candidate, the narrowest first


@dataclass(frozen=True)
class Piece:
    """Ink that may be one digit: some connected components, optionally only between two columns."""

    ids: tuple[int, ...]  # labels in Segmentation.labels
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in px of the ink image, ends exclusive
    cols: tuple[int, int] | None = None  # only these columns [c0, c1) of the components, for a cut blob

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class Candidate:
    """One digit as segmented, and the cuts of it into two or three digits worth asking the classifier.
    The cuts are worked out when first asked for (`propose_cuts`): a reading needs those of a candidate
    only when the classifier is unsure of it whole, or it is too wide for one digit."""

    whole: Piece
    labels: np.ndarray = field(repr=False, compare=False)  # Segmentation.labels
    height: float = field(compare=False)  # px, its line's height

    @functools.cached_property
    def cuts(self) -> tuple[tuple[Piece, ...], ...]:
        return propose_cuts(self.whole, self.labels, self.height)


@dataclass(frozen=True, eq=False)
class Segmentation:
    labels: np.ndarray  # int32 (H, W): connected component of each ink pixel, 0 for paper
    lines: tuple[tuple[Candidate, ...], ...]  # top to bottom, each left to right
    line_heights: tuple[float, ...]  # px, the typical digit height of each line

    @property
    def count(self) -> int:
        return sum(len(line) for line in self.lines)


def segment(mask: np.ndarray) -> Segmentation:
    """The ink mask of a whole image -> its lines of digit candidates. A DigitlabError for more than
    MAX_CANDIDATES candidates (a page of text, or noise), raised before any cut is worked out."""
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))  # 8-connected, as find_ink's specks
    pieces = [
        Piece((i + 1,), (s[1].start, s[0].start, s[1].stop, s[0].stop))
        for i, s in enumerate(ndi.find_objects(labels))
        if s is not None
    ]
    lines = []
    for members in group_lines(pieces):
        height = line_height(members)
        lines.append((merge_pieces(members, height), height))
    count = sum(len(m) for m, _ in lines)
    if count > MAX_CANDIDATES:
        raise DigitlabError(
            f"image: {count} separate marks found, at most {MAX_CANDIDATES} digits are read in one image; "
            "expected a number (crop the image to it)"
        )
    labels = labels.astype(np.int32)
    return Segmentation(
        labels=labels,
        lines=tuple(tuple(Candidate(p, labels, h) for p in members) for members, h in lines),
        line_heights=tuple(float(h) for _, h in lines),
    )


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def line_height(pieces: list[Piece]) -> float:
    """The typical digit height of a line: the median height of its pieces at least half the tallest."""
    tallest = max(p.height for p in pieces)
    return float(np.median([p.height for p in pieces if p.height >= 0.5 * tallest]))


def group_lines(pieces: list[Piece]) -> list[list[Piece]]:
    """Pieces -> lines, top to bottom, each sorted left to right by centre. The tallest pieces found the
    lines; a piece joins the line it shares most of its rows with, and a small piece just above or
    below a line (the dot of a 1) joins the nearest one."""
    lines: list[list[Piece]] = []
    spans: list[list[int]] = []  # [y0, y1) of each line's founding pieces
    for p in sorted(pieces, key=lambda p: -p.height):
        y0, y1 = p.box[1], p.box[3]
        shared = [_overlap(y0, y1, s0, s1) for s0, s1 in spans]
        best = int(np.argmax(shared)) if spans else -1
        if spans and shared[best] >= LINE_OVERLAP * p.height:
            lines[best].append(p)
            continue
        near = [
            (max(s0 - y1, y0 - s1), k)
            for k, (s0, s1) in enumerate(spans)
            if p.height < SMALL * (s1 - s0) and max(s0 - y1, y0 - s1) <= FLOAT_DISTANCE * (s1 - s0)
        ]
        if near:
            lines[min(near)[1]].append(p)
        else:
            lines.append([p])
            spans.append([y0, y1])
    for line in lines:
        line.sort(key=lambda p: p.box[0] + p.box[2])
    order = sorted(range(len(lines)), key=lambda k: spans[k][0] + spans[k][1])
    return [lines[k] for k in order]


def _union(a: Piece, b: Piece) -> Piece:
    box = (min(a.box[0], b.box[0]), min(a.box[1], b.box[1]), max(a.box[2], b.box[2]), max(a.box[3], b.box[3]))
    return Piece(tuple(sorted(a.ids + b.ids)), box)


def _closeness(tiny: Piece, p: Piece) -> tuple[int, int]:
    """(minus the columns they share, the px between them): smaller is closer."""
    shared = _overlap(tiny.box[0], tiny.box[2], p.box[0], p.box[2])
    return -shared, max(p.box[0] - tiny.box[2], tiny.box[0] - p.box[2], 0)


def merge_pieces(pieces: list[Piece], height: float) -> list[Piece]:
    """Pieces of one line -> digit candidates, left to right. Two pieces are one digit when they share
    most of the narrower one's columns and the shorter is under SMALL of the line's height (a bar, a
    crossbar, a dot, half a broken 4), or when one lies almost within the other's columns; a piece
    under TINY of the line's height joins the neighbour it shares most columns with, or the nearest
    within TINY_REACH. Never into anything wider than MAX_DIGIT_WIDTH line heights."""
    pieces = sorted(pieces, key=lambda p: p.box[0] + p.box[2])
    widest = MAX_DIGIT_WIDTH * height

    def fits(a: Piece, b: Piece) -> bool:
        return max(a.box[2], b.box[2]) - min(a.box[0], b.box[0]) <= widest

    merged = True
    while merged:
        merged = False
        for i, j in itertools.combinations(range(len(pieces)), 2):
            a, b = pieces[i], pieces[j]
            shared = _overlap(a.box[0], a.box[2], b.box[0], b.box[2]) / min(a.width, b.width)
            short = min(a.height, b.height) < SMALL * height
            if (shared >= CONTAINED or (short and shared >= MERGE_OVERLAP)) and fits(a, b):
                pieces[i] = _union(a, b)
                del pieces[j]
                merged = True
                break
    for tiny in sorted((p for p in pieces if p.height < TINY * height), key=lambda p: p.height):
        if len(pieces) < 2 or tiny not in pieces:
            continue

        others = [
            p
            for p in pieces
            if p is not tiny and max(p.box[2], tiny.box[2]) - min(p.box[0], tiny.box[0]) <= TINY_WIDTH * height
        ]
        if not others:
            continue
        best = min(others, key=lambda p: _closeness(tiny, p))
        minus_shared, gap = _closeness(tiny, best)
        if minus_shared < 0 or gap <= TINY_REACH * height:
            k = pieces.index(best)
            pieces[k] = _union(best, tiny)
            pieces.remove(tiny)
    return sorted(pieces, key=lambda p: p.box[0] + p.box[2])


def piece_mask(piece: Piece, labels: np.ndarray, margin: int = 0) -> tuple[tuple[slice, slice], np.ndarray]:
    """The piece's ink as a bool mask over its box grown by `margin` px (clipped to the image), and
    that window as (rows, columns) slices of the whole image."""
    x0, y0, x1, y1 = piece.box
    window = (
        slice(max(y0 - margin, 0), min(y1 + margin, labels.shape[0])),
        slice(max(x0 - margin, 0), min(x1 + margin, labels.shape[1])),
    )
    ids = piece.ids
    mask = labels[window] == ids[0] if len(ids) == 1 else np.isin(labels[window], ids)  # ==: 5x as fast
    if piece.cols is not None:
        columns = np.arange(window[1].start, window[1].stop)
        mask &= ((columns >= piece.cols[0]) & (columns < piece.cols[1]))[None, :]
    return window, mask


def _part(piece: Piece, mask: np.ndarray, c0: int, c1: int) -> Piece | None:
    """The piece's ink between columns [c0, c1), with its own (tight) box; None when that holds no ink.
    `mask`: the whole piece's ink over its box (piece_mask's, without a margin)."""
    x0, y0 = piece.box[0], piece.box[1]
    part = mask[:, c0 - x0 : c1 - x0]
    rows, cols = np.flatnonzero(part.any(1)), np.flatnonzero(part.any(0))
    if not len(rows):
        return None
    x0 += c0 - piece.box[0]
    return Piece(piece.ids, (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1), (c0, c1))


def cut_columns(profile: np.ndarray, min_part: int, count: int = MAX_CUTS) -> list[int]:
    """Where to cut a blob whose columns hold `profile` ink px: a cut at c puts columns < c on the left
    and slices through column c. Local minima of the (3-column smoothed) profile, each part at least
    `min_part` columns wide, the emptiest column first, at most `count` of them, `min_part` apart."""
    n = len(profile)
    smooth = np.convolve(np.pad(profile.astype(float), 1, mode="edge"), np.ones(3) / 3, mode="valid")
    inner = range(min_part, n - min_part + 1)
    flat = 1e-9  # equal sums of three columns compare equal however they were added
    minima = [c for c in inner if smooth[c] <= smooth[c - 1] + flat and smooth[c] <= smooth[min(c + 1, n - 1)] + flat]
    ranked = sorted(minima or inner, key=lambda c: (profile[c], smooth[c], abs(c - n / 2)))
    chosen: list[int] = []
    for c in ranked:
        if len(chosen) == count:
            break
        if all(abs(c - k) >= min_part for k in chosen):
            chosen.append(c)
    return sorted(chosen)


def propose_cuts(piece: Piece, labels: np.ndarray, height: float) -> tuple[tuple[Piece, ...], ...]:
    """The ways to cut a candidate into two digits (at the narrowest columns of its ink) and, when it is
    wider than THREE_WIDTH line heights, into three; none for a candidate narrower than SPLIT_WIDTH."""
    if piece.width < SPLIT_WIDTH * height or piece.width < 4:
        return ()
    _, mask = piece_mask(piece, labels)
    min_part = max(2, round(MIN_PART * height))
    columns = [piece.box[0] + c for c in cut_columns(mask.sum(0), min_part, MAX_CUTS)]
    splits = [(c,) for c in columns]
    if piece.width > THREE_WIDTH * height:
        splits += [(a, b) for i, a in enumerate(columns) for b in columns[i + 1 :] if b - a >= min_part]
    out = []
    for cuts in splits:
        edges = (piece.box[0], *cuts, piece.box[2])
        parts = [_part(piece, mask, c0, c1) for c0, c1 in zip(edges, edges[1:])]
        if all(p is not None and p.height >= TINY * height for p in parts):  # no bar or tail alone
            out.append(tuple(parts))
    return tuple(out)


def cut_graph(piece: Piece, labels: np.ndarray, height: float, parts: int) -> dict[tuple[int, int], Piece]:
    """For a reading that needs more digits than were found: the pieces between any two columns where the
    candidate may be cut, at most MAX_DIGIT_WIDTH line heights apart, keyed by their columns [c0, c1); a
    way to cut it into n digits is a path of n pieces from its first column to its end. The columns: its
    ends, every local minimum of its ink's column profile, and the boundaries of its division into 2 to
    `parts` equal widths (two overlapping digits, 00, cross where their ink is thickest, at no minimum)."""
    if piece.width < SPLIT_WIDTH * height or piece.width < 4:
        return {}
    _, mask = piece_mask(piece, labels)
    profile = mask.sum(0)
    w, x0 = piece.width, piece.box[0]
    min_part = max(2, round(MIN_PART * height))
    minima = {0, w, *cut_columns(profile, min_part, count=w)}
    even = {round(w * i / k) for k in range(2, parts + 1) for i in range(1, k)}
    # an equal division within half a part's least width of a minimum adds nothing the minimum does not
    even = {c for c in even if min(abs(c - m) for m in minima) * 2 >= min_part}
    columns = sorted(c for c in minima | even if c in (0, w) or min_part <= c <= w - min_part)
    out = {}
    for i, a in enumerate(columns):
        for b in columns[i + 1 :]:
            if b - a > MAX_DIGIT_WIDTH * height:
                break
            if b - a >= min_part:
                part = _part(piece, mask, x0 + a, x0 + b)
                if part is not None and part.height >= TINY * height:  # no bar or tail alone
                    out[x0 + a, x0 + b] = part
    return out
