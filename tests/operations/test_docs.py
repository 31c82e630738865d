"""The README stays a short front door whose config, map and links are true, and the config
reference says what the schemas say."""

import json
import re
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from schemas import reference
from schemas.config import PROJECT_ROOT, PipelineConfig
from tasks import corpus

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def block(title: str, lang: str) -> str:
    """The first fenced `lang` block of the README's section `title`."""
    section = README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_readme_is_short():
    assert len(README.splitlines()) <= 250


def test_map_names_every_top_level_folder_and_nothing_else():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    folders = {line.split("/")[0] + "/" for line in tracked.stdout.splitlines() if "/" in line}
    mapped = {line.split()[0] for line in block("Map", "").splitlines() if line[:1].strip()}
    assert mapped == folders


def test_every_doc_is_linked_and_every_link_exists():
    linked = set(re.findall(r"`(docs/[\w.-]+\.md)`", README))
    present = {f"docs/{p.name}" for p in (PROJECT_ROOT / "docs").glob("*.md")}
    assert linked == present


def test_bring_your_own_data_config_reads_files_of_those_shapes(tmp_path):
    """The README's config, pointed at small files in the shapes it names, builds a corpus with
    every task and loses no record."""
    data = yaml.safe_load(block("Bring your own data", "yaml"))
    PipelineConfig.model_validate(data)
    root = tmp_path / "data" / "mine"
    write_sources(root)
    for source in data["corpus"]["sources"]:
        source["path"] = str(tmp_path / source["path"])
    cfg = PipelineConfig.model_validate(data).corpus.model_copy(update={"near_dup_threshold": None})
    out = tmp_path / "out"
    out.mkdir()
    stats = corpus.build(cfg, {}, out)
    rejects = (out / "rejects.jsonl").read_text().splitlines()
    assert stats["read"] == stats["kept"] + len(rejects)
    assert {p.stem for p in out.glob("*.parquet")} >= {
        "pretrain",
        "translation",
        "summarization",
        "qa",
        "preference",
    }
    assert stats["kept"] >= 12, rejects


def write_sources(root):
    (root / "books").mkdir(parents=True)
    for i in range(2):
        paragraphs = [f"Book {i} paragraph {j}: the river ran past mill number {j} and on." for j in range(3)]
        (root / "books" / f"book{i}.txt").write_text("\n\n".join(paragraphs))
    pairs = [{"translation": {"en": f"Open file {i}", "fr": f"Ouvrir le fichier {i}"}} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(pairs), root / "opus-en-fr.parquet")
    news = [
        {
            "id": f"n{i}",
            "article": f"Story {i}: the council met and voted on bridge {i}.",
            "highlights": f"Bridge {i} vote.",
        }
        for i in range(2)
    ]
    squad = [
        {
            "id": f"q{i}",
            "context": f"The tower was built in {1880 + i}.",
            "question": "When?",
            "answers": {"text": [str(1880 + i)], "answer_start": [23]},
        }
        for i in range(2)
    ]
    chat = [
        {
            "prompt_id": f"p{i}",
            "prompt": f"Name a colour {i}.",
            "chosen": [
                {"role": "user", "content": f"Name a colour {i}."},
                {"role": "assistant", "content": "Blue."},
            ],
            "rejected": [
                {"role": "user", "content": f"Name a colour {i}."},
                {"role": "assistant", "content": "Seven."},
            ],
        }
        for i in range(2)
    ]
    for name, rows in [("cnn_dailymail", news), ("squad", squad), ("ultrafeedback", chat)]:
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_config_reference_is_what_the_schemas_say():
    assert reference.DOC.read_text(encoding="utf-8") == reference.render(), "run: python -m schemas.reference"


def test_every_config_field_has_a_description():
    """docs/config.md tells a user what each field does: every field reachable from the pipeline
    config, sections and nested models included, carries a `Field(description=...)`."""
    missing = [
        path for path, field in reference.fields(PipelineConfig) if not (field.description or "").strip()
    ]
    assert not missing, f"fields without Field(description=...): {missing}"
