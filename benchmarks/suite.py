"""The rows of the one benchmark table (`python -m benchmarks`), and how it is written.

A row compares lmpipe with one baseline measured in the same run, on the same data:

    {"work": "encoding all text", "lmpipe": "shards.encode_template", "baseline": "encode_batch_fast",
     "unit": "CPU s", "ours": 0.81, "ours_range": "0.79–0.85", "base": 0.78, "base_range": "...",
     "ratio": 1.04, "goal": "≤ 1.10×, identical ids", "met": "met", "note": "identical ids: yes"}

`ratio` is always ours / baseline in the row's unit. `met` is "met", "missed" or "—" (no goal,
or the comparison could not run, with the reason in `note`).
"""

import os
import platform
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata

COLUMNS = (
    "work",
    "lmpipe",
    "baseline",
    "unit",
    "ours",
    "ours_range",
    "base",
    "base_range",
    "ratio",
    "goal",
    "met",
    "note",
)
LIBRARIES = ("torch", "tokenizers", "transformers", "trl", "peft", "datasets", "pyarrow", "prefect")


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1000 else f"{x:,.0f}"


def measured(
    work: str,
    lmpipe: str,
    baseline: str,
    unit: str,
    ours: list[float],
    base: list[float],
    goal: str = "",
    check: Callable[[float, float], bool] | None = None,
    note: str = "",
) -> dict:
    """A row from repeated measurements of both sides (medians, min–max, ratio of medians).

    `check(ours_median, ratio)` says whether the goal is met.
    """
    o, b = statistics.median(ours), statistics.median(base)

    def spread(xs: list[float]) -> str:  # one measurement (a count, a padding share) has none
        return f"{_fmt(min(xs))}–{_fmt(max(xs))}" if len(xs) > 1 else ""

    ratio = o / b if b else float("nan")
    met = None if check is None else check(o, ratio)
    return {
        "work": work,
        "lmpipe": lmpipe,
        "baseline": baseline,
        "unit": unit,
        "ours": _fmt(o),
        "ours_range": spread(ours),
        "base": _fmt(b),
        "base_range": spread(base),
        "ratio": round(ratio, 3),
        "goal": goal,
        "met": "—" if met is None else ("met" if met else "missed"),
        "note": note,
        "runs": {"ours": [round(x, 6) for x in ours], "base": [round(x, 6) for x in base]},
    }


def not_run(work: str, why: str) -> dict:
    """A row for a comparison that could not run here (missing module, error), saying why."""
    row = dict.fromkeys(COLUMNS, "")
    return row | {"work": work, "met": "—", "note": why}


def machine() -> dict:
    """Where the numbers were taken: date, cores, CPU model, torch threads, library versions."""
    import torch

    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model
            )
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": model,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {lib: metadata.version(lib) for lib in LIBRARIES},
    }


def markdown(rows: list[dict], info: dict, setup: str) -> str:
    """The table with a header naming the date, machine and versions."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        "# lmpipe benchmarks",
        "",
        f"{info['date']}; {info['cores']} cores ({info['cpu']}), torch threads {info['torch_threads']}; "
        f"Python {info['python']}, {versions}.",
        "",
        setup,
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    missed = [
        r["work"] + (f" ({r['baseline']})" if r["baseline"] else "") for r in rows if r["met"] == "missed"
    ]
    lines += ["", "Goals missed: " + ("; ".join(missed) if missed else "none") + "."]
    return "\n".join(lines) + "\n"
