"""The feedback pass's reordering: the sum of both scores decides, and no candidate is lost."""

from __future__ import annotations

from genret.serving.feedback import rescored


def test_rescored_orders_by_the_sum_and_keeps_an_unscored_candidate_last() -> None:
    cands = [("a", "1", -1.0), ("b", "2", -2.0), ("c", "3", -3.0)]
    assert rescored(cands, {"a": -5.0, "b": -1.0}, 1.0) == [("b", "2", -3.0), ("a", "1", -6.0), ("c", "3", -3.0)]
