"""The committed stubs in plugin/v1 are what `make proto` generates from proto/."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    from importlib import resources

    well_known = resources.files("grpc_tools") / "_proto"  # what `python -m grpc_tools.protoc` adds
    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{well_known}", f"--python_out={tmp_path}",
                      f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(ROOT / "proto/genret/v1/genret.proto")])
    assert rc == 0
    for name in ("genret_pb2.py", "genret_pb2.pyi", "genret_pb2_grpc.py"):
        fresh = (tmp_path / "genret" / "v1" / name).read_text()
        assert fresh == (ROOT / "plugin" / "v1" / name).read_text(), f"{name} is stale: run `make proto`"
