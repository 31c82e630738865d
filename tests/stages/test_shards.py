"""Shards stage: templates, loss masks, packing layout, bucketing, and the shard contracts."""

import hashlib
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.config import load_config
from schemas.shards import IGNORE_INDEX, SCHEMAS, Curriculum
from schemas.tokens import token_id
from tasks import (
    corpus,
    curriculum,
    shard_checks,
    shard_chunks,
    shard_reading,
    shards,
    tokenizer,
    tokenizer_file,
)
from tasks.contracts import ContractError
from tasks.jobs import serial
from tests.conftest import tiny_config_data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    path = root / "c.yaml"
    import yaml

    data = tiny_config_data(root / "raw")
    data["shards"]["sft_packing"] = True
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(str(path))
    dirs = {name: root / name for name in ("corpus", "tokenizer", "shards")}
    for d in dirs.values():
        d.mkdir()
    corpus.build(cfg.corpus, {}, dirs["corpus"])
    tokenizer.build(cfg.tokenizer, {"corpus": dirs["corpus"]}, dirs["tokenizer"])
    inputs = {"corpus": dirs["corpus"], "tokenizer": dirs["tokenizer"]}
    stats = shards.build(cfg.shards, inputs, dirs["shards"])
    return cfg, inputs, dirs["shards"], stats


def test_sft_labels_cover_only_the_answer(built):
    cfg, inputs, out, _ = built
    tok = tokenizer_file.load(inputs["tokenizer"])
    rows = shard_reading.load(out, "sft", "train").to_pylist()
    row = next(r for r in rows if r["task"] == "translation" and r["format"] == "task")
    first = next(i for i, x in enumerate(row["labels"]) if x != IGNORE_INDEX)
    assert row["input_ids"][first - 1] == token_id("<to-fr>")
    assert row["input_ids"][0] == token_id("<bos>") and row["labels"][-1] == token_id("<eos>")
    source = tok.decode(row["input_ids"][1 : first - 1])
    target = tok.decode(row["labels"][first:-1])
    record = next(
        r for r in shards.read_split(inputs["corpus"], "translation", "train") if r["id"] == row["id"]
    )
    assert (source, target) == (record["source_text"], record["target_text"])


def test_control_text_in_user_fields_stays_text(built):
    _, inputs, _, _ = built
    tok = tokenizer_file.load(inputs["tokenizer"])
    ids = shards.encode_template(tok, ("<bos>", "{text}", "<eos>"), [{"text": "say <to-fr> <eos>"}])[0]
    assert ids[0] == token_id("<bos>") and ids[-1] == token_id("<eos>")
    assert all(i >= 11 for i in ids[1:-1])


def test_pretrain_rows_are_full_and_reset_positions(built):
    cfg, _, out, stats = built
    table = shard_reading.load(out, "pretrain", "train")
    for row in table.to_pylist():
        assert len(row["input_ids"]) == cfg.shards.seq_len == sum(row["doc_lens"])
        assert row["position_ids"][0] == 0
    assert stats["pretrain_train"]["tokens"] == sum(table["n_tokens"].to_pylist())
    assert 0.5 < stats["pretrain_train"]["fill_rate"] <= 1.0


def test_examples_are_sorted_into_buckets_and_never_split(built):
    cfg, _, out, stats = built
    for kind in ("sft", "dpo"):
        table = shard_reading.load(out, kind, "train")
        buckets, lengths = table["bucket"].to_pylist(), table["length"].to_pylist()
        assert buckets == sorted(buckets)
        assert all(n <= cfg.shards.bucket_boundaries[b] for n, b in zip(lengths, buckets, strict=True))
        s = stats[f"{kind}_train"]
        assert s["padding_bucketed@16"] < s["padding_random@16"]


def test_whole_split_tokenising_matches_the_chunked_stage(built):
    cfg, inputs, out, stats = built
    tok = tokenizer_file.load(inputs["tokenizer"])
    sft = shards.sft_examples(tok, inputs["corpus"], cfg.shards.sft_tasks, "validation")
    stored = {r["id"]: r["input_ids"] for r in shard_reading.load(out, "sft", "validation").to_pylist()}
    assert len(sft) == len(stored) + stats["sft_validation"]["rejected_too_long"]
    assert all(stored[ex["id"]] == ex["input_ids"] for ex in sft if ex["id"] in stored)
    pairs = shards.dpo_examples(tok, inputs["corpus"], "train")
    assert len(pairs) == stats["dpo_train"]["examples"] + stats["dpo_train"]["rejected_too_long"]


