"""Corpus stage throughput against a plain read of the same files, measured in one run.

    python -m benchmarks.corpus            # the embedded corpus (data/raw), 3 repeats
    python -m benchmarks.corpus --limit 50 # the first 50 lines of each file
    python -m benchmarks.corpus --scale 10 --repeats 1   # 10x the corpus (benchmarks/scale.py)

Baselines: `pyarrow.json.read_json` and `datasets.load_dataset("json")` on the same JSONL files
(parse only: no cleaning, no dedup, no rejects). The stage also runs with its pass-one jobs on
`--workers` processes and threads (as `corpus.runner: dask` and `threads` run them, without
Prefect's per-task overhead), against the serial build of the same run. Writes
benchmarks/results/corpus.json and .md.
"""

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks import common
from benchmarks.common import RESULTS, save_results, timing_markdown
from benchmarks.scale import Tokenising, scaled_config
from schemas.config import PROJECT_ROOT, load_config
from schemas.corpus import CorpusConfig
from tasks import corpus, corpus_chunks
from tasks.jobs import serial


def timed(fn, repeats: int) -> float:
    """Median wall seconds of `repeats` calls."""
    return statistics.median(common.timed(fn, repeats)[0])


def sources(work: Path, limit: int | None, scale: int = 1) -> CorpusConfig:
    """The tiny preset's corpus section, its files cut to `limit` lines when asked, or
    replicated `scale` times (benchmarks/scale.py)."""
    cfg = load_config("tiny").corpus
    if limit is None and scale == 1:
        return cfg
    # The cut files live in the benchmark's own temp folder: let the corpus stage read them.
    roots = os.environ.get("LMPIPE_DATA_ROOTS", "")
    os.environ["LMPIPE_DATA_ROOTS"] = os.pathsep.join(filter(None, [roots, str(work)]))
    if scale > 1:
        return scaled_config(work / "raw", scale, limit).corpus
    cut = []
    for src in cfg.sources:
        path = work / Path(src.path).name
        with open(PROJECT_ROOT / src.path, encoding="utf-8") as f:
            path.write_text("".join(line for _, line in zip(range(limit), f, strict=False)), encoding="utf-8")
        cut.append(src.model_copy(update={"path": str(path)}))
    return cfg.model_copy(update={"sources": cut})


def measure(cfg: CorpusConfig, work: Path, repeats: int, workers: int = 2) -> dict:
    import datasets
    import pyarrow.json as pj

    files = [str(PROJECT_ROOT / s.path) if not Path(s.path).is_absolute() else s.path for s in cfg.sources]
    n = 0

    def build(c: CorpusConfig, map_chunks=serial):
        nonlocal n
        out = Path(tempfile.mkdtemp(dir=work))
        n = corpus.build(c, {}, out, map_chunks)["read"]
        shutil.rmtree(out)

    def hf_read():
        cache = tempfile.mkdtemp(dir=work)
        for f in files:
            datasets.load_dataset("json", data_files=f, split="train", cache_dir=cache)

    plain = cfg.model_copy(update={"near_dup_threshold": None, "decontam_ngram": None})
    seconds = {
        "pyarrow_read_json": timed(lambda: [pj.read_json(f) for f in files], repeats),
        "datasets_load_json": timed(hf_read, repeats),
        "corpus_build_no_dedup": timed(lambda: build(plain), repeats),
        "corpus_build": timed(lambda: build(cfg), repeats),
        # a fresh pool per build: its start-up (spawned processes import the stage) is part of it
        f"corpus_build_{workers}_processes": timed(
            lambda: build(cfg, Tokenising(workers, processes=True).map_chunks), repeats
        ),
        f"corpus_build_{workers}_threads": timed(lambda: build(cfg, Tokenising(workers).map_chunks), repeats),
    }
    jobs = len(corpus_chunks.plan(cfg, work))
    return {
        "records": n,
        "files": len(files),
        "jobs": jobs,
        "workers": workers,
        "repeats": repeats,
        "median_s": seconds,
    }


def report(result: dict) -> tuple[dict, str]:
    s, w = result["median_s"], result["workers"]
    ratios = {
        "build / pyarrow read": s["corpus_build"] / s["pyarrow_read_json"],
        "build / datasets read": s["corpus_build"] / s["datasets_load_json"],
        "build without dedup+decontam / pyarrow read": s["corpus_build_no_dedup"] / s["pyarrow_read_json"],
        "near-dup + decontam share of build": 1 - s["corpus_build_no_dedup"] / s["corpus_build"],
        f"build / build on {w} processes": s["corpus_build"] / s[f"corpus_build_{w}_processes"],
        f"build / build on {w} threads": s["corpus_build"] / s[f"corpus_build_{w}_threads"],
    }
    result["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    result["records_per_s"] = {k: round(result["records"] / v) for k, v in s.items()}
    intro = (
        f"{result['records']} records in {result['files']} files ({result['jobs']} pass-one jobs), "
        f"median of {result['repeats']} runs, one machine, one run."
    )
    md = timing_markdown("corpus benchmark", intro, s, "records/s", result["records_per_s"], result["ratios"])
    return result, md


def main(
    limit: int | None = None, repeats: int = 3, out: Path = RESULTS, scale: int = 1, workers: int = 2
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result, md = report(measure(sources(work, limit, scale), work, repeats, workers))
    save_results("corpus", result, md, out)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="lines per file (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=int, default=1, help="replicas of the corpus (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="processes / threads for pass one")
    args = parser.parse_args()
    main(args.limit, args.repeats, scale=args.scale, workers=args.workers)
