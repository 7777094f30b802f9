"""prep.vcf_parse: VCF text lines and alleles parsed by numba, literal cases and Python oracles."""

from __future__ import annotations

import itertools

import numpy as np

from prep.encoding import ENCODE_TABLE, decode
from prep.variants import (
    REF_FIRST_LOWER,
    SYMBOLIC,
    SYMBOLIC_DEL,
    TRIM_FIRST_BASE,
    is_indel_htslib,
)
from prep.vcf_parse import BAD_COLUMNS, BAD_SAMPLES, allele_table, is_indel_bytes, parse_lines


def _parse(lines: list[str], n_file_samples: int, selected: list[int]):
    buf = np.frombuffer(("\n".join(lines) + "\n").encode(), np.uint8)
    columns = np.full(n_file_samples, -1, np.int64)
    columns[selected] = np.arange(len(selected))
    n = len(lines)
    ints = [np.full(n, -9, np.int64) for _ in range(5)]
    has_gt = np.zeros(n, bool)
    gt = np.full((n, len(selected), 2), -9, np.int16)
    ph = np.zeros((n, len(selected)), bool)
    n_rec, bad_at, bad_kind = parse_lines(buf, columns, *ints, has_gt, gt, ph)
    return buf, n_rec, bad_at, bad_kind, ints, has_gt, gt, ph


def _line(pos, ref, alt, info, fmt, *samples):
    return "\t".join(["1", str(pos), ".", ref, alt, ".", ".", info, fmt, *samples])


def test_parse_lines_columns_end_and_genotypes():
    lines = [
        _line(10, "A", "G", "END=10", "GT", "0|1", "1|1", "0/1"),
        _line(20, "C", ".", ".", "GT", "0|0", "0|0", "0|0"),  # no ALT: dropped
        _line(30, "G", "<DEL>", "SVTYPE=DEL;SVEND=5;END=45", "GT:DS", "1|0:1", "10|2:0", ".|."),
        _line(40, "T", "TA,*", "AEND=3;END=x", "DS:GT", "0.5:1|1", "1", "0"),
        _line(50, "acg", "a", "END=", "GT", "1", "0/.", "2|1"),
    ]
    buf, n_rec, bad_at, _, (pos, ref_at, alt_at, alt_end, end), has_gt, gt, ph = _parse(
        lines, 3, [2, 0, 1])
    assert bad_at == -1 and n_rec == 4
    assert pos[:4].tolist() == [9, 29, 39, 49]
    text = bytes(buf)
    assert [text[a:b].decode() for a, b in zip(ref_at[:4], alt_end[:4], strict=True)] == [
        "A\tG", "G\t<DEL>", "T\tTA,*", "acg\ta"]
    assert (alt_at[:4] - ref_at[:4] - 1).tolist() == [1, 1, 1, 3]
    assert end[:4].tolist() == [10, 45, -1, -1]
    assert has_gt[:4].tolist() == [True, True, False, True]
    # samples in the selected order: file columns 2, 0, 1
    assert gt[0].tolist() == [[0, 1], [0, 1], [1, 1]] and ph[0].tolist() == [False, True, True]
    assert gt[1].tolist() == [[-1, -1], [1, 0], [10, 2]] and ph[1].all()
    assert gt[2].tolist() == [[0, 0]] * 3 and ph[2].all()  # no GT first: nothing applies
    assert gt[3].tolist() == [[2, 1], [1, 0], [0, -1]] and ph[3].tolist() == [True, True, False]


def test_parse_lines_reports_malformed_lines():
    ok = _line(10, "A", "G", ".", "GT", "0|1", "1|1")
    short = _line(20, "A", "G", ".", "GT", "0|1")
    _, n_rec, bad_at, kind, *_ = _parse([ok, short], 2, [0, 1])
    assert (n_rec, bad_at, kind) == (1, len(ok) + 1, BAD_SAMPLES)
    _, n_rec, bad_at, kind, *_ = _parse([ok, "1\t20\t.\tA\tG"], 2, [1])
    assert (n_rec, bad_at, kind) == (1, len(ok) + 1, BAD_COLUMNS)


def test_is_indel_bytes_is_htslibs_rule():
    alleles = ["".join(p) for n in (1, 2, 3) for p in itertools.product("ACGa[", repeat=n)]
    for ref, alt in itertools.product(alleles[:30], alleles):
        t = np.frombuffer((ref + alt).encode(), np.uint8)
        got = is_indel_bytes(t, 0, len(ref), len(ref), len(ref) + len(alt))
        assert got == is_indel_htslib(ref, alt), (ref, alt)


def _oracle_flags(ref: str, alt: str, span: int) -> tuple[int, str]:
    """The rules of prep.variants, written plainly: (flags, ALT codes as letters)."""
    fl = int(REF_FIRST_LOWER) if ref[:1].islower() else 0
    if alt.upper() == "<DEL>":
        return fl | int(SYMBOLIC_DEL) | (int(TRIM_FIRST_BASE) if span > 1 else 0), ref[0].upper()
    if not alt or alt.startswith("<") or alt in ("*", ".") or "[" in alt or "]" in alt:
        return fl | int(SYMBOLIC), ""
    if is_indel_htslib(ref, alt) and ref[0] == alt[0]:
        fl |= int(TRIM_FIRST_BASE)
    return fl, decode(ENCODE_TABLE[np.frombuffer(alt.encode(), np.uint8)])


def test_allele_table_flags_and_codes():
    records = [("A", "G", 1), ("A", "AT,<DEL>", 5), ("cT", "c,<INS>,*,G]1:5]", 2),
               ("G", "<del>", 1), ("ACG", "A,ACGT,TCG,.", 3), ("n", "nN", 1)]
    texts = [f"{r}\t{a}" for r, a, _ in records]
    off = np.cumsum([0] + [len(t) for t in texts])
    text = np.frombuffer("".join(texts).encode(), np.uint8)
    n_alleles = sum(len(a.split(",")) for _, a, _ in records)
    first = np.empty(len(records), np.int64)
    offsets = np.empty(n_alleles + 1, np.int64)
    codes = np.empty(text.shape[0], np.uint8)
    flags = np.empty(n_alleles, np.uint8)
    j, k = allele_table(text, off, np.array([len(r) for r, _, _ in records]),
                        np.array([s for _, _, s in records]), ENCODE_TABLE, first, offsets,
                        codes, flags)
    assert (j, k) == (n_alleles, offsets[-1])
    want = [_oracle_flags(r, a, s) for r, alts, s in records for a in alts.split(",")]
    assert flags.tolist() == [f for f, _ in want]
    got_codes = [decode(codes[offsets[i]:offsets[i + 1]]) for i in range(n_alleles)]
    assert got_codes == [c for _, c in want]
    assert first.tolist() == [0, 1, 3, 7, 8, 12]
