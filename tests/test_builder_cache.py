"""What makes per-call building fast changes no byte: records kept across calls, reference bases
kept, the numba span planner, ragged mode's ``out`` buffer, streamed (non-temporal) outputs.

Every test compares against the plain path on the real chr20 data (300 samples with indels).
"""

from __future__ import annotations

import numpy as np
import pytest

import prep.builder
from prep.builder import HaplotypeBuilder, _fixed_spans
from prep.reference import Reference
from prep.variant_cache import BlockCache
from prep.variants import VariantReader
from tests.conftest import CHR20_REF, CHR20_TSS, CHR20_VCF

SPAN = (1_000_000, 2_000_000)  # real sequence and variants of the bundled chr20
L = 16_384


def _tss(n: int | None = None) -> np.ndarray:
    lines = CHR20_TSS.read_text().splitlines()
    col = lines[0].split("\t").index("tss_hg19")
    t = np.array(sorted(int(float(ln.split("\t")[col])) - 1 for ln in lines[1:] if ln.strip()))
    t = t[(t - L > SPAN[0]) & (t + L < SPAN[1])]
    return t[:n]


@pytest.fixture(scope="module")
def samples() -> list[str]:
    return VariantReader(CHR20_VCF).samples[::10]  # 30 samples keep the test quick


def _spans_calls(builder: HaplotypeBuilder, monkeypatch) -> list[tuple[int, int]]:
    """Record every span the builder's VCF reader reads."""
    calls: list[tuple[int, int]] = []
    read = builder.variants.read

    def spy(chrom, start, end, *args, **kw):
        calls.append((start, end))
        return read(chrom, start, end, *args, **kw)

    monkeypatch.setattr(builder.variants, "read", spy)
    return calls


def test_batches_advancing_along_the_chromosome_read_each_record_once(samples, monkeypatch):
    tss = _tss()
    fresh = HaplotypeBuilder(CHR20_REF, CHR20_VCF, samples)
    kept = HaplotypeBuilder(CHR20_REF, CHR20_VCF, samples)
    calls = _spans_calls(kept, monkeypatch)
    for lo in range(0, tss.shape[0], 3):  # overlapping windows, batch after batch
        batch = tss[lo : lo + 3]
        fresh.clear_cache()
        want = fresh.fixed("20", batch, L)
        got = kept.fixed("20", batch, L)
        assert np.array_equal(got.seqs, want.seqs), f"batch at {batch[0]}"
        assert np.array_equal(got.n_variants, want.n_variants)
        for name in want.counts:
            assert np.array_equal(got.counts[name], want.counts[name]), name
    # a read never starts inside the span read just before it: no record is read twice
    assert len(calls) > 4 and any(b[0] == a[1] for a, b in zip(calls[:-1], calls[1:], strict=True))
    assert not any(a[0] <= b[0] < a[1] for a, b in zip(calls[:-1], calls[1:], strict=True))
    for lo in range(0, tss.shape[0], 3):  # ragged intervals through the same cache
        batch = tss[lo : lo + 3]
        fresh.clear_cache()
        rag, want_rag = (b.ragged("20", batch - L, batch + L) for b in (kept, fresh))
        assert np.array_equal(rag.data, want_rag.data)
        assert np.array_equal(rag.offsets, want_rag.offsets)


def test_cache_serves_spans_inside_and_reads_others_afresh(samples):
    reader = VariantReader(CHR20_VCF, samples)
    cache = BlockCache(reader, Reference(CHR20_REF), "error")
    block, lo, hi = cache.get("20", 1_300_000, 1_400_000)
    assert (lo, hi) == (1_300_000, 1_400_000)
    assert cache.get("chr20", 1_310_000, 1_390_000)[0] is block  # inside, alias accepted
    ext, lo, hi = cache.get("20", 1_350_000, 1_450_000)  # forward: appended, front trimmed
    direct = reader.read("20", 1_350_000, 1_450_000)
    keep = ext.pos + ext.ref_len > 1_350_000
    assert np.array_equal(ext.pos[keep], direct.pos)
    assert np.array_equal(ext.hap_allele[:, keep], direct.hap_allele)
    assert [ext.ref_alleles[i] for i in np.flatnonzero(keep)] == direct.ref_alleles
    back, lo, hi = cache.get("20", 1_000_000, 1_100_000)  # behind: a fresh read
    assert (lo, hi) == (1_000_000, 1_100_000)
    assert np.array_equal(back.pos, reader.read("20", 1_000_000, 1_100_000).pos)


