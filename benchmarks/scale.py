"""Scale: the data stages on 1x, 10x (and 100x) the embedded corpus, one child process per stage.

    python -m benchmarks.scale                       # 1x, 3x and 10x
    python -m benchmarks.scale --scales 1,10,100     # to 100x (long on 2 cores)
    python -m benchmarks.scale --limit 50 --scales 1 # smoke: the first 50 lines of each file
    python -m benchmarks.scale --stages corpus       # only the corpus stage (no tokens column)

The bigger corpora: replica r (r >= 1) of every record gets the id `<id>~r<r>` and the word
`r<r>` inserted before the 7th word of every field and then after every 12 words, so every
13-word window of a replica holds its marker. Nothing it holds is then an exact duplicate, a
13-gram of another replica's validation text (decontamination), or a MinHash near-duplicate
(about 60% of its word 3-grams are shared with another replica; the threshold is 0.85). A QA
answer gets the same insertions as its span of the context, so it stays a span:

    {"id": "qa-1", "context": "... Paris is the capital ...", "answer": "Paris is the capital"}
    {"id": "qa-1~r3", "context": "r3 ... Paris is r3 the capital ...", "answer": "Paris is r3 the capital"}

Each stage (corpus, tokenizer training on its bounded sample, shards = tokenise + pack/bucket
+ write) runs build and validate in its own child process, so wall time, CPU time and peak RSS
(`os.wait4` rusage) are per stage. The shards stage runs twice at every scale, on 1 core and on
2 (the child's CPU affinity; the tokenizer's Rust thread pool follows it), to give the speedup
of tokenisation. Goals: peak RSS flat (<= 1.2x from 1x to the largest scale), CPU cost per
token constant (the marginal cost of the last step of scale within 10% of the first's; needs
three scales), tokenisation on 2 cores >= 1.8x one core. With `--train-steps N`, pretraining
also runs N steps on each scale's shards (batches read from the memory-mapped shards): its peak
RSS must not grow with the shard count either.
Writes benchmarks/results/scale.{json,md}.
"""

import argparse
import importlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import RESULTS, save_results, spread_cpus
from schemas.config import PROJECT_ROOT, load_config
from schemas.corpus import TASK_FIELDS
from schemas.stages import STAGES

_WORD = re.compile(r"\w+")  # the word definition of dedup and decontamination (tasks.corpus_clean)
FIRST, EVERY = 6, 12
DATA_STAGES = ("corpus", "tokenizer", "shards")
RSS_GOAL, COST_GOAL, SPEEDUP_GOAL = 1.2, 1.1, 1.8


def marks(text: str) -> list[int]:
    """Where the marker goes: before the 7th word and every 12th word after it (so no 13-word
    window is without one), or before the last word of shorter text (end of a 0/1-word one)."""
    starts = [m.start() for m in _WORD.finditer(text)]
    if len(starts) < 2:
        return [len(text)]
    return starts[FIRST::EVERY] if len(starts) > FIRST else [starts[-1]]


def insert(text: str, at: list[int], marker: str) -> str:
    """`marker` and a space at each position (a space and `marker` at the end of the text).

    >>> insert("a b c", [2], "r2")
    'a r2 b c'
    """
    pieces, last = [], 0
    for pos in at:
        pieces += [text[last:pos], f"{marker} " if pos < len(text) else f" {marker}"]
        last = pos
    return "".join(pieces) + text[last:]


def replica(record: dict, task: str, r: int) -> dict:
    """Record `r` of the scaled corpus (0 is the record itself)."""
    if r == 0:
        return record
    marker = f"r{r}"
    out = {**record, "id": f"{record['id']}~{marker}"}
    for name in TASK_FIELDS[task]:
        out[name] = insert(record[name], marks(record[name]), marker)
    start = record["context"].find(record["answer"]) if task == "qa" else -1
    if start >= 0:  # the answer: its span of the marked context (a marker on its first word stays out)
        at, width = marks(record["context"]), len(marker) + 1
        end = start + len(record["answer"])
        shift = width * sum(p <= start for p in at)
        out["answer"] = out["context"][start + shift : end + width * sum(p < end for p in at)]
    return out


