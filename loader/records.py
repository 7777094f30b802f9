"""Reading gene records from shards, one gene at a time, each verified against the manifest.

A worker needs genes, not whole shards: every sample of a gene (any split) lives in the gene's
one record (:mod:`prep.gene_record`: ``K.json``, ``K.ref.2bit``, ``K.var.zst``), and a shard holds
its genes in build order. :class:`GeneReader` fetches a gene through a *stream* of its shard: an
open tar read front to back (:func:`iter_records`) that reads only the members of the genes it is
asked for (local files seek over the others) and stops as soon as the wanted record is complete.
A shard may have several streams open at once, e.g. for two lanes of a train plan at two places
of one shard; a fetch uses the open stream closest before the gene (by build order,
:attr:`loader.sources.SplitIndex.gene_rank`), or opens a new one. On its way a stream may also
pick up genes the caller will need soon (``ahead``) instead of passing them by.

Every record is verified as it is read (:func:`prep.gene_record.decode_gene`: the JSON's own
checksum and bounds, both other members against their sha256, the zstd content checksum, the
edit table's bounds), then against the manifest: build fingerprint, window layout, gene id and
the individual at each sample's ``row``. A failure is a :class:`ShardFormatError` naming shard
and member; with ``on_error = "skip"`` it costs that gene's samples only (they become padding,
counted), while a broken tar (a truncated or corrupt shard) costs every gene of the shard not
yet read. A stale build (:class:`loader.sources.StaleShardError`) always raises.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np

from loader.sources import SplitIndex, StaleShardError, check_build, open_url
from prep.gene_record import META_EXT, REF_EXT, VAR_EXT, GeneRecord, decode_gene
from prep.shard_format import ShardFormatError, safe_key
from prep.shard_tar import iter_tar

__all__ = ["RECORD_EXTS", "open_stream", "iter_records", "GeneReader"]

log = logging.getLogger(__name__)

RECORD_EXTS = (META_EXT, REF_EXT, VAR_EXT)
"""A gene record's members (extensions)."""

_STREAM_BUFFER = 1 << 16
"""Read buffer of an open local shard stream (a worker may hold a few per lane)."""


def open_stream(url: str, timeout: float = 120.0):
    """:func:`loader.sources.open_url` with a small read buffer (a worker holds a few open
    streams per lane)."""
    return open_url(url, timeout, buffering=_STREAM_BUFFER)


def iter_records(fileobj, url: str, want: Callable[[str], bool]) -> Iterator[dict]:
    """Raw gene records of one tar stream: ``{"__key__", "__url__", ext: bytes}``.

    Only members of keys for which ``want(key)`` is true are read (others are seeked over in
    local files, read and dropped in streams); ``want`` is asked as each member comes, so it may
    change between records. A record is yielded as soon as its three members are read, without
    waiting for the next member; one whose next member is of another key is yielded incomplete
    (:func:`prep.gene_record.decode_gene` then names what it lacks).

    Raises
    ------
    ShardFormatError
        A truncated or corrupt tar; the message names ``url``.
    """
    return iter_tar(fileobj, url, lambda key, ext: ext in RECORD_EXTS and want(key),
                    complete=len(RECORD_EXTS))


class _Stream:
    """An open shard read front to back: ``pos`` is the build rank after the last gene read."""

    __slots__ = ("records", "pos", "want")

    def __init__(self, records: Iterator[dict], want: set):
        self.records, self.pos, self.want = records, 0, want


