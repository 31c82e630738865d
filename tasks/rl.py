"""RL stage: online RL of the SFT model against the reward model, with TRL's RLOO.

TRL 1.16 has no PPO trainer (not even in `trl.experimental`); its online methods are RLOO and
GRPO. RLOO is used because it is the classic RLHF objective without a value model: it samples
`num_generations` completions per prompt, takes as each one's advantage its reward minus the
mean reward of the others, and subtracts the KL to the SFT model (`beta` × the summed log-ratio)
from the reward, as PPO-RLHF does. GRPO puts the KL in the loss and normalises by the group's
spread instead. The policy trains a LoRA adapter, so the reference (SFT) model is the same
weights with the adapter off: no second copy in memory.

Prompts are the preference prompts (the instruct template, tokenized by the shards stage with
control tokens inserted by id), handed to TRL as ids, never re-tokenized from text:

    <bos> <prompt> Translate from English to French:\\nHello <answer>  ->  sampled completion ... <eos>

Recorded, for the SFT model, the DPO model and the result on the same validation data:
preference accuracy (log p(chosen) > log p(rejected)) and the mean reward of greedy answers
to validation prompts, as the reward model scores them.
"""

import json
import logging
from pathlib import Path

import pyarrow as pa
import torch

from schemas.manifest import ContractResult
from schemas.rl import RlConfig
from tasks import evaluation, reward_scoring, shard_reading, tracking, training, trl_glue
from tasks.checkpoints import check_checkpoint
from tasks.contracts import require

log = logging.getLogger(__name__)

LOGGED = ("reward", "kl", "reward_std")


def unique_prompts(table: pa.Table, limit: int | None = None) -> list[list[int]]:
    """Distinct prompt ids, in shard order (several pairs may share a prompt)."""
    seen, out = set(), []
    for p in table["prompt_ids"].to_pylist():
        if tuple(p) not in seen:
            seen.add(tuple(p))
            out.append(p)
    return out[:limit]


def mean_reward(policy, reward_model, prompts: list[list[int]], max_new: int, device) -> dict:
    """Greedy answers of `policy` to the prompts, scored by the reward model."""
    answers = evaluation.generate(policy, prompts, max_new, device)
    rewards = reward_scoring.scores(
        reward_model, [p + a for p, a in zip(prompts, answers, strict=True)], device
    )
    return {
        "mean_reward": round(sum(rewards) / len(rewards), 4),
        "finite": all(map(torch.isfinite, torch.tensor(rewards))),
        "mean_length": round(sum(map(len, answers)) / len(answers), 2),
    }


def compare(policy, reward_model, val: pa.Table, cfg: RlConfig, device) -> dict:
    prompts = unique_prompts(val, cfg.eval_prompts)
    scored = mean_reward(policy, reward_model, prompts, cfg.eval_max_new_tokens, device)
    return {
        **scored,
        "preference_accuracy": evaluation.preference_accuracy(policy, val, device)["preference_accuracy"],
    }


def make_trainer_class():
    from trl import RLOOTrainer

    class ShardRLOOTrainer(RLOOTrainer):
        """RLOO on prompts that are already token ids (specials inserted by id): TRL would
        re-tokenize prompt text, where a literal `<prompt>` stays ordinary text."""

        def _generate_and_score_completions(self, inputs):
            self._prompt_ids = [x["prompt_ids"] for x in inputs]
            return super()._generate_and_score_completions(inputs)

        def _tokenize_prompts(self, prompts: list):
            return self._prompt_ids, None, {}

    return ShardRLOOTrainer


def reward_function(reward_model, device):
    def reward_model_score(prompts, completions, completion_ids, prompt_ids, **kwargs) -> list[float]:
        return reward_scoring.scores(
            reward_model, [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)], device
        )

    return reward_model_score


