"""A Basenji2 data folder (Enformer's training data) and its records, without TensorFlow.

Layout of one organism's folder (``gs://basenji_barnyard/data/human``, ``.../mouse``)::

    statistics.json         seq_length (131,072), target_length (896), num_targets (5,313 human,
                            1,643 mouse), pool_width, crop_bp, {train,valid,test}_seqs
    sequences.bed           chrom, start, end, split label (train / valid / test), no header:
                            one row per record, 0-based half-open, end - start = seq_length;
                            the rows of a split are in the order of its records
    tfrecords/{label}-{i}.tfr
                            ZLIB-compressed TFRecords, i = 0, 1, ...; every file of a split
                            holds seqs_per_tfr records (256) but the last

Each record is a ``tf.train.Example`` with two bytes features:

``sequence``
    uint8 one-hot, shape (seq_length, 4), row-major, columns A, C, G, T; N is all zeros. (A
    folder whose statistics say ``seq_1hot`` stores (seq_length,) codes instead; both are read.)
``target``
    float16 little-endian, shape (target_length, num_targets), row-major: the tracks of the
    record's central target_length x pool_width bases (crop_bp cut from each side).

Basenji's split labels are train / valid / test; hapflow names them train / val / test
(:data:`SPLIT_LABELS`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from prep.encoding import N_CODE
from prep.tfrecord import TFRecordError, parse_example

__all__ = ["BasenjiError", "BasenjiStats", "SPLIT_LABELS", "read_statistics",
           "read_sequences_bed", "list_tfrecords", "decode_record"]

SPLIT_LABELS = {"train": "train", "val": "valid", "test": "test"}
"""hapflow split name -> Basenji's label (in sequences.bed and the TFRecord file names)."""

SEQUENCE, TARGET = "sequence", "target"


class BasenjiError(ValueError):
    """A Basenji2 data folder is incomplete or inconsistent; the message names the file."""


@dataclass(frozen=True)
class BasenjiStats:
    """``statistics.json`` of a Basenji2 folder.

    Attributes
    ----------
    seq_length : int
        Bases per record (131,072).
    target_length : int
        Target bins per record (896).
    num_targets : int
        Tracks (5,313 human, 1,643 mouse).
    pool_width : int
        Bases per bin (128).
    crop_bp : int
        Bases cut from each side before binning (8,192).
    counts : dict
        hapflow split -> records, where the file says (``train_seqs``, ...).
    """

    seq_length: int
    target_length: int
    num_targets: int
    pool_width: int
    crop_bp: int
    counts: dict


def read_statistics(path: str | os.PathLike) -> BasenjiStats:
    """Read ``statistics.json``.

    Raises
    ------
    BasenjiError
        Missing, not JSON, or without a positive seq_length, target_length, num_targets.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BasenjiError(f"{path} does not exist: is the folder a Basenji2 data folder "
                           "(statistics.json, sequences.bed, tfrecords/)?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BasenjiError(f"{path} is not valid JSON: {err}") from None
    values = {}
    for key in ("seq_length", "target_length", "num_targets"):
        v = data.get(key) if isinstance(data, dict) else None
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise BasenjiError(f"{path}: {key} = {v!r} is not a positive integer")
        values[key] = v
    counts = {split: data[f"{label}_seqs"] for split, label in SPLIT_LABELS.items()
              if isinstance(data.get(f"{label}_seqs"), int)}
    return BasenjiStats(**values, pool_width=int(data.get("pool_width", 128)),
                        crop_bp=int(data.get("crop_bp", 0)), counts=counts)


def read_sequences_bed(path: str | os.PathLike, seq_length: int) -> pl.DataFrame:
    """Read ``sequences.bed``: chrom (str), start, end (int64, 0-based half-open), split
    (hapflow's name), record (0-based index of the row among its split's rows).

    Raises
    ------
    BasenjiError
        Missing, not 4 columns, an unknown split label, or an interval whose length is not
        ``seq_length``; the message names the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise BasenjiError(f"{path} does not exist")
    try:
        bed = pl.read_csv(path, separator="\t", has_header=False, infer_schema=False,
                          comment_prefix="#")
    except pl.exceptions.NoDataError:
        raise BasenjiError(f"{path} is empty") from None
    except pl.exceptions.PolarsError as err:
        raise BasenjiError(f"{path}: cannot read it as a tab-separated BED: {err}") from None
    if bed.width != 4:
        raise BasenjiError(f"{path}: {bed.width} columns; expected 4 (chrom, start, end, split)")
    bed = bed.rename(dict(zip(bed.columns, ["chrom", "start", "end", "label"], strict=True)))
    labels = {v: k for k, v in SPLIT_LABELS.items()}
    unknown = sorted(set(bed["label"]) - set(labels))
    if unknown:
        raise BasenjiError(f"{path}: unknown split label(s) {', '.join(unknown[:5])}; expected "
                           "train, valid, test")
    try:
        bed = bed.with_columns(pl.col("start").cast(pl.Int64), pl.col("end").cast(pl.Int64))
    except pl.exceptions.PolarsError:
        raise BasenjiError(f"{path}: start and end must be integers") from None
    wrong = bed.with_row_index("line", 1).filter(pl.col("end") - pl.col("start") != seq_length)
    if wrong.height:
        r = wrong.row(0, named=True)
        raise BasenjiError(f"{path}: line {r['line']} ({r['chrom']}:{r['start']}-{r['end']}) is "
                           f"{r['end'] - r['start']} bases long; statistics.json says "
                           f"seq_length = {seq_length}")
    bed = bed.with_columns(pl.col("label").replace_strict(labels).alias("split"))
    return bed.select(
        "chrom", "start", "end", "split",
        pl.int_range(pl.len(), dtype=pl.Int64).over("split").alias("record"))


