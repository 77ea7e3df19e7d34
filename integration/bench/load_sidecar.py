"""The sidecar the load harness drives: ``genret serve`` on an index directory, with a Qdrant outage switch.

    python integration/bench/load_sidecar.py --data-dir DIR --collection C --switch FILE [--port 0]

While FILE exists, every call to the embedded Qdrant fails as a stopped server's does
(``integration/faults.py``). Prints the serving and metrics lines ``genret serve`` prints.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True, help="holds qdrant/ and index/ (what `genret demo` builds)")
    p.add_argument("--collection", required=True)
    p.add_argument("--switch", required=True, help="Qdrant is down while this file exists")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    from genret.config import force_offline, load_config

    force_offline()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from genret.api.server import serve
    from genret.serving.engine import Engine
    from integration.faults import outage_store

    cfg = load_config({"qdrant_path": f"{args.data_dir}/qdrant", "index_dir": f"{args.data_dir}/index",
                       "collection": args.collection, "port": args.port, "metrics_port": 0, "device": "cpu"})
    asyncio.run(serve(cfg, Engine.load, store=outage_store(cfg, args.switch)))


if __name__ == "__main__":
    main()
