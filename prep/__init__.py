"""hapflow's data-prep stage (CPU only; never imports torch).

Modules, from inputs to shards:

* :mod:`prep.encoding` — A, C, G, T, N codes, one-hot, reverse complement.
* :mod:`prep.contigs`, :mod:`prep.reference`, :mod:`prep.regions` — contig aliases, the FASTA,
  TSS tables and BED intervals.
* :mod:`prep.variants` — a VCF span read once into flat arrays (genotypes per haplotype).
* :mod:`prep.kernels` — the numba walk that applies variants exactly as bcftools consensus.
* :mod:`prep.builder` — :class:`~prep.builder.HaplotypeBuilder`: ragged and fixed haplotypes.
* :mod:`prep.export` / ``python -m prep.haplotypes`` — haplotypes as FASTA.
* :mod:`prep.targets` / ``python -m prep.expression`` — expression matrices, GEUVADIS
  processing, Y/Z/P targets; :mod:`prep.splits` — train/val/test splits.
* :mod:`prep.shard_format` — the shard encoder and decoder (the loader imports it);
  :mod:`prep.sharding` / ``python -m prep.shard`` — the study plan and shard writer.

The study's settings, atomic writes and the working-directory layout are shared by every stage:
:mod:`hapflow.sections`, :mod:`hapflow.config`, :mod:`hapflow.io`, :mod:`hapflow.layout`.
"""
