"""The pipeline config: one YAML file with a section per stage, validated strictly.

`load_config("tiny")` reads `configs/tiny.yaml`; a path reads that file. Overrides look like
`sft.lr=1e-4` (the value is parsed as YAML: numbers, booleans, lists). Errors name the file
and the field:

    ConfigError: configs/mine.yaml: sft.lr: Input should be greater than 0 (got -1)
"""

from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from schemas.base import StrictModel
from schemas.corpus import CorpusConfig
from schemas.encoder import EncoderConfig, HeadsConfig, Seq2SeqConfig
from schemas.rlhf import RewardConfig, RlConfig
from schemas.shards import ShardsConfig
from schemas.tokenizer import TokenizerConfig
from schemas.tracking import TrackingConfig
from schemas.training import DpoConfig, PretrainConfig, SftConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PRESETS_DIR = PROJECT_ROOT / "configs"


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


class PipelineConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    corpus: CorpusConfig
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    shards: ShardsConfig = Field(default_factory=ShardsConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    rl: RlConfig = Field(default_factory=RlConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    heads: HeadsConfig = Field(default_factory=HeadsConfig)
    seq2seq: Seq2SeqConfig = Field(default_factory=Seq2SeqConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)  # side output, never fingerprinted

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
    return f"{where}: {err['msg']}{got}"