def scaled_config(raw_dir: Path, scale: int, limit: int | None):
    """The tiny preset with each corpus file written `scale` times over (`limit` lines each)."""
    cfg = load_config("tiny")
    raw_dir.mkdir(parents=True, exist_ok=True)
    sources = []
    for src in cfg.corpus.sources:
        path = raw_dir / Path(src.path).name
        with open(PROJECT_ROOT / src.path, encoding="utf-8") as f:
            records = [json.loads(line) for _, line in zip(range(limit or 10**9), f, strict=False)]
        with open(path, "w", encoding="utf-8") as out:
            for r in range(scale):
                out.writelines(
                    json.dumps(replica(rec, src.task, r), ensure_ascii=False) + "\n" for rec in records
                )
        sources.append(src.model_copy(update={"path": str(path)}))
    return cfg.model_copy(update={"corpus": cfg.corpus.model_copy(update={"sources": sources})})


# --- the child: one stage, build + validate, in this process ---------------------------------


def run_stage(stage: str, run_dir: Path, cores: int) -> dict:
    """Build and validate one stage into `run_dir/<stage>` (shards: `shards-c<cores>`)."""
    os.sched_setaffinity(0, spread_cpus(cores))
    cfg = load_config(str(run_dir / "config.yaml"))
    module = importlib.import_module(f"tasks.{stage}")
    section = cfg.section(stage)
    inputs = {name: run_dir / name for name in STAGES[stage].inputs}
    out = run_dir / (f"shards-c{cores}" if stage == "shards" else stage)
    out.mkdir(parents=True, exist_ok=False)
    warm_up()
    tokenise = Tokenising(cores)
    extra = {"map_chunks": tokenise.map_chunks} if stage == "shards" else {}
    if stage == "pretrain":
        inputs["shards"] = run_dir / f"shards-c{cores}"
        for name, path in inputs.items():  # training ties its resume state to input fingerprints
            stand_in_manifest(name, path)
    start, cpu = time.perf_counter(), time.process_time()
    stats = module.build(section, inputs, out, **extra)
    built, built_cpu = time.perf_counter(), time.process_time()
    # a few pretraining steps measure memory, not learning: its checkpoint checks are skipped
    results = [] if stage == "pretrain" else module.validate(section, inputs, out, stats)
    failed = [r.name for r in results if not r.success]
    (out / "stats.json").write_text(json.dumps(stats, default=str))
    return {
        "build_s": round(built - start, 3),
        "validate_s": round(time.perf_counter() - built, 3),
        "work_cpu_s": round(time.process_time() - cpu, 3),  # build + validate, without start-up
        "build_cpu_s": round(built_cpu - cpu, 3),
        "tokenise_s": tokenise.seconds,
        "failed_contracts": failed,
    }


def stand_in_manifest(stage: str, path: Path) -> None:
    """A manifest for an input the benchmark built but did not publish (fingerprint: its path)."""
    from schemas.manifest import Manifest

    m = Manifest(
        stage=stage, name="scale", fingerprint=str(path), inputs=[], config={}, fingerprint_config={},
        code={}, files=[], created_at="",
    )  # fmt: skip
    (path / "manifest.json").write_text(m.model_dump_json())


def warm_up() -> None:
    """Import what the stages import lazily, so the work's CPU time leaves out library loading."""
    import great_expectations  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import transformers  # noqa: F401


class Tokenising:
    """Runs the shards stage's chunk jobs on `cores` threads, as the flow's Prefect thread pool
    does (runners/, `shards.workers`), or on `cores` worker processes as a Dask cluster of
    processes runs them (one Rayon thread each), and times them: the stage's tokenisation.
    Worker processes are started (spawned, modules imported) before the clock, as a cluster's
    workers are before a stage's first job; `start_seconds` is that start-up."""

    def __init__(self, cores: int, processes: bool = False):
        self.cores, self.processes, self.seconds, self.start_seconds = cores, processes, None, 0.0

    def map_chunks(self, fn, jobs: list[dict]) -> list:
        start = time.perf_counter()
        spawn = multiprocessing.get_context("spawn")  # no forked Rayon pool
        pool = (
            ProcessPoolExecutor(self.cores, spawn, _started, (spawn.Barrier(self.cores),))
            if self.processes
            else ThreadPoolExecutor(self.cores)
        )
        with pool:
            list(pool.map(int, range(self.cores)))  # a worker per call; each waits for all in _started
            ready = time.perf_counter()
            done = list(pool.map(fn, jobs))
        self.start_seconds = round(ready - start, 3)
        self.seconds = round(time.perf_counter() - ready, 3)
        return done


def _started(barrier) -> None:
    import tasks.shard_chunks  # noqa: F401  (what a chunk job imports)

    barrier.wait()


