"""Great-expectations suites at the stage boundaries, declared as data.

Each entry is `(expectation, kwargs)`. `tasks.contracts` adds the guards that make a suite
able to fail: a minimum row count (GX passes on empty data) and not-null on every column
(column-map expectations skip nulls). A failing suite stops the stage; nothing is published.
"""

from schemas.corpus import TASK_FIELDS

Expectation = tuple[str, dict]


def corpus_suite(task: str, max_chars: int) -> list[Expectation]:
    suite: list[Expectation] = [
        ("expect_column_values_to_be_unique", {"column": "id"}),
        ("expect_column_values_to_be_in_set", {"column": "split", "value_set": ["train", "validation"]}),
    ]
    for f in TASK_FIELDS[task]:
        suite.append(
            (
                "expect_column_value_lengths_to_be_between",
                {"column": f, "min_value": 1, "max_value": max_chars},
            )
        )
    return suite


def preference_suite() -> list[Expectation]:
    return [("expect_column_values_to_be_in_set", {"column": "chosen_equals_rejected", "value_set": [False]})]


def shard_suite(vocab_size: int, unique_ids: bool = False) -> list[Expectation]:
    """Per-row summaries of a shard (min/max id, loss tokens) checked against the vocab; the
    shards stage checks unique ids across its shards exactly (tasks.shard_checks) instead."""
    suite: list[Expectation] = [
        ("expect_column_values_to_be_between", {"column": "min_id", "min_value": 0}),
        ("expect_column_values_to_be_between", {"column": "max_id", "max_value": vocab_size - 1}),
        ("expect_column_values_to_be_between", {"column": "n_loss", "min_value": 1}),
    ]
    if unique_ids:
        suite.append(("expect_column_values_to_be_unique", {"column": "id"}))
    return suite