_NUMBER = re.compile(r"-(\d+)\.tfr$")


def list_tfrecords(folder: str | os.PathLike, split: str) -> list[Path]:
    """The TFRecord files of a split, ``tfrecords/{label}-{i}.tfr`` in numeric order of i.

    Raises
    ------
    BasenjiError
        No such files, or the numbers 0..n-1 are not all there.
    """
    label = SPLIT_LABELS[split]
    tfr = Path(folder) / "tfrecords"
    files = [p for p in tfr.glob(f"{label}-*.tfr") if _NUMBER.search(p.name)]
    files.sort(key=lambda p: int(_NUMBER.search(p.name).group(1)))
    if not files:
        raise BasenjiError(f"{tfr}: no {label}-N.tfr files (split {split})")
    numbers = [int(_NUMBER.search(p.name).group(1)) for p in files]
    if numbers != list(range(len(files))):
        missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
        raise BasenjiError(f"{tfr}: {label}-N.tfr files are not numbered 0..{len(files) - 1}; "
                           f"missing {', '.join(f'{label}-{m}.tfr' for m in missing[:5])}")
    return files


def decode_record(data: bytes, stats: BasenjiStats) -> tuple[np.ndarray, np.ndarray]:
    """One record's sequence and targets.

    Parameters
    ----------
    data : bytes
        A serialized Example (:func:`prep.tfrecord.iter_records`).
    stats : BasenjiStats

    Returns
    -------
    codes : np.ndarray, shape (seq_length,), uint8
        A, C, G, T, N = 0..4 (an all-zero one-hot row is N).
    target : np.ndarray, shape (target_length, num_targets), float16
        Read-only view of the record's bytes.

    Raises
    ------
    TFRecordError
        A missing feature, a size other than statistics.json says, or a sequence that is not
        one-hot (the caller adds file and record).
    """
    example = parse_example(data, {SEQUENCE, TARGET})
    for name in (SEQUENCE, TARGET):
        value = example.get(name)
        if not isinstance(value, list) or len(value) != 1:
            raise TFRecordError(f"the Example has no single bytes feature {name!r} (features: "
                                f"{', '.join(sorted(example)) or 'none'})")
    seq, target = example[SEQUENCE][0], example[TARGET][0]
    want_target = stats.target_length * stats.num_targets * 2
    if len(target) != want_target:
        raise TFRecordError(f"target holds {len(target)} bytes, expected {want_target} "
                            f"(float16 {stats.target_length} x {stats.num_targets})")
    return _sequence_codes(seq, stats.seq_length), np.frombuffer(target, "<f2").reshape(
        stats.target_length, stats.num_targets)


def _sequence_codes(seq: bytes, length: int) -> np.ndarray:
    raw = np.frombuffer(seq, dtype=np.uint8)
    if raw.size == length:  # seq_1hot folders: one code per base
        return np.where(raw < 4, raw, N_CODE).astype(np.uint8)
    if raw.size != 4 * length:
        raise TFRecordError(f"sequence holds {raw.size} bytes, expected {4 * length} (uint8 "
                            f"one-hot {length} x 4)")
    onehot = raw.reshape(length, 4)
    if int(raw.max(initial=0)) > 1 or int(onehot.sum(axis=1, dtype=np.int32).max(initial=0)) > 1:
        raise TFRecordError("sequence is not one-hot (a value above 1 or a row with two ones)")
    codes = onehot.argmax(axis=1).astype(np.uint8)
    codes[~onehot.any(axis=1)] = N_CODE
    return codes
