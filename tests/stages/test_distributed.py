"""Multi-process training: a stage with `processes: 2` runs under torchrun (gloo, CPU) and
trains exactly like one process accumulating the same two micro-batches per step."""

import json
import os
import socket
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from test_sft import pretrained, sft_cfg  # noqa: F401  (module fixture)
from test_training import data  # noqa: F401  (module fixture)

from schemas.config import PROJECT_ROOT
from tasks import distributed, pretrain, sft


def test_two_processes_match_gradient_accumulation(data, tmp_path):  # noqa: F811
    cfg, inputs = data
    base = cfg.pretrain.model_copy(update={"max_steps": 4, "batch_size": 2, "eval_batches": 1})
    one = pretrain.build(base.model_copy(update={"grad_accum": 2}), inputs, tmp_path / "one")
    two = pretrain.build(base.model_copy(update={"processes": 2}), inputs, tmp_path / "two")

    a, b = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    h1, h2 = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("one", "two"))
    assert [h["tokens"] for h in h1] == [h["tokens"] for h in h2]  # both ranks' batches counted
    assert all(abs(x["loss"] - y["loss"]) < 1e-4 for x, y in zip(h1, h2, strict=True))
    assert two["tokens_seen"] == one["tokens_seen"] and abs(two["val_loss"] - one["val_loss"]) < 1e-3
    assert not (tmp_path / "two" / "resume").exists()  # rank 0 finished and cleaned up alone


def test_sft_in_two_processes_matches_gradient_accumulation(data, pretrained, tmp_path):  # noqa: F811
    """SFT's bucketed batches split across ranks the same way: rank r takes micro-batch 2k+r."""
    cfg, inputs = data
    inputs = {**inputs, "pretrain": pretrained}
    base = sft_cfg(cfg, max_steps=3, batch_size=2, eval_batches=1)
    one = sft.build(base.model_copy(update={"grad_accum": 2}), inputs, tmp_path / "one")
    two = sft.build(base.model_copy(update={"processes": 2}), inputs, tmp_path / "two")
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("one", "two"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    h1, h2 = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("one", "two"))
    assert [h["tokens"] for h in h1] == [h["tokens"] for h in h2]
    assert abs(two["val_loss"] - one["val_loss"]) < 1e-3


def test_two_nodes_train_like_one_process_accumulating_their_batches(data, tmp_path):  # noqa: F811
    """Node 0 is the stage's own launch; node 1 runs the command node 0 logs (here on 127.0.0.1)."""
    cfg, inputs = data
    base = cfg.pretrain.model_copy(update={"max_steps": 4, "batch_size": 2, "eval_batches": 1})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = base.model_copy(update={"nodes": 2, "rendezvous": f"127.0.0.1:{port}"})
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    node1 = subprocess.Popen(
        distributed.command("pretrain", nodes, inputs, tmp_path / "node1", node_rank=1),
        cwd=PROJECT_ROOT,
        env=env,
    )
    two = pretrain.build(nodes, inputs, tmp_path / "node0")
    assert node1.wait(timeout=300) == 0
    one = pretrain.build(base.model_copy(update={"grad_accum": 2}), inputs, tmp_path / "one")

    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("one", "node0"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert two["tokens_seen"] == one["tokens_seen"]
    assert not (tmp_path / "node1" / "model.safetensors").exists()  # only global rank 0 writes


def test_several_nodes_need_a_rendezvous_address(data, tmp_path):  # noqa: F811
    cfg, inputs = data
    with pytest.raises(ValueError, match="nodes=2 needs rendezvous: 'host:port'"):
        pretrain.build(cfg.pretrain.model_copy(update={"nodes": 2}), inputs, tmp_path)


def test_fsdp_trains_like_one_process_and_resumes_exactly(data, tmp_path, monkeypatch):  # noqa: F811
    """FSDP2 over 2 gloo ranks, accumulating 2 micro-batches each, against one process
    accumulating the same 4; then the same sharded run stopped after step 3 (resume state at
    step 2, gathered from the shards) and rerun. The checkpoint is the plain model's."""
    from transformers import AutoModelForCausalLM

    cfg, inputs = data
    base = cfg.pretrain.model_copy(update={"max_steps": 4, "batch_size": 2, "eval_batches": 1})
    one = pretrain.build(base.model_copy(update={"grad_accum": 4}), inputs, tmp_path / "one")
    fsdp = base.model_copy(
        update={"processes": 2, "grad_accum": 2, "parallel": "fsdp", "checkpoint_every": 2}
    )
    monkeypatch.setenv("LMPIPE_CRASH_AT", "pretrain:step-3:raise")
    with pytest.raises(RuntimeError, match="2-process run failed"):
        pretrain.build(fsdp, inputs, tmp_path / "fsdp")
    assert sorted(p.name for p in (tmp_path / "fsdp" / "resume").glob("step-*")) == ["step-000002"]
    monkeypatch.delenv("LMPIPE_CRASH_AT")
    resumed = pretrain.build(fsdp, inputs, tmp_path / "fsdp")

    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("one", "fsdp"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    h1, h2 = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("one", "fsdp"))
    assert [h["tokens"] for h in h1] == [h["tokens"] for h in h2]
    assert all(abs(x["loss"] - y["loss"]) < 1e-4 for x, y in zip(h1, h2, strict=True))
    assert resumed["tokens_seen"] == one["tokens_seen"] and abs(resumed["val_loss"] - one["val_loss"]) < 1e-3
    AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp", use_safetensors=True)  # plain safetensors
