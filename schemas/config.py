"""The pipeline config: one YAML file with a section per stage, validated strictly.

`load_config("tiny")` reads `configs/tiny.yaml`; a path reads that file. Overrides look like
`sft.lr=1e-4` (the value is parsed as YAML: numbers, booleans, lists). Errors name the file
and the field:

    ConfigError: configs/mine.yaml: sft.lr: Input should be greater than 0 (got -1)
"""

import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError

from schemas.base import StrictModel
from schemas.corpus import CorpusConfig
from schemas.dpo import DpoConfig
from schemas.encoder import EncoderConfig
from schemas.heads import HeadsConfig
from schemas.pretrain import PretrainConfig
from schemas.reward import RewardConfig
from schemas.rl import RlConfig
from schemas.seq2seq import Seq2SeqConfig
from schemas.sft import SftConfig
from schemas.shards import ShardsConfig
from schemas.tokenizer import TokenizerConfig
from schemas.tracking import TrackingConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PRESETS_DIR = PROJECT_ROOT / "configs"


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


class PipelineConfig(StrictModel):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="The run's name: every artifact directory is `<name>-<fingerprint>`. "
        "Letters, digits, `_`, `.` and `-`, at most 64 characters.",
    )
    corpus: CorpusConfig = Field(
        description="Reads the raw sources, maps each record to its task's canonical fields, "
        "cleans, deduplicates and decontaminates them, and splits train from validation. "
        "Every dropped record is written to `rejects.jsonl` with a reason."
    )
    tokenizer: TokenizerConfig = Field(
        default_factory=TokenizerConfig,
        description="Trains a byte-level BPE tokenizer on a sample of the corpus, or adopts an "
        "existing `tokenizer.json` pinned by its sha256.",
    )
    shards: ShardsConfig = Field(
        default_factory=ShardsConfig,
        description="Tokenises the corpus into Arrow shards: packed rows for pretraining, "
        "length-bucketed examples for SFT (task-token and instruct formats) and DPO pairs.",
    )
    pretrain: PretrainConfig = Field(
        default_factory=PretrainConfig,
        description="Trains a small decoder from random weights on the packed pretraining rows "
        "(next-token prediction, or masked LM with `objective: masked`).",
    )
    sft: SftConfig = Field(
        default_factory=SftConfig,
        description="Fine-tunes the pretrained model on the task examples (translation, "
        "summarization, QA), with loss on the answers only; fully or with LoRA adapters.",
    )
    dpo: DpoConfig = Field(
        default_factory=DpoConfig,
        description="Aligns the SFT model with the preference pairs by direct preference "
        "optimisation, training LoRA adapters.",
    )
    reward: RewardConfig = Field(
        default_factory=RewardConfig,
        description="Optional: trains a reward model (a score head on the SFT model) on the "
        "preference pairs, for the `rl` stage.",
    )
    rl: RlConfig = Field(
        default_factory=RlConfig,
        description="Optional: online reinforcement learning (RLOO) of the SFT model against the "
        "reward model.",
    )
    encoder: EncoderConfig = Field(
        default_factory=EncoderConfig,
        description="Optional: pretrains an encoder with the masked-LM objective on the same "
        "shards as the decoder.",
    )
    heads: HeadsConfig = Field(
        default_factory=HeadsConfig,
        description="Optional: fine-tunes task heads (classification, tagging, extractive QA) on "
        "the encoder, each from its own copy.",
    )
    seq2seq: Seq2SeqConfig = Field(
        default_factory=Seq2SeqConfig,
        description="Optional: an encoder-decoder assembled from the encoder and the pretrained "
        "decoder, joined by new cross-attention and fine-tuned on the SFT tasks.",
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig,
        description="Where the training stages log their runs (MLflow). A side output: never "
        "part of any fingerprint.",
    )

    def section(self, stage: str) -> StrictModel:
        return getattr(self, stage)


def config_path(config: str) -> Path:
    """A preset name (`tiny`) or a path to a YAML file."""
    if config.endswith((".yaml", ".yml")) or "/" in config:
        path = Path(config).expanduser()
    else:
        path = PRESETS_DIR / f"{config}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ConfigError(f"config {config!r} not found (looked at {path}); presets: {presets}")
    return path


QUOTE = 300  # characters of user input an error message quotes at most


MAX_VALUES = 100_000  # values a config may hold once its aliases are expanded


class CappedLoader(yaml.SafeLoader):
    """Safe YAML whose aliases may not expand it past MAX_VALUES values: `*a` repeating `&a`
    lets 300 bytes stand for billions of values (a "billion laughs"), which every later copy,
    check or error message would expand. Plain anchors for shared sections stay allowed."""

    def compose_document(self):
        node = super().compose_document()
        size = expanded_size(node, {})
        if size > MAX_VALUES:
            raise yaml.YAMLError(
                f"aliases (*name) expand it to {size} values; at most {MAX_VALUES} are allowed"
            )
        return node


def expanded_size(node: yaml.Node, sizes: dict[int, int | None]) -> int:
    """How many values `node` stands for with every alias expanded; each node is sized once.

    >>> expanded_size(yaml.compose("a: &x [1, 2]\\nb: *x"), {})
    9
    """
    key = id(node)
    if key in sizes:
        if sizes[key] is None:
            raise yaml.YAMLError("an alias (*name) refers to the collection that holds it")
        return sizes[key]
    sizes[key] = None  # being sized: meeting it again is a cycle
    children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
    total = 1 + (
        sum(expanded_size(c, sizes) for c in children) if isinstance(node, yaml.CollectionNode) else 0
    )
    sizes[key] = total
    return total


def parse_yaml(text: str, what: str):
    """`text` parsed as safe YAML without aliases; ConfigError naming `what` otherwise.

    >>> parse_yaml("[1, 2]", "override 'a.b=[1, 2]'")
    [1, 2]
    """
    try:
        return yaml.load(text, Loader=CappedLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what}: not valid YAML: {clip(str(e))}") from None


def clip(text: str) -> str:
    """At most QUOTE characters of `text`: a message never repeats a huge input."""
    return text if len(text) <= QUOTE else f"{text[:QUOTE]}... ({len(text)} chars)"


def load_config(config: str = "tiny", overrides: list[str] | None = None) -> PipelineConfig:
    path = config_path(config)
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections, got {type(data).__name__}")
    try:
        for item in overrides or []:
            apply_override(data, item)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: " + "; ".join(_describe(err) for err in e.errors())) from None


def apply_override(data: dict, item: str) -> None:
    """Set `stage.field=value` in raw config data: `apply_override(d, "sft.lr=1e-4")`."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {clip(item)!r}: expected stage.field=value")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {clip(item)!r}: {part!r} is not a section")
    node[leaf] = parse_yaml(raw, f"override {clip(item)!r}")


def _describe(err: dict) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    got = "" if err["type"] == "missing" else f" (got {clip(repr(err.get('input')))})"
    if err["type"] == "extra_forbidden":
        got = f"; allowed keys: {', '.join(allowed_keys(err['loc'][:-1]))}"
    return f"{where}: {err['msg']}{got}"


def allowed_keys(loc: tuple) -> list[str]:
    """The keys of the config section at `loc` (list indexes and dict keys pass through).

    >>> allowed_keys(("corpus", "sources", 0))[:3]
    ['fields', 'format', 'group_field']
    """
    model = PipelineConfig
    for part in loc:
        if part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation) or model
    return sorted(model.model_fields)


def _model_in(annotation) -> type[BaseModel] | None:
    """The config model a field holds: itself, or inside list[...], dict[..., ...], X | None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_in, typing.get_args(annotation))), None)
