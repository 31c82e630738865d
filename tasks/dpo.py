"""DPO stage: TRL's DPO trainer with a LoRA adapter on the SFT checkpoint.

Our preference shards are already tokenized (control tokens inserted by id), so TRL's own
text tokenization is skipped, and batches come from one length bucket each. The adapter is
saved on its own (adapter/) and merged into full safetensors weights for the next user.
Besides TRL's reward accuracy (implicit reward vs the reference), the stage measures the
preference accuracy of the SFT model and of the merged result: the share of validation pairs
where log p(chosen) > log p(rejected) (tasks.evaluation).
"""

import logging
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from schemas.manifest import ContractResult
from schemas.training import DpoConfig
from tasks import evaluation, packing, training
from tasks import shards as shards_task
from tasks.pretrain import check_checkpoint
from tasks.sft import padding_of

log = logging.getLogger(__name__)

COLUMNS = ["prompt_ids", "chosen_ids", "rejected_ids"]


class BucketBatchSampler:
    """Batches drawn from one length bucket each; a new seeded order every epoch."""

    def __init__(self, buckets: list[int], batch_size: int, seed: int):
        self.buckets, self.batch_size, self.seed, self.epoch = buckets, batch_size, seed, 0

    def __iter__(self):
        batches = packing.bucket_batches(self.buckets, self.batch_size, self.seed, self.epoch)
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(packing.bucket_batches(self.buckets, self.batch_size, self.seed))


def make_trainer_class():
    from trl import DPOTrainer

    class ShardDPOTrainer(DPOTrainer):
        bucket_sampler: BucketBatchSampler

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset  # already tokenized by the shards stage, specials by id

        def get_train_dataloader(self) -> DataLoader:
            loader = DataLoader(
                self.train_dataset, batch_sampler=self.bucket_sampler, collate_fn=self.data_collator
            )
            return self.accelerator.prepare(loader)

    return ShardDPOTrainer


def progress_callback():
    from transformers import TrainerCallback

    class LogProgress(TrainerCallback):
        """One log line per logging step, like the other training stages."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log.info(
                    f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                    f"reward accuracy {logs.get('rewards/accuracies', float('nan')):.3f}"
                )

    return LogProgress()


def make_trainer(cfg: DpoConfig, model, train, val, tokenizer, scratch: str):
    """TRL's DPO trainer as the stage runs it: LoRA, one-bucket batches, float32 on CPU.

    `train`/`val` are DPO shard tables; `scratch` is TRL's output_dir (nothing is saved there).
    """
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig

    args = DPOConfig(
        output_dir=scratch,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.schedule if cfg.schedule != "constant" else "constant_with_warmup",
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.max_grad_norm,
        beta=cfg.beta,
        seed=cfg.seed,
        logging_steps=cfg.log_every,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        max_length=None,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    trainer_class = make_trainer_class()
    trainer_class.bucket_sampler = BucketBatchSampler(train["bucket"].to_pylist(), cfg.batch_size, cfg.seed)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(train.select(COLUMNS).to_pydict()),
        eval_dataset=Dataset.from_dict(val.select(COLUMNS).to_pydict()),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[progress_callback()],
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def build(cfg: DpoConfig, inputs: dict[str, Path], out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    training.setup(cfg)
    train = shards_task.load(inputs["shards"], "dpo", "train")
    val = shards_task.load(inputs["shards"], "dpo", "validation")
    model = AutoModelForCausalLM.from_pretrained(inputs["sft"], use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(inputs["tokenizer"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preference_before = training.cached_json(
        out / training.RESUME / "before.json", lambda: evaluation.preference_accuracy(model, val, device)
    )
    with tempfile.TemporaryDirectory() as scratch:
        trainer = make_trainer(cfg, model, train, val, tokenizer, scratch)
        before = trainer.evaluate()
        result = trainer.train()
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
        "train_loss": round(result.training_loss, 4),
        "val_preference_accuracy_before": preference_before["preference_accuracy"],
        "val_preference_accuracy": preference_after["preference_accuracy"],
        "val_logprob_margin_before": preference_before["logprob_margin"],
        "val_logprob_margin": preference_after["logprob_margin"],
        "steps": cfg.max_steps,
        "padding_fraction": padding_of(train, cfg.batch_size, cfg.seed),
    }
    card = training.model_card("dpo", metrics, cfg, inputs)
    training.finish(out, merged, inputs["tokenizer"], history, metrics, card)
    return metrics


def validate(cfg: DpoConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    return check_checkpoint(out, stats)
