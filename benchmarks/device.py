"""Checks for a lent GPU machine, in one short run: what CPU tests cannot show.

    python -m benchmarks.device --artifacts DIR            # DIR: corpus/, tokenizer/, shards/
    python -m benchmarks.device --artifacts DIR --quick    # a CPU smoke of the same script
    python -m benchmarks.device --mfu [--dry-run]          # MFU: trainer vs bare loop (benchmarks.mfu)

DIR holds the corpus, tokenizer and shards artifacts of a default run (`lmpipe run`), so the
GPU figures compare with the CPU ones of the same data. It measures:

- pretrain on the default config, bf16 autocast (`precision: auto`) and float32: time, losses;
- resume on the GPU: a run stopped after step 60 (resume state at step 50) and restarted ends
  where the uninterrupted run ends (the CUDA RNG state goes through the resume state too);
- the torchrun launch with NCCL (one process per GPU; a single GPU gives a group of one), and
  the clear refusal of `processes` > GPUs;
- SFT on the GPU-pretrained model (default config): losses and generation metrics;
- (with `--mfu`, alone) tokens/s, MFU and peak memory of the stage's trainer against a bare
  compiled loop, FlexAttention beside the dense mask, for the gpu preset at seq 2048 in bf16;
- tokenisation (the shards stage's chunk jobs, on threads and on processes) on 1, 2, 4 and 8
  cores (distinct physical cores first) of a replicated corpus.

`--only a,b` runs some checks (names as in the results). Writes benchmarks/results/device.{json,md}
(and device-partial.json after each check). Measured on an H200: docs/scale.md, section 5.
"""

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks import mfu
from benchmarks.common import RESULTS, save_results, spread_cpus
from benchmarks.scale import stand_in_manifest
from schemas.config import PROJECT_ROOT, load_config


def train(stage: str, cfg, inputs: dict[str, Path], out: Path) -> dict:
    """Build one training stage in this process; its metrics and wall time."""
    import importlib

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    metrics = importlib.import_module(f"tasks.{stage}").build(cfg, inputs, out)
    return {**metrics, "wall_s": round(time.perf_counter() - start, 2)}


def resumed(cfg, inputs: dict[str, Path], out: Path) -> dict:
    """Stop pretraining a few steps after its first resume state (200 steps: state at 50, stop
    after 60), then run again: it resumes from the state."""
    every = cfg.max_steps // 4
    cfg = cfg.model_copy(update={"checkpoint_every": every})
    os.environ["LMPIPE_CRASH_AT"] = f"pretrain:step-{every + max(1, cfg.max_steps // 20)}:raise"
    stopped = "did not stop"
    try:
        train("pretrain", cfg, inputs, out)
    except RuntimeError as e:
        stopped = str(e)
    finally:
        del os.environ["LMPIPE_CRASH_AT"]
    left = sorted(p.name for p in (out / "resume").glob("step-*"))
    return {"stopped": stopped, "resume_state": left, **train("pretrain", cfg, inputs, out)}


def torchrun(cfg, inputs: dict[str, Path], out: Path) -> dict:
    """The stage as torchrun runs it (tasks.distributed): NCCL on CUDA, one process per GPU."""
    import torch

    n = max(1, torch.cuda.device_count())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
    cmd += ["-m", "tasks.distributed", "pretrain", cfg.model_dump_json()]
    cmd += [json.dumps({k: str(v) for k, v in inputs.items()}), str(out)]
    out.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=PROJECT_ROOT, check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return {**metrics, "processes": n, "wall_s": round(time.perf_counter() - start, 2)}


def too_many_processes(cfg, inputs: dict[str, Path], out: Path) -> str:
    import torch

    from tasks import distributed

    asked = cfg.model_copy(update={"processes": torch.cuda.device_count() + 1})
    try:
        distributed.launch("pretrain", asked, inputs, out)
    except ValueError as e:
        return str(e)
    return "not refused"


# --- tokenisation on several cores -------------------------------------------------------------