def test_fixed_spans_equal_the_scan_they_replace(samples):
    builder = HaplotypeBuilder(CHR20_REF, CHR20_VCF, samples)
    block = builder.preload("20", *SPAN)
    for length in (L, 49_152):
        tss = _tss()
        got = _fixed_spans(block, tss, length)
        want = _scan_spans(block, tss, length)
        for a, b in zip(got, want, strict=True):
            assert np.array_equal(a, b)


def _scan_spans(block, tss, length):
    """The per-region Python scan prep.builder used before (the oracle)."""
    half = length // 2
    pos, ends = block.pos, block.pos + block.ref_len
    cum = np.concatenate([[0], np.cumsum(block.max_deletion())])
    max_len = int(block.ref_len.max()) if block.n_records else 1
    out = np.empty((3, tss.shape[0]), dtype=np.int64)
    for g, t in enumerate(tss.tolist()):
        a = t - half
        while True:
            d = cum[np.searchsorted(pos, t + 1)] - cum[np.searchsorted(pos, a)]
            over = (pos < a) & (ends > a)
            a_new = min(t - half - d, int(pos[over].min()) if over.any() else a)
            if a_new >= a:
                break
            a = a_new
        b = t + (length - half)
        first = np.searchsorted(pos, t - max_len)
        while True:
            d = cum[np.searchsorted(pos, b)] - cum[first]
            if t + (length - half) + d <= b:
                break
            b = t + (length - half) + d
        i0, i1 = np.searchsorted(pos, a), np.searchsorted(pos, b)
        out[:, g] = a, max(b, int(ends[i0:i1].max()) if i1 > i0 else b), b
    return tuple(out)


def test_streamed_outputs_equal_plain_ones(samples, monkeypatch):
    """Outputs of 8 MB or more are built in a per-thread scratch and streamed out."""
    builder = HaplotypeBuilder(CHR20_REF, CHR20_VCF, samples)
    tss = np.concatenate([[100], _tss(12)])  # 100: a window past the contig's start (N)
    minus = np.arange(tss.shape[0]) % 2 == 1
    streamed = builder.fixed("20", tss, 49_152, minus)
    assert streamed.seqs.nbytes >= prep.builder._STREAM_BYTES
    rag = builder.ragged("20", tss[1:] - 20_000, tss[1:] + 20_000, minus[1:])
    assert rag.data.nbytes >= prep.builder._STREAM_BYTES
    monkeypatch.setattr(prep.builder, "_STREAM_BYTES", 1 << 62)
    plain = builder.fixed("20", tss, 49_152, minus)
    assert np.array_equal(streamed.seqs, plain.seqs)
    for name in plain.counts:
        assert np.array_equal(streamed.counts[name], plain.counts[name]), name
    assert streamed.counts["applied"].sum() > 1000
    plain_rag = builder.ragged("20", tss[1:] - 20_000, tss[1:] + 20_000, minus[1:])
    assert np.array_equal(rag.data, plain_rag.data)


def test_ragged_out_buffer_is_filled_when_large_enough(samples):
    builder = HaplotypeBuilder(CHR20_REF, CHR20_VCF, samples)
    starts, ends = np.array([1_200_000, 1_500_000]), np.array([1_201_000, 1_503_000])
    want = builder.ragged("20", starts, ends)
    buf = np.full(want.data.shape[0] + 100, 7, np.uint8)
    got = builder.ragged("20", starts, ends, out=buf)
    assert np.shares_memory(got.data, buf) and np.array_equal(got.data, want.data)
    assert (buf[want.data.shape[0]:] == 7).all()
    small = np.empty(10, np.uint8)
    again = builder.ragged("20", starts, ends, out=small)
    assert not np.shares_memory(again.data, small) and np.array_equal(again.data, want.data)
    with pytest.raises(ValueError, match="1-D C-contiguous uint8"):
        builder.ragged("20", starts, ends, out=np.empty(10**6, np.int16))


def test_reference_keeps_the_last_span_and_hands_out_copies():
    cached, plain = Reference(CHR20_REF), Reference(CHR20_REF)
    rng = np.random.default_rng(0)
    start = 1_000_000
    for _ in range(40):  # advancing, overlapping, inside, behind, past the contig's ends
        start += int(rng.integers(-60_000, 80_000))
        end = start + int(rng.integers(0, 120_000))
        plain.clear_cache()
        want = plain.fetch_with_case("20", start, end)
        got = cached.fetch_with_case("20", start, end)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    codes = cached.fetch("20", 1_500_000, 1_500_100)
    codes[:] = 9
    assert (cached.fetch("20", 1_500_000, 1_500_100) != 9).all()
    assert cached.fetch("20", -5, 3).tolist()[:5] == [4] * 5
