"""Smoke test: the noise benchmark compares SFT runs from one checkpoint and reports ratios."""

from test_sft import pretrained, sft_cfg  # noqa: F401  (module fixture)
from test_training import data  # noqa: F401  (module fixture)

from benchmarks import noise as bench
from schemas.training import NoiseConfig


def test_noise_benchmark_compares_settings(data, pretrained):  # noqa: F811
    cfg, inputs = data
    settings = {"none": NoiseConfig(), "mask 30%": NoiseConfig(fraction=0.3, replace_with="mask")}
    rows = bench.compare(
        sft_cfg(cfg, max_steps=3, eval_examples=2, eval_max_new_tokens=4),
        {**inputs, "pretrain": pretrained},
        settings,
    )
    assert [r["noise"] for r in rows] == ["none", "mask 30%"]
    assert rows[0]["val loss ratio"] == 1 and rows[0]["realized fraction"] == 0
    assert abs(rows[1]["realized fraction"] - 0.3) < 0.02
    assert rows[1]["val loss"] != rows[0]["val loss"]  # same seed and data: only the noise differs
