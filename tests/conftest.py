"""Shared fixtures: a tiny slice of the real corpus, a tiny config, one Prefect test harness."""

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

import flows  # noqa: F401  (offline + no-telemetry environment, before heavy imports)
from schemas.config import PROJECT_ROOT

# Tests are grouped in folders by what they prove; a test module uses another's fixtures and
# helpers by its plain name (`from test_sft import pretrained`), whichever folder holds it.
sys.path[:0] = [
    str(d) for d in sorted(Path(__file__).parent.iterdir()) if d.is_dir() and d.name.isidentifier()
]

RAW = PROJECT_ROOT / "data" / "raw"
# Tests write their raw data under the temp dir: allow it as a data root (tasks.plan.raw_path).
os.environ["LMPIPE_DATA_ROOTS"] = tempfile.gettempdir()
FILES = {
    "pretrain": "pretrain.jsonl",
    "translation": "translation_en_fr.jsonl",
    "summarization": "summarization.jsonl",
    "qa": "qa.jsonl",
    "preference": "preference.jsonl",
}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def head(name: str, n: int) -> list[dict]:
    with open(RAW / name, encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


def tiny_config_data(raw_dir: Path) -> dict:
    """A config small enough for seconds-long stages: short texts, a 1-layer model, few steps."""
    sources = []
    for task, name in FILES.items():
        records = head(name, 60)
        if task == "pretrain":  # keep documents short so the slice stays tiny
            records = [{**r, "text": r["text"][:1500]} for r in records]
        write_jsonl(raw_dir / name, records)
        sources.append({"task": task, "path": str(raw_dir / name)})
    model = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
    train = {"batch_size": 4, "warmup_steps": 1, "eval_batches": 2, "log_every": 2}
    return {
        "name": "t",
        "corpus": {"sources": sources, "validation_fraction": 0.15},
        "tokenizer": {"vocab_size": 400},
        "shards": {
            "seq_len": 64,
            "max_len": 160,
            "bucket_boundaries": [32, 64, 96, 160],
            "rows_per_shard": 64,
        },
        "pretrain": {**train, "max_steps": 8, "lr": 1e-2, "model": model},
        "encoder": {**train, "max_steps": 8, "lr": 1e-2, "model": model},
        # a few steps: too few to learn, so task metrics only warn (require_gain: false)
        "sft": {**train, "max_steps": 6, "lr": 5e-3, "require_gain": False},
        "dpo": {**train, "max_steps": 6, "lr": 2e-2, "require_gain": False},
        "reward": {**train, "max_steps": 4, "lr": 2e-2, "eval_pairs": 16, "require_gain": False},
        "rl": {
            **train,
            "max_steps": 2,
            "num_generations": 2,
            "max_completion_length": 8,
            "eval_prompts": 4,
            "eval_max_new_tokens": 8,
        },
    }


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-test.yaml"
    path.write_text(yaml.safe_dump(tiny_config_data(tmp_path / "raw")))
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def no_openlineage_config(monkeypatch, tmp_path):
    """OpenLineage at its default (a file under the artifact home): no OPENLINEAGE_* variables,
    no openlineage.yml in the cwd or ~/.openlineage."""
    for key in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture(scope="session")
def encoder_stack(tmp_path_factory):
    """(config, inputs) with corpus, tokenizer, shards, a masked-LM encoder, a decoder and its
    SFT model, all tiny and built once for the encoder-side tests (heads, seq2seq, inference)."""
    from test_training import publish_for_test, with_manifest

    from schemas.config import PipelineConfig
    from tasks import encoder, pretrain, sft

    root = tmp_path_factory.mktemp("encoder-stack")
    cfg = PipelineConfig.model_validate(tiny_config_data(root / "raw"))
    c = publish_for_test("corpus", cfg, {}, root / "corpus")
    t = publish_for_test("tokenizer", cfg, {"corpus": c}, root / "tokenizer")
    s = publish_for_test("shards", cfg, {"corpus": c, "tokenizer": t}, root / "shards")
    inputs = {"corpus": c, "tokenizer": t, "shards": s}
    for stage, build, extra in (
        ("encoder", encoder.build, {}),
        ("pretrain", pretrain.build, {}),
        ("sft", sft.build, {"eval_examples": 2, "eval_max_new_tokens": 4, "max_steps": 4}),
    ):
        (root / stage).mkdir()
        build(cfg.section(stage).model_copy(update=extra), inputs, root / stage)
        inputs[stage] = with_manifest(stage, root / stage)
    return cfg, inputs


@pytest.fixture(scope="session")
def trained_heads(encoder_stack, tmp_path_factory):
    """(heads config, inputs, output dir, stats): all four heads trained a few steps."""
    from tasks import heads

    cfg, inputs = encoder_stack
    out = tmp_path_factory.mktemp("heads")
    hcfg = cfg.heads.model_copy(
        update={"max_steps": 4, "batch_size": 8, "max_len": 160, "require_baseline": False}
    )
    return hcfg, inputs, out, heads.build(hcfg, inputs, out)
