"""The house drawn from the imports: library below, application above, no circle, at most 6 floors.

Every ``import`` counts, the lazy ones inside functions included (they are arrows too). A room is a
package directly under ``mpc_fl`` (``runtime/``, ``app/``, ...) or a top-level module.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mpc_fl"
LIBRARY = ("runtime", "crypto", "protocols", "models", "psi", "data")
MAX_FLOORS = 6
#: library modules that start a process of their own: the PSI library runs in a worker process
#: (its crashes and its loopback sockets stay out of the party), never the CLI
OWN_WORKERS = {"mpc_fl.psi.ot": "mpc_fl.psi._ot_worker"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@cache
def modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def imports(tree: ast.Module, name: str, known: set[str]) -> set[str]:
    """The mpc_fl modules ``tree`` imports anywhere (``from pkg import module`` resolves to the module)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mpc_fl")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mpc_fl"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return {m for m in out if m in known and m != name}


@cache
def graph() -> dict[str, frozenset[str]]:
    known = set(modules())
    return {m: frozenset(imports(t, m, known)) for m, t in modules().items()}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mpc_fl"


def find_cycle(edges: dict[str, frozenset[str]]) -> list[str] | None:
    """A circle in the graph (as the list of its nodes), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


def floors(edges: dict[str, frozenset[str]]) -> dict[str, int]:
    """Floor of each node in an acyclic graph: 1 + the highest floor it imports (leaves are floor 1)."""

    @cache
    def floor(n: str) -> int:
        return 1 + max((floor(m) for m in edges.get(n, ())), default=0)

    return {n: floor(n) for n in edges}


def room_graph() -> dict[str, frozenset[str]]:
    rooms: dict[str, set[str]] = {}
    for m, deps in graph().items():
        rooms.setdefault(room(m), set()).update(room(d) for d in deps if room(d) != room(m))
    return {r: frozenset(d) for r, d in rooms.items() if r != "mpc_fl"}


def test_no_module_circle() -> None:
    assert find_cycle(graph()) is None, f"import circle: {' -> '.join(find_cycle(graph()) or [])}"


def test_the_rooms_form_at_most_six_floors_without_a_circle() -> None:
    rooms = room_graph()
    assert find_cycle(rooms) is None, f"rooms in a circle: {find_cycle(rooms)}"
    levels = floors(rooms)
    assert max(levels.values()) <= MAX_FLOORS, levels
    assert levels["app"] == max(levels.values()), "the application stands on top"


def test_the_library_never_imports_the_application_or_builds_a_command_line() -> None:
    for m, tree in modules().items():
        if room(m) not in LIBRARY:
            continue
        assert not any(d.startswith("mpc_fl.app") for d in graph()[m]), f"{m} imports the application"
        text = ast.unparse(tree)
        assert "mpc_fl.app" not in text and "mpc_fl.cli" not in text, f"{m} names the application"
        if "sys.executable" in text:
            assert m in OWN_WORKERS and OWN_WORKERS[m] in text, f"{m} builds a command line"


def test_the_application_modules_are_in_one_folder() -> None:
    top = {m for m in modules() if m.count(".") == 1 and not (PACKAGE / m.split(".")[1]).is_dir()}
    assert top <= {"mpc_fl.config", "mpc_fl.metrics", "mpc_fl.netmodel"}, top - {"mpc_fl.config"}
    assert {"mpc_fl.app.cli", "mpc_fl.app.party", "mpc_fl.app.local", "mpc_fl.app.launch"} <= set(modules())


@pytest.mark.parametrize(
    "edges",
    [
        {"a": frozenset({"b"}), "b": frozenset({"a"})},  # the old crypto circle, in miniature
        {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"})},
    ],
)
def test_positive_control_a_circle_is_found(edges: dict) -> None:
    assert find_cycle(edges) is not None


def test_positive_control_a_lazy_import_is_an_arrow() -> None:
    tree = ast.parse("def f():\n    from mpc_fl.app import cli\n")
    assert imports(tree, "mpc_fl.runtime.x", {"mpc_fl.app.cli", "mpc_fl.app"}) == {"mpc_fl.app.cli"}
