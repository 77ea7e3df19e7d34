"""Queries about documents no training query is about: a split's subset for honest supervised figures.

    python integration/bench/unseen_queries.py --data ../shared/data/scifact --out /tmp/sf-unseen \
        [--split dev] [--train train]

An index trained on the training queries (``--queries-from``) has been shown queries for the documents
those queries judge relevant. In some collections (SciFact: several claims per abstract) many evaluation
queries share a relevant document with a training query. This writes a BEIR folder beside ``--data``
(corpus and queries linked, qrels copied) with ``qrels/<split>-unseen.tsv``: the split's queries none of
whose relevant documents is relevant to any training query. ``genret eval --split <split>-unseen`` then
measures every retriever on documents the generative index learned from their text and generated
queries only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genret.data.beir import load_qrels

sys.path.insert(0, str(Path(__file__).parent))
from split_queries import link_collection  # noqa: E402

QRELS_HEADER = "query-id\tcorpus-id\tscore"


def unseen(data: Path, out: Path, split: str, train: str) -> tuple[int, int]:
    link_collection(data, out)
    taught = {doc for docs in load_qrels(data, train).values() for doc in docs}
    relevant = load_qrels(data, split)
    kept = {q: docs for q, docs in relevant.items() if not docs.keys() & taught}
    rows = [f"{q}\t{doc}\t{grade}" for q, docs in kept.items() for doc, grade in docs.items()]
    (out / "qrels" / f"{split}-unseen.tsv").write_text("\n".join([QRELS_HEADER, *rows]) + "\n", encoding="utf-8")
    return len(kept), len(relevant)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--train", default="train")
    args = ap.parse_args()
    kept, total = unseen(args.data, args.out, args.split, args.train)
    print(f"{args.out}/qrels/{args.split}-unseen.tsv: {kept} of {total} queries")


if __name__ == "__main__":
    main()
