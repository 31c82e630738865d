"""End to end through Prefect on a tiny config: build all, skip all, rerun only what changed."""

import json
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from flows.encoder import encoder_flow
from flows.heads import heads_flow
from flows.pipeline import pipeline
from flows.pretrain import pretrain_flow
from flows.reward import reward_flow
from flows.rl import rl_flow
from flows.seq2seq import seq2seq_flow
from schemas.config import load_config
from schemas.stages import ORDER, PIPELINE, STAGES
from tasks import lineage
from tasks.artifacts import ArtifactError, Home, read_manifest, sha256_file, verify
from tasks.lineage_events import events_file
from tasks.plan import plan_pipeline

pytestmark = pytest.mark.e2e


def assert_ui_artifacts(path: Path) -> None:
    """The UI shows the manifest itself (its browser cannot open the worker's files) and links it."""
    m = read_manifest(path)
    summary = Artifact.get(f"{m.stage}-t")
    assert summary.flow_run_id and str(summary.flow_run_id) == m.flow_run_id
    assert (path / "manifest.json").read_text() in summary.data
    assert Artifact.get(f"{m.stage}-t-manifest").data.endswith(f"({(path / 'manifest.json').as_uri()})")


def statuses(results: list[dict]) -> dict[str, str]:
    return {r["stage"]: r["status"] for r in results}


def test_pipeline_end_to_end(prefect_harness, no_openlineage_config, tiny_config, tmp_path):
    home = str(tmp_path / "home")
    config = str(tiny_config)

    first = pipeline(config=config, home=home)
    assert statuses(first) == dict.fromkeys(PIPELINE, "ran")
    for r in first:
        m = read_manifest(Path(r["path"]))
        assert m.stage == r["stage"] and m.flow_run_id and m.files and all(c.success for c in m.contracts)
        assert Path(r["path"]).is_relative_to(tmp_path / "home")
    allowed = {".safetensors", ".json", ".arrow", ".parquet", ".jsonl", ".md", ".png", ".txt"}
    for f in (tmp_path / "home").rglob("*"):
        if f.is_file() and not f.name.startswith(".lock-"):  # no pickle anywhere in any artifact
            assert f.suffix in allowed, f
    dpo_dir = Path(first[-1]["path"])
    assert (dpo_dir / "model.safetensors").is_file() and (
        dpo_dir / "adapter" / "adapter_model.safetensors"
    ).is_file()
    assert not list(dpo_dir.rglob("*.bin")) and not list(dpo_dir.rglob("*.pt"))
    metrics = json.loads((dpo_dir / "metrics.json").read_text())
    assert metrics["val_loss"] < metrics["val_loss_before"]

    assert_openlineage_graph(home, first)
    assert_ui_artifacts(Path(first[-1]["path"]))

    chain = "\n".join(lineage.render(lineage.upstream(dpo_dir)))
    for stage in PIPELINE:
        assert f"{stage} t fp=" in chain
    assert "raw " + str(tiny_config.parent / "raw" / "qa.jsonl") in chain
    assert verify(dpo_dir) == []
    used = lineage.downstream(Home.resolve(home), tiny_config.parent / "raw" / "qa.jsonl")
    assert [d["stage"] for d in used] == list(PIPELINE)

    check_rlhf_stages(config, home)
    check_encoder_stages(config, home, first)
    assert statuses(pipeline(config=config, home=home)) == dict.fromkeys(PIPELINE, "skipped")

    changed = statuses(pipeline(config=config, overrides=["sft.lr=0.004"], home=home))
    assert changed == {**dict.fromkeys(PIPELINE[:4], "skipped"), "sft": "ran", "dpo": "ran"}

    pipeline_plan = plan_pipeline(load_config(config, ["sft.lr=0.003"]), Home.resolve(home), PIPELINE)
    plan = {p.stage: p for p in pipeline_plan}
    assert [s for s, p in plan.items() if not p.up_to_date] == ["sft", "dpo"]
    assert plan["sft"].reasons == ["config sft.lr: 0.004 -> 0.003"]

    with open(tiny_config.parent / "raw" / "qa.jsonl", "a") as f:
        f.write('{"id": "qa-new", "context": "Some context.", "question": "What?", "answer": "Some"}\n')
    plan = plan_pipeline(load_config(config), Home.resolve(home))
    assert all(not p.up_to_date for p in plan) and [p.stage for p in plan] == list(ORDER)
    assert any(r.startswith("raw file") and "qa.jsonl" in r for r in plan[0].reasons)

    shard = sorted(Path(first[2]["path"]).glob("pretrain-train-*.arrow"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])  # truncate a committed shard
    assert any(str(shard) in p for p in verify(dpo_dir))
    with pytest.raises(ArtifactError, match="integrity check"):
        pretrain_flow(config=config, home=home, force=True, overrides=[])


