"""The stage transaction without Prefect, on the real corpus stage: build, skip, rebuild on a
changed input, and nothing half-written visible after a contract fails."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.config import load_config
from schemas.manifest import MANIFEST
from tasks import corpus
from tasks.artifacts import Home, check_files, published, sha256_file
from tasks.contracts import ContractError
from tasks.lineage_events import events_file
from tasks.transaction import Hooks, run_stage


def unpublished(home: Home, stage: str) -> list[str]:
    """Directories a reader could mistake for an artifact: any without a manifest."""
    return [d.name for d in home.stage_dir(stage).iterdir() if d.is_dir() and not (d / MANIFEST).is_file()]


def test_build_skip_rebuild_and_a_failed_validate_publishes_nothing(
    tiny_config, tmp_path, no_openlineage_config
):
    cfg, home = load_config(str(tiny_config)), Home.resolve(tmp_path / "home")
    wrapped = []
    hooks = Hooks(task=lambda fn, name: wrapped.append(name) or fn)

    built = run_stage("corpus", cfg, home, hooks=hooks)
    assert built.status == "ran" and wrapped == ["corpus-build", "corpus-validate"]
    assert built.manifest.stats["kept"] == pq.read_metadata(built.path / "qa.parquet").num_rows + sum(
        pq.read_metadata(built.path / f"{t}.parquet").num_rows
        for t in ("pretrain", "translation", "summarization", "preference")
    )
    assert check_files(built.path) == [] and all(c.success for c in built.manifest.contracts)
    manifest_bytes = (built.path / MANIFEST).read_bytes()

    again = run_stage("corpus", cfg, home)
    assert (again.status, again.path) == ("skipped", built.path)
    assert (built.path / MANIFEST).read_bytes() == manifest_bytes

    qa = tiny_config.parent / "raw" / "qa.jsonl"
    with open(qa, "a") as f:
        f.write(
            json.dumps({"id": "qa-new", "context": "Some context.", "question": "What?", "answer": "Some"})
            + "\n"
        )
    changed = run_stage("corpus", cfg, home)
    assert changed.status == "ran" and changed.path != built.path
    assert {r.name: r.fingerprint for r in changed.manifest.inputs}[str(qa)] == sha256_file(qa)

    def build_with_a_repeated_row(section, inputs, out):
        stats = corpus.build(section, inputs, out)
        table = pq.read_table(out / "qa.parquet")
        pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), out / "qa.parquet")  # an id twice
        return stats

    with pytest.raises(ContractError):
        run_stage("corpus", cfg, home, force=True, build=build_with_a_repeated_row)
    assert [d for d, _ in published(home, "corpus")] == [built.path, changed.path]
    assert unpublished(home, "corpus") == [] and check_files(changed.path) == []
    events = [json.loads(line) for line in events_file(home).read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE", "START", "COMPLETE", "START", "FAIL"]
