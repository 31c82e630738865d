"""The step loop's machinery (tasks.steps): read-ahead batches, deferred read-back of the
figures, activation checkpointing and compilation give the same training as the plain loop."""

import pytest
import torch

from schemas.pretrain import PretrainConfig
from schemas.training import ModelConfig
from tasks import steps, training

TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
CPU = torch.device("cpu")


def batch(k: int) -> training.Batch:
    """Micro-batch k: two packed rows of 16 random tokens, two documents each."""
    ids = torch.randint(5, 100, (2, 16), generator=torch.Generator().manual_seed(k))
    labels = ids.clone()
    labels[:, [0, 9]] = -100
    return {
        "input_ids": ids,
        "labels": labels,
        "position_ids": torch.cat([torch.arange(9), torch.arange(7)]).repeat(2, 1),
    }


def history(tmp_path, **update) -> list[dict]:
    cfg = PretrainConfig(max_steps=6, warmup_steps=2, grad_accum=2, checkpoint_every=10**6, **update)
    torch.manual_seed(0)
    model = training.new_decoder(TINY, 100, 16)
    stream = training.Stream(lambda epoch: [[0]] * 50, lambda rows, k: batch(k))
    return training.fit(model, stream, cfg, training.runtime_on(CPU), tmp_path, {}, "test")


def test_reading_figures_back_every_few_steps_changes_nothing(tmp_path):
    every_step = history(tmp_path / "a", log_every=1)
    assert history(tmp_path / "b", log_every=4) == every_step
    assert [h["step"] for h in every_step] == [1, 2, 3, 4, 5, 6]
    assert all(h["tokens"] == 2 * 2 * 14 for h in every_step)  # 2 micro-batches of 2 rows


def test_activation_checkpointing_trains_the_same(tmp_path):
    plain = history(tmp_path / "a")
    checkpointed = history(tmp_path / "b", activation_checkpointing=True)
    assert all(abs(p["loss"] - c["loss"]) <= 1e-5 for p, c in zip(plain, checkpointed, strict=True))


@pytest.mark.slow  # compiling on CPU takes about a minute
def test_compiled_layers_train_the_same(tmp_path):
    plain = history(tmp_path / "a")
    compiled = history(tmp_path / "b", compile="on")
    assert all(abs(p["loss"] - c["loss"]) <= 1e-4 for p, c in zip(plain, compiled, strict=True))


def test_read_ahead_gives_the_same_batches_in_order_and_passes_errors_on():
    def stream(k):
        if k == 9:
            raise ValueError("row 9 is broken")
        return batch(k)

    ahead = steps.Prefetch(stream, iter(range(1, 10, 2)), CPU, depth=2)
    inline = steps.Prefetch(stream, iter(range(1, 10, 2)), CPU)
    for _ in range(4):
        a, b = next(ahead), next(inline)
        assert all(torch.equal(a[n], b[n]) for n in b)
    with pytest.raises(ValueError, match="row 9 is broken"):
        next(ahead)
    ahead.close()


def test_a_non_finite_loss_stops_training_naming_the_step():
    pending = steps.Pending(first_step=10, stage="sft")
    for loss in (2.0, float("nan")):
        pending.add(torch.tensor(loss, dtype=torch.float64), torch.tensor(7), torch.tensor(0.5), 1e-3)
    with pytest.raises(
        FloatingPointError, match="sft: the training loss is nan at step 12; stopped .* sft.lr"
    ):
        pending.settle(lambda figures: figures)
