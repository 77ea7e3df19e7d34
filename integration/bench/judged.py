"""What the benchmarks on a trained build and judged queries share: the flags that name the build, its
config, the judged queries, and the same run's served baselines (BM25, dense, generative)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from common import collection_args, tenant_args

from genret.config import Config
from genret.data.beir import load_qrels, load_queries
from genret.evaluation.evaluate import Run, bm25_run, engine_run, fit_queries, score_run
from genret.serving.engine import Engine
from genret.store import StoredDoc
from genret.types import Mode

BM25, DENSE = "BM25", "dense (Qdrant, MiniLM)"  # the labels of the served baselines


def build_parser(doc: str, build_help: str) -> argparse.ArgumentParser:
    """The flags of a benchmark that reads one trained build of a tenant on a judged split:
    ``tenant_args``, ``collection_args`` and ``--build NAME=INDEX_DIR``."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    tenant_args(p)
    collection_args(p)
    p.add_argument("--build", required=True, help=f"NAME=INDEX_DIR of {build_help} (docids in genret_docid_NAME)")
    return p


def build_arg(p: argparse.ArgumentParser, value: str) -> tuple[str, str]:
    """``--build NAME=INDEX_DIR`` as (NAME, INDEX_DIR); the parser's error where it has no ``=``."""
    if "=" not in value:
        p.error("--build takes NAME=INDEX_DIR")
    name, index_dir = value.split("=", 1)
    return name, index_dir


def build_config(args: argparse.Namespace, name: str, index_dir: str) -> Config:
    """The CPU sidecar config that reads build ``name`` (docids in ``genret_docid_NAME``) of ``tenant_args``' collection."""
    return Config(qdrant_path=args.qdrant_path, collection=args.collection, index_dir=index_dir,
                  docid_key=f"genret_docid_{name}", device="cpu")


def judged_queries(data: str, split: str, limit: int) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """The split's judgements and its judged queries' texts, cut to the request limit as ``genret eval`` cuts them."""
    qrels, every = load_qrels(data, split), load_queries(data)
    return qrels, fit_queries({q: every[q] for q in qrels if q in every}, limit)


def served_runs(engine: Engine, tenant: str, docs: Sequence[StoredDoc], queries: dict[str, str], name: str,
                depth: int = 100) -> dict[str, Run]:
    """A benchmark's same-run baselines: BM25 over the tenant's documents, and the engine's dense and
    generative lists, ``depth`` deep."""
    key_of = {d.point_id: d.doc_id for d in docs}
    return {BM25: bm25_run([d.doc_id for d in docs], [f"{d.title} {d.text}" for d in docs], queries, depth),
            DENSE: engine_run(engine, tenant, queries, Mode.DENSE, depth, depth, key_of, 16),
            f"generative {name} (beam search)": engine_run(engine, tenant, queries, Mode.GENERATIVE,
                                                           depth, depth, key_of, 16)}


def baseline_rows(qrels: dict[str, dict[str, int]], runs: dict[str, Run], column: str) -> list[dict[str, object]]:
    """Table rows of ``served_runs``' nDCG@10, ``column`` naming each, then the bar the generative list is
    held to: the better of BM25 and dense + 0.02."""
    scored = {label: round(score_run(qrels, run)["nDCG@10"], 3) for label, run in runs.items()}
    bar = round(max(scored[BM25], scored[DENSE]) + 0.02, 3)
    return [*({column: label, "weight": "", "nDCG@10": v} for label, v in scored.items()),
            {column: "bar: best of BM25 and dense + 0.02", "weight": "", "nDCG@10": bar}]
