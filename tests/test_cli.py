"""A command with a bad input is refused with one line and exit status 2 before Qdrant is opened: no store
folder is created and nothing is read from one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genret.cli import main


def _judged(folder: Path) -> Path:
    """A BEIR folder with queries and train/test qrels (no corpus)."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "wing flutter"}) + "\n")
    for split in ("train", "test"):
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


BAD = {
    "load: no corpus": (["load", "--data", "{missing}"], "corpus.jsonl not found"),
    "index: bad option": (["index", "--checkpoint-every-s", "-1"], "--checkpoint-every-s must be at least 0"),
    "index: inputs longer than the encoder": (["index", "--max-input-tokens", "1024"],
                                              "--max-input-tokens must be 8 to 512"),
    "index: no time to build in": (["index", "--max-minutes", "0"], "--max-minutes must be above 0"),
    "demo: no time to build in": (["demo", "--minutes", "-1"], "--minutes must be above 0"),
    "index: every input token dropped": (["index", "--input-dropout", "1"], "--input-dropout must be at least 0"),
    "index: options that do not go together": (["index", "--scheme", "semantic", "--docid-init", "embeddings"],
                                               "needs atomic docids"),
    "index: a cut outside the encoder": (["index", "--freeze-encoder", "--train-encoder-layers", "6"],
                                         "between 1 and 5"),
    "index: training queries missing": (["index", "--queries-from", "{missing}"], "queries.jsonl not found"),
    "index --add: no index yet": (["index", "--add"], "no index at"),
    "eval: no queries": (["eval", "--data", "{missing}"], "queries.jsonl not found"),
    "eval: no such split": (["eval", "--data", "{judged}", "--split", "dev"], "no qrels for split 'dev'"),
    "eval: no index yet": (["eval", "--data", "{judged}"], "no index at"),
    "eval: a negative feedback weight": (["eval", "--data", "{judged}", "--feedback", "-1"],
                                         "--feedback must be a finite number of at least 0"),
    "calibrate: no index yet": (["calibrate", "--data", "{judged}"], "no index at"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_input_is_refused_before_qdrant_is_opened(tmp_path: Path, case: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    args, message = BAD[case]
    places = {"missing": str(tmp_path / "missing"), "judged": str(_judged(tmp_path / "judged"))}
    store = tmp_path / "qdrant"
    argv = [a.format(**places) for a in args] + ["--qdrant-path", str(store), "--index-dir", str(tmp_path / "idx")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"genret {args[0]}: ") and message in err and "\n" not in err, err
    assert not store.exists()
    assert not (tmp_path / "idx").exists()
