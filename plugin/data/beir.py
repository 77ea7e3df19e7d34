"""Read IR collections in BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

_CORE = frozenset({"_id", "title", "text"})


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)  # every other field of the corpus record


def demo_corpus_path() -> Path:
    """The Cranfield collection shipped with the package (the demo corpus)."""
    return Path(str(resources.files("genret") / "demo_data" / "cranfield"))


def corpus_file(folder: str | Path) -> Path:
    """The folder's corpus.jsonl; FileNotFoundError when it has none."""
    path = Path(folder) / "corpus.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a BEIR folder holds corpus.jsonl")
    return path


def load_corpus(folder: str | Path) -> list[Document]:
    path = corpus_file(folder)
    docs = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "_id" not in row:
                raise ValueError(f"{path}:{n}: a corpus line needs an _id")
            docs.append(Document(str(row["_id"]), row.get("title") or "", row.get("text") or "",
                                 {k: v for k, v in row.items() if k not in _CORE}))
    return docs


def read_payload_fields(path: str | Path) -> dict[str, dict[str, Any]]:
    """A JSONL file of ``{"_id": ..., <field>: <value>, ...}``: more payload fields by document id."""
    out: dict[str, dict[str, Any]] = {}
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict) or "_id" not in row:
                    raise ValueError(f"{path}:{n}: a payload-fields line is an object with an _id")
                out[str(row["_id"])] = {k: v for k, v in row.items() if k != "_id"}
    return out


def load_queries(folder: str | Path) -> dict[str, str]:
    path = Path(folder) / "queries.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a BEIR folder holds queries.jsonl")
    out: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[str(row["_id"])] = row["text"]
    return out


def load_qrels(folder: str | Path, split: str) -> dict[str, dict[str, int]]:
    """``{query_id: {doc_id: grade}}`` for one split, positive grades only."""
    path = Path(folder) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: no qrels for split '{split}'")
    out: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None:
            return out
        for row in reader:
            if len(row) < 3:
                continue
            grade = int(float(row[2]))
            if grade > 0:
                out.setdefault(row[0], {})[row[1]] = grade
    return out
