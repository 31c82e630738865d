"""Hostile input: planted pickles never run, paths cannot escape, control text stays text."""

import pickle
from pathlib import Path

import pytest
import torch
from test_artifacts import publish_dummy

from schemas.config import PROJECT_ROOT
from schemas.corpus import Source
from schemas.training import ModelConfig
from tasks import artifacts, training
from tasks.corpus_read import source_files
from tasks.plan import file_ref, raw_path


class Canary:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def plant(path: Path, canary: Path) -> None:
    path.write_bytes(pickle.dumps(Canary(canary)))


def test_planted_file_makes_the_artifact_unusable(tmp_path):
    home = artifacts.Home.resolve(tmp_path / "home")
    path = publish_dummy(home)
    assert artifacts.check_files(path) == []
    plant(path / "optimizer.pt", tmp_path / "canary")
    problems = artifacts.check_files(path)
    assert len(problems) == 1 and "optimizer.pt: not listed in the manifest" in problems[0]
    assert not (tmp_path / "canary").exists()


def test_checkpoint_loading_never_unpickles(tmp_path):
    from transformers import AutoModelForCausalLM

    model = training.new_decoder(
        ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), 50, 32
    )
    model.save_pretrained(tmp_path)
    canary = tmp_path / "canary"
    plant(tmp_path / "pytorch_model.bin", canary)
    plant(tmp_path / "training_args.bin", canary)
    AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True)
    assert not canary.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert not canary.exists()


@pytest.mark.parametrize("path", ["/etc/passwd", "data/raw/../../../etc/passwd", "../outside.jsonl"])
def test_source_paths_cannot_escape_the_data_roots(path, monkeypatch):
    monkeypatch.setenv("LMPIPE_DATA_ROOTS", "")
    with pytest.raises(PermissionError, match="outside the allowed data roots"):
        raw_path(path)


def test_symlink_out_of_the_project_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LMPIPE_DATA_ROOTS", "")
    link = PROJECT_ROOT / "data" / "raw" / f"link-{tmp_path.name}.jsonl"
    (tmp_path / "secret.jsonl").write_text("{}\n")
    link.symlink_to(tmp_path / "secret.jsonl")
    try:
        with pytest.raises(PermissionError, match="secret.jsonl"):
            raw_path(str(link.relative_to(PROJECT_ROOT)))
        monkeypatch.setenv("LMPIPE_DATA_ROOTS", str(tmp_path))  # explicitly allowed
        assert raw_path(str(link.relative_to(PROJECT_ROOT))) == link
    finally:
        link.unlink()


@pytest.mark.parametrize("kind", ["folder", "save_to_disk"])
def test_symlink_inside_a_folder_source_leaving_the_roots_is_refused(kind, tmp_path, monkeypatch):
    root, secret = tmp_path / "root", tmp_path / "secret.jsonl"
    folder = root / "src"
    folder.mkdir(parents=True)
    secret.write_text('{"id": "s", "text": "secret"}\n')
    (folder / "a.jsonl").write_text('{"id": "a", "text": "fine"}\n')
    if kind == "save_to_disk":
        (folder / "state.json").write_text("{}")
    (folder / "b.jsonl").symlink_to(secret)
    monkeypatch.setenv("LMPIPE_DATA_ROOTS", str(root))
    src = Source(task="pretrain", path=str(folder), format="disk" if kind == "save_to_disk" else "auto")
    for refuse in (lambda: file_ref(str(folder), "corpus source"), lambda: source_files(src)):
        with pytest.raises(PermissionError, match=r"b\.jsonl resolves to .*secret\.jsonl, outside"):
            refuse()
    monkeypatch.setenv("LMPIPE_DATA_ROOTS", str(tmp_path))  # the secret's folder allowed: read
    assert file_ref(str(folder), "corpus source").fingerprint
