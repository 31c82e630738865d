"""Contracts: what a failed check tells the user."""

import pytest

from tasks.contracts import ContractError, require


def test_a_failed_exact_contract_says_what_was_expected_and_what_was_found():
    with pytest.raises(ContractError) as one:
        require(
            "checkpoint/learned",
            ["val loss 8.3336 -> 8.4012"],
            1,
            "validation loss decreased during training",
        )
    assert str(one.value) == (
        "contract checkpoint/learned failed: expected: validation loss decreased during training.\n"
        "  Not met:\n    val loss 8.3336 -> 8.4012"
    )
    with pytest.raises(ContractError, match=r"Not met by 2 of 9 checked, e.g.:\n    id=a\n    id=b$"):
        require("corpus/x-ids", ["id=a", "id=b"], 9, "ids are unique")
