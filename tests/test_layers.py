"""The import structure of nntrain/: every import (at the top of a module or inside a function) points down a layer
or within one, and no modules import each other in a circle. docs/architecture.md draws the same table."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "nntrain"
EXPERIMENTS = REPO / "experiments"

# Lowest first. A module may import modules of its own layer or of a lower one, never of a higher one.
LAYERS = (
    ("nntrain.errors", "nntrain.logs", "nntrain.quiet", "nntrain.compat"),  # foundation: no nntrain imports but these
    ("nntrain.rundir",),  # every read and write of a run directory (local, gs://, ram://)
    ("nntrain.registry",),  # the tables users and built-ins extend: models, sources, strategies, tuners, hooks
    ("nntrain.config",),  # experiments and overrides to a validated config (no TensorFlow)
    ("nntrain.distribute",),  # strategies, devices, multi-worker
    ("nntrain.data",),
    ("nntrain.models",),
    ("nntrain.run",),  # the run core: trainer, run state, callbacks, guards, preflight
    ("nntrain.exports",),  # evaluate, export, serve, generate, results
    ("nntrain.tuning",),
    ("nntrain.benchmark",),
    ("nntrain.experiments",),  # experiments/ at the top of the repository, installed as nntrain.experiments
    ("nntrain.api",),
    ("nntrain.cli",),
    ("nntrain",),  # nntrain/__init__.py: the public API
)


def module_files() -> dict[str, Path]:
    """Every module of the nntrain package, by dotted name (experiments/ as nntrain.experiments)."""
    files = {}
    for root, prefix in ((PACKAGE, ("nntrain",)), (EXPERIMENTS, ("nntrain", "experiments"))):
        for path in sorted(root.rglob("*.py")):
            parts = prefix + path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The nntrain modules `name` imports anywhere in its file, inside functions and TYPE_CHECKING blocks too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import nntrain.run.trainer.x` names a module's attribute
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer(module: str) -> int:
    """The index in LAYERS of the longest prefix naming `module`."""
    matches = [(len(prefix), i) for i, group in enumerate(LAYERS) for prefix in group
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer of LAYERS: add it to the table (and docs/architecture.md)"
    return max(matches)[1]


def graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports(name, path, set(files)) for name, path in files.items()}


def test_no_module_imports_a_higher_layer():
    upward = [f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
              for module, targets in graph().items() for target in sorted(targets) if layer(target) > layer(module)]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    edges = graph()
    state: dict[str, str] = {}
    circles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join(stack[stack.index(target):] + [module, target]))
            elif target not in state:
                visit(target, [*stack, module])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not circles, "\n".join(circles)


def test_checker_sees_imports_inside_functions(tmp_path):
    """The walk counts a lazy import written inside a function, the kind that hid the old upward arrows."""
    source = tmp_path / "rundir.py"
    source.write_text("def save():\n    from nntrain.run import guards\n    from .config import x\n")
    found = imports("nntrain.rundir", source, {"nntrain.run.guards", "nntrain.run", "nntrain.config", "nntrain"})
    assert found == {"nntrain.run.guards", "nntrain.config"}
    assert layer("nntrain.run.guards") > layer("nntrain.rundir")


def test_setup_cfg_lists_every_package():
    """setup.cfg names its packages (experiments/ is mapped in by package_dir): a new package must be added there."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    listed = set(parser["options"]["packages"].split())
    on_disk = {name for name, path in module_files().items() if path.name == "__init__.py"}
    assert listed == on_disk
    assert parser["options"]["package_dir"].split() == ["nntrain.experiments", "=", "experiments"]


def test_top_level_holds_only_the_entry_points_and_the_foundation():
    top = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert top == ["__init__", "api", "cli", "config", "errors", "logs", "quiet", "registry", "rundir"]
