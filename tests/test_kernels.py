"""One literal case per genomic edge condition, straight on the numba walk."""

import numpy as np
import pytest

from prep.encoding import decode, encode
from prep.kernels import (
    COUNT_APPLIED,
    COUNT_MISSING,
    COUNT_NOT_SNP,
    COUNT_OVERLAP,
    COUNT_SYMBOLIC,
    N_COUNTS,
    VariantArrays,
    walk_haplotype,
)
from prep.variants import REF_FIRST_LOWER, SYMBOLIC, TRIM_FIRST_BASE, is_indel_htslib

REF = "ACGTACGTAC"  # positions 0..9


def walk(records, alleles, ref=REF, ref_start=0, tss=-1, window=None, snps_only=False,
         lower=None):
    """records: [(pos, REF, [ALT, ...])]; alleles: allele index per record for one haplotype."""
    pos, rlen, first, offs, codes, flags = [], [], [], [0], [], []
    for p, r, alts in records:
        pos.append(p)
        rlen.append(len(r))
        first.append(len(flags))
        for a in alts:
            sym = a.startswith("<") or a == "*"
            f = int(SYMBOLIC) if sym else 0
            if not sym and is_indel_htslib(r, a) and r[0] == a[0]:
                f |= int(TRIM_FIRST_BASE)
            if r[:1].islower():
                f |= int(REF_FIRST_LOWER)
            flags.append(f)
            c = [] if sym else encode(a).tolist()
            codes.extend(c)
            offs.append(offs[-1] + len(c))
    counts = np.zeros(N_COUNTS, np.int32)
    if window is None:
        out, out_lo, stop = np.zeros(0, np.uint8), 0, np.iinfo(np.int64).max
    else:
        out_lo, n = window
        out, stop = np.full(n, 9, np.uint8), out_lo + n
    lower = np.zeros(len(ref), np.uint8) if lower is None else np.asarray(lower, np.uint8)
    variants = VariantArrays(
        np.array(pos, np.int64), np.array(rlen, np.int64), np.array(first, np.int64),
        np.array(offs, np.int64), np.array(codes, np.uint8), np.array(flags, np.uint8),
        np.array(alleles, np.int16).reshape(1, -1),
    )
    n, tss_hap = walk_haplotype(
        encode(ref), lower, ref_start, variants, 0, 0, len(records), snps_only, tss, out,
        out_lo, stop, counts,
    )
    return n, tss_hap, out, counts


def build(records, alleles, **kw):
    n, tss_hap, _, counts = walk(records, alleles, **kw)
    _, _, out, _ = walk(records, alleles, window=(0, n), **kw)
    return decode(out), tss_hap, counts


def test_case_reference_only():
    seq, _, counts = build([(2, "G", ["T"])], [0])
    assert seq == REF and counts.sum() == 0


def test_case_snps():
    seq, _, counts = build([(0, "A", ["G"]), (9, "C", ["T"])], [1, 1])
    assert seq == "GCGTACGTAT" and counts[COUNT_APPLIED] == 2


def test_case_multiallelic_picks_gt_allele():
    assert build([(3, "T", ["A", "C"])], [2])[0] == "ACGCACGTAC"


def test_case_insertion_and_deletion():
    seq, _, _ = build([(1, "C", ["CTT"]), (4, "ACG", ["A"])], [1, 1])
    assert seq == "ACTTGTATAC"


def test_case_missing_genotype_counted():
    seq, _, counts = build([(1, "C", ["G"])], [-1])
    assert seq == REF and counts[COUNT_MISSING] == 1


def test_case_symbolic_skipped():
    # a <DEL> never reaches the kernels as symbolic (prep.variants makes it a deletion)
    seq, _, counts = build([(1, "C", ["<INS>"]), (2, "G", ["*"])], [1, 1])
    assert seq == REF and counts[COUNT_SYMBOLIC] == 2


def test_case_overlap_inside_deletion_skipped():
    # deletion of positions 2-3, then a SNP at 3: bcftools skips the SNP
    seq, _, counts = build([(1, "CGT", ["C"]), (3, "T", ["A"])], [1, 1])
    assert seq == "ACACGTAC" and counts[COUNT_OVERLAP] == 1


