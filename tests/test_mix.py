"""loader.mix: which streams each micro-step draws (counts over a period, spread, determinism)."""

from __future__ import annotations

import pytest

from loader.mix import stream_schedule

STREAMS = {"pairs": 4.0, "enformer_human": 1.0, "mpra": 1.0}


def test_all_draws_every_stream_every_micro_step():
    s = stream_schedule(STREAMS, "all")
    assert [s(j) for j in range(3)] == [("pairs", "enformer_human", "mpra")] * 3
    assert s.counts(10) == {"pairs": 10, "enformer_human": 10, "mpra": 10}
    assert s.micro_steps_for("pairs", 7) == 7


def test_round_robin_takes_turns_in_order():
    s = stream_schedule(STREAMS, "round_robin")
    assert [s(j)[0] for j in range(7)] == ["pairs", "enformer_human", "mpra"] * 2 + ["pairs"]
    assert s.counts(9) == {"pairs": 3, "enformer_human": 3, "mpra": 3}
    assert s.micro_steps_for("pairs", 3) == 7


def test_ratio_counts_over_a_period_and_spread():
    s = stream_schedule(STREAMS, "ratio")
    assert s.period == 6
    assert s.counts(6) == {"pairs": 4, "enformer_human": 1, "mpra": 1}
    assert s.counts(600) == {"pairs": 400, "enformer_human": 100, "mpra": 100}
    drawn = [s(j)[0] for j in range(6)]
    # smooth: the rare streams are never drawn back to back
    assert "enformer_human" in drawn and "mpra" in drawn
    assert all(not (a != "pairs" and b != "pairs") for a, b in zip(drawn, drawn[1:], strict=False))
    assert all(len(s(j)) == 1 for j in range(12))
    # micro_steps_for agrees with counting
    for n in range(1, 30):
        m = s.micro_steps_for("pairs", n)
        assert s.counts(m)["pairs"] == n and s(m - 1) == ("pairs",)


def test_fractional_ratios_and_determinism():
    a = stream_schedule({"pairs": 0.5, "mpra": 0.25}, "ratio")
    b = stream_schedule({"pairs": 0.5, "mpra": 0.25}, "ratio")
    assert a.pattern == b.pattern and a.counts(3) == {"pairs": 2, "mpra": 1}
    # a pure function of the index: any micro-step, asked in any order, the same answer
    assert [a(j) for j in (1000, 5, 3)] == [a(1000), a(5), a(3)]
    assert a(1000) == a(1000 % a.period)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="mixing mode"):
        stream_schedule(STREAMS, "random")
    with pytest.raises(ValueError, match="> 0"):
        stream_schedule({"pairs": 1.0, "mpra": 0.0}, "ratio")
    with pytest.raises(ValueError, match="at least one"):
        stream_schedule({}, "all")
