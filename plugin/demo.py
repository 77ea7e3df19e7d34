"""`genret demo`: the whole path on the bundled Cranfield corpus with an embedded Qdrant.

Load the corpus into Qdrant (with MiniLM vectors), build the generative index with the recipe `genret
index` uses with no flags (no judged queries: documents, their key sentences and generated queries, the
queries shipped with the corpus so no generator runs) within a training budget, start the sidecar on a
free local port, answer Cranfield test queries (never seen in training) by generative, dense, BM25 and
hybrid retrieval side by side, ask one of them through the Qdrant front door with unmodified
qdrant-client, and end with each retriever's nDCG@10 on the whole test split.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Mapping, Sequence

from genret.config import Config
from genret.data.beir import Document, demo_corpus_path, load_qrels, load_queries
from genret.devices import resolve_device
from genret.store import VECTOR_NAME, QdrantStore

DEMO_COLLECTION = "cranfield"
DEMO_TENANT = "demo"
EXAMPLE_QUERIES = 3
SHOWN = 5  # hits per retriever in the side-by-side table
GENERATED_QUERIES = "generated-queries.jsonl"  # shipped beside the corpus: the default generator's candidates
SHORT_WORDS = 100  # the demo's filter: documents of at most this many words


def demo_fields(doc: Document) -> dict[str, int]:
    """The demo corpus's one filterable payload field: a document's length in words."""
    return {"words": len(doc.text.split())}


def _side_by_side(question: str, qid: str, relevant: set[str], columns: Mapping[str, Sequence[str]]) -> None:
    """One query's top hits per retriever in columns; * marks a judged-relevant document."""
    print(f"\ntest query {qid}: {question}")
    shown = ", ".join(sorted(relevant, key=int)[:10]) + (", ..." if len(relevant) > 10 else "")
    print(f"  judged relevant ({len(relevant)}): {shown}")
    print("  rank  " + "".join(f"{name:<16}" for name in columns))
    for rank in range(SHOWN):
        cells = []
        for docs in columns.values():
            doc = docs[rank] if rank < len(docs) else ""
            cells.append(f"{('*' if doc in relevant else ' ') + 'doc ' + doc if doc else '':<16}")
        print(f"  {rank + 1:>4}  " + "".join(cells))


def run_demo(cfg: Config, minutes: float, fresh: bool) -> int:
    from genret.api.server import ServerThread
    from genret.cli import build_parser, index_options
    from genret.client import GenretClient
    from genret.data.index_dir import query_cache_path, read_manifest
    from genret.data.lexical import Bm25
    from genret.data.loader import load_beir
    from genret.evaluation.evaluate import BM25_LABEL, DENSE_LABEL, HYBRID_LABEL, NO_GENERATIVE_LABEL, evaluate
    from genret.indexing.indexer import build_index
    from genret.indexing.pairs import passage
    from genret.serving.engine import Engine

    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # the demo prints its own tables; RPC lines with -v
        logging.getLogger("genret.access").setLevel(logging.WARNING)
    if cfg.collection == Config.collection:
        cfg = dataclasses.replace(cfg, collection=DEMO_COLLECTION)
    cfg = dataclasses.replace(cfg, port=0, qdrant_port=0)
    data = demo_corpus_path()
    device = resolve_device(cfg.device)
    t_all = time.perf_counter()
    store = QdrantStore(cfg)
    try:
        if fresh or not store.exists():
            if store.exists():
                store.drop_collection()
            t0 = time.perf_counter()
            n = load_beir(store, data, DEMO_TENANT, with_vectors=True, device=device, derive=demo_fields)
            print(f"[1/6] loaded {n} Cranfield documents into Qdrant '{cfg.collection}' "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
        else:
            print(f"[1/6] Qdrant collection '{cfg.collection}' already loaded", flush=True)

        try:
            read_manifest(cfg.index_dir)
            have_index = not fresh
        except (FileNotFoundError, ValueError):
            have_index = False
        if have_index:
            print(f"[2/6] index already built in {cfg.index_dir} (use --fresh to rebuild)", flush=True)
        else:
            t0 = time.perf_counter()
            cache = query_cache_path(cfg.index_dir)
            if not cache.exists():  # the generator's queries for this corpus, made once and shipped
                cache.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data / GENERATED_QUERIES, cache)
            opts = index_options(build_parser().parse_args(["index", "--max-minutes", str(minutes)]))
            m = build_index(store, cfg.index_dir, opts, device)
            assert m is not None  # one process builds it
            st, pairs = m.training["stats"], m.training["pairs"]
            print(f"[2/6] index built in {time.perf_counter() - t0:.0f}s with the default recipe, no judged queries: "
                  f"{sum(m.tenants.values())} {opts.scheme} docids; {sum(pairs.values())} training texts "
                  f"({', '.join(f'{v} {k}' for k, v in pairs.items() if v)}), teacher {opts.teacher.kind}; "
                  f"{st['steps']} steps ({st['epochs_done']:.1f} epochs), stopped by {st['stopped_by']}", flush=True)

        engine = Engine.load(cfg, store)
        queries, test = load_queries(data), load_qrels(data, "test")
        docs = list(store.scroll_tenant(DEMO_TENANT))
        bm25 = Bm25([passage(d.title, d.text) for d in docs])
        with ServerThread(cfg, engine, store.upstream()) as server:
            print(f"[3/6] sidecar serving on {server.target} (gRPC, health SERVING), Qdrant front door on "
                  f"{cfg.host}:{server.door_port}", flush=True)
            print("[4/6] Cranfield test queries (never used in training) over gRPC, four retrievers side by side "
                  "(hybrid: DBSF of generative, dense and BM25); * marks a judged-relevant document")
            examples = list(test)[:EXAMPLE_QUERIES]
            with GenretClient(server.target) as client:
                for qid in examples:
                    columns: dict[str, list[str]] = {}
                    for label, mode in (("generative", "generative"), ("dense", "dense"), ("hybrid", "hybrid")):
                        hits = client.search(DEMO_TENANT, queries[qid], top_k=SHOWN, mode=mode).hits
                        columns[label] = [h.payload.fields["doc_id"].string_value for h in hits]
                    rows, _ = bm25.top([queries[qid]], SHOWN)
                    columns["BM25"] = [docs[int(r)].doc_id for r in rows[0]]
                    _side_by_side(queries[qid], qid, {d for d, g in test[qid].items() if g > 0}, columns)
            first = examples[0]
            vector = [float(x) for x in engine.embed_queries([queries[first]])[0]]
            ask_three_ways(cfg, server.door_port, queries[first], vector, set(test[first]))
        t0 = time.perf_counter()
        shown = evaluate(engine, store, data, "test", DEMO_TENANT,
                         only=("generative", DENSE_LABEL, BM25_LABEL, NO_GENERATIVE_LABEL, HYBRID_LABEL))
        best = max(r.metrics["nDCG@10"] for r in shown)
        print(f"\n[6/6] all {len(test)} Cranfield test queries ({time.perf_counter() - t0:.0f}s):")
        print(f"  {'retriever':<40}{'nDCG@10':>9}{'Hits@10':>9}{'Recall@100':>12}")
        for r in shown:
            mark = "  <- best" if r.metrics["nDCG@10"] == best else ""
            print(f"  {r.name:<40}{r.metrics['nDCG@10']:>9.3f}{r.metrics['Hits@10']:>9.3f}"
                  f"{r.metrics['Recall@100']:>12.3f}{mark}")
    finally:
        store.close()
    print(f"\ndemo finished in {time.perf_counter() - t_all:.0f}s")
    return 0


