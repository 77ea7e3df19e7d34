"""The access log: request ids from metadata or new, query texts only when asked for, one JSON object a line."""

from __future__ import annotations

import json
import logging

import pytest

from genret.api import access_log


def test_request_ids_come_from_metadata_when_they_are_sane() -> None:
    assert access_log.request_id([("X-Request-Id", "abc")]) == "abc"
    for bad in ("", "x" * 129, "a\nb"):
        made = access_log.request_id([("x-request-id", bad)])
        assert made != bad and len(made) == 16


@pytest.mark.parametrize("log_queries", [False, True])
def test_query_texts_are_logged_only_when_asked(log_queries: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="genret.access")
    fields = access_log.start("r1")
    access_log.note(tenant="acme", mode="hybrid", query="wing flutter")
    access_log.finish(fields, "genret.v1.GenRet", "Search", "OK", 0.0123, log_queries)
    line = json.loads(access_log.JsonFormatter().format(caplog.records[-1]))
    assert line["request_id"] == "r1" and line["tenant"] == "acme" and line["latency_ms"] == 12.3
    assert ("query" in line) == log_queries and ("wing flutter" in caplog.records[-1].getMessage()) == log_queries
