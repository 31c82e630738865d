"""Reward stage: a sequence-score head on the SFT model, trained on the preference pairs.

TRL's `RewardTrainer` with a LoRA adapter (the new score head trains in full) on our
pre-tokenized DPO shards: each pair becomes `prompt + chosen` and `prompt + rejected`, and the
loss is -log sigmoid(r(chosen) - r(rejected)). Batches come from one length bucket each, as in
DPO. The score is read at the last non-padding token, the `<eos>` that ends each completion:

    <bos> <prompt> Translate from English to French:\\nHello <answer> Bonjour <eos>  -> 1.7

Recorded: reward accuracy (share of validation pairs where r(chosen) > r(rejected)), margin,
mean and spread of the rewards, before (random head) and after training. The published
checkpoint loads with `AutoModelForSequenceClassification` (merged weights, safetensors).
"""

import logging
from pathlib import Path

import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from schemas.manifest import ContractResult
from schemas.reward import RewardConfig
from tasks import evaluation, reward_scoring, shard_reading, tracking, training, trl_glue
from tasks.batching import BucketBatchSampler
from tasks.checkpoints import check_checkpoint
from tasks.contracts import require

log = logging.getLogger(__name__)


def pair_sequences(table: pa.Table) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt + chosen, prompt + rejected) token ids of every pair."""
    cols = table.select(["prompt_ids", "chosen_ids", "rejected_ids"]).to_pydict()
    chosen = [p + c for p, c in zip(cols["prompt_ids"], cols["chosen_ids"], strict=True)]
    rejected = [p + r for p, r in zip(cols["prompt_ids"], cols["rejected_ids"], strict=True)]
    return chosen, rejected


def reward_accuracy(model, table: pa.Table, device, limit: int = 512) -> dict:
    """Share of pairs with r(chosen) > r(rejected), mean margin, mean and std of all rewards."""
    chosen, rejected = pair_sequences(table.slice(0, limit))
    rc, rr = reward_scoring.scores(model, chosen, device), reward_scoring.scores(model, rejected, device)
    both = torch.tensor(rc + rr)
    return {
        "reward_accuracy": round(sum(c > r for c, r in zip(rc, rr, strict=True)) / len(rc), 4),
        "reward_margin": round(sum(c - r for c, r in zip(rc, rr, strict=True)) / len(rc), 4),
        "mean_reward": round(both.mean().item(), 4),
        "reward_std": round(both.std().item(), 4),
        "finite": bool(torch.isfinite(both).all()),
        "pairs": len(rc),
    }


def make_trainer_class():
    from trl import RewardTrainer

    class ShardRewardTrainer(RewardTrainer):
        bucket_sampler: BucketBatchSampler

        def get_train_dataloader(self) -> DataLoader:
            return trl_glue.bucket_loader(self)

    return ShardRewardTrainer


def make_trainer(
    cfg: RewardConfig, model, train: pa.Table, val: pa.Table, inputs: dict[str, Path], out: Path, guard
):
    """TRL's RewardTrainer as the stage runs it: LoRA (the score head trains in full), batches of
    one length bucket, a checkpoint every `checkpoint_every` steps committed as resume state."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig as TrlRewardConfig

    def dataset(table: pa.Table) -> "Dataset":
        chosen, rejected = pair_sequences(table)
        return Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})

    args = TrlRewardConfig(
        **training.trainer_args(cfg, str(out / training.RESUME / ".trainer"), save=True),
        max_length=None,
        center_rewards_coefficient=cfg.center_rewards,
    )
    trainer_class = make_trainer_class()
    trainer_class.bucket_sampler = BucketBatchSampler(train["bucket"].to_pylist(), cfg.batch_size, cfg.seed)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset(train),
        eval_dataset=dataset(val.slice(0, cfg.eval_pairs)),
        processing_class=AutoTokenizer.from_pretrained(inputs["tokenizer"]),
        peft_config=trl_glue.lora_config(cfg, "SEQ_CLS"),
        callbacks=[
            trl_glue.log_callback("reward", ("accuracy", "margin")),
            training.resume_callback("reward", out, guard),
        ],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(tracking.trainer_report())  # into the build's MLflow run, if tracked
    return trainer


def build(cfg: RewardConfig, inputs: dict[str, Path], out: Path) -> dict:
    # set up
    device = training.setup(cfg).device
    train = shard_reading.load(inputs["shards"], "dpo", "train")
    val = shard_reading.load(inputs["shards"], "dpo", "validation")
    model = reward_scoring.load(inputs["sft"])  # the SFT body, a fresh (seeded) score head
    guard = training.input_fingerprints(inputs)
    found = training.checked_resume(out, guard)  # refuses state made from other inputs
    state = out / training.RESUME
    before = training.cached_json(
        state / "before.json", lambda: reward_accuracy(model, val, device, cfg.eval_pairs)
    )
    # train
    trainer = make_trainer(cfg, model, train, val, inputs, out, guard)
    eval_before = training.cached_json(state / "eval-before.json", trainer.evaluate)
    if found:
        log.info(f"resuming from {found[0]} (step {found[1]['step']})")
        trainer.bucket_sampler.resume_at(found[1]["step"], cfg.grad_accum)
    result = trainer.train(resume_from_checkpoint=str(found[0]) if found else None)
    eval_after = trainer.evaluate()
    # evaluate
    trainer.model.save_pretrained(out / "adapter")
    merged = trainer.model.merge_and_unload()
    after = reward_accuracy(merged, val, device, cfg.eval_pairs)
    history = trl_glue.history_of(trainer.state.log_history, ("accuracy", "margin"))
    metrics = {
        "objective": "reward",
        "val_loss_before": round(eval_before["eval_loss"], 4),
        "val_loss": round(eval_after["eval_loss"], 4),
        "train_loss": training.logged_loss(history, result),
        "val_reward_accuracy_before": before["reward_accuracy"],
        **{f"val_{k}": v for k, v in after.items() if k not in ("finite", "pairs")},
        "val_pairs": after["pairs"],
        "steps": cfg.max_steps,
    }
    metrics["comparisons"] = [
        evaluation.comparison(
            "val reward accuracy", metrics["val_reward_accuracy_before"], metrics["val_reward_accuracy"], True
        )
    ]
    # save
    card = training.model_card("reward", metrics, cfg, inputs, "AutoModelForSequenceClassification")
    training.finish(out, merged, inputs["tokenizer"], history, metrics, card)
    return metrics


def validate(cfg: RewardConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    """The checkpoint contracts, plus: every pair differs, and the published model's rewards
    on the validation pairs are finite."""
    results = check_checkpoint(out, stats, "AutoModelForSequenceClassification")
    results.append(evaluation.gain_check(stats, ("val reward accuracy",), cfg.require_gain))
    results.append(reward_scoring.pairs_differ(inputs["shards"]))
    val = shard_reading.load(inputs["shards"], "dpo", "validation")
    scored = reward_accuracy(reward_scoring.load(out), val, torch.device("cpu"), cfg.eval_pairs)
    bad = [] if scored["finite"] else [f"non-finite rewards on the first {scored['pairs']} validation pairs"]
    results.append(require("reward/finite", bad, scored["pairs"], "every validation reward is finite"))
    return results