def ask_three_ways(cfg: Config, port: int, question: str, vector: list[float], relevant: set[str]) -> None:
    """One question through the front door, as a Qdrant user's own code asks it (unmodified qdrant-client):
    dense with the user's vector, generative with ``Document(model="genret")``, and both fused by DBSF."""
    from qdrant_client import QdrantClient, models

    tenant = models.Filter(must=[models.FieldCondition(key=cfg.tenant_key, match=models.MatchValue(value=DEMO_TENANT))])
    generative = models.Document(text=question, model="genret")
    print(f"\n[5/6] the first test query through the Qdrant front door ({cfg.host}:{port}), unmodified qdrant-client:")
    print(f"  {question}")
    client = QdrantClient(host=cfg.host, grpc_port=port, prefer_grpc=True, cloud_inference=True,
                          check_compatibility=False)
    try:
        asks = {
            "dense": dict(query=vector, using=VECTOR_NAME),
            "generative": dict(query=generative),
            "fused (DBSF)": dict(prefetch=[models.Prefetch(query=generative, limit=10),
                                           models.Prefetch(query=vector, using=VECTOR_NAME, limit=10)],
                                 query=models.FusionQuery(fusion=models.Fusion.DBSF)),
            f"generative, only documents of at most {SHORT_WORDS} words (filtered inside decoding)": dict(
                query=generative, query_filter=models.Filter(must=[*(tenant.must or []), models.FieldCondition(
                    key="words", range=models.Range(lte=SHORT_WORDS))])),
        }
        found: dict[str, set[object]] = {}
        for name, ask in asks.items():
            ask.setdefault("query_filter", tenant)
            points = client.query_points(cfg.collection, limit=10, with_payload=["doc_id", "words"],
                                         **ask).points  # type: ignore[arg-type]
            found[name] = {p.id for p in points}
            print(f"  {name}:")
            for rank, p in enumerate(points[:5], 1):
                doc = str((p.payload or {}).get("doc_id", p.id))
                by = "+".join(k for k in ("generative", "dense") if p.id in found[k]) if name.startswith("fused") else ""
                note = f"  found by {by}" if by else ""
                words = (p.payload or {}).get("words")
                print(f"   {'*' if doc in relevant else ' '}{rank}. doc {doc:>5}  score {p.score:8.4f}"
                      f"{f'  {words} words' if words is not None else ''}{note}")
    finally:
        client.close()
