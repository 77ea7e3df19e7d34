"""The unseen-queries split keeps exactly the queries whose relevant documents no training query is about."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration" / "bench"))
from unseen_queries import unseen  # noqa: E402


def _write(path: Path, rows: list[tuple[str, str, int]]) -> None:
    lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{g}" for q, d, g in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_keeps_only_queries_about_untaught_documents(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("", encoding="utf-8")
    (data / "queries.jsonl").write_text("", encoding="utf-8")
    _write(data / "qrels" / "train.tsv", [("t1", "d1", 1), ("t2", "d2", 0)])
    # q1 shares d1 with a training query; q2's d2 was judged only not relevant; q3 mixes d3 and d1.
    _write(data / "qrels" / "dev.tsv", [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d3", 1), ("q3", "d1", 1)])
    out = tmp_path / "out"
    assert unseen(data, out, "dev", "train") == (1, 3)
    kept = (out / "qrels" / "dev-unseen.tsv").read_text(encoding="utf-8").splitlines()
    assert kept == ["query-id\tcorpus-id\tscore", "q2\td2\t1"]
    assert (out / "corpus.jsonl").is_symlink() and (out / "qrels" / "dev.tsv").exists()
