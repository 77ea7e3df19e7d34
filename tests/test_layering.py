"""The layering holds by structure: each package imports only the layers below it.

    api        -> ranking, types, config, errors, names, store, v1 (no torch: it talks to the engine via types)
    evaluation -> serving, ranking, decoding, data, base
    serving    -> ranking, decoding, data, base, kernels
    indexing   -> decoding, data, base, kernels
    ranking    -> base
    decoding   -> data, base, kernels
    data       -> base
    base       =  the top-level modules (types, config, errors, names, turns, devices, docids, store, metrics,
                  tracing)
    kernels    -> genret.kernels only
Only ``genret.store`` talks to Qdrant; ``api/`` may import Qdrant's wire messages and their conversions
(``qdrant_client.grpc``, ``qdrant_client.conversions``), as it imports genret's own (``genret.v1``);
``demo`` plays a Qdrant user's own code. ``cli``, ``demo`` and ``client`` sit above everything.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = {"types", "config", "errors", "names", "turns", "devices", "docids", "store", "metrics", "tracing", "v1", ""}
ALLOWED = {
    "api": {"api", "ranking"} | BASE,
    "evaluation": {"evaluation", "serving", "ranking", "decoding", "data"} | BASE,
    "serving": {"serving", "ranking", "decoding", "data", "kernels"} | BASE,
    "indexing": {"indexing", "decoding", "data", "kernels"} | BASE,
    "ranking": {"ranking"} | BASE,
    "decoding": {"decoding", "data", "kernels"} | BASE,
    "data": {"data"} | BASE,
}
TOP = {"cli", "demo", "client", "__init__"}


def imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth of the file (function-level imports included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def package_of(path: Path, plugin: Path) -> str:
    """The layer of a file under plugin/: its subpackage, or its module name at the top."""
    rel = path.relative_to(plugin).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def genret_layer(module: str) -> str | None:
    """``genret.serving.engine`` -> ``serving``; ``genret`` -> ``""``; not genret -> None."""
    parts = module.split(".")
    if parts[0] != "genret":
        return None
    return parts[1] if len(parts) > 1 else ""


def sources(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "v1" not in p.relative_to(root).parts)


def layering_violations(repo: Path = ROOT) -> list[str]:
    bad = []
    plugin = repo / "plugin"
    for path in sources(plugin):
        layer = package_of(path, plugin)
        if layer in TOP:
            continue
        allowed = ALLOWED.get(layer, BASE)
        for module in imports(path):
            target = genret_layer(module)
            if target is not None and target not in allowed:
                bad.append(f"{path.relative_to(repo)} ({layer}) imports {module}")
    return bad


def _may_import_qdrant(path: Path, module: str, repo: Path) -> bool:
    plugin = repo / "plugin"
    if plugin / "store" in path.parents or path == plugin / "demo.py":  # the demo plays a user's own code
        return True
    wire = ("qdrant_client.grpc", "qdrant_client.conversions")
    return plugin / "api" in path.parents and any(module == m or module.startswith(m + ".") for m in wire)


def qdrant_violations(repo: Path = ROOT) -> list[str]:
    return [f"{path.relative_to(repo)} imports {module}"
            for top in ("plugin", "kernels") for path in sources(repo / top) for module in imports(path)
            if module.split(".")[0] == "qdrant_client" and not _may_import_qdrant(path, module, repo)]


def kernel_violations(repo: Path = ROOT) -> list[str]:
    return [f"{path.relative_to(repo)} imports {module}"
            for path in sources(repo / "kernels") for module in imports(path)
            if module.split(".")[0] == "genret" and not module.startswith("genret.kernels")]


def test_the_api_layer_loads_without_torch() -> None:
    code = ("import sys, genret.api.servicer, genret.api.server\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'triton') if m in sys.modules)\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"importing the API layer loaded {out.stdout.strip()}"


def test_the_kernels_folder_never_shadows_the_kernels_package() -> None:
    """transformers imports the PyPI package ``kernels``: run from the repository root, ``import kernels``
    must never find this repository's kernels/ folder as a regular package."""
    code = "import kernels\nprint(getattr(kernels, '__file__', None) or '')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert not out.stdout.strip().startswith(str(ROOT / "kernels")), out.stdout


def test_each_layer_imports_only_the_layers_below_it() -> None:
    assert layering_violations() == []


def test_only_the_store_imports_qdrant_client() -> None:
    assert qdrant_violations() == []


def test_kernels_import_nothing_from_the_sidecar() -> None:
    assert kernel_violations() == []


@pytest.mark.parametrize(("where", "line", "check"), [
    ("kernels/probe.py", "from genret.decoding.trie import TrieForest\n", kernel_violations),
    ("plugin/data/probe.py", "import qdrant_client\n", qdrant_violations),
    ("plugin/api/probe.py", "from qdrant_client import QdrantClient\n", qdrant_violations),
    ("plugin/decoding/probe.py", "def f():\n    from genret.serving.engine import Engine\n", layering_violations),
])
def test_the_checks_catch_a_violation(tmp_path: Path, where: str, line: str,
                                      check: Callable[[Path], list[str]]) -> None:
    """Each check, run over a copy of the tree with one bad import added, reports it (and nothing else)."""
    for top in ("plugin", "kernels"):
        shutil.copytree(ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__", "demo_data"))
    assert check(tmp_path) == []
    (tmp_path / where).write_text(line)
    assert [v.split(" ")[0] for v in check(tmp_path)] == [where]


def test_the_readme_layout_names_every_module_and_package() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout"): text.index("\n## ", text.index("## Layout") + 1)]
    plugin = ROOT / "plugin"
    names = {p.stem for p in sources(plugin) if p.name != "__init__.py"}
    names |= {f"{d.name}/" for d in plugin.iterdir() if (d / "__init__.py").exists() and d.name != "v1"}
    assert sorted(n for n in names if not re.search(rf"(?<![\w/]){re.escape(n)}(?![\w])", layout)) == []


def test_every_module_imports() -> None:
    """Each module's imports resolve (names moved between packages included)."""
    import importlib

    plugin = ROOT / "plugin"
    for path in sources(plugin):
        rel = path.relative_to(plugin).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        importlib.import_module(".".join(["genret", *parts]))
    for path in sources(ROOT / "kernels" / "ops"):
        rel = path.relative_to(ROOT / "kernels" / "ops").with_suffix("")
        importlib.import_module(".".join(["genret", "kernels", *[p for p in rel.parts if p != "__init__"]]))


def test_the_results_index_names_every_results_file() -> None:
    results = ROOT / "integration" / "bench" / "results"
    index = (results / "README.md").read_text()
    files = sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file() and p.name != "README.md")
    assert files and [f for f in files if f"`{f}`" not in index] == []


def test_every_package_is_installed() -> None:
    """pyproject lists packages by name: a new subpackage missing there would be absent from a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    plugin = ROOT / "plugin"
    found = {".".join(["genret", *p.parent.relative_to(plugin).parts]) for p in plugin.rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert sorted(found - listed) == []
