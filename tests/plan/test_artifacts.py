"""The artifact store: atomic publication, garbage collection, fingerprints, verify, lineage."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest

from schemas.manifest import Manifest, Ref
from tasks import artifacts, lineage


def publish_dummy(home, stage="corpus", inputs=(), config=None, **fields):
    """A published artifact holding data.txt, with the fingerprint its manifest implies."""
    config = config or {}
    fp = artifacts.stage_fingerprint(stage, config, {"format": 1}, list(inputs))
    with artifacts.staging(home, stage, "t", fp) as tmp:
        (tmp / "data.txt").write_text("hello")
        manifest = Manifest(
            stage=stage,
            name="t",
            fingerprint=fp,
            inputs=list(inputs),
            config=config,
            fingerprint_config=config,
            code={"format": 1},
            files=artifacts.file_entries(tmp),
            created_at=datetime.now(UTC).isoformat(),
            **fields,
        )
        return artifacts.publish(tmp, artifacts.artifact_dir(home, stage, "t", fp), manifest)


def test_publish_is_all_or_nothing(tmp_path):
    home = artifacts.Home.resolve(tmp_path)
    with pytest.raises(RuntimeError), artifacts.staging(home, "corpus", "t", "a" * 64) as tmp:
        (tmp / "half.txt").write_text("partial")
        raise RuntimeError("build failed")
    assert list(home.stage_dir("corpus").iterdir()) == []
    path = publish_dummy(home)
    assert artifacts.find(home, "corpus", artifacts.read_manifest(path).fingerprint) == path
    assert artifacts.read_manifest(path).files[0].path == "data.txt"


def test_garbage_collection_keeps_what_can_be_resumed(tmp_path):
    home = artifacts.Home.resolve(tmp_path)
    published = publish_dummy(home)
    stage_dir = home.stage_dir("corpus")
    abandoned = stage_dir / ".tmp-t-aaaaaaaaaaaa"
    held = stage_dir / ".tmp-t-bbbbbbbbbbbb"
    (stage_dir / ".lock-t-bbbbbbbbbbbb").write_text("{}")
    replaced = stage_dir / ".old-t-cccccccccccc-999999999"
    no_manifest = stage_dir / "t-0123456789ab"
    for d in (abandoned, held, replaced, no_manifest):
        d.mkdir()
    assert sorted(artifacts.collect_garbage(home)) == sorted([replaced, no_manifest])
    assert sorted(artifacts.collect_garbage(home, keep_s=0)) == [abandoned]
    assert published.exists() and held.exists()


def test_lease_is_exclusive_and_taken_over_from_a_dead_holder(tmp_path):
    lock = tmp_path / ".lock-x"
    with artifacts.Lease(lock):
        assert not artifacts.Lease(lock)._try_acquire()  # a live holder keeps it
    assert not lock.exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "token": "x"}))
    taker = artifacts.Lease(lock)
    assert taker._try_acquire() and json.loads(lock.read_text())["pid"] == os.getpid()


def test_second_writer_waits_then_finds_the_artifact(tmp_path):
    home = artifacts.Home.resolve(tmp_path)
    order = []

    def second():
        with artifacts.staging(home, "corpus", "t", "f" * 64):
            order.append(("second", artifacts.find(home, "corpus", "f" * 64) is not None))

    with artifacts.staging(home, "corpus", "t", "f" * 64):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append(("first", None))
    thread.join(5)
    assert order == [("first", None), ("second", False)]


def test_verify_and_lineage(tmp_path):
    home = artifacts.Home.resolve(tmp_path / "home")
    raw = tmp_path / "raw.jsonl"
    raw.write_text("{}\n")
    raw_ref = Ref(stage="raw", name="raw.jsonl", fingerprint=artifacts.sha256_file(raw), path=str(raw))
    first = publish_dummy(home, inputs=[raw_ref])
    ref = Ref(
        stage="corpus", name="t", fingerprint=artifacts.read_manifest(first).fingerprint, path=str(first)
    )
    second = publish_dummy(home, stage="tokenizer", inputs=artifacts.sealed([ref]))
    assert artifacts.verify(second) == []
    lines = lineage.render(lineage.upstream(second))
    assert (
        lines[0].startswith(f"tokenizer t fp={artifacts.read_manifest(second).fingerprint[:12]}")
        and f"raw raw.jsonl sha256={raw_ref.fingerprint}" in lines[-1]
    )
    assert [d["stage"] for d in lineage.downstream(home, raw)] == ["corpus", "tokenizer"]
    assert [d["path"] for d in lineage.downstream(home, first)] == [str(second)]
    (first / "data.txt").write_text("hellO")
    raw.write_text("[]\n")
    problems = artifacts.verify(second)
    assert any("data.txt: sha256" in p for p in problems) and any("raw input changed" in p for p in problems)


def edit_manifest(path, **changes):
    m = artifacts.read_manifest(path)
    (path / "manifest.json").write_text(m.model_copy(update=changes).model_dump_json(indent=2))


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            "stats of the corpus",
            r"corpus/t-\w+/manifest.json: sha256 \w+, but t-\w+ \(tokenizer\) was built from",
        ),
        ("fingerprint of the tokenizer", "does not follow from its config, code and inputs"),
        ("config of the tokenizer", r"config \['lr'\] differs from the fingerprinted config"),
        ("input fingerprint of the tokenizer", "does not follow from its config, code and inputs"),
    ],
)
def test_verify_finds_every_edit_of_a_manifest_and_names_the_first_broken_link(edit, named, tmp_path):
    home = artifacts.Home.resolve(tmp_path / "home")
    first = publish_dummy(home)
    ref = Ref(
        stage="corpus", name="t", fingerprint=artifacts.read_manifest(first).fingerprint, path=str(first)
    )
    second = publish_dummy(home, stage="tokenizer", inputs=artifacts.sealed([ref]), config={"lr": 0.1})
    m = artifacts.read_manifest(second)
    if edit == "stats of the corpus":
        edit_manifest(first, stats={"kept": 10**6})
    elif edit == "fingerprint of the tokenizer":
        edit_manifest(second, fingerprint="0" * 64)
    elif edit == "config of the tokenizer":
        edit_manifest(second, config={"lr": 1.0})
    else:
        edit_manifest(second, inputs=[m.inputs[0].model_copy(update={"fingerprint": "1" * 64})])
    problems = artifacts.verify(second, home)
    assert problems and re.search(named, problems[0]), problems


def test_verify_of_a_copied_home_checks_the_copy(tmp_path):
    home = artifacts.Home.resolve(tmp_path / "home")
    first = publish_dummy(home)
    ref = Ref(
        stage="corpus", name="t", fingerprint=artifacts.read_manifest(first).fingerprint, path=str(first)
    )
    second = publish_dummy(home, stage="tokenizer", inputs=artifacts.sealed([ref]))
    shutil.copytree(tmp_path / "home", tmp_path / "copy")
    copy = artifacts.Home.resolve(tmp_path / "copy")
    copied_first = copy.stage_dir("corpus") / first.name
    (copied_first / "data.txt").write_text("hellO")  # tampered in the copy only
    problems = artifacts.verify(copy.stage_dir("tokenizer") / second.name, copy)
    assert len(problems) == 1 and str(copied_first / "data.txt") in problems[0]  # not the original's
    assert artifacts.verify(second, home) == []


def test_quick_check_hashes_what_changed_after_publication(tmp_path):
    home = artifacts.Home.resolve(tmp_path / "home")
    path = publish_dummy(home)
    assert artifacts.quick_check(path) == []
    stamp = (path / "data.txt").stat()
    (path / "data.txt").write_text("hellO")  # same size, newer mtime: hashed, found
    assert "data.txt: sha256" in artifacts.quick_check(path)[0]
    os.utime(path / "data.txt", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # mtime forged back
    assert artifacts.quick_check(path) == []  # the quick check trusts size + mtime ...
    with pytest.raises(artifacts.ArtifactError, match="data.txt: sha256"):
        artifacts.skipped_intact(path, full=True)  # ... `lmpipe run --verify` hashes everything
