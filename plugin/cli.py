"""The `genret` command: load, index, calibrate, serve, search, keys, eval, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from genret.config import Config, force_offline, launcher_ranks, load_config
from genret.docids import SCHEMES
from genret.errors import GenretError
from genret.types import Fusion


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("qdrant and index (also GENRET_* environment variables)")
    g.add_argument("--qdrant-path", help="embedded Qdrant directory (default genret-data/qdrant)")
    g.add_argument("--qdrant-url", help="Qdrant server URL; overrides --qdrant-path")
    g.add_argument("--qdrant-api-key", help="API key for the Qdrant server")
    g.add_argument("--collection", help="Qdrant collection (default genret)")
    g.add_argument("--tenant-key", help="payload field naming the tenant (default tenant)")
    g.add_argument("--text-key", help="payload field with the document text (default text)")
    g.add_argument("--title-key", help="payload field with the title (default title)")
    g.add_argument("--docid-key", help="payload field genret writes docids to (default genret_docid); give a new "
                   "index over the same collection its own, e.g. genret_docid_v2")
    g.add_argument("--index-dir", help="index directory (default genret-data/index)")
    g.add_argument("--device", help="auto, cpu or cuda[:n]")
    g.add_argument("--kernel-backend", choices=["auto", "triton", "torch"], help="constrained-decoding kernels")
    g.add_argument("--scoring", choices=["vocab", "children"],
                   help="vocab: log-softmax over all docid tokens; children: only over the trie's allowed ones")
    g.add_argument("-v", "--verbose", action="store_true")
    g.add_argument("--log-format", choices=["text", "json"], help="json: one JSON object per log line")


def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--add", action="store_true",
                   help="train the documents the index lacks into it (replaying old ones); docids kept")
    p.add_argument("--scheme", default="atomic", choices=list(SCHEMES),
                   help="atomic (default): one token per document; semantic: hierarchical k-means; rq: residual "
                   "quantization; keyword: readable words")
    p.add_argument("--branching", type=int, default=10, help="k of hierarchical k-means, RQ codebook size")
    p.add_argument("--docid-headroom", type=int, default=1,
                   help="extra semantic docid levels for documents upserted after indexing")
    p.add_argument("--docid-init", default="auto", choices=["auto", "random", "embeddings"],
                   help="embeddings (atomic docids): each docid's output row starts at its document's MiniLM vector; "
                   "auto (default): embeddings for atomic docids with the default model, else random")
    p.add_argument("--query-skip", type=float, default=0.0,
                   help="with --docid-init embeddings: add the query's MiniLM embedding times this to the first "
                   "decoding step, so the model starts as dense retrieval and learns what to change; 0: off")
    p.add_argument("--spare-docids", type=int, default=256,
                   help="atomic: free docid tokens for documents upserted through the sidecar before the next --add")
    p.add_argument("--model", default="default",
                   help="'default' (MiniLM encoder + small decoder), 'tiny', or a local HF seq2seq checkpoint")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--encoder-lr", type=float, default=5e-5)
    p.add_argument("--decoder-lr", type=float, default=5e-4,
                   help="peak learning rate of the decoder (default 5e-4; linear warm-up, then linear decay to 0)")
    p.add_argument("--max-input-tokens", type=int, default=128,
                   help="encoder input tokens per training text (a longer text is cut); at most 512")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="time budget of the build's slow parts: query generation (at most half of it, shared by "
                   "the tenants in proportion to their documents waiting for it; documents it does not reach get "
                   "no generated queries, and a rerun continues from the cache), the frozen-encoder pass and the "
                   "epochs; each logs its estimate first")
    p.add_argument("--checkpoint-every-s", type=float, default=60.0,
                   help="save the training state (which a rerun resumes from) after an epoch at most this often; "
                   "0: after every epoch")
    p.add_argument("--freeze-encoder", action=argparse.BooleanOptionalAction, default=None,
                   help="train only the decoder on cached encoder states (default: on for the default model, whose "
                   "encoder is pretrained MiniLM; off for others)")
    p.add_argument("--train-encoder-layers", type=int, default=0,
                   help="with --freeze-encoder: train the encoder's top N layers (at --encoder-lr) on cached states "
                   "of the layers below them; 0: the encoder stays frozen")
    p.add_argument("--encoder-cache", help="with --freeze-encoder: directory keeping encoder states, so "
                   "indexing the same texts again skips the encoder")
    p.add_argument("--freeze-docid-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the docid output rows as initialised (default: on with --docid-init embeddings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-chunks", type=int, default=8, help="word-window pairs per document")
    p.add_argument("--rehearsal", type=int, default=2, help="key sentences per document as extra pairs")
    p.add_argument("--generated-queries", type=int, default=3,
                   help="generated queries kept per document (DSI-QG); 0: none (no generator runs)")
    p.add_argument("--query-samples", type=int, default=4, help="candidate queries sampled per document")
    p.add_argument("--query-generator", default="default",
                   help="'default' (packaged SmolLM2-135M-Instruct) or a local HF seq2seq/causal LM checkpoint")
    p.add_argument("--query-instruction",
                   help="what the generator is asked to write for each passage, in the style of the collection's "
                   "queries (default: 'Write a search query that this passage answers.')")
    p.add_argument("--query-ranker", default="minilm", help="'minilm' or a local cross-encoder checkpoint")
    p.add_argument("--query-cache", help="generated-query cache (default: <index-dir>.queries.jsonl)")
    p.add_argument("--round-trip", type=int, default=10,
                   help="keep a generated query only if BM25+dense fusion (or the --teacher) ranks its document in the "
                   "top this many (default 10); 0: keep all")
    p.add_argument("--teacher", default="none", choices=["none", "bm25", "dense", "fusion"],
                   help="teacher ranking each training text's candidates (atomic docids): the model also learns its "
                   "distribution over them (listwise KL); fusion: BM25 and dense standardised and averaged")
    p.add_argument("--teacher-candidates", type=int, default=16, help="documents per text in a teacher target")
    p.add_argument("--teacher-temperature", type=float, default=0.5,
                   help="softmax temperature over the teacher's standardised scores")
    p.add_argument("--listwise-weight", type=float, default=1.0,
                   help="weight of the listwise loss beside the cross-entropy")
    p.add_argument("--replay", type=float, default=1.0, help="with --add: old-document pairs per new pair")
    p.add_argument("--sam-rho", type=float, default=0.0, help="sharpness-aware minimisation radius; 0: off")
    p.add_argument("--input-dropout", type=float, default=0.0,
                   help="share of each training input's tokens hidden from the decoder at each step (0 to <1); 0: off")
    p.add_argument("--queries-from", help="BEIR folder whose training queries become training pairs")
    p.add_argument("--queries-split", default="train")


def _judged_queries(p: argparse.ArgumentParser, split: str) -> None:
    """What ``eval`` and ``calibrate`` share: the served index and a BEIR split of judged queries."""
    _common(p)
    p.add_argument("--data", required=True, help="BEIR folder (queries.jsonl, qrels/)")
    p.add_argument("--split", default=split)
    p.add_argument("--tenant", default="default")
    p.add_argument("--beam-size", type=int, default=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genret", description="Generative retrieval sidecar for Qdrant")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("load", help="load a BEIR folder into the Qdrant collection")
    _common(p)
    p.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--tenant", default="default")
    p.add_argument("--no-vectors", action="store_true", help="skip MiniLM dense vectors")
    p.add_argument("--payload-fields", help="JSONL of {\"_id\": ..., field: value}: more payload fields to filter on")
    p.add_argument("--limit", type=int, default=None)

    p = sub.add_parser("index", help="assign docids and train the generative index")
    _common(p)
    _index_args(p)

    p = sub.add_parser("serve", help="serve the index over gRPC")
    _common(p)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--keys-file", help="API key file (see `genret keys add`); without it, no auth")
    p.add_argument("--qdrant-port", type=int, help="also serve Qdrant's gRPC API (the front door) on this port; "
                   "0 picks a free one; default off (-1)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0: a free one); "
                   "default off (-1)")
    p.add_argument("--metrics-tenant-labels", type=int, help="tenants named in metric labels (default 100); "
                   "the rest are counted as 'other'")
    p.add_argument("--read-only", action="store_true", default=None,
                   help="a read replica: refuse writes to the served collection (send them to the writer replica)")
    p.add_argument("--follow-s", type=float,
                   help="re-read docids from Qdrant every this many seconds and rebuild the tenants whose documents "
                   "another replica changed (default 0: never)")
    p.add_argument("--health-interval-s", type=float,
                   help="seconds between Qdrant probes; health is NOT_SERVING while Qdrant does not answer (default 1)")
    p.add_argument("--otel-exporter", choices=["otlp", "console"],
                   help="OpenTelemetry traces (needs genret[tracing]): otlp sends them to OTEL_EXPORTER_OTLP_ENDPOINT "
                   "(default localhost:4317), console prints them; default off")
    p.add_argument("--log-queries", action="store_true", default=None,
                   help="put query texts in the access log (off: tenant, mode, status and latency only)")
    p.add_argument("--qdrant-grpc-port", type=int,
                   help="gRPC port of the Qdrant server at --qdrant-url, for the front door (default 6334)")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS only")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--keys-grace-s", type=float,
                   help="seconds a missing or unreadable key file keeps the last keys valid (default 10)")
    p.add_argument("--tenant-max-inflight", type=int, help="per-tenant requests in flight (default 32)")
    p.add_argument("--max-inflight", type=int, help="requests in flight over all tenants (default 512)")
    p.add_argument("--admission-wait-s", type=float,
                   help="how long a request at a cap waits for a slot before RESOURCE_EXHAUSTED (default 1)")
    p.add_argument("--tenant-max-new-docids", type=int,
                   help="docids a tenant may hold that the model was not trained on (default 64; 0: no cap)")
    p.add_argument("--batch-rows", type=int,
                   help="rows decoded together at most (default 0: 8 on a CPU, 32 on a GPU)")
    p.add_argument("--write-workers", type=int, help="tenants whose writes run at once (default 2)")
    p.add_argument("--max-write-chars", type=int, help="characters of titles and texts per upsert (default 4M)")
    p.add_argument("--generative-feedback", type=float,
                   help="pseudo-relevance feedback on the generative list: the weight of its candidates' scores for "
                   "the query followed by its top document (default 0: off)")

    p = sub.add_parser("keys", help="manage API keys")
    p.add_argument("action", choices=["add"])
    p.add_argument("--keys-file", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--tenant", action="append", default=[], help="a tenant the key may use (repeatable)")
    p.add_argument("--admin", action="store_true", help="management RPCs and every tenant")

    p = sub.add_parser("search", help="query a running sidecar")
    p.add_argument("query", help="the query's text")
    p.add_argument("--target", default="127.0.0.1:50051",
                   help="the sidecar's host:port, as serve's --host and --port set it (default 127.0.0.1:50051); "
                        "several IP addresses, comma-separated, are taken in turn")
    p.add_argument("--tenant", default="default", help="the tenant whose documents are searched (default: default)")
    p.add_argument("--top-k", type=int, default=10, help="results to return (default 10)")
    p.add_argument("--beam-size", type=int, default=0, help="generative beam width (default 0: the server's)")
    p.add_argument("--mode", default="generative", choices=["generative", "dense", "hybrid", "auto"],
                   help="the retriever (default generative)")
    p.add_argument("--fusion", default="default", choices=[f.value for f in Fusion], help="HYBRID's fusion (default: dbsf)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    p.add_argument("--api-key", default="", help="sent as x-api-key metadata")
    p.add_argument("--tls-ca", default="", help="PEM CA certificate: connect with TLS")

    p = sub.add_parser("eval", help="generative vs dense vs BM25 on a BEIR split")
    _judged_queries(p, "test")
    p.add_argument("--out", default="genret-eval", help="folder for the results JSON and table (default genret-eval)")
    p.add_argument("--name", default=None, help="results file name (default eval-<collection>-<split>)")
    p.add_argument("--feedback", type=float, default=0.0,
                   help="also run the generative list and HYBRID (DBSF) with pseudo-relevance feedback at this weight, "
                   "as rows of their own (default 0: not)")

    p = sub.add_parser("calibrate", help="fit calibrated probabilities on training queries (stored in the index)")
    _judged_queries(p, "train")
    p.add_argument("--limit", type=int, default=None, help="at most this many queries")

    p = sub.add_parser("demo", help="the whole path on the bundled Cranfield corpus, embedded Qdrant")
    _common(p)
    p.add_argument("--minutes", type=float, default=3.0,
                   help="time budget of the index build: query generation (none: the bundled corpus's queries are "
                   "shipped), encoder pass and epochs (default 3)")
    p.add_argument("--fresh", action="store_true", help="rebuild the collection and index")
    return parser


def _config(args: argparse.Namespace, **extra: Any) -> Config:
    keys = ("qdrant_path", "qdrant_url", "qdrant_api_key", "collection", "tenant_key", "text_key", "title_key", "docid_key",
            "index_dir", "device", "kernel_backend", "scoring", "host", "port", "keys_file", "tls_cert", "tls_key",
            "tenant_max_inflight", "max_inflight", "keys_grace_s", "tenant_max_new_docids", "batch_rows",
            "write_workers", "max_write_chars", "admission_wait_s", "qdrant_port", "qdrant_grpc_port", "metrics_port",
            "metrics_tenant_labels", "log_format", "log_queries", "otel_exporter",
            "health_interval_s", "read_only", "follow_s", "generative_feedback")
    overrides = {k: getattr(args, k, None) for k in keys}
    overrides.update(extra)
    return load_config(overrides)


def main(argv: Sequence[str] | None = None) -> int:
    force_offline()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        log_format = load_config({"log_format": getattr(args, "log_format", None)}).log_format
    except ValueError as exc:
        print(f"genret {args.command}: {exc}", file=sys.stderr)
        return 2
    if log_format == "json":
        from genret.api.access_log import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return _dispatch(args)
    except (FileNotFoundError, ValueError, GenretError) as exc:
        print(f"genret {args.command}: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "search":
        import grpc

        from genret.client import GenretClient, format_hits

        with GenretClient(args.target, args.timeout, args.api_key, args.tls_ca) as client:
            try:
                resp = client.search(args.tenant, args.query, args.top_k, args.beam_size, args.mode,
                                     fusion=args.fusion)
            except grpc.RpcError as exc:
                print(f"genret search: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
        print(format_hits(resp))
        return 0

    if args.command == "keys":
        from genret.api.auth import add_key

        key = add_key(args.keys_file, args.name, args.tenant, args.admin)
        print(key)  # shown once; the file keeps only its SHA-256
        return 0

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cfg = _config(args)
    if args.command == "serve":
        from genret.api.server import serve
        from genret.serving.engine import Engine

        asyncio.run(serve(cfg, Engine.load))
        return 0
    if args.command == "demo":
        from genret.demo import run_demo

        if not args.minutes > 0:
            print(f"genret demo: --minutes must be above 0, got {args.minutes:g}", file=sys.stderr)
            return 2
        return run_demo(cfg, minutes=args.minutes, fresh=args.fresh)

    work = _prepare(args, cfg)
    if args.command == "index" and launcher_ranks()[1] > 1:
        return _index_ranked(work, cfg)
    from genret.store import QdrantStore

    store = QdrantStore(cfg)
    try:
        work(store)
    finally:
        store.close()
    return 0


def _prepare(args: argparse.Namespace, cfg: Config) -> Callable[..., None]:
    """Check what a command reads besides Qdrant (its folder and split, its options, the index) and return
    its work on the opened store: a bad input is refused before Qdrant is opened, so nothing is created."""
    from genret.data.beir import corpus_file, load_qrels, load_queries

    if args.command == "load":
        corpus_file(args.data)
        return partial(_load, args, cfg)
    if args.command == "index":
        return partial(_index, _index_job(args, cfg), cfg)
    load_queries(args.data)
    load_qrels(args.data, args.split)
    if args.command == "eval" and not (math.isfinite(args.feedback) and args.feedback >= 0):
        raise ValueError(f"--feedback must be a finite number of at least 0, got {args.feedback:g}")
    from genret.data.index_dir import read_manifest

    read_manifest(cfg.index_dir)
    return partial(_eval if args.command == "eval" else _calibrate, args, cfg)


def _load(args: argparse.Namespace, cfg: Config, store: Any) -> None:
    from genret.data.loader import load_beir

    device = None
    if not args.no_vectors:  # torch only to embed
        from genret.devices import resolve_device

        device = resolve_device(cfg.device)
    n = load_beir(store, args.data, args.tenant, not args.no_vectors, device, args.limit, args.payload_fields)
    print(f"loaded {n} documents into '{cfg.collection}' (tenant '{args.tenant}')")


def _calibrate(args: argparse.Namespace, cfg: Config, store: Any) -> None:
    from genret.evaluation.reliability import calibrate_index
    from genret.serving.engine import Engine

    cal, path = calibrate_index(Engine.load(cfg, store), args.data, args.split, args.tenant,
                                args.beam_size, limit=args.limit)
    print(describe_calibration(cal, path))


def _index_ranked(work: Callable[..., None], cfg: Config) -> int:
    """`genret index` as one rank of several started by torchrun: rank 0 alone opens Qdrant."""
    from genret.devices import resolve_device
    from genret.indexing.distributed import Ranks, start, stop
    from genret.store import QdrantStore

    ranks = Ranks(*launcher_ranks())
    device = start(ranks, resolve_device(cfg.device))
    store = QdrantStore(cfg) if ranks.main else None
    try:
        work(store, ranks, device)
    finally:
        if store is not None:
            store.close()
        stop(ranks)
    return 0


def index_options(args: argparse.Namespace) -> Any:
    """The ``IndexOptions`` of `genret index` arguments (the demo builds with those of no flags)."""
    from genret.indexing.indexer import IndexOptions
    from genret.indexing.teacher import TeacherOptions

    init = args.docid_init
    if init == "auto":
        init = "embeddings" if args.scheme == "atomic" and args.model == "default" else "random"
    return IndexOptions(scheme=args.scheme, branching=args.branching, docid_headroom=args.docid_headroom,
                        model=args.model, docid_init=init, spare_docids=args.spare_docids,
                        query_skip=args.query_skip, pairs=_pair_options(args), query_cache=args.query_cache,
                        train=_train_config(args, args.model == "default", freeze_rows=init == "embeddings"),
                        teacher=TeacherOptions(args.teacher, args.teacher_candidates, args.teacher_temperature))


def _train_config(args: argparse.Namespace, minilm: bool, freeze_rows: bool = False) -> Any:
    """``minilm``: whether the encoder is the pretrained MiniLM (then it is frozen unless told otherwise);
    ``freeze_rows``: the docid rows' default when --freeze-docid-embeddings is not given."""
    from genret.indexing.training import TrainConfig

    freeze_encoder = minilm if args.freeze_encoder is None else args.freeze_encoder
    rows = freeze_rows if args.freeze_docid_embeddings is None else args.freeze_docid_embeddings
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, encoder_lr=args.encoder_lr,
                       decoder_lr=args.decoder_lr, max_minutes=args.max_minutes,
                       max_input_tokens=args.max_input_tokens,
                       freeze_encoder=freeze_encoder, freeze_docid_embeddings=rows,
                       encoder_cache=args.encoder_cache, train_encoder_layers=args.train_encoder_layers,
                       sam_rho=args.sam_rho, input_dropout=args.input_dropout, listwise_weight=args.listwise_weight,
                       seed=args.seed,
                       checkpoint_every_s=args.checkpoint_every_s)


