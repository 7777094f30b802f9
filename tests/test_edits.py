"""prep.edits: haplotypes stored as edits rebuild prep.builder's windows byte for byte.

The oracle is HaplotypeBuilder.fixed (itself held to bcftools by test_builder_bcftools and
test_builder_edges): every literal edge case, every gene x haplotype of the real chr20 (indels)
and chr22 data, windows cropped from a wider build, and batches with shifts, reverse complements
and both fill modes against the NumPy crop of the stored windows a v2 shard would hold
(tests/window_oracle.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_builder_edges import FIXED, RAGGED, _builder, genome  # noqa: F401 (fixture)

from prep.builder import HaplotypeBuilder
from prep.edits import (
    _next_carried,
    build_windows,
    build_windows_serial,
    fixed_windows_from_edits,
    make_pool,
)
from prep.encoding import decode
from prep.gene_record import decode_gene, encode_gene
from prep.regions import read_tss_table
from tests.conftest import CHR20_REF, CHR20_TSS, CHR20_VCF, CHR22_REF, CHR22_TSS, CHR22_VCF
from tests.window_oracle import crop


def _from_edits(builder, chrom, tss, length, minus=False):
    region = builder.edits(chrom, np.array([tss]), length)[0]
    return fixed_windows_from_edits(region.ref, region.edits, tss - region.span_start, length,
                                    minus)


@pytest.mark.parametrize("name", list(FIXED))
def test_every_fixed_edge_case(name, genome, tmp_path):  # noqa: F811
    case = FIXED[name]
    builder, _ = _builder(genome, tmp_path, case.records)
    windows = _from_edits(builder, "1", case.tss, case.length)
    assert (decode(windows[0]), decode(windows[1])) == case.want


@pytest.mark.parametrize("name", list(RAGGED))
def test_every_ragged_edge_case_as_a_whole_contig_window(name, genome, tmp_path):  # noqa: F811
    """Joined indels, bcftools' soft-masked rewrite, overlaps, multi-allelic records..."""
    builder, _ = _builder(genome, tmp_path, RAGGED[name].records)
    want = builder.fixed("1", np.array([20]), 48).seqs[0].reshape(2, 48)
    assert np.array_equal(_from_edits(builder, "1", 20, 48), want)


