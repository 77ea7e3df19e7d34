from __future__ import annotations

import re
import warnings

import grpc
import pytest
from qdrant_client import models

from genret import errors
from genret.api.servicer import status_for
from genret.config import Config
from genret.names import check_doc_id, check_tenant
from genret.store import QdrantStore, point_id_for, text_hash


def test_unreachable_qdrant_server_is_unavailable() -> None:
    store = QdrantStore(Config(qdrant_url="http://127.0.0.1:9", collection="c"))
    try:
        with pytest.raises(errors.Unavailable, match="Qdrant"):
            store.exists()
    finally:
        store.close()
    assert status_for(errors.Unavailable("x")) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("exc, code", [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT), (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION)])
def test_each_domain_error_has_its_status(exc: type[Exception], code: grpc.StatusCode) -> None:
    assert status_for(exc("m")) == code
    assert status_for(RuntimeError("boom")) is None  # becomes INTERNAL with a request id


def test_point_ids_are_stable_and_tenant_specific() -> None:
    assert point_id_for("a", "1") == point_id_for("a", "1")
    assert point_id_for("a", "1") != point_id_for("b", "1")


@pytest.mark.parametrize("tenant, doc_id, words", [
    ("tenA", "x\x00victim", "document id contains the control character U+0000"),  # would be tenA\x00x's victim
    ("tenA\x00x", "victim", "tenant name contains the control character U+0000"),
    ("t", "a\u0085b", "U+0085"), ("", "d", "tenant is required"), ("t", "", "document id is empty"),
    ("t" * 257, "d", "limit is 256"), ("t", "d" * 257, "limit is 256")])
def test_names_that_could_forge_a_point_id_are_refused(tenant: str, doc_id: str, words: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=re.escape(words)):
        point_id_for(tenant, doc_id)
    assert check_tenant("acme corp/eu-1 ✓") and check_doc_id("doc #7 (final).pdf")  # anything printable is fine


def test_embedded_store_round_trip_under_tenant_filter(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    store = QdrantStore(Config(qdrant_path=str(tmp_path / "q"), collection="c"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "payload indexes have no effect" warning from the embedded Qdrant
            store.ensure_collection(4)
        vec = np.eye(4, dtype=np.float32)
        a = store.upsert_documents("a", [("1", "t1", "x"), ("2", "t2", "y")], vec[:2])
        b = store.upsert_documents("b", [("1", "t1", "x")], vec[:1])
        assert store.tenants() == ["a", "b"]
        store.write_docids("a", [(a[0], "0-1"), (a[1], "0-2")])
        with pytest.raises(ValueError, match="not in tenant 'b'"):
            store.write_docids("b", [(b[0], "1-1"), (a[0], "9-9")])  # a's point named for b: nothing written
        assert sorted(store.docids_of_tenant("a")) == sorted([(a[0], "0-1"), (a[1], "0-2")])
        assert store.docids_of_tenant("b") == []
        assert set(store.hydrate("b", a + b, with_payload=True)) == set(b)
        hits = store.dense_search("b", vec[0], 10, with_payload=True)
        assert [h.point_id for h in hits] == b and hits[0].payload["tenant"] == "b"
        # Each tenant's digest of text hashes moves with its own texts only, not with its docids.
        _, digests = store.docids_and_texts_by_tenant()
        store.upsert_documents("a", [("2", "t2", "y")], vec[1:2], docids=["0-2"])  # the same text again
        store.write_docids("a", [(a[0], "0-9")])
        assert store.docids_and_texts_by_tenant()[1] == digests
        store.upsert_documents("a", [("2", "t2", "z")], vec[1:2], docids=["0-2"])
        store.write_docids("b", [], [(b[0], "not its hash")])
        after = store.docids_and_texts_by_tenant()[1]
        assert after["a"] != digests["a"] and after["b"] != digests["b"]
        assert store.retrieve("a", [a[1]])[a[1]].text_hash == text_hash("t2", "z")
        # A text written straight to Qdrant carries no hash: its digest is read from the text itself.
        def straight(text: str) -> int:
            store.client.upsert("c", [models.PointStruct(id=7, vector={"dense": [0.0, 0.0, 1.0, 0.0]},
                                                         payload={"tenant": "b", "title": "t", "text": text})])
            return store.docids_and_texts_by_tenant()[1]["b"]

        first = straight("one")
        assert straight("one") == first and straight("two") != first
        assert store.docids_and_texts_by_tenant()[1]["a"] == after["a"]
    finally:
        store.close()



def test_a_request_a_server_refuses_does_not_stop_every_tenants_calls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from qdrant_client.http.exceptions import UnexpectedResponse

    from genret.config import Config
    from genret.errors import Unavailable
    from genret.store import QdrantStore

    def refused() -> None:
        raise UnexpectedResponse(400, "Bad Request", b"{}", None)  # type: ignore[arg-type]

    def down() -> None:
        raise ConnectionRefusedError("refused")

    store = QdrantStore(Config(qdrant_path=str(tmp_path / "q"), collection="c"))
    try:
        with pytest.raises(Unavailable):
            store._call(refused)
        store.check_available()  # Qdrant answered: other calls go on
        assert store.exists() is False
        with pytest.raises(Unavailable):
            store._call(down)
        with pytest.raises(Unavailable, match="retry shortly"):
            store.check_available()  # Qdrant away: calls fail at once
    finally:
        store.close()
