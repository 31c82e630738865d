"""Corpus stage throughput against a plain read of the same files, measured in one run.

    python -m benchmarks.corpus            # the embedded corpus (data/raw), 3 repeats
    python -m benchmarks.corpus --limit 50 # the first 50 lines of each file

Baselines: `pyarrow.json.read_json` and `datasets.load_dataset("json")` on the same JSONL files
(parse only: no cleaning, no dedup, no rejects). Writes benchmarks/results/corpus.json and .md.
"""

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from benchmarks import common
from benchmarks.common import RESULTS, save_results, timing_markdown
from schemas.config import PROJECT_ROOT, load_config
from schemas.corpus import CorpusConfig
from tasks import corpus


def timed(fn, repeats: int) -> float:
    """Median wall seconds of `repeats` calls."""
    return statistics.median(common.timed(fn, repeats)[0])


def sources(work: Path, limit: int | None) -> CorpusConfig:
    """The tiny preset's corpus section, its files cut to `limit` lines when asked."""
    cfg = load_config("tiny").corpus
    if limit is None:
        return cfg
    # The cut files live in the benchmark's own temp folder: let the corpus stage read them.
    roots = os.environ.get("LMPIPE_DATA_ROOTS", "")
    os.environ["LMPIPE_DATA_ROOTS"] = os.pathsep.join(filter(None, [roots, str(work)]))
    cut = []
    for src in cfg.sources:
        path = work / Path(src.path).name
        with open(PROJECT_ROOT / src.path, encoding="utf-8") as f:
            path.write_text("".join(line for _, line in zip(range(limit), f, strict=False)), encoding="utf-8")
        cut.append(src.model_copy(update={"path": str(path)}))
    return cfg.model_copy(update={"sources": cut})


def measure(cfg: CorpusConfig, work: Path, repeats: int) -> dict:
    import datasets
    import pyarrow.json as pj

    files = [str(PROJECT_ROOT / s.path) if not Path(s.path).is_absolute() else s.path for s in cfg.sources]
    n = 0

    def build(c: CorpusConfig):
        nonlocal n
        out = Path(tempfile.mkdtemp(dir=work))
        n = corpus.build(c, {}, out)["read"]

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
    }
    return {"records": n, "files": len(files), "repeats": repeats, "median_s": seconds}


def report(result: dict) -> tuple[dict, str]:
    s = result["median_s"]
    ratios = {
        "build / pyarrow read": s["corpus_build"] / s["pyarrow_read_json"],
        "build / datasets read": s["corpus_build"] / s["datasets_load_json"],
        "build without dedup+decontam / pyarrow read": s["corpus_build_no_dedup"] / s["pyarrow_read_json"],
        "near-dup + decontam share of build": 1 - s["corpus_build_no_dedup"] / s["corpus_build"],
    }
    result["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    result["records_per_s"] = {k: round(result["records"] / v) for k, v in s.items()}
    intro = (
        f"{result['records']} records in {result['files']} files, "
        f"median of {result['repeats']} runs, one machine, one run."
    )
    md = timing_markdown("corpus benchmark", intro, s, "records/s", result["records_per_s"], result["ratios"])
    return result, md


def main(limit: int | None = None, repeats: int = 3, out: Path = RESULTS) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result, md = report(measure(sources(work, limit), work, repeats))
    save_results("corpus", result, md, out)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="lines per file (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.limit, args.repeats)
