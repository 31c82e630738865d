"""Configs: every preset validates; bad fields are named; overrides set one field."""

import pytest

from schemas.config import PRESETS_DIR, ConfigError, load_config


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
def test_every_preset_loads(preset):
    cfg = load_config(preset)
    assert cfg.name == preset
    assert cfg.tokenizer.vocab_size > 0


def test_override_sets_one_field():
    cfg = load_config("tiny", ["sft.lr=1e-4", "shards.bucket_boundaries=[64, 512]"])
    assert cfg.sft.lr == 1e-4
    assert cfg.shards.bucket_boundaries == [64, 512]
    assert cfg.pretrain.lr == load_config("tiny").pretrain.lr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sft.learning_rate=1e-4", "sft.learning_rate: Extra inputs are not permitted"),
        ("pretrain.max_steps=-5", "pretrain.max_steps: Input should be greater than or equal to 1"),
        ("shards.bucket_boundaries=[512, 64]", "strictly increasing"),
        ("shards.max_len=1024", "last bucket boundary"),
        ("sft", "expected stage.field=value"),
        ("shards.seq_len=4", "shards.seq_len: Input should be greater than or equal to 16"),
    ],
)
def test_bad_field_is_named(override, message):
    with pytest.raises(ConfigError, match="tiny.yaml") as err:
        load_config("tiny", [override])
    assert message in str(err.value)


def test_unknown_key_lists_the_allowed_keys_and_format_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"sft.learning_rate: .*; allowed keys: .*batch_size, .*lr, "):
        load_config("tiny", ["sft.learning_rate=1e-4"])
    with pytest.raises(ConfigError, match=r"corpus.sources.0.splt: .*allowed keys: fields, format, "):
        load_config("tiny", ["corpus.sources=[{task: qa, path: data/raw/qa.jsonl, splt: train}]"])
    with pytest.raises(ConfigError, match=r"allowed keys: corpus, dpo, encoder, "):
        load_config("tiny", ["sftt.lr=1"])
    # `split` on a .txt file was silently ignored; `text_unit` on JSONL too
    for source, key, fmt in [
        ("{task: pretrain, path: data/raw/a.txt, split: train}", "split", "text"),
        ("{task: pretrain, path: data/raw/p.jsonl.gz, text_unit: paragraph}", "text_unit", "jsonl"),
        ("{task: qa, path: x, format: parquet, revision: abc}", "revision", "parquet"),
    ]:
        with pytest.raises(
            ConfigError, match=rf"key `{key}` does not apply to \S+ \(format {fmt}\); only to"
        ):
            load_config("tiny", [f"corpus.sources=[{source}]"])
    # a folder's format is known once it is listed: refused when the corpus stage reads it
    from tasks.corpus_read import SourceError, resolve_format

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("text")
    cfg = load_config("tiny", [f"corpus.sources=[{{task: pretrain, path: {tmp_path}/docs, split: train}}]"])
    with pytest.raises(SourceError, match=r"docs': key `split` does not apply to .*docs \(format text\)"):
        resolve_format(cfg.corpus.sources[0])


def test_user_config_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ncorpus: {sources: [{task: qa, path: data/raw/qa.jsonl}]}\nsft: {lr: 0}\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: sft.lr: Input should be greater than 0"):
        load_config(str(path))


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="presets: .*tiny"):
        load_config("nope")


def test_yaml_alias_bombs_are_refused_and_errors_quote_little(tmp_path):
    bomb = (
        "["
        + ",".join(
            ["&a [x,x,x,x,x,x,x,x,x]"]
            + [
                f"&{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]"
                for p, c in zip("abcdefgh", "bcdefghi", strict=True)
            ]
        )
        + "]"
    )
    with pytest.raises(ConfigError, match=r"aliases \(\*name\) expand it to 490329055 values") as err:
        load_config("tiny", [f"corpus.sources={bomb}"])
    assert len(str(err.value)) < 1000
    path = tmp_path / "mine.yaml"
    path.write_text(f"name: mine\ncorpus: {{sources: [{{task: qa, path: data/raw/qa.jsonl}}]}}\nx: {bomb}\n")
    with pytest.raises(ConfigError, match="mine.yaml: not valid YAML: aliases"):
        load_config(str(path))
    path.write_text(
        "name: mine\ncorpus: {sources: [&qa {task: qa, path: data/raw/qa.jsonl}, *qa]}\nx: &c [*c]\n"
    )
    with pytest.raises(ConfigError, match="refers to the collection that holds it"):
        load_config(str(path))
    with pytest.raises(ConfigError, match=r"override 'sft.lr=\[1': not valid YAML"):
        load_config("tiny", ["sft.lr=[1"])
    with pytest.raises(ConfigError, match=r"sft.lr: .*\(got 'xxxx.*\.\.\. \(10002 chars\)\)") as err:
        load_config("tiny", ["sft.lr=" + "x" * 10_000])
    assert len(str(err.value)) < 1000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "pretrain.model.num_heads=3",
            "pretrain.model: Value error, num_heads (3) must divide hidden_size (128)",
        ),
        ("sft.lr=[1", "override 'sft.lr=[1': not valid YAML"),
    ],
)
def test_cli_config_errors_are_one_line_without_traceback(override, message, capsys):
    from cli.main import main

    assert main(["plan", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmpipe: error: ") and message in err and "Traceback" not in err
    with pytest.raises(ConfigError):
        main(["plan", "--set", override, "--debug"])  # the traceback, on request