def test_case_insertion_after_snp_same_position_joins():
    # SNP C>G at 1 then insertion C>CAA at 1: bcftools keeps the SNP base, adds AA
    seq, _, counts = build([(1, "C", ["G"]), (1, "C", ["CAA"])], [1, 1])
    assert seq == "AGAAGTACGTAC" and counts[COUNT_APPLIED] == 2


def test_case_insertion_after_snp_on_soft_masked_sequence_rewrites_the_snp():
    # bcftools gives ALT the reference's case; lower-case 'g' != REF 'C', so its ibeg loop
    # starts at 0 and the insertion's first base overwrites the SNP (checked with bcftools 1.16)
    records = [(1, "C", ["G"]), (1, "C", ["CAA"])]
    seq, _, counts = build(records, [1, 1], lower=[0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    assert seq == "ACAAGTACGTAC" and counts[COUNT_APPLIED] == 2
    seq, _, _ = build(records, [1, 1], lower=[1] * 10)
    assert seq == "ACAAGTACGTAC"
    seq, _, _ = build(records, [1, 1], lower=[1, 0] + [1] * 8)  # SNP base upper case: kept
    assert seq == "AGAAGTACGTAC"


def test_case_snp_at_last_base_of_deletion_skipped():
    seq, _, counts = build([(1, "CG", ["C"]), (2, "G", ["A"])], [1, 1])
    assert seq == "ACTACGTAC" and counts[COUNT_OVERLAP] == 1


def test_case_second_insertion_at_same_position_skipped():
    seq, _, counts = build([(1, "C", ["CA"]), (1, "C", ["CT"])], [1, 1])
    assert seq == "ACAGTACGTAC" and counts[COUNT_OVERLAP] == 1


def test_case_variant_before_span_ignored():
    # span starts at reference position 2; a deletion starting at 1 is ignored (bcftools)
    seq, _, _ = build([(1, "CGT", ["C"])], [1], ref=REF[2:], ref_start=2)
    assert seq == REF[2:]


def test_case_deletion_clipped_at_span_end():
    # REF runs past the span: clipped to the span, ALT truncated to the clipped length
    seq, _, _ = build([(8, "ACGG", ["A"])], [1])
    assert seq == "ACGTACGTA"
    seq, _, _ = build([(9, "CA", ["TTT"])], [1])
    assert seq == "ACGTACGTAT"


def test_case_snps_only_skips_indels():
    seq, _, counts = build([(1, "C", ["CTT"]), (4, "A", ["G"])], [1, 1], snps_only=True)
    assert seq == "ACGTGCGTAC" and counts[COUNT_NOT_SNP] == 1


@pytest.mark.parametrize(
    "records, alleles, tss, expected",
    [
        ([], [], 5, 5),  # no variant: identity
        ([(1, "C", ["CTT"])], [1], 5, 7),  # insertion upstream shifts by +2
        ([(5, "C", ["CTT"])], [1], 5, 5),  # TSS is the insertion's anchor: stays on it
        ([(4, "A", ["ATT"])], [1], 5, 7),  # insertion anchored just before the TSS: upstream
        ([(3, "TACG", ["T"])], [1], 5, 4),  # TSS deleted: first base after the deletion
        ([(1, "CG", ["C"])], [1], 5, 4),  # deletion upstream shifts by -1
        ([(7, "G", ["GAAA"])], [1], 5, 5),  # downstream insertion: no shift
    ],
)
def test_tss_placement(records, alleles, tss, expected):
    _, tss_hap, _ = build(records, alleles, tss=tss)
    assert tss_hap == expected


def test_window_writes_only_requested_slice():
    n, _, out, _ = walk([(1, "C", ["CTT"])], [1], window=(2, 4))
    assert n >= 6 and decode(out) == "TTGT"


def test_is_indel_htslib_classes():
    assert is_indel_htslib("A", "AT") and is_indel_htslib("ACT", "AT")
    assert not is_indel_htslib("A", "G") and not is_indel_htslib("AC", "GT")
    assert not is_indel_htslib("AC", "GTT")  # complex: not an indel for bcftools
