"""DPO: completion log-probs ignore padding, preference accuracy can go either way, and a
killed DPO, reward or RL run resumes to the weights of an uninterrupted one."""

import importlib
import json
import logging
import shutil
import signal
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from test_sft import pretrained, sft_cfg  # noqa: F401  (module fixture)
from test_training import data, rewrite_state, run_build, with_manifest  # noqa: F401  (module fixture)

from schemas.training import ModelConfig
from tasks import dpo, evaluation, sft, training

PROMPTS = [[1, 9, 20, 21, 10], [1, 9, 30, 10]]
CHOSEN = [[40, 41, 2], [50, 2]]
REJECTED = [[60, 2], [70, 71, 72, 2]]


def tiny_model():
    torch.manual_seed(0)
    return training.new_decoder(
        ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), 100, 64
    )


def test_completion_logprobs_match_unpadded_sums():
    model = tiny_model().eval()
    batch = evaluation.completion_logprobs(model, PROMPTS, CHOSEN, torch.device("cpu"))
    for row, (p, c) in enumerate(zip(PROMPTS, CHOSEN, strict=True)):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + c]), use_cache=False).logits[0], -1)
        alone = sum(logp[len(p) - 1 + i, tok].item() for i, tok in enumerate(c))
        assert abs(batch[row].item() - alone) < 1e-4


def test_preference_accuracy_flips_with_swapped_pairs():
    model = tiny_model()
    pairs = {"prompt_ids": PROMPTS, "chosen_ids": CHOSEN, "rejected_ids": REJECTED}
    swapped = {**pairs, "chosen_ids": REJECTED, "rejected_ids": CHOSEN}
    a = evaluation.preference_accuracy(model, pa.table(pairs), torch.device("cpu"))
    b = evaluation.preference_accuracy(model, pa.table(swapped), torch.device("cpu"))
    assert a["pairs"] == 2 and a["preference_accuracy"] + b["preference_accuracy"] == 1
    assert abs(a["logprob_margin"] + b["logprob_margin"]) < 1e-3


def test_preference_accuracy_compares_per_token_log_probs():
    """A long chosen completion is not penalised for its length: the margin is per token."""
    model = tiny_model()
    pairs = {"prompt_ids": PROMPTS, "chosen_ids": CHOSEN, "rejected_ids": REJECTED}
    got = evaluation.preference_accuracy(model, pa.table(pairs), torch.device("cpu"))
    device = torch.device("cpu")
    chosen = evaluation.completion_logprobs(model, PROMPTS, CHOSEN, device)
    rejected = evaluation.completion_logprobs(model, PROMPTS, REJECTED, device)
    per_token = [chosen[i].item() / len(CHOSEN[i]) - rejected[i].item() / len(REJECTED[i]) for i in range(2)]
    assert got["logprob_margin"] == pytest.approx(sum(per_token) / 2, abs=1e-4)
    assert got["preference_accuracy"] == sum(m > 0 for m in per_token) / 2


@pytest.fixture(scope="module")
def finetuned(data, pretrained, tmp_path_factory):  # noqa: F811
    cfg, inputs = data
    out = tmp_path_factory.mktemp("sft")
    sft.build(sft_cfg(cfg, max_steps=4), {**inputs, "pretrain": pretrained}, out)
    return with_manifest("sft", out)


def killed_and_resumed(
    stage, cfg, inputs, tmp_path, caplog, kill_at: int, saved: int, meanwhile=None
) -> Path:
    """Build `stage` whole; build it again in a child killed after step `kill_at`; rerun that
    (after `meanwhile(killed dir)`), which must resume from step `saved` and end with the whole
    run's weights, history and stats. Returns the resumed run's directory."""
    module = importlib.import_module(f"tasks.{stage}")
    whole = module.build(cfg, inputs, tmp_path / "whole")
    out = tmp_path / "killed"
    killed = run_build(cfg, inputs, out, crash=f"{stage}:step-{kill_at}:SIGKILL", stage=stage)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (out / "resume" / f"step-{saved:06d}").is_dir()
    if meanwhile:
        meanwhile(out)
    with caplog.at_level(logging.INFO, logger=f"tasks.{stage}"):
        resumed = module.build(cfg, inputs, out)
    assert f"(step {saved})" in caplog.text
    names = ["model.safetensors", *(str(p.relative_to(out)) for p in out.glob("adapter/*.safetensors"))]
    for name in names:
        a, b = load_file(tmp_path / "whole" / name), load_file(out / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    history = [json.loads((d / "history.json").read_text()) for d in (tmp_path / "whole", out)]
    assert history[0] == history[1]
    assert resumed == whole and not (out / "resume").exists()
    return out


def test_dpo_killed_run_resumes_to_identical_weights(data, finetuned, tmp_path, caplog):  # noqa: F811
    cfg, inputs = data
    inputs = {**inputs, "sft": finetuned}
    dcfg = cfg.dpo.model_copy(update={"max_steps": 6, "checkpoint_every": 2, "log_every": 2})

    def refused_from_other_shards(out: Path) -> None:
        assert sorted(p.name for p in (out / "resume").glob("[!.]*")) == ["before.json", "step-000004"]
        tampered = tmp_path / "tampered"
        shutil.copytree(out, tampered)
        state = tampered / "resume" / "step-000004" / "state.json"
        rewrite_state(state, _other_shards(state))
        with pytest.raises(training.ResumeError, match=r"input changed.*shards 000000000000 -> shards-fp"):
            dpo.build(dcfg, inputs, tampered)

    out = killed_and_resumed("dpo", dcfg, inputs, tmp_path, caplog, 5, 4, refused_from_other_shards)
    assert [h["step"] for h in json.loads((out / "history.json").read_text())] == [2, 4, 6]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def _other_shards(state: Path) -> str:
    saved = json.loads(state.read_text())
    saved["inputs"]["shards"] = "0" * 64  # as if the state came from other shards
    return json.dumps(saved)


def test_reward_killed_run_resumes_to_identical_weights(data, finetuned, tmp_path, caplog):  # noqa: F811
    """The reward stage resumes like DPO: TRL checkpoints committed as resume state."""
    cfg, inputs = data
    rcfg = cfg.reward.model_copy(update={"max_steps": 6, "checkpoint_every": 2, "log_every": 2})
    killed_and_resumed("reward", rcfg, {**inputs, "sft": finetuned}, tmp_path, caplog, 5, 4)


def test_rl_killed_run_resumes_to_identical_weights(data, finetuned, tmp_path, caplog):  # noqa: F811
    """RLOO samples its completions: the resumed run draws the same ones (RNG state restored)."""
    from tasks import reward

    cfg, inputs = data
    scorer = tmp_path / "reward"
    reward.build(cfg.reward.model_copy(update={"max_steps": 1}), {**inputs, "sft": finetuned}, scorer)
    inputs = {**inputs, "sft": finetuned, "dpo": finetuned, "reward": with_manifest("reward", scorer)}
    short = {"eval_prompts": 4, "eval_max_new_tokens": 4, "max_completion_length": 8}
    rcfg = cfg.rl.model_copy(update={"max_steps": 4, "checkpoint_every": 2, "log_every": 1, **short})
    killed_and_resumed("rl", rcfg, inputs, tmp_path, caplog, 3, 2)
