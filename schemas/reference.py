"""The config reference (docs/config.md), generated from the pydantic models so it cannot drift.

    python -m schemas.reference           # rewrite docs/config.md
    python -m schemas.reference --check   # exit 1 when docs/config.md is not what the models say

Every field's meaning comes from its `Field(description=...)`; a test requires one on every field.
"""

import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Iterator

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from schemas.config import PROJECT_ROOT, PipelineConfig
from schemas.training import GainFields, LoraFields, TrainConfig

DOC = PROJECT_ROOT / "docs" / "config.md"
HEADER = """# Config reference

Generated from the schemas by `python -m schemas.reference`; a test fails when it drifts.
A config is one YAML file with a section per stage (`configs/tiny.yaml` is the embedded
default). Every field can be set on the command line with `--set section.field=value` (the
value is parsed as YAML). Fields marked *runtime* change how a stage runs, not what it
produces: they are left out of the fingerprint and never cause a rebuild.
"""


# Field groups that several sections share, under these headings: described once, after the
# sections (introduced by the group's docstring), so eight training stages do not repeat them.
SHARED = {TrainConfig: "Training loop", LoraFields: "LoRA adapters", GainFields: "Gain check"}


def render() -> str:
    """The whole reference as markdown: one table per section of the pipeline config, then one
    per shared group of fields."""
    parts = [HEADER, "\n## Top level\n\n", TABLE]
    sections = {}
    for name, field in PipelineConfig.model_fields.items():
        model = model_of(field.annotation)
        if model is None:
            parts.append(row(name, field))
        else:
            sections[name] = (field, model)
    for name, (field, model) in sections.items():
        parts.append(f"\n## `{name}`\n\n{field.description or ''}{also(model)}\n\n{TABLE}")
        skip = inherited(model)
        parts.extend(row(f"{name}.{path}", f) for path, f in fields(model) if path not in skip)
    for group, heading in SHARED.items():
        users = ", ".join(f"`{name}`" for name, (_, model) in sections.items() if issubclass(model, group))
        intro = inspect.cleandoc(group.__doc__ or "")
        parts.append(f"\n## {heading}\n\n{intro}\n\nIn the sections {users}.\n\n{TABLE}")
        parts.extend(row(f"<section>.{path}", f) for path, f in fields(group))
    return "".join(parts)


TABLE = "| field | type | default | description |\n|---|---|---|---|\n"


def also(model: type[BaseModel]) -> str:
    """The sentence pointing a section to the shared groups it has."""
    links = [f"[{h}](#{h.lower().replace(' ', '-')})" for g, h in SHARED.items() if issubclass(model, g)]
    if not links:
        return ""
    return f" It also has the shared fields of {', '.join(links)}; its table lists those it sets differently."


def inherited(model: type[BaseModel]) -> set[str]:
    """Fields `model` takes unchanged from a shared group (FieldInfo has no ==; its repr shows
    every attribute)."""
    return {
        name
        for group in SHARED
        if issubclass(model, group)
        for name, field in group.model_fields.items()
        if repr(model.model_fields[name]) == repr(field)
    }


def fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every field of `model` with its dotted path, nested models walked into after the field
    that holds them (`model`, `model.hidden_size`; `sources`, `sources[].path`; `tuning`,
    `tuning.<name>.lr`)."""
    for name, field in model.model_fields.items():
        path = prefix + name
        yield path, field
        inner, suffix = nested(field.annotation)
        if inner is not None:
            yield from fields(inner, path + suffix)


def nested(annotation) -> tuple[type[BaseModel] | None, str]:
    """The model a field holds (directly, or null, in a list, as dict values), and the path joint."""
    if model_of(annotation):
        return model_of(annotation), "."
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return nested(next(a for a in args if a is not type(None)))
    if origin is list and args and model_of(args[0]):
        return model_of(args[0]), "[]."
    if origin is dict and len(args) == 2 and model_of(args[1]):
        return model_of(args[1]), ".<name>."
    return None, ""


def model_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def row(path: str, field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    runtime = " *runtime*" if extra.get("fingerprint") is False else ""
    text = (field.description or "").replace("|", "\\|").replace("\n", " ")
    return f"| `{path}` | {type_name(field)} | {default(field)} | {text}{runtime} |\n"


def type_name(field: FieldInfo) -> str:
    bounds = [bound(m) for m in field.metadata if bound(m)]
    return " ".join([describe(field.annotation).replace("|", "\\|"), *bounds])


def describe(annotation) -> str:
    """`int`, `"cosine" | "linear"`, `float | null`, `list[int]`, `dict[str, float]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe(a) for a in args)
    if origin is typing.Annotated:
        return describe(args[0])
    if model_of(annotation):
        return "object"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(describe(a) for a in args)}]"
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


BOUNDS = [
    (annotated_types.Ge, "≥", "ge"),
    (annotated_types.Gt, ">", "gt"),
    (annotated_types.Le, "≤", "le"),
    (annotated_types.Lt, "<", "lt"),
    (annotated_types.MinLen, "min length", "min_length"),
]


def bound(meta) -> str:
    for kind, symbol, attr in BOUNDS:
        if isinstance(meta, kind):
            return f"{symbol} {getattr(meta, attr)}"
    return ""


LONG = 60  # characters of a default shown in full; a longer dict shows its keys


def default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, BaseModel) else f"`{short(value)}`"
    if field.default is PydanticUndefined:
        return "required"
    return f"`{short(field.default)}`"


def short(value) -> str:
    """`value` as JSON; a long dict as its keys: `{"translation": …, "qa": …}`."""
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > LONG and isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: …" for k in value) + "}"
    return text


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is out of date: run python -m schemas.reference", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def override_pattern() -> str:
    """A regular expression every `--set` item must match: a known key, `=`, a value.

    Keys are the dotted paths of the config (`sft.lr`, `pretrain.model.hidden_size`, whole
    sections such as `shards.instruct`); a dict field also takes `field.key` (`sft.repeat.qa=8`);
    entries of a list (`corpus.sources`) are set as the whole list.
    >>> import re; bool(re.match(override_pattern(), "sft.lr=1e-4")), bool(re.match(override_pattern(), "sft.lrr=1"))
    (True, False)
    """
    keys = []
    for path, field in fields(PipelineConfig):
        if "[]" in path:
            continue
        key = re.escape(path).replace(re.escape(".<name>."), r"\.[^.=]+\.")
        is_dict = typing.get_origin(field.annotation) is dict or "dict[" in describe(field.annotation)
        keys.append(key + (r"(?:\.[^.=]+)?" if is_dict else ""))
    return "^(?:" + "|".join(keys) + ")="
