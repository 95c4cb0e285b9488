"""The package layout keeps its promises: the core is framework-free and no modules import in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import rearl

SRC = Path(rearl.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(path: Path, name: str, is_pkg: bool) -> set[str]:
    """Every module imported anywhere in the file (function-level imports included)."""
    found = set()
    pkg = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {i for i in _imports(p, m, p.name == "__init__.py") if i in mods and i != m} for m, p in mods.items()}


def test_core_imports_nothing_outside_it():
    g = _graph()
    core = [m for m in g if m.startswith("rearl.core")]
    assert len(core) >= 10
    for m in core:
        outside = {i for i in g[m] if not i.startswith("rearl.core") and i != "rearl"}
        assert not outside, f"{m} imports {sorted(outside)}"
    for m in core:
        third = {i.split(".")[0] for i in _imports(_modules()[m], m, False)}
        assert not third & {"torch", "trl", "peft", "accelerate", "vllm", "datasets"}, f"{m} imports {third}"


def test_importing_the_core_loads_no_trainer_or_cli():
    code = ("import sys, pkgutil, importlib, rearl.core as c\n"
            "[importlib.import_module('rearl.core.' + m.name) for m in pkgutil.iter_modules(c.__path__)]\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'trl', 'peft', 'vllm') or "
            "m.startswith(('rearl.train', 'rearl.cli', 'rearl.backends', 'rearl.eval', 'rearl.reflector'))]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_import_circle():
    g = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if n in ("rearl",) or n.startswith(m + "."):
                continue  # a package's lazy exports / its own submodules
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_public_api_names_resolve():
    for name in rearl.__all__:
        assert getattr(rearl, name) is not None, name
