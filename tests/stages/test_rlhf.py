"""Reward model and RL helpers on tiny random models: scores ignore padding, reward accuracy
flips with swapped pairs, equal pairs are caught, RLOO batches hold whole groups. The stages
themselves run through Prefect in tests/operations/test_pipeline.py."""

import pyarrow as pa
import pytest
import torch
from pydantic import ValidationError

from schemas.rl import RlConfig
from schemas.training import ModelConfig
from tasks import reward, reward_scoring, rl, training
from tasks import shards as shards_task
from tasks.contracts import ContractError

PROMPTS = [[1, 9, 20, 21, 10], [1, 9, 30, 10], [1, 9, 20, 21, 10]]
CHOSEN = [[40, 41, 2], [50, 2], [44, 2]]
REJECTED = [[60, 2], [70, 71, 72, 2], [45, 46, 2]]


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    """A reward model the way the stage makes one: an LM checkpoint with a fresh score head."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lm")
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    training.new_decoder(cfg, 100, 64).save_pretrained(path)
    return reward_scoring.load(path).eval()


def test_scores_are_read_at_the_last_real_token(reward_model):
    seqs = [p + c for p, c in zip(PROMPTS, REJECTED, strict=True)]
    batched = reward_scoring.scores(reward_model, seqs, torch.device("cpu"))
    alone = [reward_scoring.scores(reward_model, [s], torch.device("cpu"))[0] for s in seqs]
    assert batched == pytest.approx(alone, abs=1e-5) and len(set(batched)) == 3


def test_reward_accuracy_flips_with_swapped_pairs(reward_model):
    pairs = {"prompt_ids": PROMPTS, "chosen_ids": CHOSEN, "rejected_ids": REJECTED}
    swapped = {**pairs, "chosen_ids": REJECTED, "rejected_ids": CHOSEN}
    a = reward.reward_accuracy(reward_model, pa.table(pairs), torch.device("cpu"))
    b = reward.reward_accuracy(reward_model, pa.table(swapped), torch.device("cpu"))
    assert a["pairs"] == 3 and a["finite"] and a["reward_accuracy"] + b["reward_accuracy"] == pytest.approx(1)
    assert a["reward_margin"] == pytest.approx(-b["reward_margin"], abs=1e-4)


def test_equal_pairs_fail_the_contract_by_id(tmp_path):
    rows = [
        {"id": f"p{i}", "prompt_ids": p, "chosen_ids": c, "rejected_ids": r, "length": 9, "bucket": 0}
        for i, (p, c, r) in enumerate(
            zip(PROMPTS, CHOSEN, [REJECTED[0], CHOSEN[1], REJECTED[2]], strict=True)
        )
    ]
    for split in ("train", "validation"):
        shards_task.write_shards(rows, "dpo", split, tmp_path, 64)
    with pytest.raises(ContractError, match=r"(?s)chosen-differs.*id=p1: chosen equals rejected"):
        reward_scoring.pairs_differ(tmp_path)
    shards_task.write_shards([rows[0], rows[2]], "dpo", "train", tmp_path, 64)
    shards_task.write_shards([rows[0]], "dpo", "validation", tmp_path, 64)
    assert reward_scoring.pairs_differ(tmp_path).checked == 3


def test_rl_batches_hold_whole_groups_and_prompts_are_distinct():
    with pytest.raises(ValidationError, match="multiple of num_generations"):
        RlConfig(batch_size=6, num_generations=4)
    table = pa.table({"prompt_ids": PROMPTS})
    assert rl.unique_prompts(table) == PROMPTS[:2] and rl.unique_prompts(table, 1) == PROMPTS[:1]
