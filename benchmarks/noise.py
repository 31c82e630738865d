"""Noisy teacher forcing: its effect on SFT validation loss and chrF, against no noise.

    python -m benchmarks.noise [--steps N] [--examples N]

Reduced config of the embedded default: the default's corpus, tokenizer, shards and pretrained
checkpoint (taken from the artifact home when `lmpipe run` already built them, else built
first through the stage flows), then SFT once per noise setting with the default's SFT config
except `--steps` and `--examples` (generation examples per task), both the preset's by default. Every run starts from the same checkpoint with the same seed and
data order; only the input corruption differs. Validation is always clean.

Reported per setting: validation loss (clean teacher forcing), chrF of the translation
task-token format and of held-out instruct phrasings, and ratios against no noise.
Results: benchmarks/results/noise.{json,md}.
"""

import argparse
import logging
import tempfile
from pathlib import Path

from benchmarks.common import write_results
from schemas.config import load_config
from schemas.sft import NoiseConfig, SftConfig
from tasks import sft
from tasks.artifacts import Home
from tasks.plan import plan_pipeline

SETTINGS: dict[str, NoiseConfig] = {
    "none": NoiseConfig(),
    "random 10%": NoiseConfig(fraction=0.1, replace_with="random"),
    "mask 10%": NoiseConfig(fraction=0.1, replace_with="mask"),
    "random 25%": NoiseConfig(fraction=0.25, replace_with="random"),
}
UPSTREAM = ("corpus", "tokenizer", "shards", "pretrain")


def default_inputs(config: str = "tiny", home: str | None = None) -> dict[str, Path]:
    """shards/tokenizer/pretrain artifacts of the config, built through the flows if missing."""
    cfg, h = load_config(config), Home.resolve(home)
    if not all(p.up_to_date for p in plan_pipeline(cfg, h, UPSTREAM)):
        from flows.pipeline import STAGE_FLOWS

        for stage in UPSTREAM:
            STAGE_FLOWS[stage](config=config, overrides=[], home=home)
    plans = {p.stage: p.path for p in plan_pipeline(cfg, h, UPSTREAM)}
    return {k: plans[k] for k in ("shards", "tokenizer", "pretrain")}


def compare(base: SftConfig, inputs: dict[str, Path], settings: dict[str, NoiseConfig]) -> list[dict]:
    """One SFT run per setting from the same checkpoint; a row of figures per setting."""
    rows = []
    for name, noise in settings.items():
        with tempfile.TemporaryDirectory() as out:
            stats = sft.build(base.model_copy(update={"noise": noise}), inputs, Path(out))
        heldout = stats.get("generation_heldout", {}).get("translation", {})
        rows.append(
            {
                "noise": name,
                "realized fraction": stats.get("noise", {}).get("realized_fraction", 0.0),
                "val loss": stats["val_loss"],
                "chrF (task token)": round(stats["generation"]["translation"]["chrf"], 2),
                "chrF (held-out instructions)": round(heldout.get("chrf", float("nan")), 2),
                "train loss": stats["train_loss"],
            }
        )
    base_row = rows[0]
    for row in rows:
        row["val loss ratio"] = round(row["val loss"] / base_row["val loss"], 4)
        base_chrf = base_row["chrF (task token)"]
        row["chrF ratio"] = (
            round(row["chrF (task token)"] / base_chrf, 3) if base_chrf else "n/a (baseline 0)"
        )
    return rows


def main(
    steps: int | None = None, examples: int | None = None, config: str = "tiny", home: str | None = None
) -> dict:
    logging.getLogger("tasks.training").setLevel(logging.WARNING)
    inputs = default_inputs(config, home)
    preset = load_config(config).sft
    steps, examples = steps or preset.max_steps, examples or preset.eval_examples
    base = preset.model_copy(update={"max_steps": steps, "eval_examples": examples})
    rows = compare(base, inputs, SETTINGS)
    data = {
        "setup": {
            "config": config,
            "sft.max_steps": steps,
            "sft.eval_examples": examples,
            "preset": {"max_steps": preset.max_steps, "eval_examples": preset.eval_examples},
            "inputs": {k: str(v) for k, v in inputs.items()},
            "sft": base.model_dump(mode="json"),
        },
        "results": rows,
    }
    write_results("noise", data, rows)
    return data


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, help="SFT steps (default: the preset's)")
    p.add_argument("--examples", type=int, help="generation examples per task (default: the preset's)")
    p.add_argument("--config", default="tiny")
    p.add_argument("--home")
    a = p.parse_args()
    main(a.steps, a.examples, a.config, a.home)