def _pair_options(args: argparse.Namespace) -> Any:
    from genret.indexing.training_data import PairOptions

    return PairOptions(max_chunks=args.max_chunks, rehearsal=args.rehearsal,
                       generated_queries=args.generated_queries, query_samples=args.query_samples,
                       query_generator=args.query_generator, query_ranker=args.query_ranker,
                       round_trip=args.round_trip,
                       **({"query_instruction": args.query_instruction} if args.query_instruction else {}))


@dataclass(frozen=True)
class _IndexJob:
    """`genret index` as checked before Qdrant is opened: its options and training queries."""

    options: Any  # IndexOptions, or AddOptions with --add
    queries: Any  # TrainingQueries | None


def _index_job(args: argparse.Namespace, cfg: Config) -> _IndexJob:
    from genret.data.beir import load_qrels, load_queries
    from genret.data.index_dir import read_manifest
    from genret.indexing.indexer import AddOptions, TrainingQueries, check_index_options
    from genret.indexing.models import MINILM

    if args.add and launcher_ranks()[1] > 1:
        raise ValueError("--add trains in one process; run it without torchrun")
    tq = None
    if args.queries_from:
        tq = TrainingQueries(load_queries(args.queries_from), load_qrels(args.queries_from, args.queries_split))
    if args.add:
        minilm = read_manifest(cfg.index_dir).model_spec.base == MINILM
        return _IndexJob(AddOptions(args.replay, _pair_options(args), args.query_cache, _train_config(args, minilm)),
                         tq)
    options = index_options(args)
    check_index_options(options)
    return _IndexJob(options, tq)


