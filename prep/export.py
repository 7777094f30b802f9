"""Export personal haplotypes as FASTA (``python -m prep.haplotypes``).

Records are named ``NAME|SAMPLE|HAP`` (HAP 1 or 2, the GT allele order), 60 bases per line,
upper case, N for unknown bases. Regions are written contig by contig in position order.
"""

from __future__ import annotations

import gzip
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from hapflow.sections import MAX_LENGTH, HaplotypesConfig
from prep.encoding import ALPHABET

__all__ = [
    "HaplotypesConfig",
    "validate_length",
    "read_sample_list",
    "write_haplotype_fasta",
    "fasta_records",
    "ExportError",
    "os_error_message",
]

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """The FASTA cannot be written (the message names the path and the cause)."""

def validate_length(length: int) -> int:
    """Check a fixed window length: positive, a multiple of 128, at most 393,216."""
    if length <= 0 or length % 128 or length > MAX_LENGTH:
        raise ValueError(
            f"window length {length} is not allowed: use a multiple of 128 up to {MAX_LENGTH:,} "
            "(Enformer's bins are 128 bp; the paper used 49,152)"
        )
    return length


def read_sample_list(samples: list[str] | None, samples_file: str | None) -> list[str] | None:
    """Samples from a list or a one-per-line file (blank lines and '#' comments ignored)."""
    if samples and samples_file:
        raise ValueError("give samples or samples_file, not both")
    if samples_file:
        path = Path(samples_file)
        if not path.exists():
            raise FileNotFoundError(f"sample file {path} does not exist")
        out = [ln.split()[0] for ln in path.read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
        if not out:
            raise ValueError(f"sample file {path} lists no samples")
        return out
    return list(samples) if samples else None


_LETTERS = np.frombuffer(ALPHABET, dtype=np.uint8)


def fasta_records(name: str, codes: np.ndarray, width: int = 60) -> bytes:
    """One FASTA record: ``>name`` then ``codes`` as letters, ``width`` per line.

    Parameters
    ----------
    codes : np.ndarray, shape (L,), uint8, values 0..4
    """
    letters = _LETTERS[codes]
    n = letters.shape[0]
    full = n - n % width
    body = np.empty((full // width, width + 1), dtype=np.uint8)
    body[:, :width] = letters[:full].reshape(-1, width)
    body[:, width] = ord("\n")
    tail = letters[full:].tobytes() + (b"\n" if n % width else b"")
    return b">" + name.encode() + b"\n" + body.tobytes() + tail


def os_error_message(err: OSError, target: str | os.PathLike) -> str:
    """One line naming what could not be written, the path that failed and the cause.

    >>> os_error_message(PermissionError(13, "Permission denied", "/x/.a.tmp"), "/x/a")
    'cannot write /x/a (/x/.a.tmp: Permission denied)'
    """
    cause = err.strerror or str(err) or type(err).__name__
    if err.filename is not None and str(err.filename) != str(target):
        return f"cannot write {target} ({err.filename}: {cause})"
    return f"cannot write {target}: {cause}"


def _default_mode() -> int:
    """0666 less the process umask: the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _open_out(tmp: str, gz: bool):
    return gzip.open(tmp, "wb", compresslevel=4) if gz else open(tmp, "wb")


def write_haplotype_fasta(config: HaplotypesConfig, output: str | os.PathLike) -> dict:
    """Build the haplotypes described by ``config`` and write them to ``output`` (atomically).

    ``output`` ending in ``.gz`` is gzip-compressed. Returns a summary dict (regions, samples,
    haplotypes written, variant counts).
    """
    from hapflow.progress import progress as tqdm  # a bar on a terminal, plain lines in logs
    from prep.builder import HaplotypeBuilder
    from prep.regions import read_bed, read_tss_table

    if config.reference is None or config.vcf is None:
        raise ValueError("both a reference FASTA and a VCF are needed (reference, vcf)")
    if (config.tss is None) == (config.bed is None):
        raise ValueError("give exactly one of tss (fixed windows) or bed (intervals)")
    samples = read_sample_list(config.samples, config.samples_file)
    builder = HaplotypeBuilder(
        config.reference, config.vcf, samples, snps_only=config.snps_only,
        unphased=config.unphased, ref_mismatch=config.ref_mismatch, seed=config.seed,
    )
    n_hap = builder.n_haplotypes
    if config.tss is not None:
        length = validate_length(config.length)
        regions = read_tss_table(config.tss, one_based=config.tss_one_based)
        per_batch = max(1, (config.batch_mb << 20) // (n_hap * length))
    else:
        regions = read_bed(config.bed)
        per_batch = 64
    for chrom in regions["chrom"].unique(maintain_order=True):
        builder.reference.resolve(chrom)
        builder.variants.resolve(chrom)
    log.info(
        "Building %d region(s) x %d sample(s) x 2 haplotypes from %s and %s",
        regions.height, len(builder.samples), builder.variants.vcfs.describe(),
        Path(config.reference).name,
    )
    if regions.height == 0 or not builder.samples:
        raise ValueError(f"nothing to write: {regions.height} region(s) x "
                         f"{len(builder.samples)} sample(s); an empty selection is an error")
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
        os.close(fd)
        # mkstemp creates 0600: give the file the user's usual permissions (umask), as open() does
        os.chmod(tmp, _default_mode())
    except OSError as err:
        builder.close()
        raise ExportError(os_error_message(err, output)) from None
    totals = {"regions": 0, "haplotypes": 0, "applied": 0, "missing": 0, "overlap_skipped": 0,
              "symbolic_skipped": 0, "not_snp_skipped": 0}
    try:
        with _open_out(tmp, str(output).endswith(".gz")) as fh, tqdm(
            total=regions.height, unit="region", desc="haplotypes", disable=None
        ) as bar:
            sort_key = "tss" if config.tss is not None else "start"
            for chrom_df in regions.partition_by("chrom", maintain_order=True):
                chrom_df = chrom_df.sort(sort_key)
                chrom = chrom_df["chrom"][0]
                for lo in range(0, chrom_df.height, per_batch):
                    batch = chrom_df.slice(lo, per_batch)
                    minus = (batch["strand"] == "-").to_numpy() & config.reverse_minus
                    if config.tss is not None:
                        res = builder.fixed(chrom, batch["tss"].to_numpy(), length, minus)
                        get = lambda g, s, h, res=res: res.seqs[g, s, h]  # noqa: E731
                    else:
                        res = builder.ragged(chrom, batch["start"].to_numpy(),
                                             batch["end"].to_numpy(), minus)
                        get = res.get
                    for g, name in enumerate(batch["name"]):
                        for s, sample in enumerate(builder.samples):
                            for h in (0, 1):
                                fh.write(fasta_records(f"{name}|{sample}|{h + 1}", get(g, s, h)))
                    for key in totals:
                        if key in res.counts:
                            totals[key] += int(res.counts[key].sum())
                    totals["regions"] += batch.height
                    totals["haplotypes"] += batch.height * n_hap
                    bar.update(batch.height)
        os.replace(tmp, output)
    except OSError as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, FileNotFoundError) and err.filename != tmp:
            raise  # an input file (its own message names it)
        raise ExportError(os_error_message(err, output)) from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        builder.close()
    totals["samples"] = len(builder.samples)
    log.info(
        "Wrote %d haplotypes of %d region(s) to %s; %d variant alleles applied, %d missing "
        "genotypes kept the reference, %d overlapping variants skipped",
        totals["haplotypes"], totals["regions"], output, totals["applied"], totals["missing"],
        totals["overlap_skipped"],
    )
    return totals