def check_rlhf_stages(config: str, home: str) -> None:
    """The optional reward and rl stages, as Prefect flows on the pipeline's artifacts."""
    results = {
        r["stage"]: r for r in (reward_flow(config=config, home=home), rl_flow(config=config, home=home))
    }
    for stage, r in results.items():
        m = read_manifest(Path(r["path"]))
        assert r["status"] == "ran" and m.flow_run_id and all(c.success for c in m.contracts)
        assert {c.name for c in m.contracts} >= {"reward/chosen-differs", f"{stage}/finite"}
    reward_stats = read_manifest(Path(results["reward"]["path"])).stats
    assert 0 <= reward_stats["val_reward_accuracy"] <= 1 and reward_stats["val_pairs"] > 0
    rl_stats = read_manifest(Path(results["rl"]["path"])).stats
    for model in ("sft", "dpo", "rl"):  # the RL model compared with DPO (and SFT) on the same data
        assert 0 <= rl_stats[f"val_preference_accuracy_{model}"] <= 1
        assert isinstance(rl_stats[f"val_mean_reward_{model}"], float)
    assert rl_stats["rewards_finite"] and rl_stats["method"] == "rloo"
    chain = "\n".join(lineage.render(lineage.upstream(Path(results["rl"]["path"]))))
    assert all(f"{stage} t fp=" in chain for stage in ("reward", "dpo", "sft", "shards"))
    assert statuses([reward_flow(config=config, home=home)]) == {"reward": "skipped"}


# Few steps and examples: the flows, manifests and lineage are under test here, not learning.
ENCODER_SIDE = [
    *("heads.max_steps=2", "heads.batch_size=8", "heads.max_len=160", "heads.heads=[domain,pair,qa]"),
    *("heads.train_examples=32", "heads.eval_examples=8", "heads.require_baseline=false"),
    *("seq2seq.cross_steps=2", "seq2seq.max_steps=2", "seq2seq.batch_size=4", "seq2seq.eval_batches=1"),
    *("seq2seq.eval_examples=2", "seq2seq.eval_max_new_tokens=4", "seq2seq.cross_heads=2"),
]


def check_encoder_stages(config: str, home: str, pipeline_results: list[dict]) -> None:
    """The optional encoder -> heads -> seq2seq stages as Prefect flows on the pipeline's
    artifacts: each publishes a manifest whose inputs are exactly the artifacts it read."""
    published = {r["stage"]: read_manifest(Path(r["path"])) for r in pipeline_results}
    for flow in (encoder_flow, heads_flow, seq2seq_flow):
        r = flow(config=config, overrides=ENCODER_SIDE, home=home)
        m = read_manifest(Path(r["path"]))
        assert r["status"] == "ran" and m.flow_run_id and all(c.success for c in m.contracts), r
        assert {ref.stage: ref.fingerprint for ref in m.inputs} == {
            stage: published[stage].fingerprint for stage in STAGES[r["stage"]].inputs
        }
        published[r["stage"]] = m
    assert set(published["heads"].stats["heads"]) == {"domain", "pair", "qa"}
    assert {"generation", "sft_generation"} <= set(published["seq2seq"].stats)
    chain = "\n".join(lineage.render(lineage.upstream(Path(r["path"]))))
    assert all(f"{stage} t fp=" in chain for stage in ("seq2seq", "encoder", "sft", "pretrain", "corpus"))


def assert_openlineage_graph(home: str, results: list[dict]) -> None:
    """OpenLineage events (file transport by default): START + COMPLETE per stage run, and every
    stage reads exactly the datasets (path, version) that earlier runs wrote, down to raw files."""
    events = [json.loads(line) for line in events_file(Home.resolve(home)).read_text().splitlines()]
    wrote: dict[str, str] = {}
    for r in results:
        m = read_manifest(Path(r["path"]))
        start, complete = (e for e in events if e["job"]["name"] == r["stage"])
        assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
        assert start["run"]["runId"] == complete["run"]["runId"] == m.flow_run_id
        assert m.flow_run_url.endswith(f"/runs/flow-run/{m.flow_run_id}")
        read = {d["name"]: d["facets"]["version"]["datasetVersion"] for d in start["inputs"]}
        assert read == {ref.path: ref.fingerprint for ref in m.inputs}
        for name, version in read.items():
            assert version == (wrote[name] if name in wrote else sha256_file(Path(name)))
        (out,) = complete["outputs"]
        assert (out["name"], out["facets"]["version"]["datasetVersion"]) == (r["path"], m.fingerprint)
        wrote[out["name"]] = m.fingerprint
