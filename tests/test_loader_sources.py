"""loader.sources: patterns, manifests, HTTP streaming (a real local server) and fsspec URLs."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import polars as pl
import pytest

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
    train = shards / "train"
    braces = expand_urls(f"{train}/shard-{{000000..000003}}.tar")
    assert [Path(u).name for u in braces] == [f"shard-00000{i}.tar" for i in range(4)]
    assert expand_urls(f"{train}/*.tar") == braces
    assert expand_urls([braces[0], f"{shards}/val/*.tar"]) == [braces[0],
                                                               str(shards / "val" / "shard-000000.tar")]
    assert expand_urls("http://h/s-{0..2}.tar") == [f"http://h/s-{i}.tar" for i in range(3)]


def test_expand_urls_raises_on_missing(shards):
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        expand_urls(f"{shards}/train/*.tgz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_urls(f"{shards}/train/shard-{{000000..000009}}.tar")
    with pytest.raises(ValueError, match="globs work on local paths"):
        expand_urls("http://h/*.tar")


def test_resolve_source_folder_and_patterns_agree(shards):
    a = resolve_source(shards, "train")
    b = resolve_source(f"{shards}/train/shard-{{000000..000003}}.tar", "train")
    c = resolve_source(f"{shards}/train/*.tar", "train")
    assert a.key == b.key == c.key and len(a) == 3198
    assert (a.length, a.flank) == (49_152, 8)
    assert a.row.tolist() == b.row.tolist()
    part = resolve_source(f"{shards}/train/shard-000003.tar", "train")
    assert len(part) == 246


def test_resolve_source_scans_shards_without_manifest(shards, tmp_path):
    shutil.copytree(shards / "val", tmp_path / "val")
    scanned = resolve_source(f"{tmp_path}/val/*.tar", "val")
    assert scanned.key == resolve_source(shards, "val").key


def test_resolve_source_errors_name_the_fix(shards, tmp_path):
    with pytest.raises(ShardFormatError, match="manifest.parquet does not exist"):
        resolve_source(tmp_path, "train")
    with pytest.raises(ShardFormatError, match="not listed in the manifest"):
        resolve_source(f"{shards}/val/*.tar", "val",
                       manifest=pl.read_parquet(shards / "manifest.parquet").filter(
                           pl.col("split") == "train"))


def test_http_streaming_yields_the_same_samples(shards, server):
    assert _eval(f"{server}/shards", num_workers=2) == _eval(shards, num_workers=2)
    assert (_eval(f"{server}/shards/val/shard-{{000000..000000}}.tar", num_workers=0)
            == _eval(shards, num_workers=0))


def test_http_train_stream_matches_local(shards, server):
    def run(source):
        loader = make_loader(source, "train", "train", 8, num_workers=2, epoch_batches=20)
        return [(b["index"].tolist(), b["seq"].sum().item()) for b in loader]

    assert run(f"{server}/shards/train/shard-{{000000..000003}}.tar") == run(shards)


def test_pipe_urls_through_webdataset_gopen(shards):
    url = f"pipe:cat {shards}/val/shard-000000.tar"
    assert (_eval([url], manifest=shards / "manifest.parquet", num_workers=0)
            == _eval(shards, num_workers=0))


def test_http_missing_shard_is_a_clear_error(server):
    with pytest.raises(FileNotFoundError, match="404"):
        open_url(f"{server}/shards/train/shard-000099.tar")


def test_fsspec_memory_urls(shards):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for path in [shards / "manifest.parquet", *sorted(shards.glob("*/*.tar"))]:
        fs.pipe(f"/study/shards/{path.relative_to(shards)}", path.read_bytes())
    try:
        assert _eval("memory://study/shards", num_workers=0) == _eval(shards, num_workers=0)
        urls = expand_urls("memory://study/shards/train/*.tar")
        assert len(urls) == 4 and urls[0].startswith("memory://")
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
