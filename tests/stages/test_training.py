"""Training outline: exact resume after SIGKILL, the input-fingerprint guard, the unigram baseline.

The data stages are built once for the module from the tiny slice of the real corpus (no
Prefect); each input dir gets a manifest so the resume guard can read its fingerprint.
"""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from conftest import tiny_config_data
from safetensors.torch import load_file

from schemas.config import PROJECT_ROOT, ConfigError, PipelineConfig
from schemas.manifest import Manifest
from schemas.tokens import MASK, token_id
from schemas.training import ModelConfig
from tasks import corpus, mlm, pretrain, shard_reading, shards, tokenizer, training
from tasks.artifacts import DiskFull, Home, file_entries, sha256_file, staging, write_json
from tasks.contracts import ContractError


def with_manifest(stage: str, out: Path) -> Path:
    """A minimal manifest listing `out`'s files, so readers (the resume guard, the skip path's
    file check of `lmpipe generate`) see `out` as an intact published artifact."""
    manifest = Manifest(
        stage=stage,
        name="t",
        fingerprint=f"{stage}-fp".ljust(64, "0"),
        inputs=[],
        config={},
        fingerprint_config={},
        code={},
        files=file_entries(out),
        created_at=datetime.now(UTC).isoformat(),
    )
    write_json(out / "manifest.json", manifest.model_dump(mode="json"))
    return out


def publish_for_test(stage: str, cfg: PipelineConfig, inputs: dict, out: Path) -> Path:
    out.mkdir(parents=True)
    {"corpus": corpus, "tokenizer": tokenizer, "shards": shards}[stage].build(cfg.section(stage), inputs, out)
    return with_manifest(stage, out)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[PipelineConfig, dict[str, Path]]:
    root = tmp_path_factory.mktemp("data")
    cfg = PipelineConfig.model_validate(tiny_config_data(root / "raw"))
    c = publish_for_test("corpus", cfg, {}, root / "corpus")
    t = publish_for_test("tokenizer", cfg, {"corpus": c}, root / "tokenizer")
    s = publish_for_test("shards", cfg, {"corpus": c, "tokenizer": t}, root / "shards")
    return cfg, {"shards": s, "tokenizer": t}


RUNNER = """
import importlib, json, logging, sys
from pathlib import Path
from schemas.config import PipelineConfig
logging.basicConfig(level=logging.INFO)
stage, cfg, inputs, out = sys.argv[1:]
section = PipelineConfig.model_fields[stage].annotation.model_validate_json(cfg)
inputs = {k: Path(v) for k, v in json.loads(inputs).items()}
print(json.dumps(importlib.import_module(f"tasks.{stage}").build(section, inputs, Path(out))))
"""


def run_build(
    cfg, inputs: dict[str, Path], out: Path, crash: str = "", stage: str = "pretrain"
) -> subprocess.CompletedProcess:
    """`tasks.<stage>.build` in a child process (so a crash point can SIGKILL it)."""
    env = {**os.environ, "LMPIPE_CRASH_AT": crash, "OMP_NUM_THREADS": "1"}
    args = [stage, cfg.model_dump_json(), json.dumps({k: str(v) for k, v in inputs.items()}), str(out)]
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def resume_cfg(cfg: PipelineConfig):
    return cfg.pretrain.model_copy(update={"max_steps": 12, "checkpoint_every": 4, "log_every": 4})


def test_killed_run_resumes_to_identical_weights(data, tmp_path, caplog):
    cfg, inputs = data
    pcfg = resume_cfg(cfg)
    whole = pretrain.build(pcfg, inputs, tmp_path / "whole")

    out = tmp_path / "killed"
    killed = run_build(pcfg, inputs, out, crash="pretrain:step-7:SIGKILL")
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (out / "resume").iterdir()) == ["before.json", "step-000004"]
    assert not (out / "model.safetensors").exists()

    with caplog.at_level(logging.INFO, logger="tasks.training"):
        resumed = pretrain.build(pcfg, inputs, out)
    assert "(step 4)" in caplog.text and "step 1/" not in caplog.text and "step 8/12" in caplog.text
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads((d / "history.json").read_text()) for d in (tmp_path / "whole", out)]
    assert history[0] == history[1] and len(history[0]) == 12
    assert not (out / "resume").exists()
    assert resumed == whole


def test_kill_while_saving_resume_state_falls_back_to_the_previous_one(data, tmp_path):
    cfg, inputs = data
    pcfg = resume_cfg(cfg)
    whole = pretrain.build(pcfg, inputs, tmp_path / "whole")
    out = tmp_path / "killed"
    killed = run_build(pcfg, inputs, out, crash="training:saving-step-8:SIGKILL")
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (out / "resume").iterdir()) == [
        ".tmp-step-000008",
        "before.json",
        "step-000004",
    ]
    assert pretrain.build(pcfg, inputs, out) == whole
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def rewrite_state(state: Path, text: str) -> None:
    """Rewrite a resume state's state.json as if it had been saved so (its sha256 recorded too)."""
    state.write_text(text)
    sums = json.loads((state.parent / training.SUMS).read_text())
    (state.parent / training.SUMS).write_text(json.dumps({**sums, "state.json": sha256_file(state)}))


