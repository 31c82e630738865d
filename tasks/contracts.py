"""Run data contracts: great-expectations suites plus exact checks, and fail loudly.

GX passes on empty frames, ignores nulls in column-map expectations and returns a failed
result instead of raising; `run_suite` guards all three. A failure raises `ContractError`
naming the expectation and showing offending records (by id):

    ContractError: contract corpus/translation failed:
      expect_column_value_lengths_to_be_between(column=target_text, min_value=1): 1 of 9660 rows,
      e.g. id=bible-01-001-004
"""

import gc
import itertools
import os
from functools import cache
from typing import TYPE_CHECKING

from schemas.contracts import Expectation
from schemas.manifest import ContractResult
from tasks import memory

if TYPE_CHECKING:  # pandas only for GX suites: the shards stage's chunk workers start without it
    import pandas as pd


class ContractError(RuntimeError):
    """Data that breaks a stage-boundary contract; the artifact is not published."""


_SOURCES = itertools.count()  # unique data source names


@cache
def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False}
    # What is alive now (libraries, the context) lives as long as the process: the collections
    # after each validation (memory.release) then skip it, and take milliseconds, not 0.2 s.
    gc.freeze()
    return gx, ctx


def run_suite(
    name: str, df: "pd.DataFrame", expectations: list[Expectation], id_column: str = "id"
) -> ContractResult:
    """Validate `df` against `expectations` (plus row-count and not-null guards); raise on failure."""
    gx, ctx = _context()
    guards: list[Expectation] = [("expect_table_row_count_to_be_between", {"min_value": 1})]
    guards += [("expect_column_values_to_not_be_null", {"column": c}) for c in df.columns]
    suite = gx.ExpectationSuite(
        name=name, expectations=[_build(gx, t, kw) for t, kw in guards + expectations]
    )
    # a data source of its own: its execution engine caches every batch and metric it computed
    # (~1-2 MB per 4096-row batch), so a shared one grows with the number of batches validated
    source = ctx.data_sources.add_pandas(f"{name}-{next(_SOURCES)}")
    batch = source.add_dataframe_asset("df").add_batch_definition_whole_dataframe("all")
    index_cols = [id_column] if id_column in df.columns else []
    try:
        result = batch.get_batch(batch_parameters={"dataframe": df}).validate(
            suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_cols}
        )
    finally:
        ctx.data_sources.delete(source.name)
        memory.release(collect=True)  # else RSS grows by about a batch per validated batch
    failures = [_describe(r, len(df), id_column) for r in result.results if not r.success]
    checked = ContractResult(name=name, success=result.success, checked=len(df), details="; ".join(failures))
    if not result.success:
        raise ContractError(f"contract {name} failed:\n  " + "\n  ".join(failures))
    return checked


def require(name: str, bad: list[str], checked: int, what: str) -> ContractResult:
    """An exact check that `what` holds; `bad` lists what breaks it (e.g. `"id=x: token 9999 >= vocab
    4096"`). The message says what was expected, then what was found:

        contract checkpoint/learned failed: expected: validation loss decreased during training.
        Not met: val loss 8.3336 -> 8.4012
    """
    if bad:
        shown = "\n    ".join(bad[:5])
        found = "Not met:" if checked == 1 else f"Not met by {len(bad)} of {checked} checked, e.g.:"
        raise ContractError(f"contract {name} failed: expected: {what}.\n  {found}\n    {shown}")
    return ContractResult(name=name, success=True, checked=checked, details=what)


def _build(gx, type_name: str, kwargs: dict):
    cls_name = "".join(part.capitalize() for part in type_name.split("_"))
    return getattr(gx.expectations, cls_name)(**kwargs)


def _describe(r, total: int, id_column: str) -> str:
    cfg = r.expectation_config
    args = ", ".join(f"{k}={v}" for k, v in cfg.kwargs.items() if k not in ("batch_id",))
    res = r.result or {}
    count = res.get("unexpected_count")
    if count is None:
        return f"{cfg.type}({args}): observed {res.get('observed_value')!r}"
    ids = [
        str(row.get(id_column, row)) if isinstance(row, dict) else str(row)
        for row in res.get("unexpected_index_list") or []
    ]
    values = [repr(v)[:60] for v in (res.get("partial_unexpected_list") or [])[:3]]
    shown = f"e.g. {id_column}={', '.join(ids[:5])}" if ids else f"values {values}"
    return f"{cfg.type}({args}): {count} of {total} rows, {shown}"