def test_packed_sft_rows_hold_every_example_whole(built):
    cfg, _, out, stats = built
    examples = {r["id"]: r for r in shard_reading.load(out, "sft", "train").to_pylist()}
    packed = shard_reading.load(out, "sft_packed", "train").to_pylist()
    seen = []
    for row in packed:
        start = 0
        for rid, n in zip(row["ids"], row["doc_lens"], strict=False):
            assert row["input_ids"][start : start + n] == examples[rid]["input_ids"]
            assert row["labels"][start : start + n] == examples[rid]["labels"]
            start += n
        seen += row["ids"]
    assert sorted(seen) == sorted(examples)
    s = stats["sft_packed_train"]
    assert s["padding"] < stats["sft_train"]["padding_random@16"] and s["rows"] == len(packed)
    scored_bos = {**packed[0], "labels": [packed[0]["input_ids"][0]] + packed[0]["labels"][1:]}
    problem = shard_checks.sft_packed_problem(scored_bos, cfg.shards.max_len)
    assert problem.startswith(f"example {packed[0]['ids'][0]}: token before the answer")


def test_contracts_pass_on_good_shards(built):
    cfg, inputs, out, stats = built
    before = sorted(p.name for p in out.rglob("*"))
    assert all(r.success for r in shards.validate(cfg.shards, inputs, out, stats))
    assert sorted(p.name for p in out.rglob("*")) == before  # the id check's files are gone