def test_resume_refuses_changed_input(data, tmp_path, monkeypatch):
    cfg, inputs = data
    out = tmp_path / "run"
    monkeypatch.setenv("LMPIPE_CRASH_AT", "pretrain:step-5:raise")
    with pytest.raises(RuntimeError, match="injected failure at pretrain:step-5"):
        pretrain.build(resume_cfg(cfg), inputs, out)
    monkeypatch.delenv("LMPIPE_CRASH_AT")
    state = out / "resume" / "step-000004" / "state.json"
    saved = json.loads(state.read_text())
    saved["inputs"]["tokenizer"] = "0" * 64  # as if the checkpoint came from another tokenizer
    rewrite_state(state, json.dumps(saved))
    with pytest.raises(training.ResumeError, match=r"input changed.*tokenizer 000000000000 -> tokenizer-fp"):
        pretrain.build(resume_cfg(cfg), inputs, out)


def test_unigram_baseline_and_learning(data, tmp_path):
    cfg, inputs = data
    stats = pretrain.build(cfg.pretrain.model_copy(update={"max_steps": 30}), inputs, tmp_path)
    assert 3.0 < stats["unigram_baseline"] < 6.0  # ln(400) = 5.99 is the uniform bound
    assert stats["val_loss"] < stats["val_loss_before"]
    assert [c.name for c in pretrain.validate(cfg.pretrain, inputs, tmp_path, stats)][
        -1
    ] == "checkpoint/learned"
    (tmp_path / "resume").mkdir()
    with pytest.raises(ContractError, match="resume"):
        pretrain.validate(cfg.pretrain, inputs, tmp_path, stats)


def test_masking_chooses_15_percent_of_ordinary_tokens_80_10_10():
    ids = torch.randint(11, 400, (64, 512))
    ids[:, 0], ids[:, -40:] = 1, 0  # <bos> and padding are never chosen
    corrupted, labels = mlm.mask_tokens(ids, 0.15, 400, torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, -40:].any()
    assert abs(chosen.float().mean().item() / (471 / 512) - 0.15) < 0.01
    masked = (corrupted == token_id(MASK))[chosen].float().mean().item()
    kept = (corrupted == ids)[chosen].float().mean().item()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02  # the rest became random tokens
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(corrupted[~chosen], ids[~chosen])


def test_flex_attention_is_refused_on_cpu_before_training(data, tmp_path):
    cfg, inputs = data
    with pytest.raises(ValueError, match="attention: flex cannot train on CPU"):
        pretrain.build(cfg.pretrain.model_copy(update={"attention": "flex"}), inputs, tmp_path)
    assert not (tmp_path / "resume").exists()


