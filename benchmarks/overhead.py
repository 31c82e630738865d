"""Orchestration overhead: the pipeline through Prefect flows against its stage functions called
as plain Python, in the same process and run.

    python -m benchmarks.overhead [--quick]

Prefect side: the `pipeline` flow (every stage a subflow with build/validate tasks, planning,
input re-hashing, manifests, OpenLineage events, UI artifacts, API calls) against a Prefect
server started beforehand, on a fresh artifact home; then again with `force=True`.
Plain side: each stage's `build` + `validate` (tasks/<stage>.py) called directly on the same
inputs, into a scratch directory. The two sides alternate; the best of each counts.

    overhead = flow wall - sum of plain stage work      (goal: < 5% of flow wall)

The breakdown separates the same stage work measured inside the flows (manifest timings) from
what surrounds it. Default: the tiny preset with few training steps (a few minutes); `--quick`:
the test suite's tiny slice, corpus -> tokenizer -> shards only (the smoke test).
Results: benchmarks/results/overhead.{json,md} (overhead-quick.* for --quick).

    python -m benchmarks.overhead --tracking

Experiment tracking (MLflow run + live Prefect progress) against `tracking.backend=none`: the
pretrain flow of the reduced tiny preset rebuilt (`force`) with and without it, alternated, in
one process. Fewer steps than the preset make the fixed costs (opening the run, logging the
figures, manifest and plot) weigh more, not less. Beside the wall-clock ratio, the seconds spent
inside tracking calls are added up (a figure that the other core's load cannot blur). The first
tracked build in a fresh home also pays MLflow's import and the creation of its SQLite store;
it is reported on its own. Results: benchmarks/results/tracking-overhead.{json,md}.
"""

import contextlib
import importlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import save_results
from benchmarks.suite import measured
from schemas.config import PROJECT_ROOT, load_config
from schemas.stages import PIPELINE
from tasks.artifacts import Home, read_manifest
from tasks.plan import plan_single, read_input

# The tiny preset with fewer training steps: every stage runs, the whole thing in minutes.
REDUCED = [
    "pretrain.max_steps=30",
    "pretrain.warmup_steps=3",
    "sft.max_steps=15",
    "sft.warmup_steps=2",
    "dpo.max_steps=6",
    "dpo.warmup_steps=1",
]
GOAL = 0.05


def through_prefect(stages: tuple[str, ...], params: dict) -> tuple[float, dict[str, float]]:
    """Wall of the flows, and each stage's build + validate seconds as its manifest records them."""
    from flows.pipeline import STAGE_FLOWS, pipeline

    start = time.perf_counter()
    if stages == PIPELINE:
        results = pipeline(**params)
    else:
        results = [STAGE_FLOWS[s](**params) for s in stages]
    wall = time.perf_counter() - start
    inside = {}
    for r in results:
        assert r["status"] == "ran", f"{r['stage']} was {r['status']}: the benchmark needs a fresh build"
        t = read_manifest(Path(r["path"])).timings
        inside[r["stage"]] = t["build_s"] + t["validate_s"]
    return wall, inside


def plain(stages: tuple[str, ...], config: str, overrides: list[str], home: Home) -> dict[str, float]:
    """Each stage's build + validate as plain calls, on the inputs the flows published."""
    cfg = load_config(config, overrides)
    seconds = {}
    for stage in stages:
        module = importlib.import_module(f"tasks.{stage}")
        plan = plan_single(stage, cfg, home)
        inputs = {ref.stage: read_input(ref) for ref in plan.inputs if ref.stage != "raw"}
        section = cfg.section(stage)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            stats = module.build(section, inputs, Path(tmp))
            module.validate(section, inputs, Path(tmp), stats)
            seconds[stage] = time.perf_counter() - start
    return seconds


def measure(stages: tuple[str, ...], config: str, overrides: list[str], repeats: int) -> dict:
    """Alternate flows and plain calls `repeats` times; keep every run."""
    runs: dict[str, list] = {"flow_wall": [], "inside": [], "plain": []}
    with tempfile.TemporaryDirectory() as home:
        params = {"config": config, "overrides": overrides, "home": home}
        for k in range(repeats):
            wall, inside = through_prefect(stages, {**params, "force": k > 0})
            runs["flow_wall"].append(wall)
            runs["inside"].append(inside)
            runs["plain"].append(plain(stages, config, overrides, Home.resolve(home)))
    return runs


