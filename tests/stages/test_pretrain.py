"""Packed pretraining: documents inside a packed row never attend to each other.

The proof: with a tiny random model, each document's logits inside a packed row equal its
logits when run alone (<= 1e-5 in float32), on every attention kernel (tasks.attention; flex
runs forward only on CPU). The same check on the naive layout (positions running on across
documents) must fail, which shows the check can fail.
"""

import pytest
import torch

from schemas.training import ModelConfig
from tasks import attention, training
from tasks.shards import pack_pretrain, pack_sft

EVERY_KERNEL = pytest.mark.parametrize("kernel", attention.KERNELS)


def tiny_model(kernel: str = "sdpa"):
    torch.manual_seed(0)
    model = training.new_decoder(
        ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64), 100, 64
    )
    return attention.use(model, kernel, causal=True).eval()


DOCS = [[1, 20, 21, 22, 23, 2], [1, 30, 31, 32, 2], [1, 40, 41, 42, 43, 44, 45, 2]]


def max_diff_vs_alone(model, row, positions, n_docs: int = len(DOCS)) -> float:
    ids = torch.tensor([row["input_ids"]])
    with torch.no_grad():
        packed = model(ids, position_ids=torch.tensor([positions]), use_cache=False).logits[0]
    worst, start = 0.0, 0
    for n in row["doc_lens"][:n_docs]:
        with torch.no_grad():
            alone = model(ids[:, start : start + n], use_cache=False).logits[0]
        worst = max(worst, (packed[start : start + n] - alone).abs().max().item())
        start += n
    return worst


@EVERY_KERNEL
def test_packed_documents_match_running_alone(kernel):
    rows, stats = pack_pretrain(DOCS, 32)
    assert stats["rows"] == 1 and stats["tokens"] == 19
    row = rows[0]
    assert row["doc_lens"][:3] == [8, 6, 5]  # best-fit-decreasing: longest first
    assert max_diff_vs_alone(tiny_model(kernel), row, row["position_ids"]) <= 1e-5


@EVERY_KERNEL
def test_naive_layout_leaks_across_documents(kernel):
    row = pack_pretrain(DOCS, 32)[0][0]
    naive_positions = list(range(len(row["input_ids"])))  # concatenate-and-chunk: no reset
    assert max_diff_vs_alone(tiny_model(kernel), row, naive_positions) > 1e-2


def test_no_loss_across_document_boundaries():
    row = pack_pretrain(DOCS, 32)[0][0]
    starts = [0, 8, 14, 19]
    assert all(row["labels"][s] == -100 for s in starts)
    assert all(x == -100 for x in row["labels"][19:])
    assert row["labels"][7] == 2  # each document's <eos> is a target


def sft_example(rid: str, prompt: list[int], answer: list[int]) -> dict:
    return {"id": rid, "task": "qa", "input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}


SFT = [
    sft_example("a", [1, 20, 21, 7], [22, 23, 2]),
    sft_example("b", [1, 30, 7], [31, 32, 33, 34, 2]),
    sft_example("c", [1, 40, 41, 42, 7], [43, 2]),
]


@EVERY_KERNEL
def test_packed_sft_examples_match_running_alone_with_loss_on_answers_only(kernel):
    rows, stats = pack_sft(SFT, 32)
    assert stats["rows"] == 1 and stats["tokens"] == 22
    row = rows[0]
    assert row["ids"] == ["b", "a", "c"] and row["doc_lens"] == [8, 7, 7, 10]  # never split
    assert row["labels"][:22] == SFT[1]["labels"] + SFT[0]["labels"] + SFT[2]["labels"]
    assert row["position_ids"][:22] == [*range(8), *range(7), *range(7)]
    assert max_diff_vs_alone(tiny_model(kernel), row, row["position_ids"], n_docs=3) <= 1e-5


@EVERY_KERNEL
def test_naive_sft_packing_leaks_across_examples(kernel):
    row = pack_sft(SFT, 32)[0][0]
    assert max_diff_vs_alone(tiny_model(kernel), row, list(range(32)), n_docs=3) > 1e-2


def test_learning_rate_schedule():
    from schemas.training import TrainConfig

    cfg = TrainConfig(lr=1.0, warmup_steps=4, max_steps=14)
    assert training.lr_at(0, cfg) == 0.25 and training.lr_at(3, cfg) == 1.0
    assert abs(training.lr_at(9, cfg) - 0.5) < 1e-9 and training.lr_at(14, cfg) < 1e-9