def test_a_batch_larger_than_the_split_or_an_impossible_model_is_refused_naming_the_field(
    data, tmp_path, caplog
):
    cfg, inputs = data
    rows = shard_reading.load(inputs["shards"], "pretrain", "train").num_rows
    with pytest.raises(
        ConfigError,
        match=rf"pretrain.batch_size: {rows + 1} rows per batch, but .* holds {rows} packed rows .*"
        rf"set pretrain.batch_size to at most {rows}",
    ):
        pretrain.build(cfg.pretrain.model_copy(update={"batch_size": rows + 1}), inputs, tmp_path / "a")
    empty = tmp_path / "empty-validation"
    shutil.copytree(inputs["shards"], empty)
    for f in empty.glob("pretrain-validation-*.arrow"):  # a corpus too small to give validation rows
        f.unlink()
    with pytest.raises(
        ConfigError, match=r"corpus.validation_fraction: the shards' pretrain validation split holds no rows"
    ):
        pretrain.build(cfg.pretrain, {**inputs, "shards": empty}, tmp_path / "v")
    huge = ModelConfig(hidden_size=8192, num_layers=48, num_heads=64, intermediate_size=32768)
    with pytest.raises(
        ConfigError,
        match=r"pretrain: one optimizer step needs about [\d.]+ GiB \(.* of 51.54B parameters: .*\), but cpu "
        r"has [\d.]+ GiB free; lower pretrain.batch_size or pretrain.model .*activation_checkpointing=true",
    ):  # estimated on the meta device: nothing of it is allocated
        pretrain.build(cfg.pretrain.model_copy(update={"model": huge}), inputs, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with caplog.at_level(logging.INFO, logger="tasks.training"):  # the default size: logged, trained
        pretrain.build(cfg.pretrain.model_copy(update={"max_steps": 1}), inputs, tmp_path / "c")
    assert re.search(
        r"pretrain: one optimizer step needs about [\d.]+ GiB of the [\d.]+ GiB free", caplog.text
    )


def test_a_diverging_loss_stops_naming_the_stage_and_step_and_keeps_the_resume_state(data, tmp_path):
    cfg, inputs = data
    pcfg = cfg.pretrain.model_copy(
        update={"lr": 1e30, "warmup_steps": 0, "max_steps": 12, "checkpoint_every": 1, "log_every": 1}
    )
    home = Home.resolve(tmp_path / "home")
    with pytest.raises(
        FloatingPointError, match=r"pretrain: the training loss is (nan|inf) at step (\d+); stopped"
    ) as e:
        with staging(home, "pretrain", "t", "b" * 64, resume=True) as tmp:
            pretrain.build(pcfg, inputs, tmp)
    step = int(re.search(r"at step (\d+)", str(e.value)).group(1))
    kept = sorted(p.name for p in (tmp / "resume").iterdir())  # the last state before the divergence
    assert kept == ["before.json", f"step-{step - 1:06d}"], kept


def test_masked_objective_learns(data, tmp_path):
    cfg, inputs = data
    pcfg = cfg.pretrain.model_copy(update={"objective": "masked", "max_steps": 20, "lr": 3e-3})
    stats = pretrain.build(pcfg, inputs, tmp_path)
    assert stats["val_loss"] < stats["val_loss_before"] and 0 <= stats["val_masked_accuracy"] <= 1
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["ModernBertForMaskedLM"]
    assert all(c.success for c in pretrain.validate(pcfg, inputs, tmp_path, stats))


def test_resume_state_with_a_flipped_byte_is_refused_and_training_restarts(
    data, tmp_path, monkeypatch, caplog
):
    cfg, inputs = data
    pcfg = resume_cfg(cfg)
    whole = pretrain.build(pcfg, inputs, tmp_path / "whole")
    out = tmp_path / "run"
    monkeypatch.setenv("LMPIPE_CRASH_AT", "pretrain:step-5:raise")
    with pytest.raises(RuntimeError, match="injected failure"):
        pretrain.build(pcfg, inputs, out)
    monkeypatch.delenv("LMPIPE_CRASH_AT")
    weights = out / "resume" / "step-000004" / "model.safetensors"
    flipped = bytearray(weights.read_bytes())
    flipped[-1] ^= 1
    weights.write_bytes(flipped)
    with caplog.at_level(logging.INFO, logger="tasks.training"):
        assert pretrain.build(pcfg, inputs, out) == whole  # from step 0: the same weights as a clean run
    assert re.search(r"refusing resume state .*step-000004/model.safetensors: sha256 .* differs", caplog.text)
    assert "(step 4)" not in caplog.text
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_planted_file_in_resume_state_is_refused_before_anything_loads_it(tmp_path, caplog):
    written = tmp_path / "resume" / ".trainer" / "checkpoint-4"  # as a TRL trainer leaves it (DPO, rl)
    written.mkdir(parents=True)
    (written / "adapter_model.safetensors").write_bytes(b"weights")
    kept = training.commit_resume(written, tmp_path / "resume", 4)
    assert training.latest_resume(tmp_path) == kept
    (kept / "rng_state.pth").write_bytes(b"\x80\x04cos\nsystem\n.")  # a pickle torch.load would run
    with caplog.at_level(logging.WARNING, logger="tasks.training"):
        assert training.latest_resume(tmp_path) is None
    assert "step-000004/rng_state.pth: not written by this run" in caplog.text
    assert "weights_only" not in caplog.text
    assert (
        tmp_path / "resume" / "refused-step-000004" / "adapter_model.safetensors"
    ).exists()  # kept to look at


def test_full_disk_mid_training_keeps_the_resume_state_and_names_the_device(
    data, tmp_path, monkeypatch, caplog
):
    cfg, inputs = data
    pcfg = resume_cfg(cfg)
    home = Home.resolve(tmp_path / "home")
    monkeypatch.setenv("LMPIPE_CRASH_AT", "pretrain:step-5:enospc")
    with pytest.raises(
        DiskFull,
        match=r"No space left on device: the filesystem mounted at /\S* .* MiB free .*the pretrain build needs about",
    ):
        with staging(home, "pretrain", "t", "a" * 64, resume=True) as tmp:
            pretrain.build(pcfg, inputs, tmp)
    assert sorted(p.name for p in tmp.iterdir()) == ["resume"]  # partial outputs gone, progress kept
    monkeypatch.delenv("LMPIPE_CRASH_AT")
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, logger="tasks.training"),
        staging(home, "pretrain", "t", "a" * 64, True) as tmp,
    ):
        pretrain.build(pcfg, inputs, tmp)
    assert "(step 4)" in caplog.text and "step 4/12" not in caplog.text  # continued, not restarted


def test_a_trl_stage_stops_on_a_non_finite_logged_loss(tmp_path):
    """DPO, reward and rl train through TRL: their resume callback checks each logged loss,
    which the trainer logs before that step's save, so no diverged state is committed."""
    from transformers import TrainerControl, TrainerState

    callback, state = training.resume_callback("dpo", tmp_path, {}), TrainerState(global_step=7)
    callback.on_log(None, state, TrainerControl(), logs={"loss": 0.69, "learning_rate": 1e-3})
    with pytest.raises(
        FloatingPointError, match=r"dpo: the training loss is nan at step 7; stopped .* dpo.lr"
    ):
        callback.on_log(None, state, TrainerControl(), logs={"loss": float("nan")})