def report(runs: dict, stages: tuple[str, ...]) -> tuple[dict, str]:
    best = min(range(len(runs["flow_wall"])), key=runs["flow_wall"].__getitem__)
    wall = runs["flow_wall"][best]
    inside = sum(runs["inside"][best].values())
    plain_s = {s: min(r[s] for r in runs["plain"]) for s in stages}
    work = sum(plain_s.values())
    data = {
        "stages": list(stages),
        "flow_wall_s": round(wall, 2),
        "plain_work_s": round(work, 2),
        "stage_work_in_flows_s": round(inside, 2),
        "overhead_s": round(wall - work, 2),
        "overhead_fraction": round((wall - work) / wall, 4),
        "around_stage_work_fraction": round((wall - inside) / wall, 4),
        "goal_fraction": GOAL,
        "runs": {
            "flow_wall_s": [round(x, 2) for x in runs["flow_wall"]],
            "plain_s": [{s: round(v, 2) for s, v in r.items()} for r in runs["plain"]],
            "in_flows_s": [{s: round(v, 2) for s, v in r.items()} for r in runs["inside"]],
        },
    }
    rows = [f"| {s} | {plain_s[s]:.2f} s | {runs['inside'][best][s]:.2f} s |" for s in stages]
    md = (
        "# Orchestration overhead\n\nThe pipeline through Prefect flows against its stage functions "
        "called as plain Python (best of each side, alternated).\n\n"
        "| stage | build+validate, plain | build+validate, in the flow |\n|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\n| figure | value |\n|---|---|\n| flow wall | {wall:.2f} s |\n| sum of plain stage work | {work:.2f} s |\n"
        f"| overhead (flow wall - plain work) | {wall - work:.2f} s |\n"
        f"| overhead fraction of flow wall | {data['overhead_fraction']:.2%} (goal < {GOAL:.0%}) |\n"
        f"| outside build+validate inside the flows | {data['around_stage_work_fraction']:.2%} |\n"
    )
    return data, md


def setup(quick: bool, scratch: Path) -> tuple[tuple[str, ...], str, list[str]]:
    """(stages, config, overrides): the reduced tiny preset, or the test suite's slice."""
    if quick:
        return PIPELINE[:3], quick_config(scratch), []
    return PIPELINE, str(PROJECT_ROOT / "configs" / "tiny.yaml"), REDUCED


def run(quick: bool, repeats: int) -> tuple[dict, str]:
    """Measure; the results (with the row of the benchmark table under "row") and their markdown."""
    with tempfile.TemporaryDirectory(prefix="overhead-") as scratch:
        stages, config, overrides = setup(quick, Path(scratch))
        runs = with_server(lambda: measure(stages, config, overrides, repeats))
    data, md = report(runs, stages)
    data["config"] = {"config": config, "overrides": overrides, "repeats": repeats}
    walls, plain_sums = runs["flow_wall"], [sum(r.values()) for r in runs["plain"]]
    data["row"] = measured(
        "whole tiny pipeline" + (" (corpus, tokenizer, shards; tiny slice)" if quick else ""),
        "pipeline through Prefect flows",
        "stage build+validate as plain calls",
        "s",
        walls,
        plain_sums,
        f"overhead < {GOAL:.0%} of flow wall",
        lambda ours, ratio: 1 - 1 / ratio < GOAL,
        f"overhead {data['overhead_fraction']:.1%} of flow wall (best of each side)",
    )
    return data, md


def main(quick: bool = False, tracking: bool = False) -> dict:
    logging.getLogger("tasks").setLevel(logging.WARNING)
    if tracking:
        data, md = with_server(lambda: tracking_overhead(2 if quick else 3))
        save_results("tracking-overhead", data, md)
        return data
    data, md = run(quick, 1 if quick else 2)
    save_results("overhead-quick" if quick else "overhead", data, md)
    return data


TRACKING_GOAL = 0.02
# Long enough that the flow's ~1 s granularity (Prefect's state and log polling) is a few percent.
TRACKING_STEPS = ["pretrain.max_steps=120", "pretrain.warmup_steps=6"]


