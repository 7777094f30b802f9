import pytest

from hapflow.names import contig_aliases
from prep.contigs import ContigError, resolve_contig


def test_contig_aliases_chr_prefix():
    assert contig_aliases("chr22") == ["chr22", "22"]
    assert contig_aliases("22") == ["22", "chr22"]


def test_contig_aliases_mitochondria():
    assert set(contig_aliases("chrM")) >= {"MT", "chrM"}
    assert set(contig_aliases("MT")) >= {"MT", "chrM"}


def test_resolve_contig_finds_alias():
    assert resolve_contig("chr22", ["21", "22"]) == "22"
    assert resolve_contig("MT", ["chr1", "chrM"]) == "chrM"


def test_resolve_contig_raises_naming_file():
    with pytest.raises(ContigError, match="not in ref.fa"):
        resolve_contig("chr7", ["1", "2"], "ref.fa")
