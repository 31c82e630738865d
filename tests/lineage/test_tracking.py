"""Experiment tracking against a real MLflow SQLite store, read back with MlflowClient: a build's
steps, params and tags; a resumed build continues its run without repeating a step; a server
that is down costs one warning and never fails the build."""

import json
import logging
import socket

import pytest
import test_sft
import test_training
from mlflow.tracking import MlflowClient

from schemas.tracking import TrackingConfig
from tasks import dpo, pretrain, tracking

data = test_training.data  # the tiny corpus, tokenizer and shards, built once for this module
pretrained = test_sft.pretrained  # a tiny decoder: the policy DPO starts from


def open_build(where, fp: str = "f" * 64):
    params = tracking.flatten({"pretrain": {"lr": 0.01, "model": {"hidden_size": 32}}})
    return tracking.stage_run(where, f"pretrain-t-{fp[:12]}", fp, params, {"lmpipe.stage": "pretrain"})


def test_resumed_build_continues_its_run_without_repeating_steps(data, tmp_path, monkeypatch):
    cfg, inputs = data
    pcfg = cfg.pretrain.model_copy(update={"max_steps": 12, "checkpoint_every": 4, "log_every": 4})
    where = tracking.store(TrackingConfig(), tmp_path / "home")
    out = tmp_path / "build"
    monkeypatch.setenv("LMPIPE_CRASH_AT", "pretrain:step-7:raise")  # steps 5-7 are lost with it
    with pytest.raises(RuntimeError, match="injected"), open_build(where) as first:
        pretrain.build(pcfg, inputs, out)
    monkeypatch.delenv("LMPIPE_CRASH_AT")
    client = MlflowClient(where.uri)
    assert client.get_run(first.run_id).info.status == "FAILED"
    assert not first.reopened and tracking.last_step(client, first.run_id, "train_loss") == 7

    with open_build(where) as second:
        stats = pretrain.build(pcfg, inputs, out)  # resumes from step 4
        second.finish(stats, [out / "loss.png"])
    assert second.run_id == first.run_id and second.reopened and second.logged_upto() == 7
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "pretrain-t-ffffffffffff"
    assert run.data.params == {"pretrain.lr": "0.01", "pretrain.model.hidden_size": "32"}
    assert run.data.tags[tracking.FINGERPRINT_TAG] == "f" * 64

    history = json.loads((out / "history.json").read_text())
    losses = client.get_metric_history(first.run_id, "train_loss")
    assert [m.step for m in sorted(losses, key=lambda m: m.step)] == list(range(1, 13))  # no step twice
    assert {m.step: m.value for m in losses} == {h["step"]: h["loss"] for h in history}  # bit-exact resume
    for name in ("lr", "grad_norm", "tokens_per_s"):
        assert client.get_metric_history(first.run_id, name)
    val = {m.step: m.value for m in client.get_metric_history(first.run_id, "val_loss")}
    assert val == {0: stats["val_loss_before"], 12: stats["val_loss"]}  # beside train loss
    assert run.data.metrics["unigram_baseline"] == stats["unigram_baseline"]
    assert [f.path for f in client.list_artifacts(first.run_id)] == ["loss.png"]

    with open_build(where) as rebuilt:  # a finished run is never reopened (e.g. --force)
        pass
    assert rebuilt.run_id != first.run_id


def test_resumed_trl_build_logs_each_step_once(data, pretrained, tmp_path, monkeypatch):
    """DPO logs through the trainer's callbacks: steps 1-5 before a failure in step 6, then 5-6
    again after resuming from step 4; the run keeps one value per step, the uninterrupted run's."""
    cfg, inputs = data
    inputs = {**inputs, "sft": pretrained}
    dcfg = cfg.dpo.model_copy(update={"max_steps": 6, "checkpoint_every": 2, "log_every": 1})
    where = tracking.store(TrackingConfig(), tmp_path / "home")
    monkeypatch.setenv("LMPIPE_CRASH_AT", "dpo:step-6:raise")
    with pytest.raises(RuntimeError, match="injected"), open_build(where) as first:
        dpo.build(dcfg, inputs, tmp_path / "build")
    monkeypatch.delenv("LMPIPE_CRASH_AT")
    assert tracking.last_step(MlflowClient(where.uri), first.run_id, "train_loss") == 5
    with open_build(where) as second:
        dpo.build(dcfg, inputs, tmp_path / "build")
    client = MlflowClient(where.uri)
    losses = client.get_metric_history(second.run_id, "train_loss")
    history = json.loads((tmp_path / "build" / "history.json").read_text())
    assert second.run_id == first.run_id and sorted(m.step for m in losses) == list(range(1, 7))
    assert {m.step: m.value for m in losses} == {h["step"]: h["loss"] for h in history}
    assert len(client.get_metric_history(second.run_id, "lr")) == 6


def test_tracking_server_down_warns_once_and_the_build_goes_on(data, tmp_path, monkeypatch, caplog):
    cfg, inputs = data
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    where = tracking.store(TrackingConfig(), tmp_path / "home")
    assert where.uri == f"http://127.0.0.1:{port}" and not (tmp_path / "home" / "mlflow").exists()
    pcfg = cfg.pretrain.model_copy(update={"max_steps": 4})
    with caplog.at_level(logging.WARNING, logger="tasks.tracking"), open_build(where) as run:
        stats = pretrain.build(pcfg, inputs, tmp_path / "build")
    assert run is None and stats["steps"] == 4 and (tmp_path / "build" / "model.safetensors").is_file()
    warnings = [r for r in caplog.records if r.name == "tasks.tracking"]
    assert len(warnings) == 1 and "does not answer" in warnings[0].getMessage()


def test_tracking_off_and_config_uri():
    assert tracking.store(TrackingConfig(backend="none"), None) is None
    where = tracking.store(TrackingConfig(uri="http://mlflow.team:5000"), None)
    assert (where.uri, where.artifact_root, where.ui_url) == (
        "http://mlflow.team:5000",
        None,
        "http://mlflow.team:5000",
    )
