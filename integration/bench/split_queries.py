"""Hold queries out of training for calibration: a BEIR folder whose training split is cut in two.

    python integration/bench/split_queries.py --data ../shared/data/cranfield --out /tmp/cran-split \
        [--train train] [--calib-frac 0.25] [--seed 0]

Writes ``OUT/qrels/fit.tsv`` (train on these: ``genret index --queries-split fit``) and
``OUT/qrels/calib.tsv`` (``genret calibrate --split calib``): the training split's query ids, sorted
as strings and shuffled with ``random.Random(seed)``; the first ``int(n * calib-frac)`` are held out.
Every other qrels file is copied as it is; the corpus and the queries are linked, not copied.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path


def link_collection(data: Path, out: Path, skip: str = "") -> None:
    """``out`` as a BEIR folder of ``data``: corpus and queries linked, qrels copied (but ``skip``)."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        link = out / name
        if not link.exists():
            link.symlink_to((data / name).resolve())
    for other in (data / "qrels").glob("*.tsv"):
        if other.stem != skip:
            shutil.copyfile(other, out / "qrels" / other.name)


def split(data: Path, out: Path, train: str, calib_frac: float, seed: int) -> tuple[int, int]:
    lines = (data / "qrels" / f"{train}.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.strip()]
    queries = sorted({row.split("\t")[0] for row in rows})
    random.Random(seed).shuffle(queries)
    held = set(queries[: int(len(queries) * calib_frac)])
    link_collection(data, out, skip=train)
    for name, keep in (("calib", True), ("fit", False)):
        chosen = [row for row in rows if (row.split("\t")[0] in held) == keep]
        (out / "qrels" / f"{name}.tsv").write_text("\n".join([header, *chosen]) + "\n", encoding="utf-8")
    return len(queries) - len(held), len(held)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", default="train")
    ap.add_argument("--calib-frac", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    fit, calib = split(args.data, args.out, args.train, args.calib_frac, args.seed)
    print(f"{args.out}: fit {fit} queries, calib {calib} queries")


if __name__ == "__main__":
    main()
