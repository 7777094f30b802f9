"""Which batch streams a training micro-step draws: a pure function of the micro-step index.

Joint training reads several batch streams (personal pairs, Enformer's own data, MPRA effects).
:func:`stream_schedule` says which of them micro-step ``j`` draws, so every DDP rank agrees
without communicating and a resumed run continues exactly (it only needs ``j``):

* ``"all"`` — every stream every micro-step (hapflow's behaviour before joint data);
* ``"round_robin"`` — one stream per micro-step, in turn, in the order of ``weights``;
* ``"ratio"`` — one stream per micro-step, by a smooth weighted round-robin (nginx's: each
  stream's credit grows by its ratio every micro-step; the stream with most credit is drawn and
  pays the total). Ratios are made integer (fractions up to 1/1000) so the schedule repeats
  with a period of their sum: ``{"pairs": 4, "enformer_human": 1, "mpra": 1}`` draws pairs 4,
  enformer 1 and mpra 1 time in every 6 micro-steps, spread out (never the 1-ratio streams
  back to back while pairs wait).

Torch-free.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from fractions import Fraction

from hapflow.sections import TrainConfig

__all__ = ["MIXING_MODES", "Schedule", "stream_schedule"]

MIXING_MODES = typing.get_args(typing.get_type_hints(TrainConfig)["mixing"])
"""The ``[train] mixing`` modes (those the setting's type lists: one list of them)."""


@dataclass(frozen=True)
class Schedule:
    """A periodic schedule of streams: ``schedule(j)`` is the tuple of streams micro-step ``j``
    (0-based) draws.

    Attributes
    ----------
    streams : tuple of str
        Every stream, in the order given.
    pattern : tuple of tuple of str
        One period: ``schedule(j) == pattern[j % len(pattern)]``.
    """

    streams: tuple[str, ...]
    pattern: tuple[tuple[str, ...], ...]

    def __call__(self, j: int) -> tuple[str, ...]:
        if j < 0:
            raise ValueError(f"micro-step {j} < 0")
        return self.pattern[j % len(self.pattern)]

    @property
    def period(self) -> int:
        return len(self.pattern)

    def counts(self, n: int) -> dict[str, int]:
        """How often each stream is drawn in micro-steps ``0 .. n - 1``."""
        full, rest = divmod(n, self.period)
        out = dict.fromkeys(self.streams, 0)
        for j, drawn in enumerate(self.pattern):
            for s in drawn:
                out[s] += full + (1 if j < rest else 0)
        return out

    def micro_steps_for(self, stream: str, n: int) -> int:
        """The fewest micro-steps (from 0) that draw ``stream`` ``n`` times (0 for n = 0)."""
        if n <= 0:
            return 0
        per = sum(stream in drawn for drawn in self.pattern)
        if per == 0:
            raise ValueError(f"the schedule never draws stream {stream!r}")
        full, rest = divmod(n - 1, per)
        seen = -1
        for j, drawn in enumerate(self.pattern):
            seen += stream in drawn
            if seen == rest:
                return full * self.period + j + 1
        raise AssertionError("unreachable")


def _integer_ratios(weights: dict[str, float]) -> dict[str, int]:
    fractions = {s: Fraction(w).limit_denominator(1000) for s, w in weights.items()}
    denominator = math.lcm(*(f.denominator for f in fractions.values()))
    ints = {s: int(f * denominator) for s, f in fractions.items()}
    g = math.gcd(*ints.values())
    return {s: v // g for s, v in ints.items()}


def stream_schedule(weights: dict[str, float], mode: str) -> Schedule:
    """The schedule of ``weights``' streams under ``mode`` (see the module docstring).

    Parameters
    ----------
    weights : {stream: ratio}
        Streams in their round-robin order; ratios (> 0) are used by ``"ratio"`` only.
    mode : "all", "round_robin" or "ratio"

    Raises
    ------
    ValueError
        No streams, an unknown mode, or a ratio that is not > 0.
    """
    streams = tuple(weights)
    if not streams:
        raise ValueError("a schedule needs at least one stream")
    if mode == "all":
        return Schedule(streams, (streams,))
    if mode == "round_robin":
        return Schedule(streams, tuple((s,) for s in streams))
    if mode != "ratio":
        raise ValueError(f"mixing mode {mode!r} is not one of {', '.join(MIXING_MODES)}")
    bad = [s for s, w in weights.items() if not (w > 0 and math.isfinite(w))]
    if bad:
        raise ValueError(f"stream ratio(s) of {', '.join(bad)} must be > 0")
    ints = _integer_ratios(weights)
    total = sum(ints.values())
    credit = dict.fromkeys(streams, 0)
    pattern = []
    for _ in range(total):
        for s in streams:
            credit[s] += ints[s]
        best = max(streams, key=lambda s: credit[s])  # first in order on ties
        credit[best] -= total
        pattern.append((best,))
    return Schedule(streams, tuple(pattern))
