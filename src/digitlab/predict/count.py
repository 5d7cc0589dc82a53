"""How many digits a form's field holds (`--digits 4`, `--digits 5-9`, the API's `digits`): the count a
reading must have, parsed once and checked here for the CLI, the REST API and batch alike.

A reader given a `DigitCount` returns its best reading with that many digits (the line model's
constrained CTC decoding, `predict.ctc.count_decode`; the segmentation's cut and merged candidates,
`predict.segmented.decide`). When the reading it gives without the count has that count, nothing
changes. Otherwise the reading with the count is unsure, with the reason `found_reason` gives: "expected 4
digits, found 3", and "clearly" when the reading found was sure and the one with the expected count is
less than 1/CLEARLY as likely. (On validation strings such forced readings were right 24 times in 55:
accepted, they made the accepted numbers 92 % right instead of 97 %; docs/design/reading.md.)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from digitlab.errors import DigitlabError

MAX_DIGITS = 64  # digits a reading may be asked to have: segmentation's MAX_CANDIDATES, a line model's frames
CLEARLY = 20.0  # the found count is "clear" when the expected one's best reading is this many times less likely
LOG_CLEARLY = math.log(CLEARLY)

_SPEC = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


@dataclass(frozen=True)
class DigitCount:
    """A reading's number of digits, all lines together: from `least` to `most`, both included."""

    least: int
    most: int

    def __post_init__(self) -> None:
        if not 1 <= self.least <= self.most <= MAX_DIGITS:
            raise ValueError(f"DigitCount: expected 1 <= least <= most <= {MAX_DIGITS}, got {self.least}-{self.most}")

    def __contains__(self, n: int) -> bool:
        return self.least <= n <= self.most

    def __str__(self) -> str:
        return str(self.least) if self.least == self.most else f"{self.least}-{self.most}"

    def expected(self) -> str:
        """'4 digits', '1 digit', '5-9 digits'."""
        return f"{self} digit{'' if self.most == 1 else 's'}"


def parse_digits(value: str | int | DigitCount | None, name: str = "--digits") -> DigitCount | None:
    """'4', '5-9' (or an int) -> a DigitCount; None stays None. A DigitlabError naming `name` (the option or
    the request's field) for anything else: not a number or range, 0, a range backwards, over MAX_DIGITS."""
    if value is None or isinstance(value, DigitCount):
        return value
    text = str(value)
    m = _SPEC.fullmatch(text)
    if m is None or isinstance(value, bool):
        raise DigitlabError(f"{name}: expected a number of digits like 4 or a range like 5-9, got {text!r}")
    least = int(m.group(1))
    most = int(m.group(2)) if m.group(2) is not None else least
    if least < 1:
        raise DigitlabError(f"{name}: expected at least 1 digit, got {text!r}")
    if most < least:
        raise DigitlabError(
            f"{name}: the range {text!r} runs backwards; expected the smaller count first, like {most}-{least}"
        )
    if most > MAX_DIGITS:
        raise DigitlabError(f"{name}: at most {MAX_DIGITS} digits are read in one image, got {text!r}")
    return DigitCount(least, most)


def found_reason(expected: DigitCount, found: int, clearly: bool) -> str:
    """Why a reading is unsure for its count: 'expected 4 digits, found 3 clearly'."""
    return f"expected {expected.expected()}, found {found}{' clearly' if clearly else ''}"