def tracking_overhead(repeats: int) -> tuple[dict, str]:
    """Pretrain flow walls with and without tracking, and the seconds inside tracking calls."""
    from flows.pipeline import STAGE_FLOWS

    config = str(PROJECT_ROOT / "configs" / "tiny.yaml")
    walls: dict[str, list[float]] = {"cold": [], "tracked": [], "untracked": []}
    builds: dict[str, list[float]] = {"cold": [], "tracked": [], "untracked": []}
    inside: list[float] = []
    figures = set()  # the build's stats, which tracking must not change
    with tempfile.TemporaryDirectory() as home, timed_tracking() as spent:
        for stage in PIPELINE[:3]:
            STAGE_FLOWS[stage](config=config, overrides=REDUCED, home=home)
        for side in ["cold"] + ["untracked", "tracked"] * repeats:
            extra = ["tracking.backend=none"] if side == "untracked" else []
            spent.clear()
            start = time.perf_counter()
            overrides = REDUCED + TRACKING_STEPS + extra
            result = STAGE_FLOWS["pretrain"](config=config, overrides=overrides, force=True, home=home)
            walls[side].append(time.perf_counter() - start)
            manifest = read_manifest(Path(result["path"]))
            builds[side].append(manifest.timings["build_s"])
            figures.add(json.dumps(manifest.stats, sort_keys=True))
            if side == "tracked":
                inside.append(sum(spent))
    data, md = tracking_report(walls, builds, inside, repeats)
    data["same_figures_with_and_without"] = len(figures) == 1
    return data, md + f"| same stats with and without tracking | {len(figures) == 1} |\n"


@contextlib.contextmanager
def timed_tracking():
    """Add up the seconds spent in every MLflow call and Prefect progress or link artifact."""
    from flows import tracking as flow_side
    from tasks import tracking

    spent: list[float] = []
    originals = {(tracking, "open_run"): tracking.open_run, (tracking.Run, "call"): tracking.Run.call}
    originals[(tracking.Progress, "update")] = tracking.Progress.update
    originals |= {(flow_side, "progress_bar"): flow_side.progress_bar, (flow_side, "link"): flow_side.link}

    def timer(fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - start)

        return timed

    for (owner, name), fn in originals.items():
        setattr(owner, name, timer(fn))
    try:
        yield spent
    finally:
        for (owner, name), fn in originals.items():
            setattr(owner, name, fn)


def tracking_report(walls: dict, builds: dict, inside: list[float], repeats: int) -> tuple[dict, str]:
    tracked, untracked = min(walls["tracked"]), min(walls["untracked"])
    build_ratio = min(builds["tracked"]) / min(builds["untracked"])
    data = {
        "stage": "pretrain",
        "config": {"config": "tiny", "overrides": REDUCED + TRACKING_STEPS, "repeats": repeats},
        "tracked_wall_s": round(tracked, 2),
        "untracked_wall_s": round(untracked, 2),
        "wall_ratio": round(tracked / untracked, 4),
        "build_ratio": round(build_ratio, 4),
        "inside_tracking_s": round(min(inside), 3),
        "inside_tracking_fraction": round(min(inside) / tracked, 4),
        "first_build_in_fresh_home_extra_s": round(walls["cold"][0] - untracked, 2),
        "goal_fraction": TRACKING_GOAL,
        "runs": {k: [round(x, 2) for x in v] for k, v in walls.items()} | {"inside_s": inside},
        "build_s": builds,
    }
    md = (
        "# Tracking overhead\n\nThe pretrain flow (tiny preset, reduced steps) with MLflow tracking and live "
        "progress against `tracking.backend=none`, alternated in one process (best of each).\n\n"
        f"| figure | value |\n|---|---|\n| stage wall, tracked | {tracked:.2f} s |\n"
        f"| stage wall, untracked | {untracked:.2f} s |\n| wall ratio | {tracked / untracked:.4f} |\n"
        f"| build seconds ratio (manifest `build_s`, best of each) | {build_ratio:.4f} |\n"
        f"| inside tracking calls | {min(inside):.3f} s ({data['inside_tracking_fraction']:.2%} of the stage; "
        f"goal < {TRACKING_GOAL:.0%}) |\n"
        f"| first tracked build in a fresh home, extra | {data['first_build_in_fresh_home_extra_s']:.2f} s "
        "(MLflow import + SQLite store creation, once) |\n"
    )
    return data, md


def suite(data, repeats: int) -> list[dict]:
    """The row of `python -m benchmarks` (quick: corpus -> shards on the tests' tiny slice)."""
    return [run(data.quick, repeats)[0]["row"]]


def quick_config(scratch: Path) -> str:
    """The test suite's tiny slice of data/raw (a 1-layer model, seconds per stage)."""
    from tests.conftest import tiny_config_data

    path = scratch / "tiny-test.yaml"
    path.write_text(yaml.safe_dump(tiny_config_data(scratch / "raw")))
    return str(path)


def with_server(fn):
    """Against PREFECT_API_URL when set, else a temporary server started before any timing."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    if PREFECT_API_URL.value():  # a server of your own, or the test suite's
        return fn()

    with prefect_test_harness(server_startup_timeout=120):
        return fn()


if __name__ == "__main__":
    main(quick="--quick" in sys.argv, tracking="--tracking" in sys.argv)