# --- the parent: children, rusage, the table --------------------------------------------------


def child(stage: str, run_dir: Path, cores: int) -> dict:
    """Run one stage in a child process; its wall, CPU and peak RSS from os.wait4."""
    env = {
        **os.environ,
        "LMPIPE_DATA_ROOTS": os.pathsep.join(
            filter(None, [os.environ.get("LMPIPE_DATA_ROOTS"), str(run_dir)])
        ),
        "RAYON_NUM_THREADS": str(cores),
    }
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scale",
        "--child",
        stage,
        "--work",
        str(run_dir),
        "--cores",
        str(cores),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} at {run_dir} failed (exit {proc.returncode}); its stderr is above")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        **json.loads(output.strip().splitlines()[-1]),
    }


def measure_scale(
    scale: int,
    work: Path,
    limit: int | None,
    cores: list[int],
    train_steps: int = 0,
    stages: tuple[str, ...] = DATA_STAGES,
) -> list[dict]:
    """Each stage in `stages` (in pipeline order, each needing the ones before it) at one scale."""
    run_dir = work / f"x{scale}"
    cfg = scaled_config(run_dir / "raw", scale, limit)
    if train_steps:
        steps = {"max_steps": train_steps, "warmup_steps": min(train_steps, cfg.pretrain.warmup_steps)}
        cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update=steps)})
    (run_dir / "config.yaml").write_text(json.dumps(cfg.model_dump(mode="json")))
    rows = []
    for stage in stages + (("pretrain",) if train_steps else ()):
        for n in cores if stage == "shards" else [max(cores)]:
            print(f"[scale] x{scale} {stage} on {n} core(s)", file=sys.stderr)
            rows.append({"scale": scale, "stage": stage, "cores": n, **child(stage, run_dir, n)})
    corpus_stats = json.loads((run_dir / "corpus" / "stats.json").read_text())
    shard_stats = run_dir / f"shards-c{max(cores)}" / "stats.json"
    tokens = sum(json.loads(shard_stats.read_text())["tokens"].values()) if "shards" in stages else None
    for row in rows:
        out = f"shards-c{row['cores']}" if row["stage"] == "shards" else row["stage"]
        row |= {"records_kept": corpus_stats["kept"], "out_mib": mib(run_dir / out)}
        row["raw_mib"] = mib(run_dir / "raw")
        if tokens:
            row["tokens"] = tokens
            row["tokens_per_s"] = round(tokens / row["wall_s"])
            row["work_cpu_us_per_token"] = round(row["work_cpu_s"] / tokens * 1e6, 3)
    return rows


def mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 2)


def goals(rows: list[dict]) -> list[dict]:
    """Each goal between the smallest and the largest scale measured, with met/missed."""
    lo, hi = min(r["scale"] for r in rows), max(r["scale"] for r in rows)
    top = max(r["cores"] for r in rows)

    def at(scale, stage, cores=top):
        return next(r for r in rows if (r["scale"], r["stage"], r["cores"]) == (scale, stage, cores))

    out = []
    for stage in sorted({r["stage"] for r in rows}, key=(*DATA_STAGES, "pretrain").index):
        ratio = at(hi, stage)["peak_rss_mib"] / at(lo, stage)["peak_rss_mib"]
        out.append(_goal(f"{stage}: peak RSS x{hi} / x{lo}", ratio, RSS_GOAL, "<="))
    if all("tokens" in r for r in rows):
        out += cost_goals(sorted({r["scale"] for r in rows}), at)
    if 1 in {r["cores"] for r in rows if r["stage"] == "shards"} and top > 1:
        one, many = at(hi, "shards", 1), at(hi, "shards", top)
        if one["tokenise_s"] and many["tokenise_s"]:
            ratio = one["tokenise_s"] / many["tokenise_s"]
            out.append(
                _goal(f"tokenisation x{hi}: {top} cores / 1 core (speedup)", ratio, SPEEDUP_GOAL, ">=")
            )
        ratio = one["wall_s"] / many["wall_s"]
        out.append(_goal(f"shards stage x{hi}: {top} cores / 1 core (speedup)", ratio, SPEEDUP_GOAL, ">="))
    return out


