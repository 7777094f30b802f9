"""Stream a few batches of a split and measure what training would see (``python -m
loader.preview``).

    probe = probe_loader("work/demo/shards", "train", "train", batches=50,
                         config=LoaderConfig(num_workers=0))
    print(probe)   # batches, samples/s, shapes, distinct genes per batch

A batch that holds few distinct genes gives BatchNorm near-identical sequences; the probe counts
them (``gene`` mode batches hold one by design).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hapflow.config import StudyConfig
from hapflow.layout import Workdir
from hapflow.sections import LoaderConfig
from loader.dataloader import make_loader
from loader.device import to_one_hot

__all__ = ["Probe", "probe_loader", "run_preview"]


@dataclass(frozen=True)
class Probe:
    """What the first batches of a loader held, and how fast they came.

    Attributes
    ----------
    split, mode, device : str
        What was streamed, and where the one-hot tensor was built.
    batches : int
        Batches streamed.
    samples : int
        Valid samples among them (padding not counted).
    seconds : float
        Wall time of the stream (rounded to 0.01 s).
    samples_per_s : float
    seq_shape : list of int or None
        The first batch's ``seq`` (``seq_a`` in pairwise mode): [B, 2, L], uint8 codes; None
        when no batch came.
    one_hot_shape : list of int or None
        Its one-hot tensor on ``device``: [B, 2, L, 4], float32.
    genes : int
        Distinct genes among the valid samples.
    genes_per_batch : float
        Mean number of distinct genes among a batch's valid samples.
    batches_per_epoch : int
        ``len(loader)``.
    """

    split: str
    mode: str
    device: str
    batches: int
    samples: int
    seconds: float
    samples_per_s: float
    seq_shape: list[int] | None
    one_hot_shape: list[int] | None
    genes: int
    genes_per_batch: float
    batches_per_epoch: int

    def __str__(self) -> str:
        return (f"Streamed {self.batches} {self.mode} batches of the {self.split} split "
                f"({self.samples} samples, {self.genes} genes, "
                f"{self.genes_per_batch} distinct genes per batch) in {self.seconds} s: "
                f"{self.samples_per_s} samples/s; seq {self.seq_shape} uint8 -> "
                f"one-hot {self.one_hot_shape} on {self.device}; "
                f"{self.batches_per_epoch} batches per epoch")


def probe_loader(source, split: str, mode: str, batches: int, config: LoaderConfig,
                 device: str = "cpu") -> Probe:
    """Iterate up to ``batches`` batches of ``make_loader(source, split, mode, config=config)``.

    Parameters
    ----------
    source : str, Path or list of str
        As :func:`loader.make_loader`: a shards folder, shard patterns or URLs.
    split, mode : str
        One of :data:`hapflow.names.SPLITS`; one of :data:`loader.MODES`.
    batches : int
        Stop after this many batches (or at the end of the epoch).
    config : LoaderConfig
    device : str
        Where the first batch is one-hot encoded: cpu, cuda or cuda:N.
    """
    loader = make_loader(source, split=split, mode=mode, config=config)
    seq_key = "seq_a" if mode == "pairwise" else "seq"
    n_batches = n_samples = 0
    genes: set[str] = set()
    per_batch: list[int] = []  # distinct genes among each batch's valid samples
    seq_shape = one_hot_shape = None
    start = time.perf_counter()
    for batch in loader:
        seq = batch[seq_key]  # (B, 2, L) uint8 codes
        if seq_shape is None:
            x = to_one_hot(seq, torch.float32, torch.device(device))  # (B, 2, L, 4)
            seq_shape, one_hot_shape = list(seq.shape), list(x.shape)
        valid = batch["valid"].tolist()
        n_samples += sum(valid)
        batch_genes = {g for g, ok in zip(batch["gene"], valid, strict=True) if ok}
        genes.update(batch_genes)
        per_batch.append(len(batch_genes))
        n_batches += 1
        if n_batches >= batches:
            break
    seconds = time.perf_counter() - start
    return Probe(split=split, mode=mode, device=device, batches=n_batches, samples=n_samples,
                 seconds=round(seconds, 2),
                 samples_per_s=round(n_samples / max(seconds, 1e-9), 1),
                 seq_shape=seq_shape, one_hot_shape=one_hot_shape, genes=len(genes),
                 genes_per_batch=round(sum(per_batch) / max(n_batches, 1), 2),
                 batches_per_epoch=len(loader))


def run_preview(study: StudyConfig, workdir: Workdir | str, *, split: str = "train",
                mode: str = "train", batches: int = 50, device: str = "cpu") -> Probe:
    """:func:`probe_loader` on a study's shards (``DIR/shards``) with its ``[loader]`` settings.

    Raises
    ------
    ValueError
        ``device`` is not one this build of torch can use.
    FileNotFoundError
        The study has no shards yet.
    """
    _check_device(device)
    shards = Workdir(workdir).shards
    if not shards.is_dir():
        raise FileNotFoundError(f"{shards} does not exist: build the shards first with "
                                "python -m prep.shard --config C --workdir DIR")
    return probe_loader(shards, split, mode, batches, study.loader, device)


def _check_device(device: str) -> None:
    """A device this build of torch can use, or a ValueError that says why not."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this torch build has no usable CUDA GPU "
                         f"(torch {torch.__version__}, cuda {torch.version.cuda}); use --device "
                         "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device {device!r}: use cpu, cuda or cuda:N")
