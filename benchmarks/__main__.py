"""Every comparison of the benchmark table in one run, on the same embedded data.

    python -m benchmarks                 # the full embedded corpus, 3 alternating repeats
    python -m benchmarks --repeats 5     # more rounds (A B A B ...)
    python -m benchmarks --quick         # the first 20 lines of each file, 1 round (smoke test)
    python -m benchmarks --only batching,steps

Writes benchmarks/results/benchmarks.{md,json} (`benchmarks-quick.*` with --quick): one row
per comparison with medians, min–max, the ratio ours / baseline, the goal and whether it was
met, plus the date, machine and library versions. A comparison whose module is not there, or
that fails, gets a row saying so, and the command exits non-zero after writing the table.
"""

import argparse
import importlib
import json
import logging
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

from benchmarks import embedded
from benchmarks.common import RESULTS
from benchmarks.suite import machine, markdown, not_run

# (name, module, what the table calls its rows when the module cannot run)
COMPARISONS = [
    ("tokenizer", "benchmarks.tokenizer", "tokenizer training and encoding"),
    ("packing", "benchmarks.packing", "pretraining packing at seq_len 512"),
    ("batching", "benchmarks.batching", "SFT and DPO batches"),
    ("shards", "benchmarks.shards", "shard reading"),
    ("steps", "benchmarks.steps", "pretraining step; SFT step; DPO + LoRA"),
    ("overhead", "benchmarks.overhead", "whole tiny pipeline"),
]


def run_one(name: str, module: str, work: str, data, repeats: int) -> tuple[list[dict], bool]:
    """The rows of one comparison, or one row saying why it did not run; and whether it ran."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        path = module.replace(".", "/") + ".py"
        return [not_run(work, f"not run: {path} is not on this branch yet")], False
    if not hasattr(mod, "suite"):
        return [not_run(work, f"not run: {module} has no suite(data, repeats) entry point")], False
    start = time.perf_counter()
    try:
        rows = mod.suite(data, repeats)
    except Exception as e:  # one failing comparison must not hide the others' numbers
        traceback.print_exc()
        return [not_run(work, f"FAILED: {type(e).__name__}: {e}")], False
    print(f"[benchmarks] {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return rows, True


def quiet() -> None:
    """Keep progress bars, trainer log dicts and deprecation chatter out of the table's output."""
    import datasets
    import transformers

    logging.getLogger("tasks").setLevel(logging.WARNING)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)


def run(quick: bool = False, repeats: int = 3, only: list[str] | None = None, out: Path = RESULTS) -> dict:
    quiet()
    chosen = [c for c in COMPARISONS if not only or c[0] in only]
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        data = embedded.build(Path(tmp), quick)
        for name, module, work in chosen:
            new, ran = run_one(name, module, work, data, repeats)
            rows += new
            ok &= ran
    info = machine()
    setup = (
        f"Embedded corpus ({'first 20 lines of each file' if quick else 'all of data/raw'}), one run, "
        f"{repeats} alternating round(s) per comparison; ratio = lmpipe / baseline in the row's unit. "
        "The machine is shared, so absolute numbers are noisy; the ratios, measured side by side "
        "in the same run, are what count."
    )
    result = {"machine": info, "quick": quick, "repeats": repeats, "ok": ok, "rows": rows}
    name = "benchmarks-quick" if quick else "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(rows, info, setup)
    (out / f"{name}.md").write_text(md)
    print(md)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny slice, one round (smoke test)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="alternating rounds (default 3; 1 with --quick)"
    )
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(c[0] for c in COMPARISONS))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier when shared)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 3)
    only = [x for x in args.only.split(",") if x]
    unknown = set(only) - {c[0] for c in COMPARISONS}
    if unknown:
        parser.error(f"unknown comparison(s) {sorted(unknown)}; choose from {[c[0] for c in COMPARISONS]}")
    return 0 if run(args.quick, repeats, only, args.out)["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
