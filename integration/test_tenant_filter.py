"""Every Qdrant call a search makes, in every mode, is scoped to the caller's tenant.

The real Qdrant client is wrapped by a recorder that forwards every call and keeps its arguments.
Filtered calls (query_points, scroll, delete) must carry the tenant's match condition; calls by point
id (retrieve) may only name points of the tenant's own namespace, and the store drops any returned
payload of another tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from qdrant_client import models

from genret.store import point_id_for
from genret.types import Fusion, Mode, SearchQuery

from .conftest import OTHER, TENANT, Stack


class Recorder:
    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return target(*args, **kwargs)

        return call


def has_tenant(flt: models.Filter | None, tenant: str) -> bool:
    return flt is not None and any(isinstance(c, models.FieldCondition) and c.key == "tenant"
                                   and isinstance(c.match, models.MatchValue) and c.match.value == tenant
                                   for c in (flt.must or []))


def reads_only(kwargs: dict[str, Any], tenant: str) -> bool:
    """A query, scroll or count reads only ``tenant``'s points: its own filter has the tenant condition,
    or it ranks only what its prefetch returns and the prefetch's filter has it."""
    flt = kwargs.get("query_filter") or kwargs.get("scroll_filter") or kwargs.get("count_filter")
    if flt is None and isinstance(kwargs.get("prefetch"), models.Prefetch):
        flt = kwargs["prefetch"].filter
    return has_tenant(flt, tenant)


@pytest.fixture
def recorder(stack: Stack) -> Iterator[Recorder]:
    real = stack.store.client
    rec = Recorder(real)
    stack.store.client = rec  # type: ignore[assignment]
    try:
        yield rec
    finally:
        stack.store.client = real


@pytest.mark.parametrize("mode, fusion", [(Mode.GENERATIVE, Fusion.DEFAULT), (Mode.DENSE, Fusion.DEFAULT),
                                          (Mode.HYBRID, Fusion.RRF), (Mode.HYBRID, Fusion.RESCORE),
                                          (Mode.AUTO, Fusion.DEFAULT)])
def test_every_qdrant_call_is_scoped_to_the_tenant(stack: Stack, recorder: Recorder, mode: Mode,
                                                   fusion: Fusion) -> None:
    own = {pid for pid, _ in stack.store.docids_of_tenant(OTHER)}
    recorder.calls.clear()
    q = SearchQuery(OTHER, "supersonic flow over wings", 5, 20, mode, with_payload=True,
                                           fusion=fusion)
    hits = stack.engine.search([q])[0]
    assert hits and all(h.payload["tenant"] == OTHER and h.point_id in own for h in hits)
    assert recorder.calls
    for name, kwargs in recorder.calls:
        if name in ("query_points", "scroll", "count"):
            assert reads_only(kwargs, OTHER), (name, kwargs)
        elif name == "retrieve":
            assert set(kwargs["ids"]) <= own, name
        elif name == "collection_exists":
            pass  # the health probe of the running server (genret.api.server): it reads no point
        else:
            pytest.fail(f"unexpected Qdrant call {name}")
    # A by-id read naming another tenant's point returns nothing for this tenant.
    foreign = point_id_for(TENANT, next(iter(stack.titles)))
    assert stack.store.hydrate(OTHER, [foreign], True) == {}


def test_rescore_ranks_the_generative_candidates_in_a_has_id_prefetch(stack: Stack, recorder: Recorder) -> None:
    q = SearchQuery(OTHER, "supersonic flow over wings", 5, 20, Mode.HYBRID,
                                           fusion=Fusion.RESCORE)
    gen = SearchQuery(OTHER, "supersonic flow over wings", 20, 20, Mode.GENERATIVE)
    candidates = {h.point_id for h in stack.engine.search([gen])[0]}
    recorder.calls.clear()
    hits = stack.engine.search([q])[0]
    prefetched = [kw["prefetch"] for name, kw in recorder.calls if name == "query_points" and "prefetch" in kw]
    assert len(prefetched) == 1 and reads_only({"prefetch": prefetched[0]}, OTHER)
    ids = next(c.has_id for c in prefetched[0].filter.must if isinstance(c, models.HasIdCondition))
    assert {str(i) for i in ids} == candidates and {h.point_id for h in hits} <= candidates
