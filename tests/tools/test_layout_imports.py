"""The package layout holds: no import cycle among pgretention's modules, and every command of the CLI is registered."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pgretention"

# the top-level commands of `pgretention --help` when the CLI became a package; a command may be added,
# none may go missing (a module that is not imported any more would drop its commands silently)
TOP_LEVEL_COMMANDS = {
    "adopt", "adopt-cancel", "adoptions", "anonymise", "assign", "audit", "bench", "class", "entity", "generate",
    "hold", "install", "metrics", "plan", "report", "request", "rollup", "run", "settings", "status", "subject",
    "table", "tenant", "tune", "unadopt", "uninstall", "upgrade", "version",
}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by the name of its ``__init__``)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that importing ``name`` runs: its imports at module level and inside
    functions, and the ``__init__`` of each package on their way that ``name`` is not already inside."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            targets.update(f"{module}.{a.name}" for a in node.names)  # `from pkg import submodule`
    edges: set[str] = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            step = ".".join(parts[:i])
            if step not in known or step == name:
                continue
            inside = name == step or name.startswith(step + ".")
            if i == len(parts) or not inside:  # an enclosing package of `name` is initialised already
                edges.add(step)
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one that imports itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    """No module of pgretention imports itself through others, at module level or inside a function."""
    known = modules()
    assert {"pgretention.cli", "pgretention.cli.face", "pgretention.report", "pgretention.db"} <= set(known)
    graph = {name: imported(name, path, known) for name, path in known.items()}
    assert graph["pgretention.cli"] >= {"pgretention.cli.partition", "pgretention.cli.face"}
    assert cycles(graph) == []


def test_cycle_detection_sees_a_cycle(tmp_path: Path) -> None:
    """The check itself finds a cycle, also one through a function-level import."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    # the shape of the old CLI: the root imports the commands inside a function, they import it back
    root = tmp_path / "cli.py"
    root.write_text("def main():\n    from pgretention import commands\n")
    commands = tmp_path / "commands.py"
    commands.write_text("from pgretention.cli import emit\n")
    known = {"pgretention": tmp_path / "__init__.py", "pgretention.cli": root, "pgretention.commands": commands}
    graph = {name: imported(name, path, known) for name, path in known.items() if path.exists()}
    assert cycles(graph) == [["pgretention.cli", "pgretention.commands"]]


def test_every_command_is_registered() -> None:
    """`pgretention --help` lists every top-level command of the CLI."""
    res = subprocess.run([sys.executable, "-m", "pgretention", "--help"], capture_output=True, text=True,
                         cwd=PACKAGE.parent, env={**os.environ, "COLUMNS": "200"}, timeout=60)
    assert res.returncode == 0, res.stderr
    listing = res.stdout.split("\nCommands:\n", 1)[1]
    commands = {line.split()[0] for line in listing.splitlines() if line.startswith("  ") and line.strip()}
    assert TOP_LEVEL_COMMANDS - commands == set()
