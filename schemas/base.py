"""Base model for every config: strict (unknown fields are errors) and frozen.

Fields that do not change what an artifact contains (progress display, thread counts) are
declared with `runtime_field(...)` and left out of the fingerprint, so changing them never
rebuilds anything.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def runtime_field(default: Any, **kwargs: Any) -> Any:
    """A config field that does not define the artifact (not fingerprinted)."""
    return Field(default, json_schema_extra={"fingerprint": False}, **kwargs)


def fingerprint_view(model: BaseModel) -> dict:
    """The artifact-defining part of a config, as plain JSON-able data.

    >>> fingerprint_view(SftConfig(lr=1e-3, log_every=5))  # log_every is a runtime field
    {'lr': 0.001, ...}
    """
    out = {}
    for name, field in type(model).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("fingerprint") is False:
            continue
        out[name] = _view(getattr(model, name))
    return out


def _view(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return fingerprint_view(value)
    if isinstance(value, list | tuple):
        return [_view(v) for v in value]
    if isinstance(value, dict):
        return {k: _view(v) for k, v in value.items()}
    return value
