"""Helpers shared by the benchmarks: timing, the embedded texts, writing results."""

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from schemas.config import PROJECT_ROOT
from tasks.environment import apply_offline_defaults

apply_offline_defaults()

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def timed(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    """Wall times of `repeats` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def alternate(sides: dict[str, Callable[[], object]], repeats: int) -> tuple[dict, dict]:
    """Run the sides in turn, A B A B ..., so drift on a shared machine hits each alike.

    Returns ({side: {"wall": [s, ...], "cpu": [s, ...]}}, {side: [its result each round]}).
    CPU time is the whole process's (every thread), which a busy neighbour disturbs less than
    wall time.
    """
    times = {k: {"wall": [], "cpu": []} for k in sides}
    results: dict[str, list] = {k: [] for k in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[name].append(fn())
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times, results


def summary(times: list[float]) -> dict:
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
    }


def raw_texts(task: str, fields: tuple[str, ...], limit: int | None = None) -> list[str]:
    path = (
        PROJECT_ROOT / "data" / "raw" / {"pretrain": "pretrain.jsonl", "sft": "translation_en_fr.jsonl"}[task]
    )
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            out.extend(record[k] for k in fields)
            if limit and len(out) >= limit:
                break
    return out


def timing_markdown(title: str, intro: str, medians: dict, rate_name: str, rates: dict, ratios: dict) -> str:
    """A timings table (median, rate) and a ratios table, as the corpus/tokenizer benchmarks print."""
    rows = [f"| {k} | {v:.3f} s | {rates.get(k, '')} |" for k, v in medians.items()]
    return (
        f"# {title}\n\n{intro}\n\n| what | median | {rate_name} |\n|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n| ratio | value |\n|---|---|\n"
        + "\n".join(f"| {k} | {v} |" for k, v in ratios.items())
        + "\n"
    )


def save_results(name: str, data: dict, markdown: str, out: Path = RESULTS) -> Path:
    """Write `<name>.json` and `<name>.md` under `out` and show the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    md = out / f"{name}.md"
    md.write_text(markdown)
    print(markdown)
    return md


def write_results(name: str, data: dict, table: list[dict]) -> Path:
    """`save_results` with the markdown made from a list of rows."""
    cols = list(table[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for row in table]
    return save_results(name, data, f"# {name}\n\n" + "\n".join(lines) + "\n")


def spread_cpus(n: int) -> list[int]:
    """`n` of this process's CPUs, on distinct physical cores first: two hyperthreads of one
    core share its execution units, so they would understate what a second core gives."""
    firsts, siblings, seen = [], [], set()
    for cpu in sorted(os.sched_getaffinity(0)):
        core = topology(cpu)
        (siblings if core in seen else firsts).append(cpu)
        seen.add(core)
    return (firsts + siblings)[:n]


def topology(cpu: int) -> tuple[str, str]:
    """(package, core) of a CPU from sysfs; the CPU itself where sysfs does not say."""
    base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
    try:
        return (base / "physical_package_id").read_text().strip(), (base / "core_id").read_text().strip()
    except OSError:
        return "?", str(cpu)
