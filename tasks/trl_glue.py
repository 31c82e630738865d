"""What the stages built on TRL trainers (dpo, reward, rl) share: LoRA settings, progress lines,
the training history, and batches from a bucket sampler.

    trl_glue.lora_config(cfg, "SEQ_CLS")   # LoRA on attention; a SEQ_CLS score head trains in full
"""

import logging

from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


def lora_config(cfg, task_type: str):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type=task_type,  # SEQ_CLS also trains the new score head in full
    )


def log_callback(stage: str, keys: tuple[str, ...]):
    from transformers import TrainerCallback

    class LogProgress(TrainerCallback):
        """One log line per logging step, like the other training stages."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                shown = " ".join(f"{k} {logs[k]:.4f}" for k in ("loss", *keys) if k in logs)
                log.info(f"{stage} step {state.global_step}/{state.max_steps} {shown}")

    return LogProgress()


def history_of(log_history: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Training log lines of a TRL trainer, for history.json and loss.png."""
    return [
        {"step": e["step"], "loss": e["loss"], **{k: e[k] for k in keys if k in e}}
        for e in log_history
        if "loss" in e
    ]


def bucket_loader(trainer) -> DataLoader:
    """A trainer's training batches from its `bucket_sampler` (one length bucket each)."""
    loader = DataLoader(
        trainer.train_dataset, batch_sampler=trainer.bucket_sampler, collate_fn=trainer.data_collator
    )
    return trainer.accelerator.prepare(loader)
