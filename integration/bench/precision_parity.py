"""Does one probability threshold keep the same precision on two collections?

Reads two calibration reports written by `genret eval` on calibrated indexes (``*-calibration.json``)
and, for every retriever and threshold in both, prints the precision of the hits kept on each
collection, how far apart they are, and whether that is within the tolerance. Writes the table as JSON.

    python integration/bench/precision_parity.py A-calibration.json B-calibration.json --out parity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def compare(a: dict[str, Any], b: dict[str, Any], tolerance: float) -> list[dict[str, Any]]:
    rows = []
    for name, ra in a["retrievers"].items():
        rb = b["retrievers"].get(name)
        if rb is None:
            continue
        for t, ka in ra["precision"].items():
            kb = rb["precision"].get(t)
            if kb is None:
                continue
            pa, pb = ka["precision"], kb["precision"]
            gap = abs(pa - pb) if pa is not None and pb is not None else None
            rows.append({"retriever": name, "threshold": float(t), "precision_a": pa, "kept_a": ka["kept"],
                         "precision_b": pb, "kept_b": kb["kept"], "gap": gap,
                         "within": gap is not None and gap <= tolerance})
    return rows


def read_report(path: str) -> dict[str, Any]:
    """A calibration report, or a clear exit when the file is missing or is not one."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"cannot read calibration report {path}: {exc}") from exc
    retrievers = report.get("retrievers") if isinstance(report, dict) else None
    if not retrievers or not all(isinstance(r, dict) and "precision" in r for r in retrievers.values()):
        raise SystemExit(f"{path} is not a calibration report of `genret eval` (no per-threshold precision)")
    return report


def _cell(p: float | None, kept: int) -> str:
    return f"{p:.3f} ({kept})" if p is not None else f"none ({kept})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="calibration report of the first collection")
    ap.add_argument("b", help="calibration report of the second collection")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--out", help="JSON file for the table")
    args = ap.parse_args()
    rows = compare(read_report(args.a), read_report(args.b), args.tolerance)
    print(f"a: {args.a}\nb: {args.b}\n")
    print(f"| retriever | threshold | precision (hits kept), a | b | gap | within {args.tolerance} |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        gap = f"{r['gap']:.3f}" if r["gap"] is not None else "-"
        print(f"| {r['retriever']} | {r['threshold']} | {_cell(r['precision_a'], r['kept_a'])} | "
              f"{_cell(r['precision_b'], r['kept_b'])} | {gap} | {'yes' if r['within'] else 'no'} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"a": args.a, "b": args.b, "tolerance": args.tolerance, "rows": rows},
                                             indent=2))


if __name__ == "__main__":
    main()
