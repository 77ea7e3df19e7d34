"""A judged query longer than the request limit is cut to it, with a warning, instead of failing the eval."""

from __future__ import annotations

import logging

import pytest

from genret.evaluation.evaluate import fit_queries


def test_long_queries_are_cut_to_the_limit_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    queries = {"a": "short", "b": "x" * 2083, "c": "y" * 3000}
    with caplog.at_level(logging.WARNING):
        fitted = fit_queries(queries, 2048)
    assert fitted == {"a": "short", "b": "x" * 2048, "c": "y" * 2048}
    assert len(caplog.records) == 1 and "2 judged queries" in caplog.text and "3000" in caplog.text


def test_queries_within_the_limit_pass_unchanged_and_silently(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert fit_queries({"a": "wing"}, 2048) == {"a": "wing"}
    assert not caplog.records
