"""End to end through Prefect on a tiny config: build all, skip all, rerun only what changed."""

import contextlib
import io
import json
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import FILES
from mlflow.tracking import MlflowClient
from prefect.artifacts import Artifact

from cli.main import main
from flows.encoder import encoder_flow
from flows.heads import heads_flow
from flows.pipeline import pipeline
from flows.pretrain import pretrain_flow
from flows.reward import reward_flow
from flows.rl import rl_flow
from flows.seq2seq import seq2seq_flow
from schemas import config as config_module
from schemas.config import load_config
from schemas.stages import ORDER, PIPELINE, STAGES
from tasks import artifacts, lineage
from tasks.artifacts import ArtifactError, Home, read_manifest, sha256_file, verify
from tasks.lineage_events import events_file
from tasks.plan import plan_pipeline

pytestmark = pytest.mark.e2e


def assert_ui_artifacts(path: Path) -> None:
    """The UI shows the manifest itself (its browser cannot open the worker's files) and links it."""
    m = read_manifest(path)
    key = f"{m.stage}-t-{m.fingerprint[:12]}"  # keys carry the fingerprint: variants are told apart
    summary = Artifact.get(key)
    assert summary.flow_run_id and str(summary.flow_run_id) == m.flow_run_id
    assert (path / "manifest.json").read_text() in summary.data
    assert Artifact.get(f"{key}-manifest").data.endswith(f"({(path / 'manifest.json').as_uri()})")
    assert "data:image/png;base64," in Artifact.get(f"{key}-lineage").data


def statuses(results: list[dict]) -> dict[str, str]:
    return {r["stage"]: r["status"] for r in results}


def raw_hashings(monkeypatch, raw_dir: Path) -> Counter:
    """How often each file of `raw_dir` is read to be hashed: a counting wrapper around the real
    tasks.artifacts.sha256_file (every raw-file hash goes through it)."""
    counts, real = Counter(), artifacts.sha256_file

    def counted(path):
        if Path(path).parent == raw_dir:
            counts[Path(path).name] += 1
        return real(path)

    monkeypatch.setattr(artifacts, "sha256_file", counted)
    return counts


def overrides_parsed(monkeypatch) -> list[str]:
    """Every `--set` item parsed into a config (schemas.config.apply_override), in order."""
    seen, real = [], config_module.apply_override

    def parse(data, item):
        seen.append(item)
        return real(data, item)

    monkeypatch.setattr(config_module, "apply_override", parse)
    return seen


def test_pipeline_end_to_end(
    prefect_harness, no_openlineage_config, tiny_config, tmp_path, capsys, monkeypatch
):
    home = str(tmp_path / "home")
    config = str(tiny_config)

    time.sleep(artifacts.RECENT_NS / 1e9)  # files written this recently are hashed on every look
    with monkeypatch.context() as m:
        hashed = raw_hashings(m, tiny_config.parent / "raw")
        first = pipeline(config=config, home=home)
    assert statuses(first) == dict.fromkeys(PIPELINE, "ran")
    assert hashed == Counter(dict.fromkeys(FILES.values(), 1))  # planned once for the whole run
    for r in first:
        m = read_manifest(Path(r["path"]))
        assert m.stage == r["stage"] and m.flow_run_id and m.files and all(c.success for c in m.contracts)
        assert Path(r["path"]).is_relative_to(tmp_path / "home")
    allowed = {".safetensors", ".json", ".arrow", ".parquet", ".jsonl", ".md", ".png", ".txt", ".db"}
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
    skip_path_sees_a_tampered_file(config, home, Path(first[1]["path"]) / "tokenizer.json", capsys)

    with monkeypatch.context() as m:
        parsed = overrides_parsed(m)
        variant = pipeline(config=config, overrides=["sft.lr=0.004"], home=home)
    assert parsed == ["sft.lr=0.004"]  # once, by the pipeline: its stage flows get the loaded config
    assert statuses(variant) == {**dict.fromkeys(PIPELINE[:4], "skipped"), "sft": "ran", "dpo": "ran"}
    assert_mlflow_runs(home, first, variant)

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