def test_token_id_out_of_range_is_stopped_with_the_record_named(built, tmp_path):
    cfg, inputs, out, stats = built
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in out.glob("*.arrow"):
        (bad / f.name).write_bytes(f.read_bytes())
    rows = shard_reading.load(bad, "sft", "train").to_pylist()
    victim = rows[3]["id"]
    rows[3]["input_ids"][1] = stats["vocab_size"] + 7
    for f in bad.glob("sft-train-*.arrow"):
        f.unlink()
    table = pa.Table.from_pylist(rows, schema=SCHEMAS["sft"])
    with (
        pa.OSFile(str(bad / "sft-train-00000.arrow"), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as w,
    ):
        w.write_table(table)
    with pytest.raises(ContractError, match=rf"(?s)shards/sft failed.*max_id.*id={victim}"):
        shards.validate(cfg.shards, inputs, bad, stats)


def test_an_example_in_two_shards_is_stopped_with_its_id(built, tmp_path):
    cfg, inputs, out, stats = built
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    first = sorted(bad.glob("sft-train-*.arrow"))[0]
    shutil.copy(first, bad / "sft-train-99999.arrow")  # the same rows again, in another shard
    victim = shard_reading.load(bad, "sft", "train")["id"][0].as_py()
    named = rf"id={re.escape(victim)}: 2 rows, in {first.name}, sft-train-99999.arrow"
    with pytest.raises(ContractError, match=rf"(?s)shards/sft-ids failed.*{named}"):
        shards.validate(cfg.shards, inputs, bad, stats)


def test_concat_baseline_keeps_every_token_but_splits_documents():
    docs = [[1] + [7] * n + [2] for n in (10, 3, 25, 6)]
    rows, stats = shards.pack_concat(docs, 16)
    assert stats["tokens"] == sum(map(len, docs)) == sum(r["n_tokens"] for r in rows)
    assert all(len(r["input_ids"]) == 16 == sum(r["doc_lens"]) for r in rows)
    bfd_rows, bfd = shards.pack_pretrain(docs, 16)
    assert bfd["tokens"] == stats["tokens"] and bfd["rows"] >= stats["rows"]


def test_auto_bucket_boundaries_follow_length_quantiles():
    assert shards.auto_boundaries([5, 9, 30, 31, 200], 2, 512) == [32, 512]
    bounds = shards.auto_boundaries(list(range(1, 1001)), 4, 1024)
    assert bounds == [256, 504, 752, 1024]


def test_shard_index_counts_rows_and_tokens(built):
    _, _, out, stats = built
    assert sorted(stats["rows"]) == sorted(p.name for p in out.glob("*.arrow"))
    for name, rows in stats["rows"].items():
        assert pa.ipc.open_file(pa.memory_map(str(out / name))).read_all().num_rows == rows
    total = sum(t for n, t in stats["tokens"].items() if n.startswith("sft-train"))
    assert total == stats["sft_train"]["tokens"]


def test_mixing_weights_repeat_or_thin_training_records_deterministically():
    rows = [{"id": f"r{i}", "weight": w} for i, w in enumerate([2.0] * 100 + [0.5] * 1000)]
    mixed = shards.weighted(rows)
    ids = [r["id"] for r in mixed]
    assert ids == [r["id"] for r in shards.weighted(rows)]
    assert sum(1 for r in mixed if r["weight"] == 2.0) == 200 and len(set(ids)) == len(ids)
    assert 400 < sum(1 for r in mixed if r["weight"] == 0.5) < 600


def rebuild(built, tmp_path, corpus_dir=None, **changes):
    """Build shards again from the fixture's corpus (or another) with changed shard settings."""
    cfg, inputs, _, _ = built
    out = tmp_path / "shards"
    out.mkdir(parents=True)
    inputs = {**inputs, "corpus": corpus_dir or inputs["corpus"]}
    section = cfg.shards.model_validate({**cfg.shards.model_dump(), "sft_packing": False, **changes})
    return out, shards.build(section, inputs, out)


def test_length_curriculum_reorders_the_same_training_rows_easy_to_hard(built, tmp_path):
    _, _, plain, _ = built
    out, stats = rebuild(built, tmp_path, curriculum={"by": "length"})
    assert shard_reading.load(out, "sft", "train")["length"].to_pylist() == sorted(
        shard_reading.load(plain, "sft", "train")["length"].to_pylist()
    )
    dpo = shard_reading.load(out, "dpo", "train").to_pylist()
    sizes = [len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in dpo]
    assert sizes == sorted(sizes)
    rows, before = (shard_reading.load(d, "pretrain", "train")["input_ids"].to_pylist() for d in (out, plain))
    assert rows != before and sorted(rows) == sorted(before)
    assert set(stats["curriculum"]) == {"by", "pretrain_train", "sft_train", "dpo_train"}
    quartiles = stats["curriculum"]["pretrain_train"]["difficulty_quartiles"]
    assert quartiles == sorted(quartiles) and quartiles[0] < quartiles[-1]


def test_column_curriculum_follows_a_corpus_score_and_names_bad_records(built, tmp_path):
    _, inputs, _, _ = built
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    for f in inputs["corpus"].glob("*.parquet"):
        table = pq.read_table(f)
        scores = [(hash_id(i) % 997) / 10 for i in table["id"].to_pylist()]
        pq.write_table(table.append_column("level", pa.array(scores)), corpus_dir / f.name)
    out, _ = rebuild(built, tmp_path, corpus_dir, curriculum={"by": "column", "column": "level"})
    for kind in ("sft", "dpo"):
        levels = [(hash_id(i) % 997) / 10 for i in shard_reading.load(out, kind, "train")["id"].to_pylist()]
        assert levels == sorted(levels)
    with pytest.raises(ValueError, match=r"curriculum column 'nope': record \S+ \(file .*line"):
        rebuild(built, tmp_path / "x", curriculum={"by": "column", "column": "nope"})


def hash_id(record_id: str) -> int:
    return int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16)


def test_rarity_puts_common_tokens_first():
    scores = curriculum.rarity([[5, 5, 5], [5, 9], [7]])
    assert curriculum.order(scores) == [0, 1, 2]
    with pytest.raises(ValueError, match="curriculum.column"):
        Curriculum(by="column")


def files_of(directory) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(directory.iterdir()) if f.is_file()}