def _real_genes(tss_path, chrom, lo, hi, length):
    tss = read_tss_table(tss_path)
    t = tss.filter(tss["chrom"].is_in([chrom, f"chr{chrom}"]))["tss"].to_numpy()
    return np.sort(t[(t - length // 2 > lo) & (t + length // 2 < hi)])


@pytest.mark.parametrize(("ref", "vcf", "tss", "chrom", "span"), [
    (CHR20_REF, CHR20_VCF, CHR20_TSS, "20", (1_000_000, 2_000_000)),
    (CHR22_REF, CHR22_VCF, CHR22_TSS, "22", (20_000_000, 21_000_000)),
])
def test_real_genes_every_haplotype_equals_fixed(ref, vcf, tss, chrom, span):
    length = 49_152
    genes = _real_genes(tss, chrom, *span, length)
    builder = HaplotypeBuilder(ref, vcf)
    builder.preload(chrom, *span)
    for t in genes:
        want = builder.fixed(chrom, np.array([t]), length).seqs[0]
        got = _from_edits(builder, chrom, int(t), length).reshape(want.shape)
        assert np.array_equal(got, want), f"gene with TSS {chrom}:{t}"


def test_a_window_cropped_from_a_wider_build_equals_a_build_at_that_length():
    builder = HaplotypeBuilder(CHR20_REF, CHR20_VCF)
    builder.preload("20", 1_000_000, 2_000_000)
    for t in _real_genes(CHR20_TSS, "20", 1_000_000, 2_000_000, 196_608)[:4]:
        region = builder.edits("20", np.array([t]), 196_608)[0]
        for length in (49_152, 4_096, 131_072):
            got = fixed_windows_from_edits(region.ref, region.edits, int(t) - region.span_start,
                                           length)
            want = builder.fixed("20", np.array([t]), length).seqs[0].reshape(got.shape)
            assert np.array_equal(got, want), (t, length)


def test_counts_equal_the_builders():
    builder = HaplotypeBuilder(CHR20_REF, CHR20_VCF)
    t = _real_genes(CHR20_TSS, "20", 1_000_000, 2_000_000, 49_152)[:3]
    regions = builder.edits("20", t, 49_152)
    fixed = builder.fixed("20", t, 49_152)
    for g, region in enumerate(regions):
        assert region.n_variants == fixed.n_variants[g]
        for name in ("applied", "missing", "overlap_skipped"):
            assert np.array_equal(region.counts[name], fixed.counts[name][g]), name


@pytest.mark.parametrize("kernel", [build_windows, build_windows_serial])
@pytest.mark.parametrize("fill", ["flank", "N"])
def test_batches_equal_crops_of_stored_windows(fill, kernel):
    """What a v2 loader crops from a stored W-base window (flank 8), shifted, reverse-
    complemented, minus-strand windows stored reverse-complemented: the batch kernel (numba
    threads, or the calling thread only) writes the same bytes and TSS indexes straight from
    edits."""
    length, flank, n = 49_152, 8, 4_096
    width = length + 2 * flank
    builder = HaplotypeBuilder(CHR20_REF, CHR20_VCF)
    builder.preload("20", 1_000_000, 2_000_000)
    t = _real_genes(CHR20_TSS, "20", 1_000_000, 2_000_000, width)[:5]
    minus = np.array([False, True, False, True, False])
    stored = builder.fixed("20", t, width, minus).seqs  # (G, S, 2, W), what v2 shards hold
    regions = builder.edits("20", t, width)
    pool = make_pool([(r.ref, r.edits, int(t[g]) - r.span_start, bool(minus[g]))
                      for g, r in enumerate(regions)])
    rng = np.random.default_rng(0)
    b = 64
    slot = rng.integers(0, len(t), b)
    row = rng.integers(0, stored.shape[1], b)
    shift = rng.integers(-11, 12, b)  # beyond the flank too: N (or real bases, per fill)
    rc = rng.random(b) < 0.5
    slot[3] = -1  # padding
    out = np.empty((b, 2, n), np.uint8)
    tss_index = np.empty(b, np.int64)
    kernel(pool, slot, row, shift, rc, width, fill == "N", out, tss_index)
    assert (out[3] == 4).all() and tss_index[3] == -1
    for i in np.flatnonzero(slot >= 0):
        seq = stored[slot[i], row[i]]
        tss = width - 1 - width // 2 if minus[slot[i]] else width // 2
        want, want_tss = crop(seq, tss, flank, n, int(shift[i]), bool(rc[i]), fill)
        assert np.array_equal(out[i], want), i
        assert tss_index[i] == want_tss, i


def _record():
    from prep.shard_format import safe_key

    builder = HaplotypeBuilder(CHR20_REF, CHR20_VCF)
    t = int(_real_genes(CHR20_TSS, "20", 1_000_000, 2_000_000, 49_152)[0])
    region = builder.edits("20", np.array([t]), 49_168)[0]
    individuals = list(builder.samples)
    meta = {"build": "b" * 12, "gene": "ENSG00000000001.1", "chrom": "20", "tss": t, "strand": "+",
            "span_start": region.span_start, "tss_rel": t - region.span_start, "length": 49_152,
            "flank": 8, "width": 49_168, "reverse_complemented": False,
            "individuals": individuals,
            "applied": np.stack([region.counts["applied"][:, 0], region.counts["applied"][:, 1]],
                                1).tolist()}
    members = encode_gene(meta, region.ref, region.edits)
    sample = {"__key__": safe_key(meta["gene"]), **dict(members)}
    return region, meta, sample


def test_gene_record_round_trip():
    region, meta, sample = _record()
    rec = decode_gene(sample, "s.tar")
    assert rec.meta["individuals"] == meta["individuals"] and rec.meta["format"] == 3
    assert np.array_equal(rec.ref, region.ref)
    for name in ("starts", "ends", "alt_offsets", "alt_codes", "bits"):
        assert np.array_equal(getattr(rec.edits, name), getattr(region.edits, name)), name


@pytest.mark.parametrize("ext", ["json", "ref.2bit", "var.zst"])
def test_gene_record_corruption_is_an_error_naming_the_member(ext):
    from prep.shard_format import ShardFormatError

    _, _, sample = _record()
    blob = bytearray(sample[ext])
    blob[len(blob) // 2] ^= 0x10
    sample[ext] = bytes(blob)
    with pytest.raises(ShardFormatError, match=rf"s.tar.*\.{ext}.*corrupt"):
        decode_gene(sample, "s.tar")


def test_next_carried_edit_skips_empty_bytes_and_stale_bits():
    """The set-bit walk of a haplotype's row: every carried edit in order, nothing at or past
    n_edits (a pool slot's row may hold a longer gene's stale bits beyond its own edits)."""
    carried = [0, 7, 8, 30, 41]
    row = np.packbits(np.isin(np.arange(64), carried + [45, 63]))  # 45, 63: stale, beyond 44
    got, e = [], _next_carried(row, 0, 44)
    while e < 44:
        got.append(e)
        e = _next_carried(row, e + 1, 44)
    assert got == carried
    assert _next_carried(row, 9, 44) == 30 and _next_carried(row, 42, 44) == 44
    assert _next_carried(np.zeros(0, np.uint8), 0, 0) == 0
