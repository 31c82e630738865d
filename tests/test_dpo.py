"""DPO evaluation: completion log-probs ignore padding; preference accuracy can go either way."""

import pyarrow as pa
import torch

from schemas.training import ModelConfig
from tasks import evaluation, training

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
