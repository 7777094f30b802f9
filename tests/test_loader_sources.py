"""loader.sources: patterns, manifests, HTTP streaming (a real local server) and fsspec URLs, on
the demo study in shard format 3 (every shard at the top of DIR/shards, all splits in each)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from loader import make_loader
from loader.sources import expand_urls, open_url, resolve_source
from prep.shard_format import ShardFormatError
from tests.loader_demo import demo_shards


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    return demo_shards(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(shards):
    """An http.server on 127.0.0.1 serving the folder that holds ``shards/``, in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(shards.parent))
    httpd = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # readers close a shard's connection once they have what they need


def _eval(source, split="val", **kw) -> list[tuple]:
    loader = make_loader(source, split, "eval", 8, **kw)
    return [(b["index"].tolist(), b["seq"].numpy().tobytes(), b["Y"].nan_to_num(-1.0).tolist())
            for b in loader]


def test_expand_urls_braces_globs_and_lists(shards):
    braces = expand_urls(f"{shards}/shard-{{000000..000004}}.tar")
    assert [Path(u).name for u in braces] == [f"shard-00000{i}.tar" for i in range(5)]
    assert expand_urls(f"{shards}/*.tar") == braces
    assert expand_urls([braces[0], f"{shards}/shard-00000[34].tar"]) == [braces[0], *braces[3:]]
    assert expand_urls("http://h/s-{0..2}.tar") == [f"http://h/s-{i}.tar" for i in range(3)]


def test_expand_urls_raises_on_missing(shards):
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        expand_urls(f"{shards}/*.tgz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_urls(f"{shards}/shard-{{000000..000009}}.tar")
    with pytest.raises(ValueError, match="globs work on local paths"):
        expand_urls("http://h/*.tar")


def test_resolve_source_folder_and_patterns_agree(shards):
    a = resolve_source(shards, "train")
    b = resolve_source(f"{shards}/shard-{{000000..000004}}.tar", "train")
    c = resolve_source(f"{shards}/*.tar", "train")
    assert a.key == b.key == c.key and len(a) == 3198
    assert (a.length, a.flank, a.width) == (49_152, 8, 49_168)
    assert a.row.tolist() == b.row.tolist() and a.urls == c.urls and len(a.urls) == 5
    assert a.record_row.tolist() == c.record_row.tolist()
    part = resolve_source(f"{shards}/shard-000004.tar", "train")
    assert len(part) == 246 and len(part.genes) == 2  # 2 genes x 123 train individuals


def test_every_split_plans_over_the_shards_holding_it(shards):
    """All splits share shards: each split's index lists every shard with one of its samples,
    and its genes' build order (a gene's place in its shard) is the same from every split."""
    manifest = pl.read_parquet(shards / "manifest.parquet")
    order = manifest["gene"].unique(maintain_order=True).to_list()  # train: build order
    for split in ("train", "val", "test"):
        index = resolve_source(shards, split)
        assert [Path(u).name for u in index.urls] == [f"shard-00000{i}.tar" for i in range(5)]
        ranks = {g: int(index.gene_rank[i]) for i, g in enumerate(index.genes)}
        assert sorted(ranks, key=ranks.get) == order


def test_resolve_source_scans_shards_without_manifest(shards, tmp_path):
    """Without a manifest every sample of the given shards is loaded as the split asked for,
    without targets (shards hold neither splits nor targets)."""
    for path in shards.glob("*.tar"):
        shutil.copy(path, tmp_path / path.name)
    scanned = resolve_source(f"{tmp_path}/*.tar", "test")
    manifest = pl.read_parquet(shards / "manifest.parquet")
    assert sorted(scanned.key) == sorted(manifest["key"].to_list())
    assert np.isnan(scanned.targets).all() and scanned.build is None
    batch = next(iter(make_loader(f"{tmp_path}/*.tar", "test", "eval", 8, num_workers=0)))
    assert batch["valid"].all() and torch.isnan(batch["Y"]).all()


def test_resolve_source_errors_name_the_fix(shards, tmp_path):
    with pytest.raises(ShardFormatError, match="manifest.parquet does not exist"):
        resolve_source(tmp_path, "train")
    with pytest.raises(ShardFormatError, match="not listed in the manifest"):
        resolve_source(f"{shards}/shard-00000[01].tar", "val",
                       manifest=pl.read_parquet(shards / "manifest.parquet").filter(
                           pl.col("shard") == "shard-000000.tar"))
    manifest = pl.read_parquet(shards / "manifest.parquet")
    moved = manifest.with_columns(pl.when(pl.col("key") == manifest["key"][0])
                                  .then(pl.lit("shard-000001.tar")).otherwise(pl.col("shard"))
                                  .alias("shard"))
    with pytest.raises(ShardFormatError, match="puts a gene in two shards"):
        resolve_source(shards, "train", manifest=moved)


def test_http_streaming_yields_the_same_samples(shards, server):
    assert _eval(f"{server}/shards", num_workers=2) == _eval(shards, num_workers=2)
    assert (_eval(f"{server}/shards/shard-{{000000..000004}}.tar", num_workers=0)
            == _eval(shards, num_workers=0))


def test_http_train_stream_matches_local(shards, server):
    def run(source):
        loader = make_loader(source, "train", "train", 8, num_workers=2, epoch_batches=20)
        return [(b["index"].tolist(), b["seq"].sum().item()) for b in loader]

    assert run(f"{server}/shards/shard-{{000000..000004}}.tar") == run(shards)


def test_pipe_urls_through_webdataset_gopen(shards):
    urls = [f"pipe:cat {shards}/shard-00000{i}.tar" for i in range(5)]
    assert (_eval(urls, manifest=shards / "manifest.parquet", num_workers=0)
            == _eval(shards, num_workers=0))


def test_http_missing_shard_is_a_clear_error(server):
    with pytest.raises(FileNotFoundError, match="404"):
        open_url(f"{server}/shards/shard-000099.tar")


def test_fsspec_memory_urls(shards):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for path in [shards / "manifest.parquet", *sorted(shards.glob("*.tar"))]:
        fs.pipe(f"/study/shards/{path.relative_to(shards)}", path.read_bytes())
    try:
        assert _eval("memory://study/shards", num_workers=0) == _eval(shards, num_workers=0)
        urls = expand_urls("memory://study/shards/*.tar")
        assert len(urls) == 5 and urls[0].startswith("memory://")
    finally:
        fs.rm("/study", recursive=True)


def test_object_store_without_backend_is_an_import_error():
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="s3fs"):
            open_url("s3://hapflow-no-such-bucket/shard.tar")
    else:
        pytest.skip("s3fs is installed")
