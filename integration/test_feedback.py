"""Pseudo-relevance feedback on the generative list, on the real stack (embedded Qdrant, a trained tiny model):
the decoded candidates, reordered by their score for the query plus the weight times their score for the
query followed by the top document; nothing read or returned outside the tenant and its filter."""

from __future__ import annotations

import math

import grpc
import pytest

from genret.client import search_request
from genret.errors import InvalidArgument
from genret.ranking.calibration import GENERATIVE
from genret.serving.feedback import FEEDBACK_TOKENS, feedback_text
from genret.types import Mode, SearchQuery
from genret.v1 import genret_pb2 as pb

from .conftest import OTHER, TENANT, Stack


def _search(stack: Stack, tenant: str, text: str, feedback: float | None, **kw: object) -> list[tuple[str, float]]:
    q = SearchQuery(tenant, text, top_k=10, beams=10, mode=Mode.GENERATIVE, feedback=feedback, **kw)  # type: ignore[arg-type]
    return [(h.point_id, h.score) for h in stack.engine.search([q])[0]]


def test_feedback_reorders_the_decoded_candidates_by_their_score_for_the_query_and_its_top_document(
        stack: Stack) -> None:
    moved = 0
    for title in sorted(stack.titles.values())[:6]:
        plain = _search(stack, TENANT, title, 0.0)
        fed = _search(stack, TENANT, title, 0.5)
        assert {p for p, _ in fed} == {p for p, _ in plain}  # the same candidates, only reordered
        top = stack.store.retrieve(TENANT, [plain[0][0]])[plain[0][0]]
        enc = stack.engine.backend.encode([feedback_text(title, top)], FEEDBACK_TOKENS)
        q = SearchQuery(TENANT, title, top_k=10, beams=10, mode=Mode.GENERATIVE)
        again = stack.engine.scorers(q, None, enc=enc)[GENERATIVE]([p for p, _ in plain])
        want = sorted(((p, s + 0.5 * again[p]) for p, s in plain), key=lambda h: -h[1])
        assert [p for p, _ in fed] == [p for p, _ in want]
        assert [s for _, s in fed] == pytest.approx([s for _, s in want], abs=1e-4)
        moved += [p for p, _ in fed] != [p for p, _ in plain]
    assert moved, "feedback reordered no list: the test would pass with feedback ignored"


def test_feedback_is_off_unless_asked_for(stack: Stack) -> None:
    title = sorted(stack.titles.values())[0]
    assert stack.engine.config.generative_feedback == 0.0
    assert _search(stack, TENANT, title, None) == _search(stack, TENANT, title, 0.0)


@pytest.mark.parametrize("weight", [-0.5, math.nan, math.inf])
def test_a_bad_feedback_weight_is_refused(stack: Stack, weight: float) -> None:
    with pytest.raises(InvalidArgument, match="feedback"):
        _search(stack, TENANT, "boundary layer", weight)


def test_feedback_stays_inside_the_tenant_and_its_filter(stack: Stack) -> None:
    others = {d.point_id for d in stack.store.scroll_tenant(OTHER)}
    keep = sorted(stack.titles)[::3]
    flt = {"must": [{"key": "doc_id", "match": {"any": keep}}]}
    for title in sorted(stack.titles.values())[:4]:
        hits = _search(stack, OTHER, title, 1.0)
        assert hits and {p for p, _ in hits} <= others  # the other tenant holds the same texts
        filtered = _search(stack, TENANT, title, 1.0, filter=flt)
        docs = stack.store.retrieve(TENANT, [p for p, _ in filtered])
        assert filtered and all(docs[p].doc_id in keep for p, _ in filtered)


def test_a_grpc_request_asks_for_feedback_per_query_and_a_bad_weight_is_invalid_argument(stack: Stack) -> None:
    title = next(t for t in sorted(stack.titles.values())
                 if [p for p, _ in _search(stack, TENANT, t, 0.5)] != [p for p, _ in _search(stack, TENANT, t, 0.0)])
    req = search_request(TENANT, title, 10, beam_size=10, with_payload=False, feedback=0.5)
    assert req.HasField("feedback") and not search_request(TENANT, title).HasField("feedback")
    assert [h.point_id for h in stack.stub.Search(req).hits] == [p for p, _ in _search(stack, TENANT, title, 0.5)]
    plain = search_request(TENANT, title, 10, beam_size=10, with_payload=False)
    assert [h.point_id for h in stack.stub.Search(plain).hits] == [p for p, _ in _search(stack, TENANT, title, 0.0)]
    with pytest.raises(grpc.RpcError) as err:
        stack.stub.Search(pb.SearchRequest(tenant=TENANT, query=title, feedback=-1.0))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "feedback" in (err.value.details() or "")


def test_feedback_encodes_one_query_at_a_time_each_after_a_checkpoint(stack: Stack,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Another tenant's search, run at a checkpoint, waits for one query's feedback pass, never the batch's."""
    events: list[tuple[str, int]] = []
    encode = stack.engine.backend.encode

    def recorded(texts: list[str], max_tokens: int | None = None) -> object:
        if max_tokens == FEEDBACK_TOKENS:
            events.append(("feedback pass", len(texts)))
        return encode(texts, max_tokens)

    monkeypatch.setattr(stack.engine.backend, "encode", recorded)
    queries = [SearchQuery(TENANT, t, top_k=10, beams=10, mode=Mode.GENERATIVE, feedback=0.5)
               for t in sorted(stack.titles.values())[:3]]
    stack.engine.search(queries, checkpoint=lambda: events.append(("checkpoint", 0)))
    passes = [k for k, (what, _) in enumerate(events) if what == "feedback pass"]
    assert [events[k][1] for k in passes] == [1, 1, 1]
    assert all(k > 0 and events[k - 1][0] == "checkpoint" for k in passes)
