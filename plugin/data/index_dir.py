"""The index directory: trained model, docid codec and a manifest with versions.

    <index_dir>/manifest.json   what was built, from what, with which versions
    <index_dir>/model/          Hugging Face checkpoint + tokenizer
    <index_dir>/docids.jsonl    the docids the model was trained on (tenant, point_id, doc_id, docid)
    <index_dir>/memory.jsonl    per trained document, the texts ``genret index --add`` replays it by
    <index_dir>.queries.jsonl   beside the index: generated-query cache, kept across re-indexing

Directories are written next to the target and renamed into place, so a reader sees a whole index or
the previous one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from genret import __version__
from genret.docids import DocidCodec, codec_from_json
from genret.store import qdrant_client_version

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_DIR = "model"
DOCIDS = "docids.jsonl"
MEMORY = "memory.jsonl"


@dataclass(frozen=True)
class ModelSpec:
    """How docid tokens sit in the model's vocabulary (stored in the index manifest)."""

    kind: str  # "default" or "checkpoint"
    base: str  # where the weights came from
    token_offset: int  # docid token i is model token token_offset + i
    start_token: int  # decoder start token
    docid_vocab: int
    query_skip: float = 0.0  # scale of the query's pooled encoder state added to the first step's features


def query_cache_path(index_dir: str | Path) -> Path:
    """Where generated queries are cached for an index (beside it, so rebuilding keeps them)."""
    target = Path(index_dir)
    return target.with_name(target.name + ".queries.jsonl")


def library_versions() -> dict[str, str]:
    import grpc
    import torch
    import transformers

    out = {"python": sys.version.split()[0], "genret": __version__, "torch": torch.__version__,
           "transformers": transformers.__version__, "grpcio": grpc.__version__}
    out["qdrant-client"] = qdrant_client_version()
    return out


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Manifest:
    collection: str
    tenant_key: str
    codec: dict[str, Any]
    model: dict[str, Any]
    tenants: dict[str, int]
    training: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: utc_now())
    versions: dict[str, str] = field(default_factory=library_versions)
    format_version: int = FORMAT_VERSION
    docid_key: str = "genret_docid"  # the payload field the index's docids are written to

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec(**self.model)

    def docid_codec(self) -> DocidCodec:
        return codec_from_json(self.codec)


def read_manifest(index_dir: str | Path) -> Manifest:
    path = Path(index_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no index at {index_dir}: {MANIFEST} missing (run `genret index` first)")
    raw = json.loads(path.read_text())
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"index at {index_dir} has format {raw.get('format_version')}, expected {FORMAT_VERSION}")
    return Manifest(**raw)


class TrainedDocids:
    """Which (point id, docid) pairs the index's model was trained on (its docids file).

    A pair not in it is new: given by a live write, possibly a number an atomic index reused for another
    document. Held as sorted 64-bit digests: 8 bytes per trained document.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._keys = np.unique(np.fromiter((self._key(p, d) for p, d in pairs), dtype=np.uint64))

    @staticmethod
    def _key(point_id: str, docid: str) -> int:
        return int.from_bytes(hashlib.blake2b(f"{point_id}\x00{docid}".encode(), digest_size=8).digest(), "little")

    def __contains__(self, pair: tuple[str, str]) -> bool:
        key = np.uint64(self._key(*pair))
        i = int(np.searchsorted(self._keys, key))
        return i < len(self._keys) and self._keys[i] == key

    def __len__(self) -> int:
        return len(self._keys)


def trained_docids(index_dir: str | Path) -> TrainedDocids:
    """The (point id, docid) pairs the index's model was trained on."""
    path = Path(index_dir) / DOCIDS
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip()) if path.is_file() else ()
    return TrainedDocids((r["point_id"], r["docid"]) for r in rows)


def staging_dir(index_dir: str | Path) -> Path:
    """A fresh sibling directory to write a new index into before ``publish``."""
    target = Path(index_dir)
    tmp = target.with_name(target.name + ".staging")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True))


def publish(staging: Path, index_dir: str | Path) -> None:
    """Replace ``index_dir`` by ``staging`` (the old one is kept as ``<name>.previous`` until done)."""
    target = Path(index_dir)
    old = target.with_name(target.name + ".previous")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    if old.exists():
        shutil.rmtree(old)
