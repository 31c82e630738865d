"""DPO stage: TRL's DPO trainer with a LoRA adapter on the SFT checkpoint.

Our preference shards are already tokenized (control tokens inserted by id), so TRL's own
text tokenization is skipped, and batches come from one length bucket each. The adapter is
saved on its own (adapter/) and merged into full safetensors weights for the next user.
Besides TRL's reward accuracy (implicit reward vs the reference), the stage measures the
preference accuracy of the SFT model and of the merged result: the share of validation pairs
where log p(chosen) > log p(rejected) (tasks.evaluation).

Resume: every `checkpoint_every` steps the trainer writes its checkpoint (adapter weights,
optimizer, scheduler, RNG, trainer state with the step; transformers reads them back with
`torch.load(weights_only=True)`), and the `Resume` callback adds the input fingerprints and
commits it as `out/resume/step-N` exactly like `training.fit` does. A rerun after a kill
continues from there with the same batches (the sampler's order is a function of the epoch).
"""

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from torch.utils.data import DataLoader

from schemas.dpo import DpoConfig
from schemas.manifest import ContractResult
from tasks import evaluation, shard_reading, tracking, training, trl_glue
from tasks.batching import BucketBatchSampler, padding_of
from tasks.checkpoints import check_checkpoint

log = logging.getLogger(__name__)

COLUMNS = ["prompt_ids", "chosen_ids", "rejected_ids"]


def make_trainer_class():
    from trl import DPOTrainer

    class ShardDPOTrainer(DPOTrainer):
        bucket_sampler: BucketBatchSampler

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset  # already tokenized by the shards stage, specials by id

        def get_train_dataloader(self) -> DataLoader:
            return trl_glue.bucket_loader(self)

    return ShardDPOTrainer


def progress_callback(sampler: BucketBatchSampler):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One log line per logging step with tokens/s, like the other training stages."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.tokens = time.perf_counter(), sampler.tokens

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                rate = (sampler.tokens - self.tokens) / (time.perf_counter() - self.start)
                log.info(
                    f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                    f"reward accuracy {logs.get('rewards/accuracies', float('nan')):.3f} {rate:,.0f} tok/s"
                )

    return Progress()


def make_trainer(cfg: DpoConfig, model, train, val, tokenizer, scratch: str, resume=None):
    """TRL's DPO trainer as the stage runs it: LoRA, one-bucket batches, float32 on CPU.

    `train`/`val` are DPO shard tables; `scratch` is TRL's output_dir. With `resume` (the
    stage's `Resume` callback) the trainer writes a checkpoint there every `checkpoint_every`
    steps, which the callback commits as resume state; without it nothing is saved.
    """
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    sampler = BucketBatchSampler(train["bucket"].to_pylist(), cfg.batch_size, cfg.seed, pair_tokens(train))
    trainer = make_trainer_class()(
        model=model,
        args=dpo_args(cfg, scratch, save=resume is not None),
        train_dataset=Dataset.from_dict(train.select(COLUMNS).to_pydict()),
        eval_dataset=Dataset.from_dict(val.select(COLUMNS).to_pydict()),
        processing_class=tokenizer,
        peft_config=trl_glue.lora_config(cfg, "CAUSAL_LM"),
        callbacks=[progress_callback(sampler), *([resume] if resume else [])],
    )
    trainer.bucket_sampler = sampler
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(tracking.trainer_report())  # into the build's MLflow run, if tracked
    return trainer


def build(cfg: DpoConfig, inputs: dict[str, Path], out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cfg.processes > 1:
        raise ValueError(f"dpo.processes is {cfg.processes}: the dpo stage runs in one process; set it to 1")
    # set up
    device = training.setup(cfg).device
    train = shard_reading.load(inputs["shards"], "dpo", "train")
    val = shard_reading.load(inputs["shards"], "dpo", "validation")
    model = AutoModelForCausalLM.from_pretrained(inputs["sft"], use_safetensors=True)
    guard = training.input_fingerprints(inputs)
    found = training.checked_resume(out, guard)  # refuses state made from other inputs
    tokenizer = AutoTokenizer.from_pretrained(inputs["tokenizer"])
    scratch = str(out / training.RESUME / ".trainer")
    trainer = make_trainer(
        cfg, model, train, val, tokenizer, scratch, resume=training.resume_callback("dpo", out, guard)
    )
    before = training.cached_json(
        out / training.RESUME / "before.json",
        lambda: {
            "eval_loss": trainer.evaluate()["eval_loss"],
            **evaluation.preference_accuracy(model, val, device),
        },
    )
    # train
    if found:
        log.info(f"resuming from {found[0]} (step {found[1]['step']})")
        trainer.bucket_sampler.resume_at(found[1]["step"], cfg.grad_accum)
    trained = trainer.train(resume_from_checkpoint=str(found[0]) if found else None)
    # evaluate
    after = trainer.evaluate()
    history = [
        {"step": e["step"], "loss": e["loss"], "lr": e.get("learning_rate")}
        for e in trainer.state.log_history
        if "loss" in e
    ]
    trainer.model.save_pretrained(out / "adapter")
    merged = trainer.model.merge_and_unload()
    preference_after = evaluation.preference_accuracy(merged, val, device)
    metrics = {
        "val_loss_before": round(before["eval_loss"], 4),
        "val_loss": round(after["eval_loss"], 4),
        "val_reward_accuracy": round(after.get("eval_rewards/accuracies", float("nan")), 4),
        "val_reward_margin": round(after.get("eval_rewards/margins", float("nan")), 4),
        "train_loss": training.logged_loss(history, trained),
        "val_preference_accuracy_before": before["preference_accuracy"],
        "val_preference_accuracy": preference_after["preference_accuracy"],
        "val_logprob_margin_before": before["logprob_margin"],
        "val_logprob_margin": preference_after["logprob_margin"],
        "steps": cfg.max_steps,
        "padding_fraction": padding_of(train, cfg.batch_size, cfg.seed),
    }
    metrics["comparisons"] = comparisons(metrics)
    # save
    card = training.model_card("dpo", metrics, cfg, inputs)
    training.finish(out, merged, inputs["tokenizer"], history, metrics, card)
    return metrics


def comparisons(metrics: dict) -> list[dict]:
    """Validation loss and preference accuracy, before -> after."""
    return [
        evaluation.comparison("val loss", metrics["val_loss_before"], metrics["val_loss"], False),
        evaluation.comparison(
            "val preference accuracy",
            metrics["val_preference_accuracy_before"],
            metrics["val_preference_accuracy"],
            True,
        ),
    ]


def pair_tokens(table) -> list[int]:
    """Tokens each pair feeds the model: prompt + chosen and prompt + rejected."""
    n = {c: pc.list_value_length(table[c]).to_numpy().astype(np.int64) for c in COLUMNS}
    return (
        2 * n["prompt_ids"] + n["chosen_ids"] + n["rejected_ids"]
    ).tolist()  # lengths only: no token copies


def dpo_args(cfg: DpoConfig, output_dir: str, save: bool):
    """TRL settings from our config; with `save`, a checkpoint every `checkpoint_every` steps."""
    from trl import DPOConfig

    return DPOConfig(**training.trainer_args(cfg, output_dir, save), beta=cfg.beta, max_length=None)


def validate(cfg: DpoConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    gain = evaluation.gain_check(stats, ("val preference accuracy",), cfg.require_gain)
    return [*check_checkpoint(out, stats), gain]
