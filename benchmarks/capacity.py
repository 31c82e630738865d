"""Capacity plan from the scale benchmark's measured per-token costs (benchmarks/results/scale.json).

    python -m benchmarks.scale && python -m benchmarks.capacity

Data preparation of 1B and 100B tokens on N cores, extrapolated linearly from the largest scale
measured: the corpus stage on one core (its jobs' measured speed-up, ~1.5x on 4 processes, is in
docs/scale.md: its dedup replay and writing stay in one process), the
tokenizer trains on a bounded sample (a fixed cost), and the shards stage's tokenisation spreads
over the cores while packing, bucketing and writing stay serial (Amdahl, with the parallel share
measured on one core). Peak memory is extrapolated from the RSS growth between the smallest and
largest scale. Training of the `gpu` preset (configs/gpu.yaml) on G GPUs: FLOPs per token from
the PaLM formula (6 x parameters + 12 x layers x width x sequence length, Chowdhery et al. 2022,
appendix B) on an H100's 989 TFLOPS dense bf16, scaling linearly, at two MFUs: PaLM's published
46.2% and the 21.7% measured for lmpipe's own training step on this preset's model and
sequence length (`python -m benchmarks.device` on an H200, same peak; docs/scale.md).
Writes benchmarks/results/capacity.{json,md}.
"""

import argparse
import json
import sys
from pathlib import Path

from benchmarks.common import RESULTS, save_results
from schemas.config import load_config

TOKENS = (1e9, 1e11)
CORES = (1, 8, 64)
GPUS = (1, 8, 64)
H100_BF16_FLOPS = 989e12  # dense, SXM (NVIDIA H100 datasheet)
MFU = {
    "published": 0.462,  # PaLM 540B on TPU v4 (Chowdhery et al. 2022, table 3): reachable at scale
    "measured": 0.217,  # lmpipe's train_step, the gpu preset's model on an H200 (benchmarks/device.py, 26 Nov)
}


def per_token(rows: list[dict]) -> dict:
    """Costs per token at the largest scale (shards on one core), and RSS growth per token."""
    hi, lo = max(r["scale"] for r in rows), min(r["scale"] for r in rows)

    def at(scale, stage, cores=None):  # the run on `cores` (default: the most cores measured)
        pick = sorted(
            (r for r in rows if (r["scale"], r["stage"]) == (scale, stage)), key=lambda r: r["cores"]
        )
        return next(r for r in pick if r["cores"] == cores) if cores else pick[-1]

    shards = at(hi, "shards", 1)
    work = shards["build_s"] + shards["validate_s"]
    tokens = shards["tokens"]
    growth = {
        stage: max(0.0, at(hi, stage)["peak_rss_mib"] - at(lo, stage)["peak_rss_mib"])
        / max(1, at(hi, stage)["tokens"] - at(lo, stage)["tokens"])
        for stage in ("corpus", "tokenizer", "shards")
    }
    return {
        "scale": hi,
        "corpus_cpu_s": at(hi, "corpus")["work_cpu_s"] / tokens,
        "tokenizer_cpu_s_fixed": at(hi, "tokenizer")["work_cpu_s"],
        "shards_cpu_s": shards["work_cpu_s"] / tokens,
        "shards_parallel_share": min(1.0, (shards["tokenise_s"] or 0) / work),
        "rss_mib_base": {s: at(lo, s)["peak_rss_mib"] for s in growth},
        "rss_mib_per_token": growth,
        "tokens_at_base": at(lo, "corpus")["tokens"],
        "bytes_per_token": {
            "raw": at(hi, "corpus")["raw_mib"] * 2**20 / tokens,
            "corpus": at(hi, "corpus")["out_mib"] * 2**20 / tokens,
            "shards": shards["out_mib"] * 2**20 / tokens,
        },
    }


def prepare(cost: dict) -> list[dict]:
    rows = []
    for tokens in TOKENS:
        ram = {
            s: round((cost["rss_mib_base"][s] + g * (tokens - cost["tokens_at_base"])) / 1024, 1)
            for s, g in cost["rss_mib_per_token"].items()
        }
        for cores in CORES:
            p = cost["shards_parallel_share"]
            hours = {
                "corpus": cost["corpus_cpu_s"] * tokens / 3600,
                "tokenizer": cost["tokenizer_cpu_s_fixed"] / 3600,
                "shards": cost["shards_cpu_s"] * tokens * ((1 - p) + p / cores) / 3600,
            }
            rows.append(
                {
                    "tokens": f"{tokens:.0e}",
                    "cores": cores,
                    **{f"{k}_h": round(v, 2) for k, v in hours.items()},
                    "total_h": round(sum(hours.values()), 2),
                    **{f"{k}_gb": round(v * tokens / 1e9, 1) for k, v in cost["bytes_per_token"].items()},
                    **{f"{k}_peak_ram_gib": v for k, v in ram.items()},
                }
            )
    return rows


def flops_per_token(config: str = "gpu") -> tuple[float, int, int]:
    """Training FLOPs per token, parameters and tokens of one full pretraining run of a preset."""
    cfg = load_config(config)
    m, seq = cfg.pretrain.model, cfg.shards.seq_len
    vocab = cfg.tokenizer.vocab_size
    per_layer = 4 * m.hidden_size**2 + 3 * m.hidden_size * m.intermediate_size
    params = m.num_layers * per_layer + vocab * m.hidden_size  # tied input/output embedding
    flops = 6 * params + 12 * m.num_layers * m.hidden_size * seq
    run_tokens = cfg.pretrain.max_steps * cfg.pretrain.batch_size * cfg.pretrain.grad_accum * seq
    return flops, params, run_tokens


def training() -> list[dict]:
    flops, params, run_tokens = flops_per_token()
    rows = []
    for source, mfu in MFU.items():
        per_gpu = H100_BF16_FLOPS * mfu / flops  # tokens per second
        for label, tokens in (("gpu preset run", run_tokens), ("1B tokens", 1e9), ("100B tokens", 1e11)):
            rows += [
                {
                    "mfu": f"{mfu:.1%} ({source})",
                    "what": label,
                    "tokens": f"{tokens:.3g}",
                    "gpus": gpus,
                    "hours": round(tokens / (per_gpu * gpus) / 3600, 2),
                    "params_m": round(params / 1e6, 1),
                    "gflops_per_token": round(flops / 1e9, 3),
                    "tokens_per_s_per_gpu": round(per_gpu),
                }
                for gpus in GPUS
            ]
    return rows


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=Path, default=RESULTS / "scale.json", help="the scale benchmark's JSON")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    cost = per_token(json.loads(args.scale.read_text())["rows"])
    data = {"per_token": cost, "prepare": prepare(cost), "training": training(), "mfu": MFU}
    md = (
        f"# capacity\n\nFrom {args.scale.name} (largest scale x{cost['scale']}); see benchmarks/capacity.py "
        "for the model. Hours are wall hours on otherwise idle cores.\n\n## Data preparation\n\n"
        + table(data["prepare"])
        + "\n\n## Pretraining, `gpu` preset, H100, at the published and the measured MFU\n\n"
        + table(data["training"])
        + "\n"
    )
    save_results("capacity", data, md, args.out)
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