def skip_path_sees_a_tampered_file(config: str, home: str, file: Path, capsys) -> None:
    """`lmpipe run` with every stage up to date still notices a file changed after publication
    (same size: its mtime is newer than the manifest's), and `generate` refuses to use it."""
    original = file.read_bytes()
    swapped = original.replace(b'"<pad>"', b'"<pXd>"', 1)
    assert swapped != original and len(swapped) == len(original)
    file.write_bytes(swapped)
    assert main(["run", "--config", config, "--home", home]) == 2
    assert f"{file}: sha256" in capsys.readouterr().err
    file.write_bytes(original)
    assert main(["run", "--config", config, "--home", home]) == 0


def assert_mlflow_runs(home: str, first: list[dict], variant: list[dict]) -> None:
    """The embedded MLflow store holds a run per training build, nested under its pipeline's run,
    with params, tags, metrics and files; the stage's Prefect artifacts link it and show progress;
    `lmpipe compare` puts the two SFT variants side by side."""
    client = MlflowClient(f"sqlite:///{Home.resolve(home).artifacts / 'mlflow' / 'mlflow.db'}")
    runs = {
        r.info.run_id: r for r in client.search_runs([client.get_experiment_by_name("lmpipe").experiment_id])
    }
    parents = {r.data.tags["lmpipe.flow_run_id"]: r for r in runs.values() if r.info.run_name == "pipeline-t"}
    assert len(parents) == 3  # build all, skip all, the SFT variant
    nested = {}
    for result in (*first[3:6], variant[4]):
        m = read_manifest(Path(result["path"]))
        run = runs[m.mlflow_run_id]
        assert run.info.run_name == f"{m.stage}-t-{m.fingerprint[:12]}" and run.info.status == "FINISHED"
        assert run.data.tags["lmpipe.flow_run_id"] == m.flow_run_id
        nested[result["path"]] = run.data.tags["mlflow.parentRunId"]
        assert {f"lmpipe.input.{r.stage}": r.fingerprint for r in m.inputs}.items() <= run.data.tags.items()
        assert "qa.jsonl" in run.data.tags["lmpipe.raw_sha256"]
        assert run.data.params[f"{m.stage}.lr"] == str(m.config["lr"])
        steps = [h.step for h in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == sorted(set(steps)) and steps[-1] == m.stats["steps"]
        assert run.data.metrics["val_loss"] == m.stats["val_loss"]
        assert {"manifest.json", "loss.png"} <= {f.path for f in client.list_artifacts(run.info.run_id)}
        if result in (first[3], variant[4]):  # the latest build of its stage
            assert Artifact.get(f"{m.stage}-t-{m.fingerprint[:12]}-mlflow").data.endswith(
                f"({m.mlflow_run_url})"
            )
        assert Artifact.get(f"{m.stage}-t-{m.fingerprint[:12]}-progress").data == 100.0
    parent_of_first = {nested[r["path"]] for r in first[3:6]}
    assert (
        len(parent_of_first) == 1
        and nested[variant[4]["path"]] in {p.info.run_id for p in parents.values()} - parent_of_first
    )
    pretrain_steps = client.get_metric_history(
        read_manifest(Path(first[3]["path"])).mlflow_run_id, "grad_norm"
    )
    assert len(pretrain_steps) == read_manifest(Path(first[3]["path"])).stats["steps"]  # every step

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert (
            main(["compare", first[4]["path"], variant[4]["path"].split("-")[-1], "--json", "--home", home])
            == 0
        )
    table = json.loads(out.getvalue())
    assert table["config"] == [{"field": "sft.lr", "values": [0.005, 0.004]}] and table["inputs"] == []
    assert {"val_loss", "train_loss"} <= {r["metric"] for r in table["metrics"]}


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
