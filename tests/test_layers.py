"""The import structure: packages form layers and every import, at the top of a module or
inside a function, goes to the same layer or one below it (see docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from itertools import combinations
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fakeprobe"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: Bottom to top: a module may import from its own layer and the layers listed before it.
#: Names are the first component under ``fakeprobe`` (a package or a top-level module); the
#: root package ``fakeprobe`` itself holds the version and the typed errors, and reaches the
#: application layer only by name, on first use.
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "errors", "fileio", "registry", "weights", "core"),
    ("extractor",),
    ("datasets",),
    ("synth",),
    ("features",),
    ("pipeline",),
    ("classifiers",),
    ("training",),
    ("distributed",),
    ("evaluation",),
    ("app",),
    ("cli", "serve", "__main__"),
]
#: Every module longer than this is split (CONVENTIONS.md: small steps that can be tested alone).
MAX_LINES = 500


def layer_of(package: str) -> int:
    for index, names in enumerate(LAYERS):
        if package in names:
            return index
    raise AssertionError(f"fakeprobe.{package} is in no layer: add it to LAYERS in "
                         f"{Path(__file__).name} and to docs/architecture.md")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """``fakeprobe.extractor.align`` -> ``extractor``; ``fakeprobe`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every ``fakeprobe`` module ``path`` imports, anywhere in it, relative imports resolved
    (``from fakeprobe.x import y`` counts as importing ``fakeprobe.x``)."""
    module = module_name(path, root)
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[:len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
    return {name for name in found if name == "fakeprobe" or name.startswith("fakeprobe.")}


@lru_cache(maxsize=1)
def modules() -> dict[str, set[str]]:
    """``{module: modules it imports}`` for every module of the package."""
    return {module_name(path): imported_modules(path)
            for path in sorted(PACKAGE.rglob("*.py"))}


def edges() -> list[tuple[str, str]]:
    """(importer, imported) module pairs across packages."""
    return sorted((src, dst) for src, targets in modules().items() for dst in targets
                  if package_of(src) != package_of(dst))


def test_the_import_parser_sees_function_level_and_relative_imports(tmp_path):
    folder = tmp_path / "fakeprobe" / "extractor"
    folder.mkdir(parents=True)
    source = folder / "probe.py"
    source.write_text("import numpy\nfrom . import align\nfrom ..features import cache\n"
                      "def f():\n    from fakeprobe.synth.blend import self_blend\n")
    assert imported_modules(source, tmp_path) == {"fakeprobe.extractor", "fakeprobe.features",
                                                  "fakeprobe.synth.blend"}


def test_every_package_has_a_layer():
    for module in modules():
        layer_of(package_of(module))


def test_imports_go_to_the_same_or_a_lower_layer():
    upward = [f"{src} -> {dst}" for src, dst in edges()
              if layer_of(package_of(dst)) > layer_of(package_of(src))]
    assert not upward, "imports that reach a higher layer:\n" + "\n".join(upward)


def test_no_two_packages_import_each_other():
    pairs = {(package_of(src), package_of(dst)) for src, dst in edges()}
    both = sorted(f"{a} <-> {b}" for a, b in combinations(sorted({p for p, _ in pairs}), 2)
                  if (a, b) in pairs and (b, a) in pairs)
    assert not both, "packages that import each other:\n" + "\n".join(both)


def test_nothing_below_the_cli_imports_it():
    cli = layer_of("cli")
    offenders = [f"{src} -> {dst}" for src, dst in edges()
                 if package_of(dst) == "cli" and layer_of(package_of(src)) < cli]
    assert not offenders, "\n".join(offenders)


def test_the_heads_do_not_reach_the_extractor():
    offenders = [f"{src} -> {dst}" for src, dst in edges()
                 if package_of(src) == "classifiers" and package_of(dst) == "extractor"]
    assert not offenders, "\n".join(offenders)


def test_every_module_is_at_most_500_lines():
    too_long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            too_long[str(path.relative_to(ROOT))] = lines
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def diagram_layers(text: str) -> list[tuple[str, ...]]:
    """The layers drawn in the architecture page's mermaid diagram, bottom first: one node per
    layer, ``L<n>["name, name"]``."""
    block = re.search(r"```mermaid\n(.*?)```", text, re.S)
    assert block, f"{ARCHITECTURE} has no mermaid diagram"
    nodes = re.findall(r'\bL(\d+)\["([^"]+)"\]', block.group(1))
    assert nodes, "the diagram names no layer node L<n>[\"...\"]"
    by_index = {int(index): tuple(name.strip() for name in names.split(","))
                for index, names in nodes}
    assert sorted(by_index) == list(range(len(by_index))), "layer nodes must be L0, L1, ..."
    return [by_index[index] for index in sorted(by_index)]


def test_the_architecture_page_draws_these_layers():
    assert diagram_layers(ARCHITECTURE.read_text(encoding="utf-8")) == LAYERS


@pytest.mark.parametrize("text", [
    '```mermaid\nflowchart BT\n  L0["core"]\n  L1["extractor"]\n```',
    '```mermaid\nflowchart BT\n  L0["__init__, errors, fileio, registry, weights, core"]\n```',
])
def test_a_diagram_that_drifted_is_caught(text):
    assert diagram_layers(text) != LAYERS