class GeneReader:
    """Fetches verified gene records of a split's shards (see the module docstring).

    Parameters
    ----------
    index : SplitIndex
    on_error : "raise" or "skip"
    timeout : float
        Network read timeout (http shards).
    opener : callable
        ``opener(url, timeout)`` -> a binary file object (default :func:`open_stream`).

    Attributes
    ----------
    errors : list of (url, message)
        What was skipped (``on_error = "skip"``) since the caller last emptied it.
    failed : np.ndarray, shape (G,), bool
        Genes that could not be read (skipped); they are not tried again.
    """

    def __init__(self, index: SplitIndex, on_error: str = "raise", timeout: float = 120.0,
                 opener: Callable = open_stream):
        self.index, self.on_error, self.timeout, self.opener = index, on_error, timeout, opener
        self.gene_of_key = {safe_key(g): i for i, g in enumerate(index.genes)}
        self.gene_shard = index.gene_shard()
        self.rank = index.gene_rank
        self.failed = np.zeros(len(index.genes), bool)
        self.errors: list[tuple[str, str]] = []
        self._streams: dict[int, list[_Stream]] = defaultdict(list)
        self._broken: dict[int, str] = {}
        order = np.argsort(index.gene, kind="stable")  # each gene's positions in the split
        self._positions = order
        self._offsets = np.searchsorted(index.gene[order], np.arange(len(index.genes) + 1))

    def fetch(self, gene: int, ahead: Callable[[int], np.ndarray] | None = None
              ) -> list[tuple[int, GeneRecord]]:
        """Read ``gene`` (and, passing them, the genes ``ahead(shard)`` lists).

        Returns
        -------
        list of (gene, GeneRecord)
            Every gene read, ``gene`` last; without ``gene`` when it was skipped (then
            :attr:`failed` marks it and :attr:`errors` says why).

        Raises
        ------
        ShardFormatError
            (``on_error = "raise"``) a corrupt record or shard, or a shard that lacks the gene.
        """
        s = int(self.gene_shard[gene])
        if s in self._broken:
            return self._fail(gene, self._broken[s], skip_shard=False)
        target = int(self.rank[gene])
        extra = ahead(s) if ahead is not None else ()
        stream = self._closest(s, target)
        while True:
            fresh = stream is None
            try:
                if fresh:
                    stream = self._open(s)
                stream.want = {gene, *(int(g) for g in extra
                                       if stream.pos <= self.rank[g] < target)}
                got, found = self._read_until(stream, gene, s)
            except ShardFormatError as err:
                if stream is not None:
                    self._drop(s, stream)
                if isinstance(err, StaleShardError) or self.on_error != "skip":
                    raise
                return self._fail(gene, str(err), skip_shard=True)
            if found:
                return got
            self._drop(s, stream)  # the stream ran out before the gene
            if fresh:
                return got + self._missing(gene, s)
            stream = None  # a stream opened later in the shard: read it from the start

    def close_shard(self, shard: int) -> None:
        """Close every open stream of ``shard`` (no later batch needs it)."""
        for stream in self._streams.pop(shard, []):
            stream.records.close()

    def close(self) -> None:
        for shard in list(self._streams):
            self.close_shard(shard)

    # -- internals ------------------------------------------------------------------------------

    def _closest(self, shard: int, target: int) -> _Stream | None:
        """The open stream of ``shard`` closest before build rank ``target``, if any."""
        best = None
        for stream in self._streams.get(shard, ()):
            if stream.pos <= target and (best is None or stream.pos > best.pos):
                best = stream
        return best

    def _open(self, shard: int) -> _Stream:
        stream = _Stream(iter(()), set())
        stream.records = self._records(self.index.urls[shard], stream)
        self._streams[shard].append(stream)
        return stream

    def _records(self, url: str, stream: _Stream) -> Iterator[dict]:
        """The records of ``url`` that ``stream`` wants (the file opened on the first read)."""
        try:
            fh = self.opener(url, self.timeout)
        except OSError as err:  # FileNotFoundError, HTTP errors, refused connections
            raise ShardFormatError(f"shard {url} cannot be read: {err}") from None
        with fh:
            yield from iter_records(fh, url, lambda key: self.gene_of_key.get(key) in stream.want)

    def _drop(self, shard: int, stream: _Stream) -> None:
        stream.records.close()
        if stream in self._streams.get(shard, ()):
            self._streams[shard].remove(stream)

    def _read_until(self, stream: _Stream, gene: int,
                    shard: int) -> tuple[list[tuple[int, GeneRecord]], bool]:
        """Verified records from ``stream`` up to ``gene``, and whether ``gene`` came (a corrupt
        record is raised, or with ``on_error = "skip"`` skipped and left out)."""
        got = []
        for sample in stream.records:
            g = self.gene_of_key[sample["__key__"]]
            stream.pos = int(self.rank[g]) + 1
            try:
                got.append((g, self._verify(g, sample, self.index.urls[shard])))
            except StaleShardError:
                raise
            except ShardFormatError as err:
                if self.on_error != "skip":
                    raise
                self._fail(g, str(err), skip_shard=False)
            if g == gene:
                return got, True
        return got, False

    def _verify(self, gene: int, sample: dict, url: str) -> GeneRecord:
        """Decode and verify a record (its members, then against the manifest)."""
        record = decode_gene(sample, url)
        meta, idx = record.meta, self.index
        check_build(idx, meta, url)
        where = f"shard {url}: member {sample['__key__']}.{META_EXT}"
        if (meta["length"], meta["flank"]) != (idx.length, idx.flank):
            raise ShardFormatError(
                f"{where}: the gene record stores L = {meta['length']} + 2 x {meta['flank']} "
                f"flank, the split's first shard L = {idx.length} + 2 x {idx.flank}: the shards "
                "folder mixes studies; rebuild it")
        if meta["gene"] != idx.genes[gene]:
            raise ShardFormatError(f"{where}: holds gene {meta['gene']}, its key names "
                                   f"{idx.genes[gene]}: the member is corrupt")
        positions = self._positions[self._offsets[gene]:self._offsets[gene + 1]]
        rows = idx.record_row[positions]
        names = np.array(meta["individuals"], dtype=object)
        if rows.size and (rows.min() < 0 or rows.max() >= len(names)
                          or (names[rows] != idx.individual[positions]).any()):
            raise ShardFormatError(f"{where}: its individuals are not those the manifest lists "
                                   "at their rows: the manifest belongs to another build")
        return record

    def _missing(self, gene: int, shard: int) -> list:
        url = self.index.urls[shard]
        message = (f"shard {url} lacks gene {self.index.genes[gene]} ({self._count(gene)} "
                   f"sample(s) of split {self.index.split} listed in the manifest): the shard is "
                   "truncated or corrupt, or the manifest belongs to another build")
        if self.on_error != "skip":
            raise ShardFormatError(message)
        return self._fail(gene, message, skip_shard=False)

    def _count(self, gene: int) -> int:
        return int(self._offsets[gene + 1] - self._offsets[gene])

    def _fail(self, gene: int, message: str, skip_shard: bool) -> list:
        """Skip ``gene`` (``skip_shard``: and every gene of its shard not yet read)."""
        s = int(self.gene_shard[gene])
        url = self.index.urls[s]
        if skip_shard:
            self._broken[s] = message
            self.close_shard(s)
        if not self.failed[gene]:
            self.failed[gene] = True
            text = message if url in message else f"shard {url}: {message}"
            text += f" (skipped: the {self._count(gene)} sample(s) of gene " \
                    f"{self.index.genes[gene]} become padding)"
            log.warning(text)
            self.errors.append((url, text))
        return []
