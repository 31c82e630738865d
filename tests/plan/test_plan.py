"""Plan: fingerprints follow content and config, never location; runtime fields rebuild nothing."""

import shutil

from schemas.config import load_config
from tasks import artifacts
from tasks.plan import plan_pipeline


def test_fingerprints_ignore_location_and_follow_content(tmp_path, tiny_config, monkeypatch):
    cfg = load_config(str(tiny_config))
    a = [p.fingerprint for p in plan_pipeline(cfg, artifacts.Home.resolve(tmp_path / "h1"))]
    b = [p.fingerprint for p in plan_pipeline(cfg, artifacts.Home.resolve(tmp_path / "h2"))]
    assert a == b
    moved = tmp_path / "moved"
    shutil.copytree(tiny_config.parent / "raw", moved)
    text = tiny_config.read_text().replace(str(tiny_config.parent / "raw"), str(moved))
    tiny_config.write_text(text)
    assert [
        p.fingerprint for p in plan_pipeline(load_config(str(tiny_config)), artifacts.Home.resolve(tmp_path))
    ] == a
    with open(moved / "qa.jsonl", "a") as f:
        f.write('{"id": "new", "context": "c", "question": "q", "answer": "a"}\n')
    c = [
        p.fingerprint for p in plan_pipeline(load_config(str(tiny_config)), artifacts.Home.resolve(tmp_path))
    ]
    assert all(x != y for x, y in zip(a, c, strict=True))
    d = [
        p.fingerprint
        for p in plan_pipeline(
            load_config(str(tiny_config), ["sft.lr=0.5"]), artifacts.Home.resolve(tmp_path)
        )
    ]
    assert d[:4] == c[:4] and d[4] != c[4] and d[5] != c[5]
    e = [
        p.fingerprint
        for p in plan_pipeline(
            load_config(str(tiny_config), ["sft.log_every=3"]), artifacts.Home.resolve(tmp_path)
        )
    ]
    assert e == c  # runtime-only fields never rebuild anything
