"""Property-based tests of every operator (issue 12): finite and within the stated bound of
the reference, or a ValueError. The property and strategies live in ``op_props.py``; CI runs
a small derandomized profile (``tests/fuzz_operators.py`` runs 10,000+ calls)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from op_props import METHODS, Case, cases, check_case

pytestmark = pytest.mark.usefixtures("one_thread")

CI = settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("method", METHODS)
def test_operator_property(method):
    @CI
    @given(cases(methods=(method,)))
    def prop(case: Case) -> None:
        check_case(case)

    prop()