def make_trainer(cfg: RlConfig, policy, reward_model, tokenizer, train: pa.Table, out: Path, guard, device):
    """TRL's RLOO trainer as the stage runs it: LoRA on the policy, the reward model as its
    reward function, a checkpoint every `checkpoint_every` steps committed as resume state."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import RLOOConfig

    prompts = unique_prompts(train)
    data = Dataset.from_dict({"prompt": tokenizer.batch_decode(prompts), "prompt_ids": prompts})
    args = RLOOConfig(
        **training.trainer_args(cfg, str(out / training.RESUME / ".trainer"), save=True),
        beta=cfg.beta,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        remove_unused_columns=False,  # the reward function reads prompt_ids
    )
    trainer = make_trainer_class()(
        model=policy,
        reward_funcs=reward_function(reward_model, device),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=trl_glue.lora_config(cfg, "CAUSAL_LM"),
        callbacks=[trl_glue.log_callback("rl", LOGGED), training.resume_callback("rl", out, guard)],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(tracking.trainer_report())  # into the build's MLflow run, if tracked
    return trainer


def build(cfg: RlConfig, inputs: dict[str, Path], out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # set up
    device = training.setup(cfg).device
    train = shard_reading.load(inputs["shards"], "dpo", "train")
    val = shard_reading.load(inputs["shards"], "dpo", "validation")
    tokenizer = AutoTokenizer.from_pretrained(inputs["tokenizer"])
    reward_model = reward_scoring.load(inputs["reward"]).to(device).eval()
    policy = AutoModelForCausalLM.from_pretrained(inputs["sft"], use_safetensors=True)
    guard = training.input_fingerprints(inputs)
    found = training.checked_resume(out, guard)  # refuses state made from other inputs
    state = out / training.RESUME
    sft = training.cached_json(state / "sft.json", lambda: compare(policy, reward_model, val, cfg, device))
    dpo = training.cached_json(
        state / "dpo.json",
        lambda: compare(
            AutoModelForCausalLM.from_pretrained(inputs["dpo"], use_safetensors=True),
            reward_model,
            val,
            cfg,
            device,
        ),
    )
    # train
    trainer = make_trainer(cfg, policy, reward_model, tokenizer, train, out, guard, device)
    if found:
        log.info(f"resuming from {found[0]} (step {found[1]['step']})")
    trainer.train(resume_from_checkpoint=str(found[0]) if found else None)
    # evaluate
    trainer.model.save_pretrained(out / "adapter")
    merged = trainer.model.merge_and_unload()
    rl = compare(merged, reward_model, val, cfg, device)
    history = trl_glue.history_of(trainer.state.log_history, LOGGED)
    metrics = {
        "method": "rloo",
        **{
            f"val_{k}_{name}": m[k]
            for name, m in (("sft", sft), ("dpo", dpo), ("rl", rl))
            for k in m
            if k != "finite"
        },
        "rewards_finite": all(m["finite"] for m in (sft, dpo, rl)),
        "train_reward_first": history[0].get("reward") if history else None,
        "train_reward_last": history[-1].get("reward") if history else None,
        "train_kl_last": history[-1].get("kl") if history else None,
        "beta": cfg.beta,
        "steps": cfg.max_steps,
        "val_prompts": len(unique_prompts(val, cfg.eval_prompts)),
    }
    # save
    card = training.model_card("rl", metrics, cfg, inputs)
    training.finish(out, merged, inputs["tokenizer"], history, metrics, card)
    return metrics


def validate(cfg: RlConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    """Checkpoint contracts (no validation loss to compare here), preference pairs that differ,
    and finite rewards and KL throughout."""
    results = check_checkpoint(out, stats)
    results.append(reward_scoring.pairs_differ(inputs["shards"]))
    history = [h for h in training_history(out) if "reward" in h]
    values = [stats["rewards_finite"]] + [
        torch.isfinite(torch.tensor(h[k])).item() for h in history for k in ("reward", "kl") if k in h
    ]
    bad = [] if all(values) else ["a reward or KL value is not finite (training log or validation answers)"]
    results.append(require("rl/finite", bad, len(values), "rewards and KL are finite"))
    return results


def training_history(out: Path) -> list[dict]:
    return json.loads((out / "history.json").read_text())
