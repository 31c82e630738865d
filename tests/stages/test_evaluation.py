"""Evaluation's decoding: greedy answers never loop on a 3-gram of their own, yet may copy the prompt."""

import torch

from schemas.training import ModelConfig
from tasks import evaluation, inference, training


def test_repeated_ngram_tokens_are_the_ones_completing_a_seen_trigram():
    assert evaluation.repeated_ngram_tokens([5, 6, 7, 5, 6]) == {7}
    assert evaluation.repeated_ngram_tokens([5, 6, 7, 5, 6, 8, 5, 6]) == {7, 8}
    assert evaluation.repeated_ngram_tokens([5, 6, 7]) == set()
    assert evaluation.repeated_ngram_tokens([5]) == set()


def test_answer_may_copy_the_prompt_but_not_itself():
    scores = torch.zeros(1, 10)
    # prompt 3 4 5 | answer 3 4: copying the prompt's "3 4 5" stays allowed
    allowed = evaluation.no_repeat_in_answer(3)(torch.tensor([[3, 4, 5, 3, 4]]), scores.clone())
    assert torch.isfinite(allowed).all()
    # prompt 1 | answer 3 4 5 3 4: "3 4 5" again is refused
    refused = evaluation.no_repeat_in_answer(1)(torch.tensor([[1, 3, 4, 5, 3, 4]]), scores.clone())
    assert refused[0, 5] == float("-inf") and torch.isfinite(refused[0, :5]).all()


def test_greedy_answers_of_a_looping_model_hold_no_repeated_trigram():
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    model = training.new_decoder(cfg, 50, 128)
    cpu, prompt = torch.device("cpu"), [1, 7, 8, 9]
    for answer in (
        evaluation.generate(model, [prompt], 60, cpu)[0],
        list(inference.complete(model, prompt, 60, cpu)),
    ):
        trigrams = [tuple(answer[i : i + 3]) for i in range(len(answer) - 2)]
        assert len(answer) >= 20 and len(trigrams) == len(set(trigrams))


def test_gain_check_fails_with_the_figures_unless_the_budget_is_a_smoke_test():
    import pytest

    from tasks.contracts import ContractError

    stats = {
        "comparisons": [
            evaluation.comparison("translation chrf", 5.6, 9.3, True),
            evaluation.comparison("qa f1", 0.0, 0.0, True),
            evaluation.comparison("val loss", 8.4, 4.9, False),
        ]
    }
    with pytest.raises(ContractError, match=r"qa f1: 0.0 -> 0.0 \(not better\)"):
        evaluation.gain_check(stats, evaluation.SFT_GAIN, required=True)
    warned = evaluation.gain_check(stats, evaluation.SFT_GAIN, required=False)
    assert warned.success and "qa f1: 0.0 -> 0.0" in warned.details and "smoke" in warned.details
    passed = evaluation.gain_check(stats, ("translation chrf",), required=True)
    assert passed.success and "translation chrf 5.6 -> 9.3" in passed.details