def _index(job: _IndexJob, cfg: Config, store: Any, ranks: Any = None, device: Any = None) -> None:
    from genret.devices import resolve_device
    from genret.indexing.distributed import SINGLE
    from genret.indexing.indexer import AddOptions, add_documents, build_index

    device = device or resolve_device(cfg.device)
    if isinstance(job.options, AddOptions):
        m = add_documents(store, cfg.index_dir, job.options, device, job.queries)
        stats = m.training["additions"][-1]["stats"]
    else:
        built = build_index(store, cfg.index_dir, job.options, device, job.queries, ranks or SINGLE)
        if built is None:  # a rank other than 0: rank 0 writes the index and reports
            return
        m = built
        stats = m.training["stats"]
    print(f"index written to {cfg.index_dir}: {sum(m.tenants.values())} docids in {len(m.tenants)} tenant(s), "
          f"{stats['steps']} steps, {stats['examples_per_s']:.1f} examples/s, loss {stats['final_loss']:.3f}")


def describe_calibration(cal: Any, path: Any) -> str:
    """What `genret calibrate` fitted, as a person reads it."""
    f = cal.fit_on
    tried = f.get("weighted_ndcg_at_10", {})
    best = max(tried.items(), key=lambda kv: kv[1]) if tried else None
    lines = [f"calibration written to {path}",
             f"  fitted on {f.get('queries', '?')} queries of {f.get('data', '?')} (split {f.get('split', '?')}, "
             f"tenant {f.get('tenant', '?')}, beam {f.get('beam_size', '?')}): {f.get('hits', '?')} hits, "
             f"{f.get('relevant_hits', '?')} of them relevant"]
    if best is not None:
        lines.append(f"  weighted fusion: generative score weight {cal.fusion_weights.get('generative', 0):g} "
                     f"(nDCG@10 {best[1]:.3f} on these queries, best of {len(tried)} weights tried)")
    lines.append(f"  AUTO answers generatively when its top hit's probability is at least {cal.auto_min_probability:g}")
    return "\n".join(lines)