def test_killed_build_reruns_only_missing_chunks_and_shards_and_matches(built, tmp_path, monkeypatch):
    """Killed while tokenising (chunks of 7), then while writing shards (chunks of 20): the
    rerun tokenises nothing, keeps finished shards, and equals the fixture's one-chunk build."""
    cfg, inputs, reference, _ = built
    section = cfg.shards.model_copy(update={"chunk_rows": 20})
    out = tmp_path / "staging"
    out.mkdir()
    small = shard_chunks.plan(cfg.shards.model_copy(update={"chunk_rows": 7}), inputs, out)
    monkeypatch.setenv("LMPIPE_CRASH_AT", f"shards:after_{small[5]['file']}:raise")
    with pytest.raises(RuntimeError, match="injected"):
        shards.build(cfg.shards.model_copy(update={"chunk_rows": 7}), inputs, out)
    assert len(list((out / shard_chunks.WORK).glob("tok-*.arrow"))) == 6
    monkeypatch.setenv("LMPIPE_CRASH_AT", "shards:after_pretrain-train-00001.arrow:raise")
    with pytest.raises(RuntimeError, match="injected"):
        shards.build(section, inputs, out)
    first_shard = (out / "pretrain-train-00000.arrow").stat()
    monkeypatch.delenv("LMPIPE_CRASH_AT")
    ran = []

    def recording(fn, jobs):
        ran.extend(j["file"] for j in jobs if not (out / shard_chunks.WORK / j["file"]).exists())
        return serial(fn, jobs)

    shards.build(section, inputs, out, recording)
    assert ran == []  # every chunk was finished by the killed runs
    again = (out / "pretrain-train-00000.arrow").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first_shard.st_ino, first_shard.st_mtime_ns)
    assert files_of(out) == files_of(reference)
    assert not (out / shard_chunks.WORK).exists()


def test_dask_and_thread_runners_build_the_same_bytes(built, tmp_path, prefect_harness):
    from flows.shards import parallel_build

    cfg, inputs, reference, _ = built
    for runner in ("threads", "dask"):
        out = tmp_path / runner
        out.mkdir()
        parallel_build(cfg.shards.model_copy(update={"runner": runner, "chunk_rows": 40}), inputs, out)
        assert files_of(out) == files_of(reference), runner


def test_chunk_jobs_run_on_an_existing_dask_cluster_with_the_same_bytes(built, tmp_path, prefect_harness):
    from distributed import LocalCluster

    from flows.shards import parallel_build

    cfg, inputs, reference, _ = built
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        at = {"runner": "dask", "dask_address": cluster.scheduler_address, "chunk_rows": 40}
        parallel_build(cfg.shards.model_copy(update=at), inputs, tmp_path)
        ran = cluster.scheduler.task_prefixes
    assert files_of(tmp_path) == files_of(reference)
    assert "tokenize_chunk" in ran, sorted(ran)  # the jobs ran on that cluster


def test_headline_figures_and_length_histogram_for_the_prefect_artifact(built):
    _, _, out, stats = built
    assert (out / shards.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats["fill_rate"] == stats["pretrain_train"]["fill_rate"]
    assert stats["padding_fraction_sft"] == stats["sft_train"]["padding_bucketed@16"]
    pieces = documents = 0
    for split in shards.SPLITS:
        for row in shard_reading.load(out, "pretrain", split).to_pylist():
            pieces += len(row["doc_lens"]) - (row["n_tokens"] < len(row["input_ids"]))  # minus padding
        documents += stats[f"pretrain_{split}"]["documents"]
    assert stats["split_documents"] == pieces - documents > 0
    assert stats["rejected_too_long"] == sum(1 for _ in (out / shards.REJECTS).open())


def test_a_kind_without_rows_names_the_corpus_tasks_it_needs(tmp_path):
    """A config with only pretraining data wrote empty sft shards, which crashed the checks
    (`No objects to concatenate`)."""
    cfg = load_config("tiny").shards
    empty = tmp_path / "sft-train-00000.arrow"
    shards.write_shards([], "sft", "train", tmp_path, cfg.rows_per_shard)
    assert empty.is_file() and pa.ipc.open_file(empty).read_all().num_rows == 0
    with pytest.raises(
        ContractError,
        match=r"shards/sft failed: its training split holds no rows: .* translation, summarization or qa",
    ):
        shard_checks.check(cfg, {"sft": [empty]}, 4096, tmp_path / "work")
