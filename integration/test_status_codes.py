"""Every bad input gets a clear error with the right gRPC status, over a real socket."""

from __future__ import annotations

import grpc
import pytest

from genret.v1 import genret_pb2 as pb

from .conftest import TENANT, Stack


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def search(stack: Stack, **kw) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    req = pb.SearchRequest(**{"tenant": TENANT, "query": "wing", **kw})
    return code_of(lambda: stack.stub.Search(req, timeout=30))


@pytest.mark.parametrize("kw, code, words", [
    ({"query": ""}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ({"query": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ({"query": "x" * 5000}, grpc.StatusCode.INVALID_ARGUMENT, "limit"),
    ({"top_k": 101}, grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
    ({"beam_size": 500}, grpc.StatusCode.INVALID_ARGUMENT, "beam_size"),
    ({"top_k": 10, "beam_size": 3}, grpc.StatusCode.INVALID_ARGUMENT, "at least top_k"),
    ({"tenant": ""}, grpc.StatusCode.INVALID_ARGUMENT, "tenant"),
    ({"tenant": "nobody"}, grpc.StatusCode.NOT_FOUND, "nobody"),
    ({"index": "other-collection"}, grpc.StatusCode.NOT_FOUND, "not served"),
    ({"score_threshold": float("nan")}, grpc.StatusCode.INVALID_ARGUMENT, "finite"),
    ({"mode": 42}, grpc.StatusCode.INVALID_ARGUMENT, "mode"),
    ({"mode": pb.SEARCH_MODE_HYBRID, "fusion": pb.FUSION_LEARNED}, grpc.StatusCode.FAILED_PRECONDITION, "calibrat"),
    ({"mode": pb.SEARCH_MODE_HYBRID, "fusion": pb.FUSION_WEIGHTED}, grpc.StatusCode.FAILED_PRECONDITION, "calibrat"),
    ({"min_probability": 0.5}, grpc.StatusCode.FAILED_PRECONDITION, "calibrat"),
    ({"min_probability": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "min_probability"),
    ({"fusion": 9}, grpc.StatusCode.INVALID_ARGUMENT, "fusion"),
])
def test_bad_search_inputs(stack: Stack, kw: dict, code: grpc.StatusCode, words: str) -> None:
    req = pb.SearchRequest(**{"tenant": TENANT, "query": "wing", **kw})
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.Search(req, timeout=30)
    assert info.value.code() == code
    assert words in info.value.details()


def test_bad_batches(stack: Stack) -> None:
    empty = pb.SearchBatchRequest()
    assert code_of(lambda: stack.stub.SearchBatch(empty, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    big = pb.SearchBatchRequest(requests=[pb.SearchRequest(tenant=TENANT, query="q")] * 257)
    assert code_of(lambda: stack.stub.SearchBatch(big, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    one_bad = pb.SearchBatchRequest(requests=[pb.SearchRequest(tenant=TENANT, query="q"),
                                              pb.SearchRequest(tenant=TENANT, query="")])
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.SearchBatch(one_bad, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "requests[1]" in info.value.details()


def test_malformed_request_bytes(stack: Stack) -> None:
    raw = stack.channel.unary_unary("/genret.v1.GenRet/Search")
    code = code_of(lambda: raw(b"\xff\xff\xff\xff\x0f", timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_deadline_is_honoured(stack: Stack) -> None:
    req = pb.SearchRequest(tenant=TENANT, query="wing flutter " * 50, top_k=10, beam_size=200)
    assert code_of(lambda: stack.stub.Search(req, timeout=0.001)) == grpc.StatusCode.DEADLINE_EXCEEDED


def test_unknown_method_is_unimplemented(stack: Stack) -> None:
    raw = stack.channel.unary_unary("/genret.v1.GenRet/NoSuchMethod")
    assert code_of(lambda: raw(b"", timeout=10)) == grpc.StatusCode.UNIMPLEMENTED