def _eval(args: argparse.Namespace, cfg: Config, store: Any) -> None:
    from genret.evaluation.evaluate import evaluate, markdown_table, write_results
    from genret.serving.engine import Engine

    engine = Engine.load(cfg, store)
    results = evaluate(engine, store, args.data, args.split, args.tenant, beams=args.beam_size, feedback=args.feedback)
    name = args.name or f"eval-{cfg.collection}-{args.split}"
    js, _ = write_results(results, args.out, name, {
        "data": str(args.data), "split": args.split, "collection": cfg.collection, "tenant": args.tenant,
        "index_training": engine.manifest.training, "docid_scheme": engine.manifest.codec})
    print(markdown_table(results, name))
    print(f"written: {js}")
    if engine.calibration is not None:
        from genret.evaluation.reliability import calibration_report

        report = calibration_report(engine, args.data, args.split, args.tenant, args.out, name)
        for label, r in report["retrievers"].items():
            kept = ", ".join(f"p>={t}: {k['precision'] if k['precision'] is None else round(k['precision'], 3)} "
                             f"({k['kept']})" for t, k in r["precision"].items())
            print(f"{label}: ECE {r['ece']:.3f} over {r['hits']} hits; precision of the hits kept: {kept}")
        print(f"reliability diagram: {report['png']}")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
