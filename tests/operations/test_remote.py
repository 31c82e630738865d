"""A remote artifact home on a real S3-compatible server (moto, on 127.0.0.1).

Stages publish to the object store with the manifest last, a second machine (another cache)
reuses what the first pushed, and a push killed before its manifest is never taken for an artifact.
"""

import shutil
from pathlib import Path

import fsspec
import pytest
from moto.server import ThreadedMotoServer

from cli.main import open_home
from flows.corpus import corpus_flow
from flows.tokenizer import tokenizer_flow
from schemas.config import load_config
from tasks import lineage
from tasks.artifacts import ArtifactError, verify
from tasks.plan import plan_pipeline

BUCKET = "lmpipe-test"


@pytest.fixture(scope="module")
def s3_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """A fresh bucket prefix on the server; credentials and endpoint as a user would set them."""
    for key, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return fs, f"s3://{BUCKET}/{request.node.name}"


def machine(monkeypatch, tmp_path, name: str) -> None:
    """Switch to another machine's local cache."""
    monkeypatch.setenv("LMPIPE_CACHE", str(tmp_path / name))


def remote_files(fs, url: str) -> list[str]:
    fs.invalidate_cache()
    root = url.removeprefix("s3://")
    return sorted(p.removeprefix(root + "/") for p in fs.find(root))


def test_stages_publish_to_s3_and_another_machine_reuses_them(
    prefect_harness, s3, tiny_config, tmp_path, monkeypatch
):
    fs, url = s3
    machine(monkeypatch, tmp_path, "laptop")
    corpus = corpus_flow(config=str(tiny_config), home=url)
    tokenizer = tokenizer_flow(config=str(tiny_config), home=url)
    assert corpus["status"] == tokenizer["status"] == "ran"

    files = remote_files(fs, url)
    assert not [f for f in files if "/.tmp-" in f]
    for result in (corpus, tokenizer):
        stage, name = result["stage"], result["path"].rsplit("/", 1)[-1]
        assert f"artifacts/{stage}/{name}/manifest.json" in files

    machine(monkeypatch, tmp_path, "worker")  # empty cache: everything comes from the bucket
    plans = {p.stage: p for p in plan_pipeline(load_config(str(tiny_config)), open_home(url))}
    assert plans["corpus"].up_to_date and plans["tokenizer"].up_to_date
    assert not plans["shards"].up_to_date
    worker = tokenizer_flow(config=str(tiny_config), home=url)
    assert worker["status"] == "skipped"

    # The pulled manifests name the laptop's paths; lineage and verify find the worker's copies.
    shutil.rmtree(tmp_path / "laptop")
    home = open_home(url)
    tree = lineage.upstream(Path(worker["path"]), home)
    assert tree["inputs"][0]["stage"] == "corpus" and tree["inputs"][0]["path"].startswith(
        str(tmp_path / "worker")
    )
    assert verify(Path(worker["path"]), home) == []


def test_a_push_killed_before_its_manifest_is_invisible_then_completed(
    prefect_harness, s3, tiny_config, tmp_path, monkeypatch
):
    fs, url = s3
    machine(monkeypatch, tmp_path, "laptop")
    monkeypatch.setenv("LMPIPE_CRASH_AT", "corpus:push_before_manifest:raise")
    with pytest.raises(RuntimeError, match="push_before_manifest"):
        corpus_flow(config=str(tiny_config), home=url)
    assert not [f for f in remote_files(fs, url) if f.endswith("manifest.json") and "/.tmp-" not in f]

    machine(monkeypatch, tmp_path, "worker")
    plans = plan_pipeline(load_config(str(tiny_config)), open_home(url))
    assert not plans[0].up_to_date  # data files without a manifest are not an artifact

    monkeypatch.delenv("LMPIPE_CRASH_AT")
    machine(monkeypatch, tmp_path, "laptop")  # its cache has the published artifact: push it again
    assert corpus_flow(config=str(tiny_config), home=url)["status"] == "skipped"
    files = remote_files(fs, url)
    assert not [f for f in files if "/.tmp-" in f]
    assert [f for f in files if f.startswith("artifacts/corpus/") and f.endswith("/manifest.json")]


def test_a_corrupted_remote_file_is_refused_by_name(prefect_harness, s3, tiny_config, tmp_path, monkeypatch):
    fs, url = s3
    machine(monkeypatch, tmp_path, "laptop")
    corpus_flow(config=str(tiny_config), home=url)
    victim = next(f for f in remote_files(fs, url) if f.endswith(".parquet") or f.endswith(".arrow"))
    fs.pipe(f"{url.removeprefix('s3://')}/{victim}", b"not the data")

    machine(monkeypatch, tmp_path, "worker")
    with pytest.raises(ArtifactError, match=victim.rsplit("/", 1)[-1]):
        open_home(url)


def test_a_file_url_home_is_a_shared_filesystem_home(prefect_harness, tiny_config, tmp_path, monkeypatch):
    """`file://` (an NFS or other shared mount) is used in place, without a cache: publication is
    the local store's (staging folder, manifest last, rename), and another machine sees it."""
    url = f"file://{tmp_path / 'nfs' / 'lmpipe'}"
    machine(monkeypatch, tmp_path, "laptop")
    corpus = corpus_flow(config=str(tiny_config), home=url)
    name = corpus["path"].rsplit("/", 1)[-1]
    published = tmp_path / "nfs" / "lmpipe" / "artifacts" / "corpus" / name
    assert (published / "manifest.json").exists() and not list(published.parent.glob(".tmp-*"))

    machine(monkeypatch, tmp_path, "worker")
    plans = plan_pipeline(load_config(str(tiny_config)), open_home(url))
    assert plans[0].stage == "corpus" and plans[0].up_to_date
    assert corpus_flow(config=str(tiny_config), home=url)["status"] == "skipped"
