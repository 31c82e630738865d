"""Smoke tests: the corpus and tokenizer benchmarks run on a small slice and write results."""

import json

from benchmarks import corpus as corpus_bench
from benchmarks import tokenizer as tokenizer_bench


def test_corpus_benchmark_runs_on_a_slice(tmp_path):
    result = corpus_bench.main(limit=20, repeats=1, out=tmp_path)
    assert result["records"] == 100 and result["ratios"]["build / pyarrow read"] > 0
    assert result["ratios"]["build / build on 2 processes"] > 0 and result["jobs"] == 5
    assert json.loads((tmp_path / "corpus.json").read_text())["ratios"] == result["ratios"]
    assert "build / pyarrow read" in (tmp_path / "corpus.md").read_text()


def test_tokenizer_benchmark_runs_on_a_slice(tmp_path):
    result = tokenizer_bench.main(limit=20, repeats=1, out=tmp_path, vocab_size=400)
    assert result["tokens"] > 0 and set(result["ratios"]) == {
        "stage build / bare BPE training",
        "safe encode / default encode (time)",
        "AutoTokenizer / safe encode (time)",
    }
    assert (tmp_path / "tokenizer.md").is_file()