def replicate(corpus: Path, dst: Path, times: int) -> Path:
    """The corpus tables `times` over, replica r's ids suffixed `~r<r>` (the scale benchmark's
    ids; the text stays the same: tokenising costs the same, and shards do not deduplicate)."""
    dst.mkdir(parents=True)
    for path in corpus.glob("*.parquet"):
        table = pq.read_table(path)
        copies = [
            table.set_column(
                table.schema.get_field_index("id"),
                "id",
                pc.binary_join_element_wise(table["id"], f"~r{r}", ""),
            )
            for r in range(times)
        ]
        pq.write_table(pa.concat_tables(copies), dst / path.name)
    shutil.copy(corpus / "manifest.json", dst / "manifest.json")
    return dst


def tokenise_child(work: Path, cores: int, mode: str) -> None:
    """One shards build on `cores` cores (CPU affinity), its chunk jobs on as many threads (the
    flow's default thread pool) or worker processes (as a Dask cluster of processes runs them)."""
    from benchmarks.scale import Tokenising
    from tasks import shards

    os.sched_setaffinity(0, spread_cpus(cores))
    cfg = load_config(str(PROJECT_ROOT / "configs" / "tiny.yaml")).shards
    tokenise = Tokenising(cores, processes=mode == "processes")
    start = time.perf_counter()
    inputs = {"corpus": work / "corpus", "tokenizer": work / "tokenizer"}
    stats = shards.build(cfg, inputs, work / f"shards-{mode}-{cores}", map_chunks=tokenise.map_chunks)
    row = {
        "mode": mode,
        "cores": cores,
        "cpus": sorted(os.sched_getaffinity(0)),
        "tokenise_s": tokenise.seconds,
        "start_s": tokenise.start_seconds,
    }
    row |= {"build_s": round(time.perf_counter() - start, 2), "tokens": sum(stats["tokens"].values())}
    print(json.dumps(row))


def tokenising(artifacts: Path, work: Path, times: int, cores: list[int], repeats: int) -> dict:
    """Tokenisation time on each number of cores, with threads and with processes, `repeats`
    rounds (each round every mode and core count once, so drift hits all alike); the speedup of
    a run is over the one-core run of its round, and the summary takes the median per setting."""
    replicate(artifacts / "corpus", work / "corpus", times)
    shutil.copytree(artifacts / "tokenizer", work / "tokenizer")
    rows = []
    for round_ in range(repeats):
        for mode in ("threads", "processes"):
            for n in cores:
                rayon = str(n) if mode == "threads" else "1"
                env = {**os.environ, "RAYON_NUM_THREADS": rayon}
                cmd = [sys.executable, "-m", "benchmarks.device", "--tokenise-child", str(work), str(n), mode]
                done = subprocess.run(
                    cmd, cwd=PROJECT_ROOT, env=env, check=True, capture_output=True, text=True
                )
                rows.append({"round": round_, **json.loads(done.stdout.strip().splitlines()[-1])})
                shutil.rmtree(work / f"shards-{mode}-{n}")
    one = {(r["round"], r["mode"]): r["tokenise_s"] for r in rows if r["cores"] == 1}
    rows = [{**r, "speedup": round(one[r["round"], r["mode"]] / r["tokenise_s"], 2)} for r in rows]
    median = {
        f"{mode} {n}": statistics.median(r["speedup"] for r in rows if (r["mode"], r["cores"]) == (mode, n))
        for mode in ("threads", "processes")
        for n in cores
    }
    return {"runs": rows, "median speedup": median}


# --- the run -------------------------------------------------------------------------------------


