"""The ligerd package's modules import each other one way: no cycle, counting imports inside
functions too (a deferred import is still a dependency; a cycle hidden behind one makes the
layering impossible to read)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "python_client" / "ligerd"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: set) -> set:
    """ligerd modules `path` imports (`from ligerd import _x` counts as ligerd._x)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n in modules}
    return out


def graph():
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    modules = set(files)
    # A package's __init__ importing its own submodules is how packages work: not an edge back.
    return {m: {d for d in imports_of(p, modules) if d != m and not d.startswith(m + ".")}
            for m, p in files.items()}


def find_cycle(g):
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state:
                c = visit(d)
                if c:
                    return c
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(g):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
