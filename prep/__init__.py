"""hapflow's data-prep stage (CPU only; never imports torch, loader, train or analysis).

Command modules (``python -m prep.X``; each holds only its command line and calls one
library function): :mod:`prep.expression`, :mod:`prep.simulate`, :mod:`prep.shard`,
:mod:`prep.retarget`, :mod:`prep.verify`, :mod:`prep.haplotypes`.

Library modules, from inputs to shards:

* :mod:`prep.encoding` — A, C, G, T, N codes, one-hot, the reverse-complement table.
* :mod:`prep.contigs`, :mod:`prep.reference`, :mod:`prep.regions` — contig lookup, the FASTA,
  TSS tables and BED intervals.
* :mod:`prep.vcf_files` (the genotype files and their contigs), :mod:`prep.vcf_records` (one
  file's records), :mod:`prep.vcf_parse` (VCF text and alleles parsed by numba),
  :mod:`prep.variants` — a VCF span read once into flat arrays (genotypes per haplotype);
  :mod:`prep.variant_cache` — parsed records kept across nearby batches of genes.
* :mod:`prep.kernels` — the numba walk that applies variants exactly as bcftools consensus.
* :mod:`prep.builder` — :class:`~prep.builder.HaplotypeBuilder`: ragged and fixed haplotypes.
* :mod:`prep.export` — haplotypes as FASTA (``prep.haplotypes``).
* :mod:`prep.expression_files`, :mod:`prep.expression_processing`, :mod:`prep.targets` —
  expression matrices, GEUVADIS processing, the Y/Z/P targets and the expression stage;
  :mod:`prep.splits` — train/val/test splits; :mod:`prep.simulation` — simulated expression;
  :mod:`prep.dosages` — allele dosages for the variant baselines.
* :mod:`prep.edits` — haplotypes as edits against a reference span, and windows built from
  them straight into a batch (the loader imports it).
* :mod:`prep.shard_format` (what every shard shares, the loader imports it),
  :mod:`prep.gene_record` (one gene of a shard: reference span, edits, JSON),
  :mod:`prep.shard_tar` (the tar files), :mod:`prep.shard_reader` (a study's windows, for
  users) — the shard format.
* :mod:`prep.sharding` — ``run_shard``, in four steps: :mod:`prep.shard_plan`,
  :mod:`prep.shard_resume`, :mod:`prep.shard_build`, :mod:`prep.shard_finalize`; with
  :mod:`prep.fingerprint` (build fingerprints), :mod:`prep.target_table` (the targets table,
  re-targeting) and :mod:`prep.verification` (checking a study's shards).

The study's settings, atomic writes, the working-directory layout and shared names are common
to every stage: :mod:`hapflow.sections`, :mod:`hapflow.config`, :mod:`hapflow.io`,
:mod:`hapflow.layout`, :mod:`hapflow.names`.
"""