def cost_goals(scales: list[int], at) -> list[dict]:
    """CPU cost per token, constant: the marginal cost (extra CPU s / extra tokens) of the last
    step of scale against the first. Needs three scales: every stage has fixed costs (lazy
    imports, the GX context, the tokenizer's bounded training) that make the average fall."""
    if len(scales) < 3:
        return [
            {
                "what": "CPU s per token constant",
                "value": "",
                "goal": f"<= {COST_GOAL}",
                "result": "not shown (needs 3 scales)",
            }
        ]

    def marginal(a: int, b: int, stages: tuple[str, ...]) -> float:
        extra = sum(at(b, s)["work_cpu_s"] - at(a, s)["work_cpu_s"] for s in stages)
        return extra / (at(b, "shards")["tokens"] - at(a, "shards")["tokens"])

    first, last = scales[:2], scales[-2:]
    out = []
    # not the tokenizer alone: it trains on a bounded sample, its marginal cost goes to 0
    for name, stages in (("data stages", DATA_STAGES), ("corpus", ("corpus",)), ("shards", ("shards",))):
        ratio = marginal(*last, stages) / marginal(*first, stages)
        what = f"{name}: marginal CPU s per token, x{last[0]}->x{last[1]} / x{first[0]}->x{first[1]}"
        out.append(_goal(what, ratio, COST_GOAL, "<="))
    return out


def _goal(what: str, value: float, goal: float, op: str) -> dict:
    met = value <= goal if op == "<=" else value >= goal
    return {
        "what": what,
        "value": round(value, 3),
        "goal": f"{op} {goal}",
        "result": "met" if met else "MISSED",
    }


COLUMNS = (
    "scale", "stage", "cores", "records_kept", "tokens", "wall_s", "cpu_s", "peak_rss_mib",
    "tokens_per_s", "work_cpu_s", "work_cpu_us_per_token", "build_s", "validate_s", "tokenise_s",
    "raw_mib", "out_mib",
)  # fmt: skip


def markdown(rows: list[dict], goal_rows: list[dict], load: tuple) -> str:
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    table += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    goal_table = ["| goal | value | target | result |", "|---|---|---|---|"]
    goal_table += [f"| {g['what']} | {g['value']} | {g['goal']} | {g['result']} |" for g in goal_rows]
    return (
        "# scale\n\nThe data stages on the embedded corpus replicated (see benchmarks/scale.py), one child "
        "process per stage (build + validate); wall, CPU time and peak RSS of the whole child from "
        "os.wait4; work_cpu_s is the CPU time of build + validate alone (libraries imported before), "
        "the cost per token. "
        f"Load average at the start and end: {load[0]} / {load[1]} on {os.cpu_count()} cores.\n\n"
        + "\n".join(table)
        + "\n\n"
        + "\n".join(goal_table)
        + "\n"
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    p.add_argument("--scales", default="1,3,10", help="comma-separated replication factors")
    p.add_argument("--limit", type=int, help="lines per raw file (a slice, for smoke tests)")
    p.add_argument("--cores", default="1,2", help="core counts for the shards stage")
    p.add_argument(
        "--work", type=Path, help="where the scaled corpora and artifacts go (default: a temp dir)"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="scale")
    p.add_argument(
        "--stages", default=",".join(DATA_STAGES), help="data stages to run: a prefix of the default"
    )
    p.add_argument("--train-steps", type=int, default=0, help="also pretrain this many steps per scale")
    p.add_argument("--child", choices=(*DATA_STAGES, "pretrain"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    stages = tuple(args.stages.split(","))
    if stages != DATA_STAGES[: len(stages)]:
        p.error(f"--stages: each stage needs the ones before it; give a prefix of {','.join(DATA_STAGES)}")
    if args.train_steps and "shards" not in stages:
        p.error("--train-steps needs the shards stage")
    if args.child:
        result = run_stage(args.child, args.work, int(args.cores))
        print(json.dumps(result))
        return result
    cores = sorted({min(int(c), len(os.sched_getaffinity(0))) for c in args.cores.split(",")})
    load = (os.getloadavg()[0],)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        rows = [
            r
            for s in map(int, args.scales.split(","))
            for r in measure_scale(s, Path(tmp), args.limit, cores, args.train_steps, stages)
        ]
    load = (round(load[0], 1), round(os.getloadavg()[0], 1))
    goal_rows = goals(rows)
    data = {
        "rows": rows,
        "goals": goal_rows,
        "load_average": load,
        "cores": os.cpu_count(),
        "limit": args.limit,
    }
    save_results(args.name, data, markdown(rows, goal_rows, load), args.out)
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