def run(
    artifacts: Path,
    work: Path,
    quick: bool,
    out: Path,
    only: list[str] | None,
    scale: int,
    cores: list[int],
    repeats: int = 1,
) -> dict:
    """Every check in turn; the results so far are saved after each (a lease can run out)."""
    import torch

    cfg = load_config(str(PROJECT_ROOT / "configs" / "tiny.yaml"))
    pre, sft = cfg.pretrain, cfg.sft
    if quick:  # a smoke of every part on CPU
        pre = pre.model_copy(update={"max_steps": 12, "warmup_steps": 2, "eval_batches": 2})
        sft = sft.model_copy(
            update={"max_steps": 4, "eval_batches": 2, "eval_examples": 2, "eval_max_new_tokens": 4}
        )
    inputs = {name: artifacts / name for name in ("shards", "tokenizer")}
    fp32 = pre.model_copy(update={"precision": "float32"})
    checks = {
        "pretrain bf16": lambda: train("pretrain", pre, inputs, work / "pretrain"),
        "pretrain float32": lambda: train("pretrain", fp32, inputs, work / "fp32"),
        "pretrain resumed": lambda: resumed(pre, inputs, work / "resumed"),
        "pretrain torchrun": lambda: torchrun(pre, inputs, work / "torchrun"),
        "processes > GPUs": lambda: too_many_processes(pre, inputs, work / "refused"),
        "sft": lambda: sft_on(sft, inputs, work),
        "tokenise": lambda: tokenising(artifacts, work / "tok", scale, [1, 2] if quick else cores, repeats),
    }
    res: dict = {"device": mfu.gpu_name(), "torch": torch.__version__}
    for name, check in checks.items():
        if only and name not in only:
            continue
        res[name] = check()
        (out / "device-partial.json").write_text(json.dumps(res, indent=1))
    return res


def sft_on(cfg, inputs: dict[str, Path], work: Path) -> dict:
    """SFT of the bf16-pretrained model (given a manifest: SFT ties its resume state to it)."""
    stand_in_manifest("pretrain", work / "pretrain")
    return train("sft", cfg, {**inputs, "pretrain": work / "pretrain"}, work / "sft")


def markdown(res: dict) -> str:
    """The checks that ran, as tables (a check left out by --only is left out here too)."""
    keys = ("val_loss_before", "val_loss", "train_loss", "wall_s")
    lines = [f"# Device checks on {res['device']} (torch {res['torch']})", ""]
    runs = [
        k
        for k in ("pretrain bf16", "pretrain float32", "pretrain resumed", "pretrain torchrun", "sft")
        if k in res
    ]
    if runs:
        lines += ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {k} | " + " | ".join(str(res[k].get(c, "")) for c in keys) + " |" for k in runs]
    if "processes > GPUs" in res:
        lines += ["", f"processes > GPUs: {res['processes > GPUs']}"]
    if "tokenise" in res:
        lines += [
            "",
            "| round | chunk jobs on | cores | tokenise s | speedup | workers' start s | build s | tokens |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['round']} | {r['mode']} | {r['cores']} | {r['tokenise_s']} | {r['speedup']} | {r['start_s']} "
            f"| {r['build_s']} "
            f"| {r['tokens']} |"
            for r in res["tokenise"]["runs"]
        ]
        lines += ["", f"median speedup: {json.dumps(res['tokenise']['median speedup'])}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmpipe-device"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", help="comma-separated checks (default: all)")
    parser.add_argument("--tokenise-scale", type=int, default=5, help="corpus replicas to tokenise")
    parser.add_argument("--tokenise-cores", default="1,2,4,8", help="core counts to tokenise on")
    parser.add_argument("--tokenise-repeats", type=int, default=1, help="rounds of every core count")
    parser.add_argument("--tokenise-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--mfu", action="store_true", help="only the MFU check (benchmarks.mfu)")
    parser.add_argument("--dry-run", action="store_true", help="with --mfu: on CPU, a tiny model, seconds")
    parser.add_argument("--steps", type=int, default=30, help="with --mfu: timed steps per side")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.mfu:
        res = mfu.measure(args.dry_run, timed=args.steps)
        save_results("device-dry-run" if args.dry_run else "device", res, mfu.markdown(res), args.out)
        return None
    if args.tokenise_child:
        work, cores, mode = args.tokenise_child
        return tokenise_child(Path(work), int(cores), mode)
    shutil.rmtree(args.work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",") if args.only else None
    cores = [int(c) for c in args.tokenise_cores.split(",")]
    res = run(
        args.artifacts,
        args.work,
        args.quick,
        args.out,
        only,
        args.tokenise_scale,
        cores,
        args.tokenise_repeats,
    )
    save_results("device", res, markdown(res), args.out)


if __name__ == "__main__":
    main()
