"""Symbolic alleles and records-less contigs, held to bcftools consensus 1.16 on tiny genomes.

bcftools applies a symbolic ``<DEL>``: it keeps the base at POS (the FASTA's, whatever REF says)
and removes POS + 1 .. INFO/END (SVLEN is ignored; without END, or with END < POS, the record
spans REF's own bases); it may join the previous record like an indel sharing its first base.
hapflow stores it as an ordinary deletion (prep.variants), so every rule of the walk applies
unchanged: the cases below pin each one, literally, against bcftools (ragged) and bcftools'
chain file (fixed), and through the edits walk (prep.edits). Other symbolic alleles are skipped
and counted; records whose ALTs are all symbolic are never checked against the FASTA. A contig
the VCF header declares without records reads as "no variants" through tabix and through BCF.

Positions in records are 1-based (VCF); intervals and TSSs are 0-based (the engine's API).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pysam
import pysam.bcftools
import pytest
from bcftools_oracle import consensus, fixed_window_from_chain, requires_tools
from test_builder_edges import (  # noqa: F401 (genome is a fixture)
    R20,
    REF,
    Case,
    FixedCase,
    _builder,
    _counts,
    _ragged,
    genome,
    write_fasta,
    write_vcf,
)
from test_edits import _from_edits

from prep.builder import HaplotypeBuilder
from prep.encoding import decode
from prep.variants import SYMBOLIC_DEL, TRIM_FIRST_BASE, ReferenceMismatchError, VariantReader

DEL_3_6 = (3, "G", "<DEL>", "1|0", "END=6")  # removes 1:4-6 (TAC), keeps the G at 1:3
AFTER_DEL_3_6 = "ACGGTACGGTTCCAAGT"

RAGGED = {
    "del_removes_pos_plus_one_to_end": Case((DEL_3_6,), (AFTER_DEL_3_6, R20),
                                            counts={"applied": (1, 0)}),
    "del_with_svlen_only_removes_nothing": Case(
        ((3, "G", "<DEL>", "1|0", "SVLEN=-3"),), (R20, R20), counts={"applied": (1, 0)}),
    "del_end_wins_over_svlen": Case(((3, "G", "<DEL>", "1|0", "END=6;SVLEN=-5"),),
                                    (AFTER_DEL_3_6, R20)),
    "del_end_before_pos_is_ignored": Case(
        ((3, "G", "<DEL>", "1|0", "END=2"), (5, "A", "T", "1|0")),
        ("ACGTTCGTACGGTTCCAAGT", R20), counts={"applied": (2, 0)}),
    "del_without_end_spans_its_ref": Case(((3, "GT", "<DEL>", "1|0"),),
                                          ("ACGACGTACGGTTCCAAGT", R20)),
    "del_with_multibase_ref_keeps_only_its_first_base": Case(
        ((3, "GT", "<DEL>", "1|0", "END=6"),), (AFTER_DEL_3_6, R20)),
    "del_keeps_the_fasta_base_whatever_ref_says": Case(
        ((3, "T", "<DEL>", "1|0", "END=6"),), (AFTER_DEL_3_6, R20)),
    "lower_case_del": Case(((3, "G", "<del>", "1|0", "END=6"),), (AFTER_DEL_3_6, R20)),
    "del_carried_in_a_record_with_a_sequence_allele": Case(
        ((3, "G", "A,<DEL>", "2|0", "END=6"),), (AFTER_DEL_3_6, R20)),
    # joins: a <DEL> removing bases may start on the last REF base of the previous record
    "del_joined_to_snp": Case(((3, "G", "T", "1|0"), DEL_3_6),
                              ("ACTGTACGGTTCCAAGT", R20), counts={"applied": (2, 0)}),
    "del_joined_to_deletion": Case(((2, "CG", "C", "1|0"), DEL_3_6),
                                   ("ACGTACGGTTCCAAGT", R20), counts={"applied": (2, 0)}),
    "del_joined_to_del": Case(
        ((2, "C", "<DEL>", "1|0", "END=4"), (4, "T", "<DEL>", "1|0", "END=6")),
        ("ACGTACGGTTCCAAGT", R20), counts={"applied": (2, 0)}),
    "insertion_joined_to_del": Case((DEL_3_6, (6, "C", "CTT", "1|0")),
                                    ("ACGTTGTACGGTTCCAAGT", R20), counts={"applied": (2, 0)}),
    "del_removing_nothing_is_not_joined": Case(
        ((3, "G", "T", "1|0"), (3, "G", "<DEL>", "1|0", "END=3")),
        ("ACTTACGTACGGTTCCAAGT", R20), counts={"overlap_skipped": (1, 0)}),
    "del_after_insertion_at_same_position_is_skipped": Case(
        ((2, "C", "CAA", "1|0"), (2, "C", "<DEL>", "1|0", "END=4")),
        ("ACAAGTACGTACGGTTCCAAGT", R20), counts={"overlap_skipped": (1, 0)}),
    "snp_inside_del_is_skipped": Case(
        (DEL_3_6, (5, "A", "T", "1|1")), (AFTER_DEL_3_6, "ACGTTCGTACGGTTCCAAGT"),
        counts={"overlap_skipped": (1, 0)}),
    "snp_at_del_end_is_skipped": Case(
        (DEL_3_6, (6, "C", "A", "1|1")), (AFTER_DEL_3_6, "ACGTAAGTACGGTTCCAAGT"),
        counts={"overlap_skipped": (1, 0)}),
    # interval edges
    "del_running_past_interval_end_is_clipped": Case((DEL_3_6,), ("ACG", "ACGTA"), end=5),
    "del_starting_before_interval_is_ignored": Case((DEL_3_6,), (REF[3:20],) * 2, start=3),
    "del_anchored_at_interval_first_base": Case((DEL_3_6,), ("GGTACGGTTCCAAGT", REF[2:20]),
                                                start=2),
    "del_past_contig_end": Case(((30, "g", "<DEL>", "1|0", "END=60"),),
                                ("TGCATGCATG", REF[20:40].upper()), start=20, end=40),
    # soft-masked sequence: an insertion joined to a <DEL> rewrites the anchor when cases differ
    "insertion_joined_to_del_on_soft_masked_sequence_rewrites_the_anchor": Case(
        ((23, "c", "<DEL>", "1|0", "END=25"), (25, "T", "TAA", "1|0")),
        ("TGTAAGCATGCC", "TGCATGCATGCC"), start=20, end=32),
    "insertion_joined_to_del_on_soft_masked_sequence_keeps_the_anchor": Case(
        ((23, "C", "<DEL>", "1|0", "END=25"), (25, "t", "tAA", "1|0")),
        ("TGCAAGCATGCC", "TGCATGCATGCC"), start=20, end=32),
}

# TSS 0-based 9 = 1-based 10, the C of ACGTA[C]GGTT (reference window [4, 14))
FIXED = {
    "tss_inside_del": FixedCase(  # the first base after the deleted stretch
        ((8, "T", "<DEL>", "1|0", "END=10"),), 9, 10, ("TACGTGGTTC", "ACGTACGGTT")),
    "del_anchored_at_tss": FixedCase(  # the anchor is the TSS, deleted bases follow
        ((10, "C", "<DEL>", "1|0", "END=12"),), 9, 10, ("ACGTACTTCC", "ACGTACGGTT")),
    "upstream_del_pulls_in_flank": FixedCase(
        ((3, "G", "<DEL>", "1|0", "END=5"),), 9, 10, ("GCGTACGGTT", "ACGTACGGTT")),
    "downstream_del_pulls_in_flank": FixedCase(
        ((12, "G", "<DEL>", "1|0", "END=15"),), 9, 10, ("ACGTACGGCA", "ACGTACGGTT")),
    "del_starting_before_window_is_applied": FixedCase(
        ((6, "C", "<DEL>", "1|0", "END=9"),), 12, 10, ("ACCGGTTCCA", "TACGGTTCCA")),
    "tss_inside_del_longer_than_the_window": FixedCase(
        ((2, "C", "<DEL>", "1|0", "END=30"),), 15, 10, ("NNNACCCAAT", "GGTTCCAAGT")),
}


@pytest.mark.parametrize("name", list(RAGGED))
def test_ragged_del_case(name, genome, tmp_path):  # noqa: F811
    case = RAGGED[name]
    builder, _ = _builder(genome, tmp_path, case.records)
    got, rag = _ragged(builder, case.start, case.end)
    assert got == case.want
    for count, want in case.counts.items():
        assert _counts(rag, count) == want, count
    assert rag.n_ref_mismatch.tolist() == [0]


@pytest.mark.bcftools
@requires_tools
@pytest.mark.parametrize("name", list(RAGGED))
def test_ragged_del_case_literal_is_bcftools(name, genome, tmp_path):  # noqa: F811
    case = RAGGED[name]
    vcf = write_vcf(tmp_path / "v.vcf.gz", case.records)
    got = tuple(consensus(genome, vcf, "1", case.start, case.end, "S1", h) for h in (1, 2))
    assert got == case.want


@pytest.mark.parametrize("name", list(FIXED))
def test_fixed_del_case(name, genome, tmp_path):  # noqa: F811
    case = FIXED[name]
    builder, _ = _builder(genome, tmp_path, case.records)
    out = builder.fixed("1", np.array([case.tss]), case.length)
    assert (decode(out.seqs[0, 0, 0]), decode(out.seqs[0, 0, 1])) == case.want
    minus = builder.fixed("1", np.array([case.tss]), case.length, minus=np.array([True]))
    assert decode(minus.seqs[0, 0, 0]) == decode(out.seqs[0, 0, 0])[::-1].translate(
        str.maketrans("ACGTN", "TGCAN"))


@pytest.mark.bcftools
@requires_tools
@pytest.mark.parametrize("name", list(FIXED))
def test_fixed_del_case_literal_is_bcftools_chain(name, genome, tmp_path):  # noqa: F811
    case = FIXED[name]
    vcf = write_vcf(tmp_path / "v.vcf.gz", case.records)
    got = tuple(
        fixed_window_from_chain(genome, vcf, "1", case.tss, case.length, "S1", h, workdir=tmp_path)
        for h in (1, 2)
    )
    assert got == case.want


@pytest.mark.parametrize("name", list(FIXED))
def test_fixed_del_case_through_edits(name, genome, tmp_path):  # noqa: F811
    case = FIXED[name]
    builder, _ = _builder(genome, tmp_path, case.records)
    windows = _from_edits(builder, "1", case.tss, case.length)
    assert (decode(windows[0]), decode(windows[1])) == case.want


@pytest.mark.parametrize("name", list(RAGGED))
def test_ragged_del_case_through_edits(name, genome, tmp_path):  # noqa: F811
    builder, _ = _builder(genome, tmp_path, RAGGED[name].records)
    want = builder.fixed("1", np.array([20]), 48).seqs[0].reshape(2, 48)
    assert np.array_equal(_from_edits(builder, "1", 20, 48), want)


def test_del_is_an_ordinary_deletion_in_the_block(genome, tmp_path):  # noqa: F811
    """REF span [POS - 1, END), ALT the FASTA's anchor base, trim bit when it removes bases;
    the text (tabix) and cyvcf2 readers agree."""
    records = ((3, "T", "<DEL>", "1|0", "END=6"), (8, "T", "A,<DEL>", "0|1"),
               (12, "G", "<INS>", "0|1"))
    vcf = write_vcf(tmp_path / "v.vcf.gz", records)
    reader = VariantReader(vcf)
    builder = HaplotypeBuilder(genome, vcf)
    text = reader.read("1", 0, 40, builder.reference)
    reader._open(reader.path).tabix = None  # the cyvcf2 (BCF) path
    htslib = reader.read("1", 0, 40, builder.reference)
    for block in (text, htslib):
        assert block.ref_len.tolist() == [4, 1, 1]
        assert decode(block.allele_codes) == "GAT"  # anchors: the FASTA's G (REF says T), T
        assert block.allele_offsets.tolist() == [0, 1, 2, 3, 3]
        assert block.allele_flags.tolist() == [SYMBOLIC_DEL | TRIM_FIRST_BASE, 0, SYMBOLIC_DEL,
                                               1]
        assert block.max_deletion().tolist() == [3, 0, 0]


# ------------------------------------------------------------------ REF checks of symbolic records
WRONG_REF_SYMBOLIC = (  # the FASTA has G at 1:3, A at 1:5, G at 1:11
    (3, "A", "<INS>", "0|0"),
    (5, "T", "<DEL>", "0|0", "END=7"),
    (11, "C", "<DUP>", "0|0", "END=12"),
    (15, "C", "A", "1|0"),
)


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_symbolic_records_are_not_checked_against_the_fasta(genome, tmp_path, policy):  # noqa: F811
    builder, _ = _builder(genome, tmp_path, WRONG_REF_SYMBOLIC, ref_mismatch=policy)
    got, rag = _ragged(builder, 0, 20)
    assert got == ("ACGTACGTACGGTTACAAGT", R20)
    assert rag.n_ref_mismatch.tolist() == [0]
    out = builder.fixed("1", np.array([9]), 10)
    assert out.n_ref_mismatch.tolist() == [0]


def test_a_carried_skipped_symbolic_allele_is_not_checked_either(genome, tmp_path):  # noqa: F811
    builder, _ = _builder(genome, tmp_path, ((3, "A", "<INS>", "1|0"), (11, "C", "<CN0>", "0|1")))
    got, rag = _ragged(builder, 0, 20)
    assert got == (R20, R20)
    assert _counts(rag, "symbolic_skipped") == (1, 1)


@pytest.mark.bcftools
@requires_tools
def test_symbolic_records_not_applied_are_not_checked_by_bcftools(genome, tmp_path):  # noqa: F811
    vcf = write_vcf(tmp_path / "v.vcf.gz", WRONG_REF_SYMBOLIC)
    got = tuple(consensus(genome, vcf, "1", 0, 20, "S1", h) for h in (1, 2))
    assert got == ("ACGTACGTACGGTTACAAGT", R20)


SEQUENCE_ALLELE_SPANNING_END = ((3, "G", "A,<DEL>", "1|0", "END=6"),)


def test_a_sequence_allele_spanning_past_its_ref_is_a_mismatch(genome, tmp_path):  # noqa: F811
    builder, _ = _builder(genome, tmp_path, SEQUENCE_ALLELE_SPANNING_END)
    with pytest.raises(ReferenceMismatchError, match=r"1:3 is G .*INFO/END.* span 4 bases"):
        builder.ragged("1", np.array([0]), np.array([20]))
    skip, _ = _builder(genome, tmp_path, SEQUENCE_ALLELE_SPANNING_END, ref_mismatch="skip")
    got, rag = _ragged(skip, 0, 20)
    assert got == (R20, R20) and rag.n_ref_mismatch.tolist() == [1]


@pytest.mark.bcftools
@requires_tools
def test_a_sequence_allele_spanning_past_its_ref_is_refused_by_bcftools(genome, tmp_path):  # noqa: F811
    vcf = write_vcf(tmp_path / "v.vcf.gz", SEQUENCE_ALLELE_SPANNING_END)
    with pytest.raises(RuntimeError, match="does not match the REF allele at 1:3"):
        consensus(genome, vcf, "1", 0, 20, "S1", 1)


# ------------------------------------------------------------------ contigs without records
@pytest.fixture
def two_contigs(tmp_path):
    """FASTA with contigs 1 and 2; a VCF declaring both, with one record on 1 only (text and
    BCF)."""
    fasta = write_fasta(tmp_path / "ref2.fa.gz", {"1": REF, "2": REF})
    vcf = write_vcf(tmp_path / "two.vcf.gz", ((3, "G", "T", "1|0"),), empty_contigs=("2",))
    return fasta, vcf


def _bcf(vcf, tmp_path):
    """An indexed BCF copy of ``vcf`` (read through cyvcf2, not tabix)."""
    bcf = tmp_path / "two.bcf"
    with pysam.VariantFile(str(vcf)) as src, pysam.VariantFile(str(bcf), "wb",
                                                               header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    pysam.bcftools.index(str(bcf))
    return bcf


@pytest.mark.parametrize("kind", ["tabix", "bcf"])
def test_a_declared_contig_without_records_reads_as_no_variants(two_contigs, tmp_path, kind):
    fasta, vcf = two_contigs
    builder = HaplotypeBuilder(fasta, vcf if kind == "tabix" else _bcf(vcf, tmp_path))
    rag = builder.ragged("2", np.array([0, 5]), np.array([20, 30]))
    assert [decode(rag.get(g, 0, h)) for g in (0, 1) for h in (0, 1)] == (
        [R20, R20] + [REF[5:30].upper()] * 2)
    assert rag.n_variants.tolist() == [0, 0]
    out = builder.fixed("2", np.array([9]), 10)
    assert [decode(out.seqs[0, 0, h]) for h in (0, 1)] == ["ACGTACGGTT"] * 2
    assert decode(builder.ragged("1", np.array([0]), np.array([20])).get(0, 0, 0)) == (
        "ACTTACGTACGGTTCCAAGT")


@pytest.mark.bcftools
@requires_tools
def test_a_declared_contig_without_records_is_the_reference_for_bcftools(two_contigs):
    fasta, vcf = two_contigs
    assert consensus(fasta, vcf, "2", 0, 20, "S1", 1) == R20
    out = subprocess.run(["tabix", "-l", str(vcf)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1"]  # the index knows contig 1 only
